//! How a failure reaches the page: an HTTP status, a message to show next
//! to what the request was about, and the messages that belong to single
//! form fields. A refusal of the host's API server keeps its status (401,
//! 403, 404, 409, 422), so the page tells a lapsed login from a missing
//! right; the server's own words are kept.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A failed console request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Messages by field: the form's field names, or, from the API
    /// server's 422 causes, the field paths it names.
    pub fields: BTreeMap<String, String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }

    /// A request the user can fix: these fields are wrong.
    pub fn invalid(fields: BTreeMap<String, String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "some fields need fixing".into(),
            fields,
        }
    }

    /// The failure of a request to the host cluster's API server, which
    /// `what` describes ("listing MigrationClusters").
    pub fn kube(what: &str, error: kube::Error) -> Self {
        let kube::Error::Api(status) = error else {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("{what}: the host cluster's API server: {error}"),
            );
        };
        let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY);
        let message = match code {
            StatusCode::UNAUTHORIZED => format!(
                "{what}: the host cluster no longer accepts your token ({}); log in again",
                status.message
            ),
            StatusCode::FORBIDDEN => format!("{what}: not allowed: {}", status.message),
            _ => format!("{what}: {}", status.message),
        };
        let fields = status
            .details
            .iter()
            .flat_map(|details| &details.causes)
            .filter(|cause| !cause.field.is_empty())
            .map(|cause| (cause.field.clone(), cause.message.clone()))
            .collect();
        ApiError {
            status: code,
            message,
            fields,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"message": self.message, "fields": self.fields});
        (self.status, Json(body)).into_response()
    }
}

/// `/api/*` paths that name nothing.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such console API")
}
