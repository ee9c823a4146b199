//! Field validation particular to one resource, beyond the checks every
//! object gets (`meta`): an OpenShift Route's `spec.host` must be a valid
//! host name (`router::host`), checked on create and on every update that
//! changes it, as OpenShift's API server checks it; Events are checked as
//! kube-apiserver checks them, more strictly when written through
//! `events.k8s.io` (`event`).

mod event;

use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::meta;
use super::resources::ResourceType;
use crate::router::host;

/// Checks `new`, which replaces `old` (`None` on create).
pub fn check(rt: &ResourceType, old: Option<&Value>, new: &Value) -> ApiResult<()> {
    if super::conversion::is_event(rt) {
        let strict = super::conversion::strict_event_validation(rt);
        let problems = event::problems(old, new, strict);
        if problems.is_empty() {
            return Ok(());
        }
        return Err(ApiError::invalid_fields(
            rt,
            meta::text(new, "name"),
            &problems,
        ));
    }
    if !rt.is("route.openshift.io", "routes") {
        return Ok(());
    }
    let host_of = |route: &Value| route["spec"]["host"].as_str().unwrap_or("").to_string();
    let host = host_of(new);
    let old_host = old.map(host_of);
    if host.is_empty() || old_host.as_deref() == Some(host.as_str()) {
        return Ok(());
    }
    // As OpenShift does, labels are checked unless the Route is exempted,
    // or it is updated from a host that already broke the label rules.
    let exempt = new["metadata"]["annotations"][host::ALLOW_NON_DNS_COMPLIANT] == "true";
    let labels =
        !exempt && old_host.is_none_or(|old| old.is_empty() || host::has_valid_labels(&old));
    let problems = host::problems(&host, labels);
    if problems.is_empty() {
        return Ok(());
    }
    let causes: Vec<(&str, &str)> = problems.iter().map(|p| ("spec.host", p.as_str())).collect();
    Err(ApiError::invalid_fields(
        rt,
        meta::text(new, "name"),
        &causes,
    ))
}
