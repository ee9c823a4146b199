//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! "strategic-merge-enough" patches — a merge patch whose lists of named
//! things (containers, volumes, env, ports, conditions...) merge element by
//! element on their key, with the `$patch`, `$deleteFromPrimitiveList` and
//! `$setElementOrder` directives kubectl sends.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The patch flavours, named by their Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        Ok(match media {
            "application/merge-patch+json" => Self::Merge,
            "application/json-patch+json" => Self::Json,
            "application/strategic-merge-patch+json" => Self::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Self::Apply,
            other => return Err(ApiError::unsupported_media_type(other)),
        })
    }
}

/// Applies a merge, JSON or strategic patch to `target`.
pub fn apply(kind: PatchKind, target: &mut Value, body: &Value) -> ApiResult<()> {
    match kind {
        PatchKind::Merge => json_patch::merge(target, body),
        PatchKind::Strategic | PatchKind::Apply => strategic_merge(target, body),
        PatchKind::Json => {
            let patch: json_patch::Patch = serde_json::from_value(body.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// The field of list elements that identifies them in a strategic merge,
/// by the list's field name (as the Kubernetes types' `patchMergeKey`s).
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// Lists of scalars that strategic merge unions instead of replacing.
fn is_merged_scalar_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge of `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = Value::Object(Map::new());
        strategic_merge(&mut replacement, &Value::Object(without_directives(patch)));
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                map.get_mut(field).and_then(Value::as_array_mut),
                value.as_array(),
            ) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                map.remove(key);
            }
            Value::Object(_) => {
                strategic_merge(map.entry(key.clone()).or_insert(Value::Null), value)
            }
            Value::Array(elements) => {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                merge_list(slot, key, elements);
            }
            scalar => {
                map.insert(key.clone(), scalar.clone());
            }
        }
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn is_directive(element: &Value, directive: &str) -> bool {
    element.get("$patch").and_then(Value::as_str) == Some(directive)
}

fn merge_list(target: &mut Value, field: &str, elements: &[Value]) {
    let fresh = |element: &Value| {
        let mut new = Value::Null;
        strategic_merge(&mut new, element);
        new
    };
    if elements.iter().any(|e| is_directive(e, "replace")) {
        *target = Value::Array(
            elements
                .iter()
                .filter(|e| !is_directive(e, "replace"))
                .map(fresh)
                .collect(),
        );
        return;
    }
    if is_merged_scalar_list(field) {
        let mut merged = target.as_array().cloned().unwrap_or_default();
        for element in elements {
            if !merged.contains(element) {
                merged.push(element.clone());
            }
        }
        *target = Value::Array(merged);
        return;
    }
    let (Some(key), Some(existing)) = (merge_key(field, elements), target.as_array_mut()) else {
        *target = Value::Array(
            elements
                .iter()
                .map(|e| if e.is_object() { fresh(e) } else { e.clone() })
                .collect(),
        );
        return;
    };
    for element in elements {
        let id = element.get(key);
        let position = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        match (position, is_directive(element, "delete")) {
            (Some(at), true) => {
                existing.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => strategic_merge(&mut existing[at], element),
            (None, false) => existing.push(fresh(element)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_named_lists() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}, "metadata": {"finalizers": ["f1"]}});
        strategic_merge(
            &mut pod,
            &json!({
                "metadata": {"finalizers": ["f2"]},
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                    "containers": [
                        {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                        {"name": "b", "$patch": "delete"},
                        {"name": "c", "image": "c:1"}
                    ]
                }
            }),
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["f1", "f2"]));
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["image"], "a:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}])
        );
        assert_eq!(containers[1], json!({"name": "c", "image": "c:1"}));
    }

    #[test]
    fn strategic_merge_directives() {
        let mut cm = json!({"data": {"a": "1", "b": "2"}, "metadata": {"finalizers": ["x", "y"]}, "list": [1, 2]});
        strategic_merge(
            &mut cm,
            &json!({
                "data": {"a": null, "c": "3"},
                "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]},
                "list": [3]
            }),
        );
        assert_eq!(cm["data"], json!({"b": "2", "c": "3"}));
        assert_eq!(cm["metadata"]["finalizers"], json!(["y"]));
        assert_eq!(cm["list"], json!([3]));
        strategic_merge(&mut cm, &json!({"data": {"$patch": "replace", "z": "9"}}));
        assert_eq!(cm["data"], json!({"z": "9"}));
    }

    #[test]
    fn json_patch_errors_are_422() {
        let mut doc = json!({"a": 1});
        let bad = json!([{"op": "test", "path": "/a", "value": 2}]);
        assert_eq!(
            apply(PatchKind::Json, &mut doc, &bad).unwrap_err().code,
            422
        );
        let not_a_patch = json!({"op": "add"});
        assert_eq!(
            apply(PatchKind::Json, &mut doc, &not_a_patch)
                .unwrap_err()
                .code,
            400
        );
    }
}
