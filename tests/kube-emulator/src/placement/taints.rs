//! Taints and tolerations, as the scheduler, the kubelet's admission and
//! the taint eviction controller read them: a toleration matches a taint
//! by effect (empty: every effect), key (empty, with `Exists`: every key)
//! and value (`Equal`, the default, compares it; `Exists` ignores it).

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|spec| spec.taints.as_deref())
        .unwrap_or_default()
}

pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.tolerations.as_deref())
        .unwrap_or_default()
}

/// The first of the node's taints with one of `effects` that none of
/// `tolerations` tolerates.
pub fn untolerated<'a>(
    node: &'a Node,
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    node_taints(node).iter().find(|taint| {
        effects.contains(&taint.effect.as_str())
            && !tolerations
                .iter()
                .any(|toleration| tolerates(toleration, taint))
    })
}

/// How `{key: value}` of a taint reads in the scheduler's messages.
pub fn describe(taint: &Taint) -> String {
    format!(
        "{{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.to_string(),
            value: Some(value.to_string()).filter(|value| !value.is_empty()),
            effect: effect.to_string(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let text = |text: &str| Some(text.to_string()).filter(|text| !text.is_empty());
        Toleration {
            key: text(key),
            operator: text(operator),
            value: text(value),
            effect: text(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn equal_compares_the_value_and_exists_does_not() {
        let dedicated = taint("dedicated", "db", NO_SCHEDULE);
        assert!(tolerates(
            &toleration("dedicated", "Equal", "db", NO_SCHEDULE),
            &dedicated
        ));
        assert!(tolerates(
            &toleration("dedicated", "", "db", ""),
            &dedicated
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "web", NO_SCHEDULE),
            &dedicated
        ));
        assert!(tolerates(
            &toleration("dedicated", "Exists", "", NO_SCHEDULE),
            &dedicated
        ));
        assert!(!tolerates(
            &toleration("other", "Exists", "", NO_SCHEDULE),
            &dedicated
        ));
    }

    #[test]
    fn effects_must_match_unless_the_toleration_names_none() {
        let evicting = taint("dedicated", "db", NO_EXECUTE);
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "db", NO_SCHEDULE),
            &evicting
        ));
        assert!(tolerates(
            &toleration("dedicated", "Equal", "db", ""),
            &evicting
        ));
    }

    #[test]
    fn an_empty_key_with_exists_tolerates_everything() {
        let everything = toleration("", "Exists", "", "");
        assert!(tolerates(&everything, &taint("a", "b", NO_EXECUTE)));
        assert!(tolerates(&everything, &taint("c", "", NO_SCHEDULE)));
        let every_no_schedule = toleration("", "Exists", "", NO_SCHEDULE);
        assert!(!tolerates(&every_no_schedule, &taint("a", "b", NO_EXECUTE)));
    }

    #[test]
    fn unknown_operators_tolerate_nothing() {
        assert!(!tolerates(
            &toleration("a", "Gt", "1", ""),
            &taint("a", "2", NO_SCHEDULE)
        ));
    }
}
