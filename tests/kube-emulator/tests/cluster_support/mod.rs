//! What the kubelet, scheduling and storage tests share: one emulated
//! cluster (with Docker unless a test says otherwise), pods of the busybox
//! test image, and waiting for pods and Events.

#![allow(dead_code)] // Each test file uses its own part of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{
    Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use kube_emulator::cluster::instance_id;
use kube_emulator::docker;
use kube_emulator::testing::{busybox_image, wait_for, WAIT_LIMIT};
use kube_emulator::{Cluster, ClusterOptions, Shared};
use serde_json::json;

/// One emulated cluster with Docker, and its state directory (removed
/// after the cluster, whose drop removes its containers and network).
pub struct TestCluster {
    pub cluster: Cluster,
    _state: tempfile::TempDir,
}

impl TestCluster {
    /// A cluster named `name` with Docker and the default policy.
    pub async fn with_docker(name: &str) -> anyhow::Result<Self> {
        Self::start(ClusterOptions::new(name, true)).await
    }

    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        if options.docker {
            busybox_image().await?;
        }
        let state = tempfile::tempdir()?;
        let shared = Arc::new(Shared {
            instance: instance_id(),
            velero_bucket: state.path().join("velero-bucket"),
            ..Shared::default()
        });
        let cluster = Cluster::start(&options, state.path(), shared).await?;
        let test = Self {
            cluster,
            _state: state,
        };
        if options.docker {
            // The kubelet registers the nodes once it runs.
            for index in [1, 2] {
                let nodes = test.cluster_api::<Node>();
                wait_for(
                    &nodes,
                    &test.node(index),
                    "the node to be registered",
                    |node| {
                        node.status
                            .as_ref()
                            .is_some_and(|status| status.allocatable.is_some())
                    },
                )
                .await?;
            }
        }
        Ok(test)
    }

    /// The name of the cluster's node `index` (1 or 2).
    pub fn node(&self, index: usize) -> String {
        format!("{}-node-{index}", self.cluster.name)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), "default")
    }

    pub fn cluster_api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>,
        K::DynamicType: Default,
    {
        Api::all(self.cluster.client.clone())
    }

    pub async fn create<K>(&self, object: serde_json::Value) -> anyhow::Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        K::DynamicType: Default,
    {
        let object: K = serde_json::from_value(object).context("a test object")?;
        Ok(self
            .api::<K>()
            .create(&PostParams::default(), &object)
            .await?)
    }

    /// Creates a pod running the busybox image with `spec` (containers
    /// without an image get busybox).
    pub async fn pod(&self, name: &str, mut spec: serde_json::Value) -> anyhow::Result<Pod> {
        let image = busybox_image().await?;
        for list in ["containers", "initContainers"] {
            for container in spec[list].as_array_mut().into_iter().flatten() {
                if container.get("image").is_none() {
                    container["image"] = json!(image);
                }
            }
        }
        self.create(json!({ "metadata": { "name": name }, "spec": spec }))
            .await
    }

    /// The host directory of the PV bound to claim `name`.
    pub async fn claim_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let claim: PersistentVolumeClaim = self.api().get(name).await?;
        let volume_name = claim
            .spec
            .and_then(|spec| spec.volume_name)
            .context("claim not bound")?;
        let volume = self
            .cluster_api::<PersistentVolume>()
            .get(&volume_name)
            .await?;
        let path = volume
            .spec
            .and_then(|spec| spec.host_path)
            .context("PV without hostPath")?
            .path;
        Ok(PathBuf::from(path))
    }

    /// The Docker containers of this cluster (of the pod with `uid`, if given).
    pub async fn containers(&self, uid: Option<&str>) -> anyhow::Result<Vec<String>> {
        let mut labels = vec![format!("kube-emu.cluster={}", self.cluster.name)];
        labels.extend(uid.map(|uid| format!("io.kubernetes.pod.uid={uid}")));
        Ok(docker::containers(&self.cluster.context.shared.instance, &labels).await?)
    }

    /// A nodeSelector for node `index`, to merge into a pod spec with
    /// [`placed`].
    pub fn on_node(&self, index: usize) -> serde_json::Value {
        json!({ "nodeSelector": { "kubernetes.io/hostname": self.node(index) } })
    }

    pub async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        wait_for(&self.api::<Pod>(), name, what, condition).await
    }

    pub async fn running(&self, name: &str) -> anyhow::Result<Pod> {
        self.wait_pod(name, "the pod to run", |pod| phase(pod) == "Running")
            .await
    }

    /// Waits until the pod's PodScheduled condition is False with
    /// `reason`, and returns the condition.
    pub async fn unschedulable(&self, name: &str) -> anyhow::Result<PodCondition> {
        let pod = self
            .wait_pod(name, "the pod to be Unschedulable", |pod| {
                not_scheduled(pod).is_some()
            })
            .await?;
        Ok(not_scheduled(&pod).unwrap_or_default())
    }

    /// Deletes pods and waits until they are gone.
    pub async fn delete_pods(&self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            self.api::<Pod>()
                .delete(name, &DeleteParams::default())
                .await?;
        }
        self.wait_gone(names).await
    }

    /// Waits until the pods are gone.
    pub async fn wait_gone(&self, names: &[&str]) -> anyhow::Result<()> {
        let pods = self.api::<Pod>();
        let gone = tokio::time::timeout(WAIT_LIMIT, async {
            for name in names {
                while pods.get_opt(name).await?.is_some() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            anyhow::Ok(())
        })
        .await;
        gone.with_context(|| format!("pods {names:?} are still there"))?
    }

    /// Merge-patches a node's spec (`taints`, `unschedulable`).
    pub async fn patch_node(&self, index: usize, spec: serde_json::Value) -> anyhow::Result<()> {
        self.cluster_api::<Node>()
            .patch(
                &self.node(index),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await?;
        Ok(())
    }

    /// Waits for an Event with `reason` about the object `name` and
    /// returns it.
    pub async fn event(&self, name: &str, reason: &str) -> anyhow::Result<Event> {
        let events = self.api::<Event>();
        let found = tokio::time::timeout(WAIT_LIMIT, async {
            loop {
                let listed = events.list(&ListParams::default()).await?;
                if let Some(event) = listed.items.into_iter().find(|event| {
                    event.involved_object.name.as_deref() == Some(name)
                        && event.reason.as_deref() == Some(reason)
                }) {
                    return anyhow::Ok(event);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.with_context(|| format!("no {reason} Event about {name}"))?
    }
}

/// A container that sleeps (for pods that should keep running).
pub fn sleeper() -> serde_json::Value {
    json!({ "name": "main", "command": ["sleep", "3600"] })
}

/// `spec` with the fields of `placement` (nodeSelector, nodeName,
/// tolerations, ...) added.
pub fn placed(mut spec: serde_json::Value, placement: serde_json::Value) -> serde_json::Value {
    if let (Some(spec), Some(placement)) = (spec.as_object_mut(), placement.as_object()) {
        spec.extend(placement.clone());
    }
    spec
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .unwrap_or("")
}

/// The pod's PodScheduled condition, if it says the pod is not scheduled.
pub fn not_scheduled(pod: &Pod) -> Option<PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False")
        .cloned()
}

/// The waiting reason of the pod's first container.
pub fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// Who reported an Event.
pub fn source(event: &Event) -> &str {
    event
        .source
        .as_ref()
        .and_then(|source| source.component.as_deref())
        .unwrap_or("")
}
