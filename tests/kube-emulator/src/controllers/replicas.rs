//! The core that ReplicaSets and ReplicationControllers share (the real
//! `ReplicaSetController` serves both): claim the pods the selector
//! matches, create pods from the template up to `replicas`, delete the
//! surplus (least useful first), and count what the status reports.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::Api;

use super::pods::{self, NewPod};
use super::{owners, reconcile};
use crate::context::ClusterContext;

/// What the owner asks for.
pub(super) struct Wanted<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub owner: OwnerReference,
    pub deleting: bool,
    pub replicas: i32,
    pub selector: &'a LabelSelector,
    pub template: &'a PodTemplateSpec,
    pub min_ready_seconds: i32,
}

/// What the status reports, counted over the owner's active pods.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
}

/// Brings the owner's pods to `replicas`. Returns the counts and, when a
/// ready pod will become available later (minReadySeconds), how soon to
/// look again.
pub(super) async fn sync(
    ctx: &ClusterContext,
    wanted: &Wanted<'_>,
) -> anyhow::Result<(Counts, Option<Duration>)> {
    if wanted
        .selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && wanted
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        anyhow::bail!("{}: an empty selector would select every pod", wanted.name);
    }
    let client = ctx.client.clone();
    let candidates = pods::list(ctx, wanted.namespace).await?;
    let claimed = owners::claim(
        |ns| Api::<Pod>::namespaced(client.clone(), ns),
        &wanted.owner,
        wanted.deleting,
        wanted.selector,
        candidates,
    )
    .await?;
    let mut active: Vec<Pod> = claimed.into_iter().filter(pods::is_active).collect();
    let now = ctx.shared.clock.now();
    let counts = count(&active, wanted, now);
    let later = active
        .iter()
        .filter_map(|pod| pods::until_available(pod, wanted.min_ready_seconds, now))
        .min();

    if !wanted.deleting {
        let missing = wanted.replicas - i32::try_from(active.len()).unwrap_or(i32::MAX);
        for _ in 0..missing.max(0) {
            let pod = NewPod {
                template: wanted.template,
                namespace: wanted.namespace,
                owner: wanted.owner.clone(),
                name: None,
                generate_prefix: format!("{}-", wanted.name),
                extra_labels: BTreeMap::new(),
            }
            .build();
            pods::create(ctx, &pod).await?;
        }
        if missing < 0 {
            active.sort_by(pods::deletion_order);
            for pod in active.iter().take(missing.unsigned_abs() as usize) {
                pods::delete(ctx, pod).await?;
            }
        }
    }
    Ok((counts, later.map(|wait| wait + reconcile::RETRY / 10)))
}

fn count(active: &[Pod], wanted: &Wanted<'_>, now: k8s_openapi::jiff::Timestamp) -> Counts {
    let template_labels = wanted
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    let number = |filter: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|pod| filter(pod)).count()).unwrap_or(i32::MAX)
    };
    Counts {
        replicas: number(&|_| true),
        fully_labeled: number(&|pod| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        }),
        ready: number(&pods::is_ready),
        available: number(&|pod| pods::is_available(pod, wanted.min_ready_seconds, now)),
    }
}

impl Counts {
    /// The status fields ReplicaSets and ReplicationControllers share.
    pub(super) fn status(self, observed_generation: Option<i64>) -> serde_json::Value {
        serde_json::json!({
            "replicas": self.replicas,
            "fullyLabeledReplicas": self.fully_labeled,
            "readyReplicas": self.ready,
            "availableReplicas": self.available,
            "observedGeneration": observed_generation,
        })
    }
}
