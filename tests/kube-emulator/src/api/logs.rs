//! `GET .../pods/{name}/log`: streams a container's log from the kubelet
//! (the `PodStreams` the server was given), as the real API server proxies it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::resources::ResourceType;
use super::Server;

pub async fn pod_log(
    server: Arc<Server>,
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let pod = server.lock().get(rt, namespace, name)?;
    let container = container(&pod, name, query.get("container").map(String::as_str))?;
    let follow = query.get("follow").is_some_and(|f| f == "true" || f == "1");
    let tail_lines = match query.get("tailLines") {
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "tailLines: invalid value {text:?}: must be a non-negative integer"
            ))
        })?),
        None => None,
    };
    let Some(kubelet) = server.kubelet.clone() else {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("no kubelet serves logs for pod {name} in this cluster"),
        ));
    };
    let stream = kubelet
        .logs(namespace, name, Some(&container), follow, tail_lines)
        .await
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The container a log request means: the one named (which must be in the
/// pod), or the pod's only container.
pub(super) fn container(pod: &Value, pod_name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match asked.filter(|a| !a.is_empty()) {
        Some(asked) if names.contains(&asked) => Ok(asked.to_string()),
        Some(asked) => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {pod_name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}
