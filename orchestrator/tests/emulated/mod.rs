//! The emulated clusters of the workload and hook tests: a Docker-less
//! pair (API servers only; the tests write what controllers and kubelets
//! would), with the source side as the orchestrator's [`Cluster`] and a
//! namespace to work in.

use k8s_openapi::api::core::v1::Namespace;
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

/// Starts the pair and creates `namespace` on the source.
pub async fn source_with_namespace(namespace: &str) -> Emulated {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
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
