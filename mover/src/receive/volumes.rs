//! The volumes a receiver serves, and which of them are busy or done.

use crate::failure::Failure;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Volumes {
    slots: BTreeMap<String, Slot>,
}

struct Slot {
    path: PathBuf,
    busy: AtomicBool,
    synced: AtomicBool,
}

/// Exclusive use of one volume for one session; released on drop.
pub struct Claim<'a> {
    pub name: &'a str,
    pub path: &'a PathBuf,
    slot: &'a Slot,
}

impl Volumes {
    /// Checks that every volume is a directory and names are unique and
    /// valid.
    pub fn new(list: Vec<(String, PathBuf)>) -> Result<Self, String> {
        let mut slots = BTreeMap::new();
        for (name, path) in list {
            crate::certs::validate_volume_name(&name)
                .map_err(|e| format!("volume {name:?}: {e}"))?;
            if !path.is_dir() {
                return Err(format!(
                    "volume {name}: {} is not a directory",
                    path.display()
                ));
            }
            let slot = Slot {
                path,
                busy: AtomicBool::new(false),
                synced: AtomicBool::new(false),
            };
            if slots.insert(name.clone(), slot).is_some() {
                return Err(format!("volume {name} is listed twice"));
            }
        }
        if slots.is_empty() {
            return Err("no volume to serve (use --volume NAME=PATH)".into());
        }
        Ok(Volumes { slots })
    }

    /// Takes `name` for one session: refused if unknown, not allowed by the
    /// peer's certificate, or already being written by another sender.
    pub fn claim(&self, name: &str, allowed: &[String]) -> Result<Claim<'_>, Failure> {
        if !allowed.iter().any(|a| a == name) {
            return Err(Failure::permanent(format!(
                "the client certificate does not allow volume {name:?} (it allows: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let (name, slot) = self.slots.get_key_value(name).ok_or_else(|| {
            Failure::permanent(format!("this receiver does not serve volume {name:?}"))
        })?;
        if slot.busy.swap(true, Ordering::AcqRel) {
            return Err(Failure::retryable(format!(
                "volume {name} is busy with another sender"
            )));
        }
        Ok(Claim {
            name,
            path: &slot.path,
            slot,
        })
    }

    pub fn all_synced(&self) -> bool {
        self.slots
            .values()
            .all(|s| s.synced.load(Ordering::Acquire))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }
}

impl Claim<'_> {
    /// Records one complete sync of this volume.
    pub fn synced(&self) {
        self.slot.synced.store(true, Ordering::Release);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
    }
}
