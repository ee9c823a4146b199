//! Small, generic operations on Kubernetes objects that every stage uses:
//! idempotent apply, create-if-missing, delete-and-wait, and watching for
//! a condition with a deadline.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The field manager for server-side apply.
pub const FIELD_MANAGER: &str = "mover-orchestrator";

/// Server-side applies `object` (it must carry its name): creates it, or
/// makes an existing one match. Running a migration again converges
/// instead of failing on "already exists".
pub async fn apply<K>(api: &Api<K>, object: &K) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Creates `object` unless one of that name exists; returns whichever is
/// there.
pub async fn create_if_missing<K>(api: &Api<K>, object: &K) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok(existing);
    }
    match api.create(&PostParams::default(), object).await {
        Err(e) if status_code(&e) == Some(409) => api.get(&name).await,
        other => other,
    }
}

/// Deletes `name` if it exists and waits until it is gone (finalizers
/// done), so that a new object of the same name can be created.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, timeout: Duration) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("deleting {name}: {e}")),
    }
    poll(api, name, timeout, "to be deleted", |found| {
        found.is_none().then_some(())
    })
    .await
}

/// Watches object `name` until `check` returns a value (it sees `None`
/// while the object does not exist), or fails after `timeout` saying what
/// it was waiting for and what the object's status and events showed.
///
/// A watch, not a poll: the answer comes as soon as the object changes,
/// and the API server is not asked twice a second per wait. A broken
/// watch (API server restarting, connection cut) is resumed with backoff;
/// errors never end the wait before its deadline.
pub async fn poll<K, T>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(Option<&K>) -> Option<T>,
) -> anyhow::Result<T>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    use futures_util::StreamExt as _;
    use kube::runtime::watcher::{watcher, Config, Event};
    use kube::runtime::WatchStreamExt as _;

    let config = Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).default_backoff());
    let mut last: Option<K> = None;
    let mut seen = false;
    let waited = tokio::time::timeout(timeout, async {
        while let Some(event) = events.next().await {
            let found = match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    seen = true;
                    Some(object)
                }
                Ok(Event::Delete(_)) => None,
                Ok(Event::InitDone) if !seen => None,
                Ok(Event::Init | Event::InitDone) => continue,
                Err(e) => {
                    tracing::debug!("watching {name} {what}: {e}");
                    continue;
                }
            };
            if let Some(value) = check(found.as_ref()) {
                return Some(value);
            }
            last = found;
        }
        None
    })
    .await;
    match waited {
        Ok(Some(value)) => Ok(value),
        _ => {
            let state = match &last {
                Some(object) => diagnosis(api, object).await,
                None => "it does not exist".to_string(),
            };
            anyhow::bail!(
                "timed out after {}s waiting for {name} {what}; {state}",
                timeout.as_secs()
            )
        }
    }
}

/// What an object's status and its latest events say, for a wait's error:
/// the phase, the conditions that are not True, and the last Warning or
/// Normal events (FailedScheduling, FailedMount, Multi-Attach, ...).
async fn diagnosis<K>(api: &Api<K>, object: &K) -> String
where
    K: Resource + Clone + Serialize,
{
    let value = serde_json::to_value(object).unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(phase) = value["status"]["phase"].as_str() {
        parts.push(format!("phase {phase}"));
    }
    for condition in value["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if condition["status"] != "True" {
            parts.push(format!(
                "{} {}{}",
                condition["type"].as_str().unwrap_or("?"),
                condition["reason"].as_str().unwrap_or_default(),
                condition["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    let meta = object.meta();
    let events: Api<Event> = match &meta.namespace {
        Some(ns) => Api::namespaced(api.clone().into_client(), ns),
        None => Api::all(api.clone().into_client()),
    };
    let selector = format!(
        "involvedObject.name={}",
        meta.name.as_deref().unwrap_or_default()
    );
    if let Ok(list) = events.list(&ListParams::default().fields(&selector)).await {
        let mut items = list.items;
        items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
        for event in items.iter().rev().take(3).rev() {
            parts.push(format!(
                "event {} {}: {}",
                event.type_.as_deref().unwrap_or_default(),
                event.reason.as_deref().unwrap_or_default(),
                event.message.as_deref().unwrap_or_default()
            ));
        }
    }
    if parts.is_empty() {
        "its status says nothing more".to_string()
    } else {
        format!("it shows: {}", parts.join("; "))
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
