//! Privilege escalation prevention, as the RBAC registry enforces it: a
//! user may create or change a Role or ClusterRole only with rules it
//! already holds (in the role's namespace, or cluster-wide), unless it may
//! `escalate` roles; and may bind a role only if it holds all of that
//! role's rules where the binding applies, unless it may `bind` that role.
//! `system:masters` may always.

use axum::http::header;
use serde_json::Value;

use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::patch::{self, PatchKind};
use super::super::resources::TypeKey;
use super::request::RequestInfo;
use super::resolve::{self, GROUP};
use super::rules::{self, Rule};
use super::{allows, Attributes, Body, UserInfo, MASTERS};

/// Refuses the write `info` describes if it would escalate `user`'s
/// privileges; other requests pass.
pub fn check(state: &State, user: &UserInfo, info: &RequestInfo, body: &Body<'_>) -> ApiResult<()> {
    let binding = match info.resource.as_str() {
        "roles" | "clusterroles" => false,
        "rolebindings" | "clusterrolebindings" => true,
        _ => return Ok(()),
    };
    if info.group != GROUP
        || !info.subresource.is_empty()
        || !matches!(info.verb.as_str(), "create" | "update" | "patch")
        || user.is_member(MASTERS)
    {
        return Ok(());
    }
    let Some(object) = written(state, info, body) else {
        return Ok(()); // the write itself refuses what cannot be read
    };
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(&info.name);
    let forbidden = |why: &str| ApiError::forbidden_on(GROUP, &info.resource, name, why);
    if binding {
        return check_binding(state, user, info, &object["roleRef"]).map_err(|why| match why {
            Refusal::Forbidden(why) => forbidden(&why),
            Refusal::RoleMissing(why) => ApiError::new(404, "NotFound", why),
        });
    }
    let may_escalate = allows(
        state,
        user,
        &Attributes {
            verb: "escalate",
            group: GROUP,
            resource: &info.resource,
            namespace: &info.namespace,
            name: &info.name,
            ..Attributes::default()
        },
    );
    if may_escalate {
        return Ok(());
    }
    if object
        .get("aggregationRule")
        .is_some_and(|rule| !rule.is_null())
    {
        return Err(forbidden(
            "must have cluster-admin privileges to use the aggregationRule",
        ));
    }
    confirm_no_escalation(state, user, &info.namespace, &Rule::all_of(&object))
        .map_err(|why| forbidden(&why))
}

enum Refusal {
    Forbidden(String),
    RoleMissing(String),
}

fn check_binding(
    state: &State,
    user: &UserInfo,
    info: &RequestInfo,
    role_ref: &Value,
) -> Result<(), Refusal> {
    let kind = role_ref["kind"].as_str().unwrap_or_default();
    let may_bind = allows(
        state,
        user,
        &Attributes {
            verb: "bind",
            group: GROUP,
            resource: if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            },
            namespace: &info.namespace,
            name: role_ref["name"].as_str().unwrap_or_default(),
            ..Attributes::default()
        },
    );
    if may_bind {
        return Ok(());
    }
    let rules =
        resolve::role_ref_rules(state, role_ref, &info.namespace).map_err(Refusal::RoleMissing)?;
    confirm_no_escalation(state, user, &info.namespace, &rules).map_err(Refusal::Forbidden)
}

/// Whether `user` holds every rule of `wanted` in `namespace`; if not,
/// the real server's description of what it lacks.
fn confirm_no_escalation(
    state: &State,
    user: &UserInfo,
    namespace: &str,
    wanted: &[Rule],
) -> Result<(), String> {
    let missing = rules::missing(&resolve::rules_for(state, user, namespace), wanted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        rules::go_quoted(&user.groups),
        missing.join("\n")
    ))
}

/// The object as the write would leave it: the body of a create or
/// replace, the current object with the patch applied; `None` when that
/// cannot be worked out (the write then fails on its own).
fn written(state: &State, info: &RequestInfo, body: &Body<'_>) -> Option<Value> {
    if info.verb != "patch" {
        return (body.parse)(body.headers, body.bytes).ok();
    }
    let content_type = body
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchKind::from_content_type(content_type).ok()?;
    let patch: Value = serde_yaml::from_slice(body.bytes).ok()?;
    let key = TypeKey {
        group: GROUP.to_string(),
        plural: info.resource.clone(),
    };
    let current = state.store.get(&key, &info.namespace, &info.name).cloned();
    if kind == PatchKind::Apply {
        // rules, roleRef and aggregationRule are atomic: an apply that
        // sets them replaces them
        let mut object = current.unwrap_or(Value::Null);
        if !object.is_object() {
            return Some(patch);
        }
        for field in ["rules", "roleRef", "aggregationRule"] {
            if let Some(value) = patch.get(field) {
                object[field] = value.clone();
            }
        }
        return Some(object);
    }
    let mut object = current?;
    patch::apply(kind, &mut object, &patch).ok()?;
    Some(object)
}
