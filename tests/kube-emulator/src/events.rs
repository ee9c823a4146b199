//! Recording core/v1 Events about objects, as the real components do
//! through their event recorders: the PV controller about claims, the
//! scheduler, the attach/detach controller, the taint eviction controller
//! and the kubelet about pods. Failing to record one is logged, never
//! fatal, as a real recorder drops events it cannot send.

use k8s_openapi::api::core::v1::{Event, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt as _};

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
    let namespace = object.namespace().unwrap_or_else(|| "default".to_string());
    let now = Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: object.object_ref(&()),
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
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(
            "{}: recording event {reason} about {}: {error}",
            reporter.component,
            object.name_any()
        );
    }
}
