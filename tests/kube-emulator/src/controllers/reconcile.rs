//! What every workload controller's reconcile loop shares: the error type
//! kube-runtime wants, the retry policy, status writes that skip no-ops,
//! Events, and the template hashes that name ReplicaSets and revisions.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::ClusterContext;

/// Failed reconciliations are retried after this long.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// Objects are looked at again this often even when nothing they watch
/// changed (pods that become available after minReadySeconds, orphans to
/// adopt), as the real controllers resync.
pub(super) const RESYNC: Duration = Duration::from_secs(5);

/// A reconciliation that failed (and is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub(super) struct Failure(pub anyhow::Error);

/// kube-runtime's error policy: log and retry soon.
pub(super) fn retry<K: Resource>(
    object: Arc<K>,
    error: &Failure,
    ctx: Arc<ClusterContext>,
) -> Action {
    tracing::warn!(
        "controller {}: {}/{}: {error}",
        ctx.name,
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    Action::requeue(RETRY)
}

/// A built-in kind a controller can watch.
pub(super) trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Object
{
}

/// What kube-runtime needs of the objects a controller watches.
pub(super) trait Object: DeserializeOwned + Debug + Send + Sync + 'static {}

impl<T: DeserializeOwned + Debug + Send + Sync + 'static> Object for T {}
impl<T: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Object> Watched for T {}

/// Runs the controller of `K` objects that own `C` objects (a change of
/// either wakes the owner), until its watches fail for good.
pub(super) async fn run_owning<K, C, Fut>(
    ctx: Arc<ClusterContext>,
    what: &str,
    reconcile: fn(Arc<K>, Arc<ClusterContext>) -> Fut,
) -> anyhow::Result<()>
where
    K: Watched,
    C: Watched,
    Fut: std::future::Future<Output = anyhow::Result<Action>> + Send + 'static,
{
    let client = ctx.client.clone();
    let stream = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .owns(Api::<C>::all(client), watcher::Config::default())
        .run(
            move |object, ctx| async move {
                match fresh(&ctx, object.as_ref()).await.map_err(Failure)? {
                    Some(object) => reconcile(Arc::new(object), ctx).await.map_err(Failure),
                    None => Ok(Action::await_change()),
                }
            },
            retry,
            ctx,
        );
    drive(what, stream).await
}

/// The object as the API server has it now, `None` if it is gone, was
/// replaced (another uid) or is being deleted. A controller acts on this
/// rather than on its cache: a child's deletion (the garbage collector's,
/// after its owner's) can wake the owner before the watch has told the
/// cache that the owner is gone, and acting on the stale owner would make
/// the children again.
pub(super) async fn fresh<K: Watched>(
    ctx: &ClusterContext,
    object: &K,
) -> anyhow::Result<Option<K>> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    Ok(api.get_opt(&object.name_any()).await?.filter(|current| {
        current.uid() == object.uid() && current.meta().deletion_timestamp.is_none()
    }))
}

/// Drains a controller's stream until it ends, which it only does when
/// the watches behind it fail for good.
pub(super) async fn drive<T, E: std::fmt::Debug>(
    what: &str,
    stream: impl Stream<Item = Result<T, E>>,
) -> anyhow::Result<()> {
    stream.for_each(|_| async {}).await;
    anyhow::bail!("the {what} controller stopped")
}

/// Writes `status` to the object's status subresource unless it holds that
/// already (a write that changes nothing would wake every watcher).
pub(super) async fn write_status<K>(api: &Api<K>, object: &K, status: Value) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let current = serde_json::to_value(object)?;
    let mut wanted = current["status"].clone();
    if !wanted.is_object() {
        wanted = Value::Object(serde_json::Map::new());
    }
    json_patch::merge(&mut wanted, &status);
    if wanted == current["status"] {
        return Ok(());
    }
    // Guarded by the resourceVersion the status was computed from, as the
    // real controllers' updates are: a status written meanwhile (by another
    // writer) is not overwritten with one computed from an older state.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": object.resource_version()},
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Records an Event about `object`, as the real controllers do; failing
/// to record one is only logged.
pub(super) async fn event<K>(
    ctx: &ClusterContext,
    object: &K,
    type_: &str,
    reason: &str,
    message: String,
) where
    K: Resource<DynamicType = ()>,
{
    let namespace = object.namespace().unwrap_or_else(|| "default".to_string());
    let now = Time(ctx.shared.clock.now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(object.name_any()),
            namespace: Some(namespace.clone()),
            uid: object.uid(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(type_.to_string()),
        source: Some(EventSource {
            component: Some("kube-controller-manager".to_string()),
            ..EventSource::default()
        }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!("controller {}: recording event {reason}: {error}", ctx.name);
    }
}

/// The alphabet of the API server's generated names and of template
/// hashes: no vowels, no confusable characters (`rand.SafeEncodeString`).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A hash of a pod template as Kubernetes renders it in names: FNV-1a 32
/// of the template's canonical JSON, safe-encoded (`<deploy>-<hash>`,
/// `<sts>-<hash>` revisions).
pub(super) fn template_hash(template: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()]))
        .collect()
}

/// Whether two pod templates are the same but for `added` labels and
/// annotations (those a controller puts on the copies it makes).
pub(super) fn same_template(
    made: &k8s_openapi::api::core::v1::PodTemplateSpec,
    wanted: &k8s_openapi::api::core::v1::PodTemplateSpec,
    added: &[&str],
) -> bool {
    let canonical = |template: &k8s_openapi::api::core::v1::PodTemplateSpec| -> Value {
        let mut value = serde_json::to_value(template).unwrap_or_default();
        // `get_mut`, not indexing: indexing a missing key inserts a null.
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            for map in ["labels", "annotations"] {
                if let Some(entries) = metadata.get_mut(map).and_then(Value::as_object_mut) {
                    entries.retain(|key, _| !added.contains(&key.as_str()));
                }
                if metadata.get(map).is_some_and(|entries| {
                    entries.as_object().is_none_or(serde_json::Map::is_empty)
                }) {
                    metadata.remove(map);
                }
            }
            if metadata.is_empty() {
                value.as_object_mut().map(|m| m.remove("metadata"));
            }
        }
        value
    };
    canonical(made) == canonical(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compare_without_what_controllers_add() {
        let made: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {"v": "1"}, "labels": {"app": "app", "deployment": "app-1"}},
            "spec": {"containers": [{"name": "main", "image": "i"}]},
        }))
        .unwrap();
        let wanted: k8s_openapi::api::core::v1::PodTemplateSpec =
            serde_json::from_value(serde_json::json!({
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "main", "image": "i"}]},
            }))
            .unwrap();
        assert!(same_template(&made, &wanted, &["v", "deployment"]));
        assert!(!same_template(&made, &wanted, &["deployment"]));
    }
}
