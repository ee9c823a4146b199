//! Object metadata the server owns: names, uids, timestamps, and the checks
//! every written object goes through.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::resources::{NameRule, ResourceType};

/// `2024-05-01T12:00:00Z`: the precision and form Kubernetes uses.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random version-4 UUID.
pub fn uid() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        8 + (b as u8 & 3),
        &hex[17..20],
        &hex[20..32]
    )
}

/// The 5-character suffix `generateName` gets: the alphabet the API server
/// uses (no vowels, no confusable characters).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Checks an object name against its resource's naming rule.
pub fn check_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let edges_ok = name.starts_with(alnum) && name.ends_with(alnum);
    let why = match rt.names {
        NameRule::Subdomain => (name.len() > 253
            || !edges_ok
            || !name.chars().all(|c| alnum(c) || c == '-' || c == '.'))
        .then_some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)",
        ),
        NameRule::Label => (name.len() > 63
            || !edges_ok
            || !name.chars().all(|c| alnum(c) || c == '-'))
        .then_some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)",
        ),
        NameRule::PathSegment => (name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '%']))
        .then_some("may not be '.' or '..' and may not contain '/' or '%'"),
    };
    match why {
        Some(why) => Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            &format!("Invalid value: {name:?}: {why}"),
        )),
        None => Ok(()),
    }
}

/// The `metadata` map of a request body, or a 400 naming what is wrong.
pub fn metadata_mut(object: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON or YAML object"))?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(Map::new());
    }
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// Checks that a body's `apiVersion` and `kind` (when given) are those of
/// the resource at the request's path, and fills them in when missing.
pub fn check_type(rt: &ResourceType, version: &str, object: &mut Value) -> ApiResult<()> {
    let expected_version = rt.api_version(version);
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON or YAML object"))?;
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )))
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                rt.kind,
                rt.group_resource()
            )))
        }
        _ => {}
    }
    map.insert("apiVersion".into(), Value::String(expected_version));
    map.insert("kind".into(), Value::String(rt.kind.clone()));
    Ok(())
}

/// Checks the parts of an object every Kubernetes type shares: `spec` and
/// `status` are objects, labels and annotations map strings to strings,
/// finalizers are strings, ConfigMap/Secret data are maps, and a pod has
/// named containers with images.
pub fn check_shape(rt: &ResourceType, object: &Value) -> ApiResult<()> {
    let name = text(object, "name");
    let invalid = |field: &str, why: &str| Err(ApiError::invalid(rt, name, field, why));
    let is_object_or_absent = |v: &Value| v.is_null() || v.is_object();
    let string_map = |v: &Value| {
        v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
    };
    let mut objects = vec!["spec", "status"];
    if rt.is("", "configmaps") || rt.is("", "secrets") {
        objects.extend(["data", "binaryData", "stringData"]);
    }
    for field in objects {
        if !is_object_or_absent(&object[field]) {
            return invalid(field, "Invalid value: must be an object");
        }
    }
    let metadata = &object["metadata"];
    for field in ["labels", "annotations"] {
        if !string_map(&metadata[field]) {
            return invalid(
                &format!("metadata.{field}"),
                "Invalid value: must be a map of strings to strings",
            );
        }
    }
    let finalizers = &metadata["finalizers"];
    if !(finalizers.is_null()
        || finalizers
            .as_array()
            .is_some_and(|f| f.iter().all(Value::is_string)))
    {
        return invalid(
            "metadata.finalizers",
            "Invalid value: must be a list of strings",
        );
    }
    let references = &metadata["ownerReferences"];
    if !(references.is_null()
        || references
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_object)))
    {
        return invalid(
            "metadata.ownerReferences",
            "Invalid value: must be a list of objects",
        );
    }
    if rt.is("", "pods") {
        check_containers(rt, object)?;
    }
    Ok(())
}

fn check_containers(rt: &ResourceType, pod: &Value) -> ApiResult<()> {
    let name = text(pod, "name");
    let Some(containers) = pod["spec"]["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
    else {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec.containers",
            "Required value",
        ));
    };
    let init = pod["spec"]["initContainers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen = Vec::new();
    for (list, containers) in [
        ("containers", containers.as_slice()),
        ("initContainers", init),
    ] {
        for (index, container) in containers.iter().enumerate() {
            let field = |f: &str| format!("spec.{list}[{index}].{f}");
            let Some(container_name) = container["name"].as_str().filter(|n| !n.is_empty()) else {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &field("name"),
                    "Required value",
                ));
            };
            if seen.contains(&container_name) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &field("name"),
                    &format!("Duplicate value: {container_name:?}"),
                ));
            }
            seen.push(container_name);
            if container["image"].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &field("image"),
                    "Required value",
                ));
            }
        }
    }
    Ok(())
}

pub fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

pub fn has_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

pub fn is_terminating(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids() {
        let uid = uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, super::uid());
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    }
}
