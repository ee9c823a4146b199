//! What a restore does with an object that already exists
//! (pkg/restore/restore.go): the merge patch from the in-cluster object to
//! the backed-up one, as the `update` policy sends it, and the merge of
//! ServiceAccounts.

use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::{Map, Value};

pub(super) fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`, as
/// `jsonpatch.CreateMergePatch` computes it.
pub(super) fn merge_patch(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(from), Value::Object(to)) => {
            let mut patch = Map::new();
            for (key, value) in to {
                match from.get(key) {
                    Some(old) if old == value => {}
                    Some(old) => {
                        patch.insert(key.clone(), merge_patch(old, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in from.keys().filter(|k| !to.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, to) => to.clone(),
    }
}

/// `mergeServiceAccounts`: the in-cluster ServiceAccount with the backed-up
/// one's secrets, image pull secrets, labels and annotations added.
pub(super) fn merge_service_accounts(
    from_cluster: &DynamicObject,
    backed_up: &DynamicObject,
) -> DynamicObject {
    let mut desired = from_cluster.clone();
    for field in ["secrets", "imagePullSecrets"] {
        let mut list = desired
            .data
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in backed_up
            .data
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !list.iter().any(|e| e["name"] == entry["name"]) {
                list.push(entry.clone());
            }
        }
        if !list.is_empty() {
            desired.data[field] = Value::Array(list);
        }
    }
    for (key, value) in backed_up.labels() {
        desired
            .labels_mut()
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    for (key, value) in backed_up.annotations() {
        desired
            .annotations_mut()
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patches_set_changes_and_null_what_the_target_lacks() {
        let from = json!({ "spec": { "replicas": 1, "paused": false }, "metadata": { "labels": { "a": "1" } } });
        let to = json!({ "spec": { "replicas": 3 }, "metadata": { "labels": { "a": "1" } } });
        assert_eq!(
            merge_patch(&from, &to),
            json!({ "spec": { "replicas": 3, "paused": null } })
        );
    }
}
