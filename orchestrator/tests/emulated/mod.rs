//! The emulated clusters of the workload and hook tests: a Docker-less
//! pair (API servers only; the tests write what controllers and kubelets
//! would), with the source side as the orchestrator's [`Cluster`] and a
//! namespace to work in.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PostParams;
use kube::Api;
use kube_emulator::ClusterPair;
use orchestrator::clusters::Cluster;
use serde_json::json;

/// Keep all three alive for the test: dropping the pair stops the
/// clusters, dropping the directory removes their state.
pub struct Emulated {
    pub cluster: Cluster,
    pub _pair: ClusterPair,
    pub _dir: tempfile::TempDir,
}

/// Starts a Docker-less pair and creates `namespace` on the source.
pub async fn source_with_namespace(namespace: &str) -> Emulated {
    start(namespace, false).await
}

/// Starts the pair (with Docker: kubelets that run pods) and creates
/// `namespace` on the source.
pub async fn start(namespace: &str, docker: bool) -> Emulated {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), docker)
        .await
        .unwrap();
    let cluster = Cluster {
        side: "source",
        context: "source".into(),
        client: pair.source.client.clone(),
    };
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    Emulated {
        cluster,
        _pair: pair,
        _dir: dir,
    }
}

/// Writes `status` into object `name`'s status subresource, as the
/// controller or kubelet the Docker-less emulator lacks would.
pub async fn set_status<K>(api: &Api<K>, name: &str, status: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Asks `probe` every 100 ms until it returns a value, for at most a
/// minute: the emulator's controllers act asynchronously, as real ones
/// do. (The library never waits; its tests may.)
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What a kubelet writes for `pod` whose (only) container is in `state`
/// (`{"running": {}}`, `{"terminated": {...}}`, ...), ready or not.
pub async fn kubelet_status(
    cluster: &Cluster,
    pod: &Pod,
    phase: &str,
    state: serde_json::Value,
    ready: bool,
) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready_text = if ready { "True" } else { "False" };
    let spec = pod.spec.as_ref().expect("a pod has a spec");
    let container = &spec.containers[0];
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    set_status(
        &Api::<Pod>::namespaced(cluster.client.clone(), namespace),
        pod.metadata.name.as_deref().unwrap_or_default(),
        json!({"phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": ready_text, "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": container.name, "ready": ready, "restartCount": 0,
                "image": container.image, "imageID": "", "state": state}]}),
    )
    .await;
}
