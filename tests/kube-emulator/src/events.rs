//! Recording core/v1 Events about objects, as the real components do
//! through their event recorders: the PV controller about claims, the
//! scheduler, the attach/detach controller, the taint eviction controller
//! and the kubelet about pods. Failing to record one is logged, never
//! fatal, as a real recorder drops events it cannot send.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;

/// Who reports an event: the component (`default-scheduler`, `kubelet`,
/// ...) and, for node components, the node it runs on.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub component: &'a str,
    pub host: Option<&'a str>,
}

impl<'a> Reporter<'a> {
    pub fn new(component: &'a str) -> Self {
        Self {
            component,
            host: None,
        }
    }

    pub fn on_host(component: &'a str, host: &'a str) -> Self {
        Self {
            component,
            host: Some(host),
        }
    }
}

/// `Normal` or `Warning`, the two event types Kubernetes has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// Records an Event of `type_` and `reason` about `object` in its
/// namespace (`default` for cluster-scoped objects, as real recorders do).
pub async fn record<K>(
    client: &kube::Client,
    reporter: Reporter<'_>,
    object: &K,
    type_: Type,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    record_about(
        client,
        reporter,
        object.object_ref(&()),
        type_,
        reason,
        message,
    )
    .await;
}

/// Records an Event about one container of `pod`, as the kubelet does
/// (`involvedObject.fieldPath` names it: `spec.containers{name}`).
pub async fn record_container(
    client: &kube::Client,
    reporter: Reporter<'_>,
    pod: &k8s_openapi::api::core::v1::Pod,
    field_path: String,
    type_: Type,
    reason: &str,
    message: &str,
) {
    let mut involved = pod.object_ref(&());
    involved.field_path = Some(field_path);
    record_about(client, reporter, involved, type_, reason, message).await;
}

/// Events already recorded, by what makes two of them the same (the
/// involved object with its field path, source, type, reason and message):
/// the event's namespace, name and count. A repeat updates that event's
/// count and last time instead of adding one, as client-go's event
/// correlator does, so `kubectl get events` shows `(x4 over 10s)`.
type Seen = HashMap<String, (String, String, i32)>;

const MAX_SEEN: usize = 10_000;

fn seen() -> MutexGuard<'static, Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn record_about(
    client: &kube::Client,
    reporter: Reporter<'_>,
    involved: ObjectReference,
    type_: Type,
    reason: &str,
    message: &str,
) {
    let name = involved.name.clone().unwrap_or_default();
    let namespace = involved
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let now = Timestamp::now();
    let key = format!(
        "{}/{}/{}/{}|{}|{}|{}|{}|{message}",
        namespace,
        involved.uid.as_deref().unwrap_or_default(),
        name,
        involved.field_path.as_deref().unwrap_or_default(),
        reporter.component,
        reporter.host.unwrap_or_default(),
        type_.as_str(),
        reason,
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let repeat = seen().get(&key).cloned();
    if let Some((namespace, event, count)) = repeat {
        let patch = json!({"count": count + 1, "lastTimestamp": Time(now)});
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
        match events
            .patch(&event, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                seen().insert(key, (namespace, event, count + 1));
                return;
            }
            // Gone (its namespace deleted, say): recorded anew below.
            Err(error) => tracing::debug!("updating event {event}: {error}"),
        }
    }
    // Named as real recorders name them: the object and the time in
    // nanoseconds, in hex, so an object's events list in order.
    let event_name = format!("{name}.{:x}", now.as_nanosecond());
    let now = Time(now);
    let event = Event {
        metadata: ObjectMeta {
            name: Some(event_name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        type_: Some(type_.as_str().to_string()),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        source: Some(EventSource {
            component: Some(reporter.component.to_string()),
            host: reporter.host.map(str::to_string),
        }),
        reporting_component: Some(reporter.component.to_string()),
        reporting_instance: Some(
            reporter
                .host
                .map_or_else(|| reporter.component.to_string(), str::to_string),
        ),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => {
            let mut seen = seen();
            // Forgetting old events only costs a new one for a repeat.
            if seen.len() >= MAX_SEEN {
                seen.clear();
            }
            seen.insert(key, (namespace, event_name, 1));
        }
        Err(error) => tracing::warn!(
            "{}: recording event {reason} about {}: {error}",
            reporter.component,
            name
        ),
    }
}
