//! Who is asking, and whether they may: the identity a request was
//! authenticated as (`UserInfo`, from `authn`), and the RBAC authorizer
//! every request and admission plugin asks ("may this user use SCC anyuid
//! in namespace shop?" is `allows(state, user, &Attributes { verb: "use",
//! group: "security.openshift.io", resource: "securitycontextconstraints",
//! name: "anyuid", namespace: "shop", .. })`).
//!
//! - `request`: a request's attributes (verb, group, resource, ...) and the
//!   403 the real server answers;
//! - `rules` and `resolve`: policy rules, and which apply to a user through
//!   RoleBindings and ClusterRoleBindings (aggregated ClusterRoles
//!   included);
//! - `bootstrap`: the roles and bindings a cluster starts with;
//! - `escalation`: no granting of rights one does not hold;
//! - `reviews`: access reviews answered from the same rules.
//!
//! Members of `system:masters` may do anything. With
//! `Policy::authorization` off every request is allowed (users are still
//! authenticated); `allows` itself is RBAC's answer, so a plugin asking it
//! checks the switch first.

mod bootstrap;
mod escalation;
mod request;
mod resolve;
mod reviews;
mod rules;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;

use super::error::ApiResult;
use super::objects::State;
use crate::policy::Policy;

pub use bootstrap::{bootstrap, CONTROLLER_MANAGER};
pub use request::RequestInfo;
pub use reviews::review;

/// An authenticated identity, as the API server's authenticators produce
/// it and access reviews report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The group whose members may do anything, unconditionally.
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    /// The API server itself (`system:apiserver` in `system:masters`), as
    /// which it writes its own built-in objects at start.
    pub fn apiserver() -> Self {
        Self {
            name: "system:apiserver".to_string(),
            uid: String::new(),
            groups: vec![MASTERS.to_string(), "system:authenticated".to_string()],
        }
    }

    pub fn is_member(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What a request (or an admission plugin on its behalf) wants to do.
#[derive(Clone, Debug, Default)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Empty for cluster-scoped resources and cluster-wide requests.
    pub namespace: &'a str,
    /// Empty when the request names no object (list, create).
    pub name: &'a str,
    /// The URL path of a request outside the resource tree (`/api`,
    /// `/healthz`); empty for resource requests.
    pub path: &'a str,
}

impl Attributes<'_> {
    pub fn is_resource_request(&self) -> bool {
        self.path.is_empty()
    }
}

/// Whether `user` may do what `attributes` say, by the RBAC objects in
/// `state`.
pub fn allows(state: &State, user: &UserInfo, attributes: &Attributes<'_>) -> bool {
    decide(state, user, attributes).is_some()
}

/// Why `user` may do what `attributes` say (`RBAC: allowed by
/// ClusterRoleBinding "x" of ClusterRole "y" to User "z"`, or empty for
/// `system:masters`), or `None` when no rule allows it.
fn decide(state: &State, user: &UserInfo, attributes: &Attributes<'_>) -> Option<String> {
    if user.is_member(MASTERS) {
        return Some(String::new());
    }
    let mut reason = None;
    resolve::visit_rules(state, user, attributes.namespace, |rule, source| {
        if rule.allows(attributes) {
            reason = Some(format!("RBAC: allowed by {}", source()));
        }
        reason.is_none()
    });
    reason
}

/// A write request's body, for the checks that look at the object written
/// (escalation): the raw body and how the server parses it.
pub struct Body<'a> {
    pub headers: &'a HeaderMap,
    pub bytes: &'a Bytes,
    pub parse: fn(&HeaderMap, &Bytes) -> ApiResult<Value>,
}

/// Refuses (403) a request `user` may not make: by RBAC, and, for writes
/// of roles and bindings, by escalation prevention. Everything passes with
/// `policy.authorization` off.
pub fn authorize(
    state: &State,
    policy: &Policy,
    user: &UserInfo,
    info: &RequestInfo,
    body: &Body<'_>,
) -> ApiResult<()> {
    if !policy.authorization {
        return Ok(());
    }
    let attributes = info.attributes();
    if !allows(state, user, &attributes) {
        return Err(request::forbidden(user, &attributes, ""));
    }
    escalation::check(state, user, info, body)
}
