//! Server-side apply (`application/apply-patch+yaml`), enough for what the
//! orchestrator does with it: an applied object is created when missing;
//! otherwise its fields are merged in (strategically), and fields this
//! field manager applied last time but no longer applies are removed.
//! Conflicts between managers are not detected (`force` is accepted and
//! changes nothing): every apply wins.

use serde_json::Value;

use super::admission::Write;
use super::error::{ApiError, ApiResult};
use super::meta;
use super::objects::{check_resource_version, Location, Part, State};
use super::patch::strategic_merge;

/// Applies `applied` for `manager`; returns the object and whether it was
/// created.
pub fn apply(
    state: &mut State,
    target: Location,
    part: Part,
    mut applied: Value,
    manager: &str,
    write: &mut Write,
) -> ApiResult<(Value, bool)> {
    let rt = target.rt;
    if manager.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    meta::check_type(rt, target.version, &mut applied)?;
    let body_name = meta::text(&applied, "name");
    if !body_name.is_empty() && body_name != target.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            target.name
        )));
    }
    meta::metadata_mut(&mut applied)?.insert("name".into(), target.name.into());
    let current = match state.get(rt, target.namespace, target.name) {
        Ok(current) => current,
        Err(missing) if part == Part::Main && missing.code == 404 => {
            let created =
                state.create(rt, target.version, target.namespace, applied.clone(), write)?;
            if !write.dry_run {
                remember(state, &created, manager, part, applied);
            }
            return Ok((created, true));
        }
        Err(error) => return Err(error),
    };
    check_resource_version(rt, &current, &applied)?;
    let mut merged = current.clone();
    let uid = meta::text(&current, "uid").to_string();
    if let Some(previous) = state.applied.get(&(uid, manager.to_string(), part)) {
        prune(&mut merged, previous, &applied);
    }
    let mut patch = applied.clone();
    if let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    strategic_merge(&mut merged, &patch);
    let written = state.commit(rt, current, merged, part, write)?;
    if !write.dry_run {
        remember(state, &written, manager, part, applied);
    }
    Ok((written, false))
}

fn remember(state: &mut State, object: &Value, manager: &str, part: Part, applied: Value) {
    let uid = meta::text(object, "uid").to_string();
    state
        .applied
        .insert((uid, manager.to_string(), part), applied);
}

/// Removes from `target` what `previous` set and `applied` no longer
/// does: map keys, and elements of lists of named things (by `name`).
fn prune(target: &mut Value, previous: &Value, applied: &Value) {
    match (target, previous, applied) {
        (Value::Object(target), Value::Object(previous), Value::Object(applied)) => {
            for (key, before) in previous {
                match applied.get(key) {
                    None => {
                        if key != "apiVersion" && key != "kind" {
                            target.remove(key);
                        }
                    }
                    Some(now) => {
                        if let Some(slot) = target.get_mut(key) {
                            prune(slot, before, now);
                        }
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(previous), Value::Array(applied)) => {
            let name = |v: &Value| v.get("name").cloned();
            for before in previous {
                let Some(id) = name(before) else { continue };
                match applied.iter().find(|a| name(a).as_ref() == Some(&id)) {
                    None => target.retain(|t| name(t).as_ref() != Some(&id)),
                    Some(now) => {
                        if let Some(slot) =
                            target.iter_mut().find(|t| name(t).as_ref() == Some(&id))
                        {
                            prune(slot, before, now);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prune_removes_what_is_no_longer_applied() {
        let mut target = json!({"data": {"a": "1", "b": "2", "other": "x"},
            "spec": {"containers": [{"name": "a", "image": "i", "env": [1]}, {"name": "b"}, {"name": "c"}]}});
        let previous = json!({"data": {"a": "1", "b": "2"},
            "spec": {"containers": [{"name": "a", "env": [1]}, {"name": "b"}]}});
        let applied = json!({"data": {"a": "1"}, "spec": {"containers": [{"name": "a"}]}});
        prune(&mut target, &previous, &applied);
        assert_eq!(
            target,
            json!({"data": {"a": "1", "other": "x"},
            "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "c"}]}})
        );
    }
}
