//! Which pods still use a PVC: after a quiesce the engine waits until
//! none does before the final copy (a copy of a volume something still
//! writes is not final), and preflight names every PVC's users.
//!
//! A pod uses a claim through a `persistentVolumeClaim` volume or through
//! a generic ephemeral volume, whose claim Kubernetes names
//! `<pod>-<volume>`. A pod counts until it is finished (phase Succeeded or
//! Failed) or gone: one with a deletionTimestamp may still be writing
//! during its grace period. The migration's own transfer pods (the
//! senders, which mount the PVCs read-only) are not users.

use std::collections::BTreeSet;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use crate::clusters::Cluster;
use crate::names::TRANSFER_LABEL;

/// A pod that mounts some of the PVCs asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUse {
    pub pod: String,
    /// The asked-about claims it mounts, sorted.
    pub pvcs: Vec<String>,
    pub node: Option<String>,
    /// `Pending`, `Running`, or `Unknown`.
    pub phase: String,
    /// It has a deletionTimestamp and is in its grace period.
    pub terminating: bool,
}

/// The claims `pod` mounts, explicit and ephemeral.
pub fn claims(pod: &Pod) -> BTreeSet<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| {
            if let Some(claim) = &volume.persistent_volume_claim {
                Some(claim.claim_name.clone())
            } else {
                volume
                    .ephemeral
                    .as_ref()
                    .map(|_| format!("{name}-{}", volume.name))
            }
        })
        .collect()
}

/// Succeeded and Failed pods run nothing more.
pub fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The migration's own pods (any migration's), which are not users.
pub fn is_transfer_pod(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(TRANSFER_LABEL))
}

/// The pure core of [`pods_using`]: the unfinished, non-transfer pods of
/// `pods` that mount any of `pvcs`, sorted by name.
pub fn users(pods: &[Pod], pvcs: &[String]) -> Vec<PodUse> {
    let wanted: BTreeSet<&str> = pvcs.iter().map(String::as_str).collect();
    let mut uses: Vec<PodUse> = pods
        .iter()
        .filter(|pod| !finished(pod) && !is_transfer_pod(pod))
        .filter_map(|pod| {
            let pvcs: Vec<String> = claims(pod)
                .into_iter()
                .filter(|claim| wanted.contains(claim.as_str()))
                .collect();
            (!pvcs.is_empty()).then(|| PodUse {
                pod: pod.metadata.name.clone().unwrap_or_default(),
                pvcs,
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                phase: pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Pending".into()),
                terminating: pod.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    uses.sort_by(|a, b| a.pod.cmp(&b.pod));
    uses
}

/// The PVCs of `pvcs` that no pod of `uses` mounts, in the order given:
/// preflight reports them as "no users" (their data is at rest, and a
/// sender can run on any node).
pub fn unused<'a>(pvcs: &'a [String], uses: &[PodUse]) -> Vec<&'a str> {
    let used: BTreeSet<&str> = uses
        .iter()
        .flat_map(|u| u.pvcs.iter().map(String::as_str))
        .collect();
    pvcs.iter()
        .map(String::as_str)
        .filter(|pvc| !used.contains(pvc))
        .collect()
}

/// The pods of `namespace` that still use any of `pvcs` (see the module
/// doc). Empty means the claims are at rest.
pub async fn pods_using(
    cluster: &Cluster,
    namespace: &str,
    pvcs: &[String],
) -> anyhow::Result<Vec<PodUse>> {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("{}: listing pods in {namespace}", cluster.describe()))?;
    Ok(users(&pods.items, pvcs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, phase: &str, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                node_name: Some("node-a".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        }
    }

    fn claim(volume: &str, claim: &str) -> Volume {
        Volume {
            name: volume.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Volume::default()
        }
    }

    fn ephemeral(volume: &str) -> Volume {
        Volume {
            name: volume.into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Volume::default()
        }
    }

    #[test]
    fn users_are_unfinished_non_transfer_pods_mounting_the_claims() {
        let mut terminating = pod("old", "Running", vec![claim("d", "data")]);
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        let mut sender = pod("mover-sender-data", "Running", vec![claim("s", "data")]);
        sender.metadata.labels = Some([(TRANSFER_LABEL.into(), "m1".into())].into());
        let pods = [
            pod(
                "web",
                "Running",
                vec![claim("d", "data"), claim("l", "logs")],
            ),
            pod("done", "Succeeded", vec![claim("d", "data")]),
            pod("crashed", "Failed", vec![claim("d", "data")]),
            pod("cache-0", "Pending", vec![ephemeral("scratch")]),
            pod("other", "Running", vec![claim("d", "elsewhere")]),
            terminating,
            sender,
        ];
        let pvcs = ["data".to_string(), "cache-0-scratch".into(), "idle".into()];
        let uses = users(&pods, &pvcs);
        let names: Vec<(&str, &[String], bool)> = uses
            .iter()
            .map(|u| (u.pod.as_str(), u.pvcs.as_slice(), u.terminating))
            .collect();
        assert_eq!(
            names,
            [
                ("cache-0", &["cache-0-scratch".to_string()][..], false),
                ("old", &["data".to_string()][..], true),
                ("web", &["data".to_string()][..], false),
            ]
        );
        assert_eq!(uses[2].node.as_deref(), Some("node-a"));
        assert_eq!(unused(&pvcs, &uses), ["idle"]);
    }
}
