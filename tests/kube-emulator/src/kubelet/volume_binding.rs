//! The scheduler's view of a pod's PersistentVolumeClaims, as its
//! VolumeBinding and VolumeRestrictions plugins take it:
//!
//! - before looking at nodes: every claim must exist and not be being
//!   deleted, and an unbound claim must be of a WaitForFirstConsumer class
//!   (an unbound Immediate claim is the PV controller's to bind first);
//! - per node: a bound volume's node affinity must accept the node, a
//!   claim waiting for its first consumer that already has a selected node
//!   only fits that node, and a ReadWriteOncePod claim no other pod uses;
//! - once a node is chosen (PreBind): the claims waiting for a consumer get
//!   the node in their `volume.kubernetes.io/selected-node` annotation, and
//!   the pod is bound only when the PV controller (the binder) has bound
//!   them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use crate::binder::SELECTED_NODE_ANNOTATION;
use crate::placement::affinity;

/// How long PreBind waits for the binder to bind a claim it asked for.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
const BIND_POLL: Duration = Duration::from_millis(100);

const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
const PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub(super) const READ_WRITE_ONCE_POD_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// A pod's claims, as the scheduler needs them.
#[derive(Default)]
pub(super) struct PodVolumes {
    /// The volumes of the bound claims (`None`: the claim names a volume
    /// that does not exist).
    bound: Vec<Option<PersistentVolume>>,
    /// Unbound claims of WaitForFirstConsumer classes.
    delayed: Vec<PersistentVolumeClaim>,
    /// Names of the claims with the ReadWriteOncePod access mode.
    read_write_once_pod: Vec<String>,
}

/// The names of the claims the pod's volumes use.
pub(super) fn claim_names(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|claim| claim.claim_name.as_str())
}

impl PodVolumes {
    /// Looks up the pod's claims, their classes and volumes. `Err` is the
    /// reason no node can take the pod (the PreFilter message).
    pub(super) async fn of(client: &kube::Client, pod: &Pod) -> Result<Self, String> {
        let namespace = pod.namespace().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        let failed = |error: kube::Error| error.to_string();
        let mut volumes = PodVolumes::default();
        let mut unbound_immediate = false;
        for name in claim_names(pod) {
            let claim = claims
                .get_opt(name)
                .await
                .map_err(failed)?
                .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let spec = claim.spec.clone().unwrap_or_default();
            if spec
                .access_modes
                .iter()
                .flatten()
                .any(|mode| mode == "ReadWriteOncePod")
            {
                volumes.read_write_once_pod.push(name.to_string());
            }
            match spec.volume_name.as_deref().filter(|name| !name.is_empty()) {
                Some(volume) => volumes.bound.push(
                    Api::<PersistentVolume>::all(client.clone())
                        .get_opt(volume)
                        .await
                        .map_err(failed)?,
                ),
                None if waits_for_first_consumer(client, &claim)
                    .await
                    .map_err(failed)? =>
                {
                    volumes.delayed.push(claim)
                }
                None => unbound_immediate = true,
            }
        }
        if unbound_immediate {
            return Err(UNBOUND_IMMEDIATE.to_string());
        }
        Ok(volumes)
    }

    /// The VolumeRestrictions filter: whether another pod (of `others`,
    /// the pods assigned to nodes) already uses one of the pod's
    /// ReadWriteOncePod claims.
    pub(super) fn read_write_once_pod_conflict<'a>(
        &self,
        pod: &Pod,
        mut others: impl Iterator<Item = &'a Pod>,
    ) -> bool {
        let namespace = pod.namespace();
        !self.read_write_once_pod.is_empty()
            && others.any(|other| {
                other.uid() != pod.uid()
                    && other.namespace() == namespace
                    && claim_names(other)
                        .any(|claim| self.read_write_once_pod.iter().any(|rwop| rwop == claim))
            })
    }

    /// The VolumeBinding filter's reasons why `node` cannot take the pod.
    pub(super) fn binding_conflicts(&self, node: &Node) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        let existing = self.bound.iter().flatten();
        if existing
            .clone()
            .any(|volume| !affinity::volume_fits(volume, node))
        {
            reasons.push(NODE_CONFLICT);
        }
        let name = node.name_any();
        if self.delayed.iter().any(|claim| {
            claim
                .annotations()
                .get(SELECTED_NODE_ANNOTATION)
                .is_some_and(|selected| *selected != name)
        }) {
            reasons.push(BIND_CONFLICT);
        }
        if self.bound.iter().any(Option::is_none) {
            reasons.push(PV_NOT_EXIST);
        }
        reasons
    }

    /// PreBind: asks for the pod's delayed claims to be provisioned on
    /// `node` and waits until the binder has bound them. `Err` is the
    /// scheduler's message when it gave up.
    pub(super) async fn bind(&self, client: &kube::Client, node: &str) -> Result<(), String> {
        let failed = |error: kube::Error| {
            format!("running PreBind plugin \"VolumeBinding\": binding volumes: {error}")
        };
        for claim in &self.delayed {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
            if !claim.annotations().contains_key(SELECTED_NODE_ANNOTATION) {
                let patch = serde_json::json!({ "metadata": { "annotations": {
                    SELECTED_NODE_ANNOTATION: node,
                } } });
                claims
                    .patch(
                        &claim.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(failed)?;
            }
            let bound = tokio::time::timeout(BIND_TIMEOUT, async {
                loop {
                    let current = claims.get(&claim.name_any()).await?;
                    if current
                        .status
                        .as_ref()
                        .and_then(|status| status.phase.as_deref())
                        == Some("Bound")
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(BIND_POLL).await;
                }
            })
            .await;
            match bound {
                Ok(result) => result.map_err(failed)?,
                Err(_) => {
                    return Err(
                        "running PreBind plugin \"VolumeBinding\": binding volumes: \
                         timed out waiting for the condition"
                            .to_string(),
                    )
                }
            }
        }
        Ok(())
    }
}

/// Whether the claim's class binds it only once a pod using it is
/// scheduled. A claim without a class, or of a class that does not exist,
/// binds immediately (or never).
async fn waits_for_first_consumer(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
) -> kube::Result<bool> {
    let Some(class) = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.as_deref())
        .filter(|class| !class.is_empty())
    else {
        return Ok(false);
    };
    Ok(Api::<StorageClass>::all(client.clone())
        .get_opt(class)
        .await?
        .and_then(|class| class.volume_binding_mode)
        .as_deref()
        == Some("WaitForFirstConsumer"))
}
