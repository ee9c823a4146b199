//! API errors as the `Status` objects the real API server returns, so that
//! kube-rs parses them into `kube::Error::Api` and kubectl prints their
//! message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::ResourceType;

/// A failed request: HTTP code, machine-readable reason, message and the
/// object it concerns.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    /// A path that names no served resource. Its `details` are empty but
    /// present, as the real server's are: kubectl reads them (`kubectl
    /// debug` dereferences them to tell a missing subresource from a
    /// missing pod).
    pub fn no_such_path() -> Self {
        let mut error = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        error.details = Some(json!({}));
        error
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.group_resource()
            ),
        )
        .with_details(rt, name)
    }

    /// 422: the object is well-formed but a field is wrong; `field` is the
    /// JSON path of the field, as the real server names it.
    pub fn invalid(rt: &ResourceType, name: &str, field: &str, why: &str) -> Self {
        Self::invalid_fields(rt, name, &[(field, why)])
    }

    /// 422 for several `(field, why)` errors, listed as the real server
    /// lists them: `Route.route.openshift.io "r" is invalid: [a: ..., b: ...]`.
    pub fn invalid_fields(
        rt: &ResourceType,
        name: &str,
        errors: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Self {
        let listed: Vec<String> = errors
            .iter()
            .map(|(field, why)| format!("{}: {}", field.as_ref(), why.as_ref()))
            .collect();
        let listed = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {listed}"),
        );
        let causes: Vec<Value> = errors
            .iter()
            .map(|(field, why)| json!({"reason": "FieldValueInvalid", "message": why.as_ref(), "field": field.as_ref()}))
            .collect();
        error.details = Some(json!({
            "name": name, "group": rt.group, "kind": rt.kind, "causes": causes,
        }));
        error
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 403 as the real server's `NewForbidden` words it:
    /// `<resource>[.<group>] ["<name>"] is forbidden: <why>`, or
    /// `forbidden: <why>` for a request outside the resource tree; the
    /// details name the object.
    pub fn forbidden_on(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let message = match (qualified.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{qualified} is forbidden: {why}"),
            (false, false) => format!("{qualified} {name:?} is forbidden: {why}"),
        };
        let mut error = Self::new(403, "Forbidden", message);
        let mut details = serde_json::Map::new();
        for (field, value) in [("name", name), ("group", group), ("kind", resource)] {
            if !value.is_empty() {
                details.insert(field.to_string(), json!(value));
            }
        }
        error.details = Some(Value::Object(details));
        error
    }

    /// 403 about one object, as admission plugins refuse:
    /// `pods "web" is forbidden: why`.
    pub fn forbidden_object(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            rt.group_resource()
        ))
        .with_details(rt, name)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
        )
    }

    /// 410: a watch asked for history the server no longer keeps.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        super::json_response(code, &self.status())
    }
}
