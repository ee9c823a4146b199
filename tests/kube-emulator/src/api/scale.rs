//! The `/scale` subresource of deployments, statefulsets, replicasets,
//! replicationcontrollers and deploymentconfigs:
//! an `autoscaling/v1` Scale view of `.spec.replicas`, as `kubectl scale`
//! and kube-rs' `Api::patch_scale` use it.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::admission::Write;
use super::error::{ApiError, ApiResult};
use super::json_response;
use super::objects::{check_resource_version, Location, Part, State};
use super::patch::{self, PatchKind};

pub fn handle(
    state: &mut State,
    at: Location,
    method: &Method,
    content_type: &str,
    body: &Bytes,
    write: &mut Write,
) -> ApiResult<Response> {
    let Location { rt, name, .. } = at;
    let current = state.get(rt, at.namespace, name)?;
    let view = scale_of(&current);
    let wanted = match *method {
        Method::GET => return Ok(json_response(StatusCode::OK, &view)),
        Method::PUT => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the Scale is not valid JSON: {e}")))?,
        Method::PATCH => {
            let kind = PatchKind::from_content_type(content_type)?;
            let patch: Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the patch is not valid JSON or YAML: {e}"))
            })?;
            let mut patched = view.clone();
            patch::apply(kind, &mut patched, &patch)?;
            patched
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on the scale subresource"
            )))
        }
    };
    check_resource_version(rt, &current, &wanted)?;
    let Some(replicas) = wanted["spec"]["replicas"].as_i64().filter(|r| *r >= 0) else {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec.replicas",
            "Invalid value: must be a non-negative integer",
        ));
    };
    let mut scaled = current.clone();
    scaled["spec"]["replicas"] = json!(replicas);
    let written = state.commit(rt, current, scaled, Part::Main, write)?;
    Ok(json_response(StatusCode::OK, &scale_of(&written)))
}

fn scale_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    // A LabelSelector, or the plain map of ReplicationControllers and
    // DeploymentConfigs.
    let selector_field = &object["spec"]["selector"];
    let selector = selector_field["matchLabels"]
        .as_object()
        .or_else(|| {
            selector_field
                .as_object()
                .filter(|map| map.values().all(Value::is_string))
        })
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}
