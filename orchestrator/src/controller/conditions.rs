//! Status conditions as Kubernetes resources carry them (`type`, `status`,
//! `reason`, `message`, `lastTransitionTime`): the transition time moves
//! only when the status does, so `kubectl wait --for=condition=Ready` and a
//! reader of the history see real transitions, not every reconcile.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One condition.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub last_transition_time: Option<String>,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: &str) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: None,
        }
    }
}

/// Puts `condition` in `conditions`, replacing the one of its type; the
/// transition time is now when the status changed, else the old one.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    let old = conditions.iter().position(|c| c.type_ == condition.type_);
    condition.last_transition_time = match old.map(|i| &conditions[i]) {
        Some(old) if old.status == condition.status => old.last_transition_time.clone(),
        _ => Some(crate::engine::now()),
    };
    match old {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The conditions `now` holds, with the transition times of `old` kept
/// where a condition's status did not change; conditions no longer found
/// are dropped.
pub fn replace_all(old: &[Condition], now: Vec<Condition>) -> Vec<Condition> {
    let mut conditions = old.to_vec();
    conditions.retain(|c| now.iter().any(|n| n.type_ == c.type_));
    for condition in now {
        set_condition(&mut conditions, condition);
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, Condition::new("Ready", false, "A", "a"));
        let first = conditions[0].last_transition_time.clone();
        assert!(first.is_some());
        let mut same = Condition::new("Ready", false, "B", "b");
        same.last_transition_time = Some("ignored".into());
        set_condition(&mut conditions, same);
        assert_eq!(
            (
                conditions.len(),
                &conditions[0].reason,
                &conditions[0].last_transition_time
            ),
            (1, &"B".to_string(), &first)
        );
        conditions[0].last_transition_time = Some("earlier".into());
        set_condition(&mut conditions, Condition::new("Ready", true, "C", "c"));
        assert_ne!(
            conditions[0].last_transition_time.as_deref(),
            Some("earlier")
        );
        set_condition(&mut conditions, Condition::new("Other", true, "D", "d"));
        assert_eq!(conditions.len(), 2);
    }
}
