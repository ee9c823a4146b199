//! `GET /api/watch/{clusters|plans|migrations}`: a resource kind as
//! server-sent events, fed by a watch made with the user's token, so a
//! page re-renders from each object as the controller changes it.
//!
//! Events: `reset` (a (re)list begins: forget what you hold), `apply`
//! (an object, whole), `ready` (the list is complete: draw), `delete`
//! (an object is gone), `problem` (the watch failed: `{status, message}`;
//! the watcher tries again with backoff). The objects are the API's,
//! without `managedFields`.
//!
//! `?name=NAME` follows one object; `?plan=PLAN` the Migrations of a plan.
//! The user's right to list the kind is checked before the stream starts,
//! so a 401 or 403 arrives as the answer's status, not as an event.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::User;
use super::error::ApiError;
use super::Console;
use crate::controller::cluster::MigrationCluster;
use crate::controller::plan::MigrationPlan;
use crate::migration::PLAN_LABEL;

/// Which objects of the kind to follow.
#[derive(Deserialize, Default)]
pub struct Filter {
    name: Option<String>,
    plan: Option<String>,
}

/// The resource a watch path names.
pub fn resource(kind: &str) -> Option<ApiResource> {
    match kind {
        "clusters" => Some(ApiResource::erase::<MigrationCluster>(&())),
        "plans" => Some(ApiResource::erase::<MigrationPlan>(&())),
        "migrations" => Some(crate::migration::resource()),
        _ => None,
    }
}

pub async fn watch(
    State(console): State<Console>,
    user: User,
    Path(kind): Path<String>,
    Query(filter): Query<Filter>,
) -> Result<impl IntoResponse, ApiError> {
    let resource = resource(&kind)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no resource {kind:?}")))?;
    let api = Api::<DynamicObject>::namespaced_with(user.client, console.namespace(), &resource);
    let mut config = watcher::Config::default();
    if let Some(name) = &filter.name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    if let Some(plan) = &filter.plan {
        config = config.labels(&format!("{PLAN_LABEL}={plan}"));
    }
    let mut check = ListParams::default().limit(1);
    check.field_selector = config.field_selector.clone();
    check.label_selector = config.label_selector.clone();
    api.list(&check)
        .await
        .map_err(|e| ApiError::kube(&format!("listing {}", resource.plural), e))?;
    let events = watcher::watcher(api, config)
        .default_backoff()
        .map(|event| Ok::<_, std::convert::Infallible>(to_event(event)));
    // Proxies that buffer answers (nginx's Ingress) would hold events
    // back; this header asks them not to.
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    ))
}

/// The server-sent event of a watcher event.
fn to_event(event: Result<watcher::Event<DynamicObject>, watcher::Error>) -> Event {
    match event {
        Ok(watcher::Event::Init) => Event::default().event("reset").data("{}"),
        Ok(watcher::Event::InitDone) => Event::default().event("ready").data("{}"),
        Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
            object_event("apply", object)
        }
        Ok(watcher::Event::Delete(object)) => object_event("delete", object),
        Err(e) => {
            let status = match &e {
                watcher::Error::InitialListFailed(kube::Error::Api(s))
                | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code,
                watcher::Error::WatchError(s) => s.code,
                _ => 0,
            };
            Event::default()
                .event("problem")
                .data(json!({"status": status, "message": e.to_string()}).to_string())
        }
    }
}

fn object_event(name: &str, mut object: DynamicObject) -> Event {
    object.metadata.managed_fields = None;
    let value = serde_json::to_value(&object).unwrap_or(Value::Null);
    Event::default().event(name).data(value.to_string())
}
