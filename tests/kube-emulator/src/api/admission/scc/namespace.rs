//! The per-namespace security allocations OpenShift makes when a namespace
//! is created: a block of 10000 uids (`openshift.io/sa.scc.uid-range`,
//! also its supplemental groups) and an SELinux MCS level
//! (`openshift.io/sa.scc.mcs`), unique in the cluster. A namespace that
//! already carries them (one migrated from another cluster) keeps them.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::super::super::objects::State;
use super::super::super::resources::Catalog;

pub const UID_RANGE: &str = "openshift.io/sa.scc.uid-range";
pub const SUPPLEMENTAL_GROUPS: &str = "openshift.io/sa.scc.supplemental-groups";
pub const MCS: &str = "openshift.io/sa.scc.mcs";

/// Where uid blocks start, and how big each is.
const UID_BASE: u64 = 1_000_000_000;
const BLOCK_SIZE: u64 = 10_000;
/// How many blocks fit below 2^31.
const BLOCKS: u64 = (2_147_483_647 - UID_BASE) / BLOCK_SIZE;

/// A range of ids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub min: i64,
    pub max: i64,
}

/// Parses a uid block: `start/size` or `start-end`.
pub fn parse_block(text: &str) -> Result<IdRange, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map(i64::from)
            .map_err(|_| format!("{text:?} is not a valid uid block"))
    };
    match (text.split_once('/'), text.split_once('-')) {
        (Some((start, size)), _) => {
            let (start, size) = (number(start)?, number(size)?);
            if size == 0 {
                return Err(format!("{text:?} is an empty uid block"));
            }
            Ok(IdRange {
                min: start,
                max: start + size - 1,
            })
        }
        (None, Some((start, end))) => Ok(IdRange {
            min: number(start)?,
            max: number(end)?,
        }),
        _ => Err(format!("{text:?} is not a valid uid block")),
    }
}

/// The MCS level of block `n`: the n-th pair of categories (`s0:c1,c0`,
/// `s0:c2,c0`, `s0:c2,c1`, ...).
fn mcs_level(n: u64) -> String {
    let mut high = 1;
    while (high + 1) * high / 2 <= n {
        high += 1;
    }
    let low = n - high * (high - 1) / 2;
    format!("s0:c{high},c{low}")
}

/// Adds the annotations `namespace` lacks, in the first block whose uids
/// and MCS level no namespace uses.
pub fn allocate(state: &State, namespace: &mut Value) {
    let annotations = &namespace["metadata"]["annotations"];
    let has = |key: &str| annotations[key].is_string();
    if has(UID_RANGE) && has(SUPPLEMENTAL_GROUPS) && has(MCS) {
        return;
    }
    let mut used_uids = HashSet::new();
    let mut used_levels = HashSet::new();
    for other in state.store.list(&Catalog::namespace_type().key(), None) {
        let annotations = &other["metadata"]["annotations"];
        if let Some(range) = annotations[UID_RANGE]
            .as_str()
            .and_then(|t| parse_block(t).ok())
        {
            used_uids.insert(range.min);
        }
        if let Some(level) = annotations[MCS].as_str() {
            used_levels.insert(level.to_string());
        }
    }
    let Some(block) = (1..BLOCKS).find(|n| {
        let start = (UID_BASE + n * BLOCK_SIZE) as i64;
        !used_uids.contains(&start) && !used_levels.contains(&mcs_level(*n))
    }) else {
        return;
    };
    let range = format!("{}/{BLOCK_SIZE}", UID_BASE + block * BLOCK_SIZE);
    if !namespace["metadata"]["annotations"].is_object() {
        namespace["metadata"]["annotations"] = json!({});
    }
    let annotations = &mut namespace["metadata"]["annotations"];
    for (key, value) in [
        (UID_RANGE, range.clone()),
        (SUPPLEMENTAL_GROUPS, range),
        (MCS, mcs_level(block)),
    ] {
        if !annotations[key].is_string() {
            annotations[key] = json!(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_levels() {
        assert_eq!(
            parse_block("1000650000/10000"),
            Ok(IdRange {
                min: 1000650000,
                max: 1000659999
            })
        );
        assert_eq!(parse_block("5-9"), Ok(IdRange { min: 5, max: 9 }));
        assert!(parse_block("x/1").is_err());
        let levels: Vec<String> = (0..4).map(mcs_level).collect();
        assert_eq!(levels, ["s0:c1,c0", "s0:c2,c0", "s0:c2,c1", "s0:c3,c0"]);
        let all: HashSet<String> = (1..2000).map(mcs_level).collect();
        assert_eq!(all.len(), 1999);
    }
}
