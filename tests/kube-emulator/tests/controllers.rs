//! The workload controllers against real pods: Deployments (rollouts,
//! scaling, Recreate, garbage collection, and a real kubectl's `rollout
//! status`, `scale` and `rollout restart`), StatefulSets, Jobs, CronJobs,
//! DaemonSets, ReplicationControllers and DeploymentConfigs, and image
//! pulls from a loopback registry.
//!
//! Each test function runs one controller family on its own cluster (own
//! Docker network, own state): every `#[tokio::test]` has its own runtime,
//! which a cluster's tasks cannot outlive, and a cluster starts in well
//! under a second, so sharing one would save little and couple the tests.

mod controller_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use controller_support::eventually;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, ReplicationController};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt as _};
use kube_emulator::cluster::instance_id;
use kube_emulator::testing::busybox_image;
use kube_emulator::{Cluster, ClusterOptions, Shared};
use serde_json::{json, Value};

/// One emulated cluster with Docker and its state directory.
struct TestCluster {
    cluster: Cluster,
    state: tempfile::TempDir,
}

impl TestCluster {
    async fn start(name: &str) -> Self {
        busybox_image().await.expect("the busybox test image");
        let state = tempfile::tempdir().expect("a state directory");
        let shared = Arc::new(Shared {
            instance: instance_id(),
            velero_bucket: state.path().join("velero-bucket"),
            ..Shared::default()
        });
        let options = ClusterOptions {
            name: name.to_string(),
            docker: true,
        };
        let cluster = Cluster::start(&options, state.path(), shared)
            .await
            .expect("starting the emulated cluster");
        Self { cluster, state }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), "default")
    }

    async fn create<K>(&self, object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        K::DynamicType: Default,
    {
        let object: K = serde_json::from_value(object).expect("a well-formed test object");
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .expect("creating a test object")
    }

    async fn patch<K>(&self, name: &str, patch: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        self.api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching a test object")
    }

    /// Polls `K` object `name` until `check` passes, failing with what was
    /// last seen.
    async fn until<K>(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        K::DynamicType: Default,
    {
        let api = self.api::<K>();
        eventually(what, || async {
            match api.get_opt(name).await {
                Ok(Some(object)) if check(&object) => Ok(object),
                Ok(object) => Err(serde_json::to_string(&object).unwrap_or_default()),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Polls the pods of `selector` until `check` passes on them.
    async fn pods_until(&self, selector: &str, what: &str, check: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
        let api = self.api::<Pod>();
        eventually(what, || async {
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|error| error.to_string())?
                .items;
            if check(&pods) {
                Ok(pods)
            } else {
                Err(summary(&pods))
            }
        })
        .await
    }

    /// A kubeconfig for this cluster, written in its state directory.
    fn kubeconfig(&self) -> std::path::PathBuf {
        let path = self.state.path().join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: emu\nclusters:\n- name: emu\n  cluster:\n    server: {}\nusers:\n- name: emu\n  user:\n    token: emulator\ncontexts:\n- name: emu\n  context:\n    cluster: emu\n    user: emu\n    namespace: default\n",
            self.cluster.api_url
        );
        std::fs::write(&path, config).expect("writing the kubeconfig");
        path
    }
}

/// `name phase ready` of each pod, for failure messages.
fn summary(pods: &[Pod]) -> String {
    pods.iter()
        .map(|pod| {
            format!(
                "{} {} ready={} deleting={}",
                pod.name_any(),
                phase(pod),
                ready(pod),
                pod.metadata.deletion_timestamp.is_some()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// Live pods (not being deleted).
fn live(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

fn running_ready(pods: &[Pod]) -> usize {
    live(pods)
        .into_iter()
        .filter(|pod| phase(pod) == "Running" && ready(pod))
        .count()
}

/// A pod template running the busybox image with `command`.
async fn template(labels: Value, command: &str) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": busybox_image().await.expect("the busybox test image"),
                "command": ["sh", "-c", command],
            }],
        },
    })
}

fn deployment_complete(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let replicas = d.spec.replicas.unwrap_or(1);
    let progressing = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("NewReplicaSetAvailable")
    });
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && progressing
}

