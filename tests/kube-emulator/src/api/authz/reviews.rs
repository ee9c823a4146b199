//! Access reviews, answered from RBAC as the real server answers them:
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview (`kubectl auth can-i
//! --list`) and SelfSubjectReview (`kubectl auth whoami`). Whether the
//! requester may create the review at all was decided before.

use serde_json::{json, Value};

use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::ResourceType;
use super::{decide, resolve, Attributes, UserInfo};
use crate::policy::Policy;

/// Fills in `status` of the review `review` of type `rt`, created by
/// `requester` in `namespace` (LocalSubjectAccessReviews only).
pub fn review(
    state: &State,
    policy: &Policy,
    requester: &UserInfo,
    rt: &ResourceType,
    namespace: &str,
    mut review: Value,
) -> ApiResult<Value> {
    let spec = &review["spec"];
    let status = match rt.plural.as_str() {
        "selfsubjectreviews" => json!({"userInfo": user_info(requester)}),
        "selfsubjectrulesreviews" => {
            let namespace = spec["namespace"].as_str().unwrap_or_default();
            if namespace.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            rules_review(state, requester, namespace)
        }
        "selfsubjectaccessreviews" => access_review(state, policy, requester, spec, None)?,
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let subject = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().to_string(),
                uid: spec["uid"].as_str().unwrap_or_default().to_string(),
                groups: spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    rt,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            let local = (rt.plural == "localsubjectaccessreviews").then_some(namespace);
            access_review(state, policy, &subject, spec, local)?
        }
        other => return Err(ApiError::internal(format!("{other} are not reviews"))),
    };
    review["status"] = status;
    Ok(review)
}

fn invalid(rt: &ResourceType, field: &str, why: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!(
            "{}.{} \"\" is invalid: {field}: Invalid value: {why}",
            rt.kind, rt.group
        ),
    )
}

fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    info
}

/// The status of an access review of `spec` for `user`; `local` is the
/// namespace of a LocalSubjectAccessReview, which its attributes must
/// stay in.
fn access_review(
    state: &State,
    policy: &Policy,
    user: &UserInfo,
    spec: &Value,
    local: Option<&str>,
) -> ApiResult<Value> {
    let resource = &spec["resourceAttributes"];
    let non_resource = &spec["nonResourceAttributes"];
    if resource.is_object() == non_resource.is_object() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let text = |value: &Value, field: &str| value[field].as_str().unwrap_or_default().to_string();
    let mut namespace = text(resource, "namespace");
    if let Some(local) = local {
        if namespace.is_empty() {
            namespace = local.to_string();
        } else if namespace != local {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {local}"
            )));
        }
    }
    let (verb, group, plural, subresource, name, path) = if resource.is_object() {
        (
            text(resource, "verb"),
            text(resource, "group"),
            text(resource, "resource"),
            text(resource, "subresource"),
            text(resource, "name"),
            String::new(),
        )
    } else {
        let path = text(non_resource, "path");
        let verb = text(non_resource, "verb");
        (
            verb,
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            path,
        )
    };
    let attributes = Attributes {
        verb: &verb,
        group: &group,
        resource: &plural,
        subresource: &subresource,
        namespace: &namespace,
        name: &name,
        path: &path,
    };
    let reason = if policy.authorization {
        decide(state, user, &attributes)
    } else {
        Some(String::new())
    };
    let mut status = json!({"allowed": reason.is_some()});
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        status["reason"] = json!(reason);
    }
    Ok(status)
}

/// What `user` may do in `namespace`, as a SelfSubjectRulesReview lists it.
fn rules_review(state: &State, user: &UserInfo, namespace: &str) -> Value {
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in resolve::rules_for(state, user, namespace) {
        if !rule.resources.is_empty() {
            let mut entry = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
            if !rule.resource_names.is_empty() {
                entry["resourceNames"] = json!(rule.resource_names);
            }
            resource_rules.push(entry);
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}