async fn replica_sets(cluster: &TestCluster, selector: &str) -> Vec<ReplicaSet> {
    cluster
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing ReplicaSets")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_scale_and_recreate() {
    let cluster = TestCluster::start("deployments").await;
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(json!({"app": "web"}), "sleep 3600").await,
            },
        }))
        .await;
    let done = cluster
        .until::<Deployment>("web", "the first rollout completes", deployment_complete)
        .await;
    let available = done.status.as_ref().unwrap().conditions.iter().flatten()
        .find(|c| c.type_.as_deref() == Some("Available")).cloned().unwrap();
    assert_eq!(available.status.as_deref(), Some("True"));
    assert_eq!(done.annotations().get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision"], "1");
    let pods = cluster.pods_until("app=web", "two running pods", |pods| running_ready(pods) == 2).await;
    for pod in &pods {
        assert!(pod.name_any().starts_with(&format!("web-{hash}-")), "{}", pod.name_any());
        assert_eq!(pod.labels()["pod-template-hash"], hash);
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ReplicaSet", rs.name_any().as_str(), Some(true)));
    }

    // Scale to 0 (as a quiesce does) and back.
    cluster.patch::<Deployment>("web", json!({"spec": {"replicas": 0}})).await;
    cluster.pods_until("app=web", "no pods", |pods| live(pods).is_empty()).await;
    cluster.until::<Deployment>("web", "scaled to 0", |d| deployment_complete(d) && d.status.as_ref().unwrap().replicas == Some(0)).await;
    cluster.patch::<Deployment>("web", json!({"spec": {"replicas": 2}})).await;
    cluster.until::<Deployment>("web", "scaled back to 2", deployment_complete).await;
    assert_eq!(replica_sets(&cluster, "app=web").await.len(), 1, "scaling makes no new ReplicaSet");

    // A new template: a new ReplicaSet, the old one scaled to 0 and kept.
    cluster
        .patch::<Deployment>("web", json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}))
        .await;
    cluster.until::<Deployment>("web", "the second rollout completes", |d| {
        deployment_complete(d) && d.annotations().get("deployment.kubernetes.io/revision").map(String::as_str) == Some("2")
    }).await;
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 2);
    let old = sets.iter().find(|s| s.labels()["pod-template-hash"] == hash).unwrap();
    let new = sets.iter().find(|s| s.labels()["pod-template-hash"] != hash).unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    assert_eq!(new.spec.replicas, Some(2));
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");
    let pods = cluster.pods_until("app=web", "only new pods", |pods| {
        live(pods).len() == 2 && live(pods).iter().all(|p| p.labels()["pod-template-hash"] != hash)
    }).await;
    assert_eq!(running_ready(&pods), 2);

    // Recreate: every old pod is gone before a new one is made.
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "batch"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "batch"}},
                "template": template(json!({"app": "batch"}), "sleep 3600").await,
            },
        }))
        .await;
    cluster.until::<Deployment>("batch", "the Recreate deployment is up", deployment_complete).await;
    let first: Vec<String> = cluster.pods_until("app=batch", "two pods", |p| live(p).len() == 2).await.iter().map(|p| p.name_any()).collect();
    cluster
        .patch::<Deployment>("batch", json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}))
        .await;
    // Watch every pod list until the new rollout is done: old and new
    // pods never live together.
    let api = cluster.api::<Pod>();
    eventually("the Recreate rollout completes without overlap", || async {
        let pods = api.list(&ListParams::default().labels("app=batch")).await.map_err(|e| e.to_string())?.items;
        let names: Vec<String> = live(&pods).iter().map(|p| p.name_any()).collect();
        let old = names.iter().filter(|n| first.contains(n)).count();
        let new = names.len() - old;
        assert!(old == 0 || new == 0, "old and new pods together: {}", summary(&pods));
        let d: Deployment = cluster.api().get("batch").await.map_err(|e| e.to_string())?;
        if new == 2 && deployment_complete(&d) { Ok(()) } else { Err(summary(&pods)) }
    }).await;

    // Deleting a Deployment removes its ReplicaSets and pods; with
    // propagationPolicy=Orphan they stay.
    cluster.api::<Deployment>().delete("batch", &DeleteParams::default()).await.unwrap();
    cluster.pods_until("app=batch", "the pods of the deleted deployment are gone", |p| p.is_empty()).await;
    assert!(replica_sets(&cluster, "app=batch").await.is_empty());
    cluster.api::<Deployment>().delete("web", &DeleteParams::orphan()).await.unwrap();
    let deployments = cluster.api::<Deployment>();
    eventually("the orphaning delete completes", || async {
        match deployments.get_opt("web").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(replica_sets(&cluster, "app=web").await.len(), 2, "orphaned ReplicaSets stay");
    let pods = cluster.api::<Pod>().list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(live(&pods).len(), 2, "orphaned pods stay: {}", summary(&pods));
}
