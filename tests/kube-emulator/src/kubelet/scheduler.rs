//! The scheduler: binds pods without `spec.nodeName` to one of the
//! cluster's nodes, one pod at a time, as kube-scheduler's default plugins
//! would: a node must be schedulable, its NoSchedule/NoExecute taints
//! tolerated, the pod's nodeSelector and required node affinity must match
//! it, its allocatable resources must hold the pod's requests beside its
//! other pods', and the pod's volumes must be usable there (see
//! `volume_binding`). Among the nodes that fit, those with the fewest
//! untolerated PreferNoSchedule taints are taken round robin; of those,
//! a node whose pods already use one of the pod's claims comes first.
//! That last preference is the emulator's, not kube-scheduler's: it makes
//! pods sharing a ReadWriteOnce volume meet on one node (as they do on
//! clusters whose volumes are node-local, like kind's), so that a
//! migration's receiver and the application restored beside it do not
//! wait on each other's Multi-Attach; pods pinned to different nodes still
//! get the Multi-Attach error.
//!
//! A pod that fits nowhere gets the real scheduler's PodScheduled
//! condition (`0/2 nodes are available: ... preemption: ...`) and a
//! `FailedScheduling` Event; a bound pod a `Scheduled` Event. Pods that do
//! not fit are tried again every [`RETRY`], as the real scheduler retries
//! them when the cluster changes.
//!
//! Taints and resources are only looked at with the cluster's `scheduling`
//! policy, volumes only with its `storage` policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, ResourceExt as _};

use super::resources;
use super::volume_binding::{PodVolumes, READ_WRITE_ONCE_POD_CONFLICT};
use crate::context::ClusterContext;
use crate::events;
use crate::placement::{affinity, taints};

/// How often pods that fit nowhere are tried again.
const RETRY: Duration = Duration::from_millis(500);
const COMPONENT: &str = "default-scheduler";
/// The taint a cordoned (`spec.unschedulable`) node is treated as having.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub(super) struct Scheduler {
    ctx: Arc<ClusterContext>,
    /// The nodes this kubelet runs.
    nodes: Vec<String>,
    next: AtomicUsize,
}

/// Why one node cannot take a pod: the reasons of the first filter that
/// refused it, and whether evicting other pods (preemption) could help.
struct Refusal {
    reasons: Vec<String>,
    resolvable: bool,
}

impl Refusal {
    fn unresolvable(reason: impl Into<String>) -> Self {
        Self {
            reasons: vec![reason.into()],
            resolvable: false,
        }
    }
}

/// The cluster as one scheduling round sees it: this kubelet's nodes and
/// every pod, updated as the round binds pods.
struct Snapshot {
    nodes: Vec<Node>,
    pods: Vec<Pod>,
}

impl Snapshot {
    /// The pods assigned to a node that still hold its resources.
    fn assigned(&self) -> impl Iterator<Item = &Pod> + Clone {
        self.pods
            .iter()
            .filter(|pod| node_of(pod).is_some() && !is_terminated(pod))
    }

    fn on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Pod> + Clone {
        self.assigned()
            .filter(move |pod| node_of(pod) == Some(node))
    }

    /// The current version of a pod waiting for a node, if it still does.
    fn pending(&self, uid: &str) -> Option<Pod> {
        self.pods
            .iter()
            .find(|pod| pod.uid().as_deref() == Some(uid))
            .filter(|pod| {
                node_of(pod).is_none()
                    && pod.metadata.deletion_timestamp.is_none()
                    && !is_terminated(pod)
            })
            .cloned()
    }

    fn assume(&mut self, uid: &str, node: &str) {
        if let Some(pod) = self
            .pods
            .iter_mut()
            .find(|pod| pod.uid().as_deref() == Some(uid))
        {
            pod.spec.get_or_insert_default().node_name = Some(node.to_string());
        }
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Scheduler {
    pub(super) fn new(ctx: Arc<ClusterContext>, nodes: Vec<String>) -> Self {
        Self {
            ctx,
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether `node` is one of the nodes this kubelet runs.
    pub(super) fn is_ours(&self, node: &str) -> bool {
        self.nodes.iter().any(|ours| ours == node)
    }

    /// Schedules pods as they appear, and retries those that fit nowhere,
    /// until the task is aborted.
    pub(super) async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut events = watcher(
            Api::<Pod>::all(self.ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        // Pods waiting for a node, by uid.
        let mut waiting: BTreeMap<String, ()> = BTreeMap::new();
        let mut retry = tokio::time::interval(RETRY);
        loop {
            let due = tokio::select! {
                event = events.next() => match event {
                    None => anyhow::bail!("the scheduler's watch of pods ended"),
                    Some(Err(error)) => {
                        tracing::warn!("scheduler {}: watching pods: {error}", self.ctx.name);
                        Vec::new()
                    }
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                        let uid = pod.uid().unwrap_or_default();
                        let unscheduled = node_of(&pod).is_none()
                            && pod.metadata.deletion_timestamp.is_none()
                            && !is_terminated(&pod);
                        if unscheduled && waiting.insert(uid.clone(), ()).is_none() {
                            vec![uid]
                        } else {
                            if !unscheduled {
                                waiting.remove(&uid);
                            }
                            Vec::new()
                        }
                    }
                    Some(Ok(Event::Delete(pod))) => {
                        waiting.remove(&pod.uid().unwrap_or_default());
                        Vec::new()
                    }
                    Some(Ok(Event::Init | Event::InitDone)) => Vec::new(),
                },
                _ = retry.tick() => waiting.keys().cloned().collect(),
            };
            if !due.is_empty() {
                self.schedule(&due).await;
            }
        }
    }

    /// One scheduling round over the pods with these uids.
    async fn schedule(&self, uids: &[String]) {
        let mut snapshot = match self.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!("scheduler {}: {error}", self.ctx.name);
                return;
            }
        };
        for uid in uids {
            let Some(pod) = snapshot.pending(uid) else {
                continue;
            };
            let result = match self.place(&snapshot, &pod).await {
                Ok((node, volumes)) => match volumes.bind(&self.ctx.client, &node).await {
                    Ok(()) => {
                        let bound = self.bind(&pod, &node).await;
                        if bound.is_ok() {
                            snapshot.assume(uid, &node);
                        }
                        bound
                    }
                    Err(message) => self.unscheduled(&pod, "SchedulerError", &message).await,
                },
                Err(message) => self.unscheduled(&pod, "Unschedulable", &message).await,
            };
            if let Err(error) = result {
                tracing::warn!(
                    "scheduler {}: pod {}/{}: {error}",
                    self.ctx.name,
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
            }
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, kube::Error> {
        let client = &self.ctx.client;
        let mut nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        nodes.retain(|node| self.is_ours(&node.name_any()));
        nodes.sort_by_key(|node| node.name_any());
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        Ok(Snapshot { nodes, pods })
    }

    /// The node for `pod` and its volumes to bind there, or the
    /// scheduler's message saying why no node fits.
    async fn place(&self, snapshot: &Snapshot, pod: &Pod) -> Result<(String, PodVolumes), String> {
        let policy = &self.ctx.policy;
        let count = snapshot.nodes.len();
        let volumes = if policy.storage {
            PodVolumes::of(&self.ctx.client, pod)
                .await
                .map_err(|message| fit_error(count, Some(&message), &[]))?
        } else {
            PodVolumes::default()
        };
        let mut fitting = Vec::new();
        let mut refusals = Vec::new();
        for node in &snapshot.nodes {
            match self.filter(snapshot, pod, node, &volumes) {
                Ok(()) => fitting.push(node),
                Err(refusal) => refusals.push(refusal),
            }
        }
        if fitting.is_empty() {
            return Err(fit_error(count, None, &refusals));
        }
        let tolerations = taints::pod_tolerations(pod);
        // Lower is better: untolerated PreferNoSchedule taints. Like the
        // real scheduler, nothing favours the node already using the pod's
        // volumes: a ReadWriteOnce claim's second pod may well land on
        // another node and wait there (Multi-Attach).
        let score = |node: &Node| {
            taints::node_taints(node)
                .iter()
                .filter(|taint| {
                    policy.scheduling
                        && taint.effect == taints::PREFER_NO_SCHEDULE
                        && !tolerations
                            .iter()
                            .any(|toleration| taints::tolerates(toleration, taint))
                })
                .count()
        };
        let best = fitting.iter().map(|node| score(node)).min();
        fitting.retain(|node| Some(score(node)) == best);
        let chosen = fitting[self.next.fetch_add(1, Ordering::Relaxed) % fitting.len()];
        Ok((chosen.name_any(), volumes))
    }

    /// The filters, in the real scheduler's order; the first that refuses
    /// the node says why.
    fn filter(
        &self,
        snapshot: &Snapshot,
        pod: &Pod,
        node: &Node,
        volumes: &PodVolumes,
    ) -> Result<(), Refusal> {
        let policy = &self.ctx.policy;
        let name = node.name_any();
        if policy.scheduling {
            let cordoned = node
                .spec
                .as_ref()
                .and_then(|spec| spec.unschedulable)
                .unwrap_or(false);
            let tolerations = taints::pod_tolerations(pod);
            let unschedulable = Taint {
                key: UNSCHEDULABLE_TAINT.to_string(),
                effect: taints::NO_SCHEDULE.to_string(),
                ..Taint::default()
            };
            let tolerated = tolerations
                .iter()
                .any(|toleration| taints::tolerates(toleration, &unschedulable));
            if cordoned && !tolerated {
                return Err(Refusal::unresolvable("node(s) were unschedulable"));
            }
            if let Some(taint) = taints::untolerated(
                node,
                tolerations,
                &[taints::NO_SCHEDULE, taints::NO_EXECUTE],
            ) {
                return Err(Refusal::unresolvable(format!(
                    "node(s) had untolerated taint {}",
                    taints::describe(taint)
                )));
            }
        }
        if !affinity::pod_fits(pod, node) {
            return Err(Refusal::unresolvable(
                "node(s) didn't match Pod's node affinity/selector",
            ));
        }
        if policy.scheduling {
            let missing = resources::shortages(pod, node, snapshot.on_node(&name));
            if !missing.is_empty() {
                return Err(Refusal {
                    reasons: missing.iter().map(resources::Shortage::reason).collect(),
                    resolvable: true,
                });
            }
        }
        if policy.storage {
            if volumes.read_write_once_pod_conflict(pod, snapshot.assigned()) {
                return Err(Refusal {
                    reasons: vec![READ_WRITE_ONCE_POD_CONFLICT.to_string()],
                    resolvable: true,
                });
            }
            let conflicts = volumes.binding_conflicts(node);
            if !conflicts.is_empty() {
                return Err(Refusal {
                    reasons: conflicts.into_iter().map(str::to_string).collect(),
                    resolvable: false,
                });
            }
        }
        Ok(())
    }

    /// Sets the pod's `spec.nodeName` and records the `Scheduled` Event.
    async fn bind(&self, pod: &Pod, node: &str) -> kube::Result<()> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        // The resourceVersion makes this a compare-and-swap: if the pod
        // changed meanwhile, the newer version gets scheduled instead.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": pod.resource_version() },
            "spec": { "nodeName": node },
        });
        match api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(error) => Err(error),
            Ok(_) => {
                let message = format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
                let reporter = events::Reporter::new(COMPONENT);
                events::record(
                    &self.ctx.client,
                    reporter,
                    pod,
                    events::Type::Normal,
                    "Scheduled",
                    &message,
                )
                .await;
                Ok(())
            }
        }
    }

    /// Reports that the pod fits nowhere: its PodScheduled condition and,
    /// when that changes, a `FailedScheduling` Event.
    async fn unscheduled(&self, pod: &Pod, reason: &str, message: &str) -> kube::Result<()> {
        if report_unscheduled(&self.ctx, pod, reason, message).await? {
            let reporter = events::Reporter::new(COMPONENT);
            events::record(
                &self.ctx.client,
                reporter,
                pod,
                events::Type::Warning,
                "FailedScheduling",
                message,
            )
            .await;
        }
        Ok(())
    }

    /// A pod bound to a node that does not exist stays Pending; its
    /// PodScheduled condition says why (a real cluster would leave it
    /// silently Pending).
    pub(super) async fn report_unknown_node(&self, pod: Pod, node: &str) {
        let message = format!(
            "node \"{node}\" does not exist in cluster {} (its nodes are {})",
            self.ctx.name,
            self.nodes.join(", ")
        );
        if let Err(error) = report_unscheduled(&self.ctx, &pod, "NodeNotFound", &message).await {
            tracing::warn!(
                "scheduler {}: pod {}: {error}",
                self.ctx.name,
                pod.name_any()
            );
        }
    }
}

/// The real scheduler's message for a pod no node fits (its `FitError`):
/// the reasons counted over the nodes, or the one reason no node was
/// looked at, then what preemption made of it (with pods of equal
/// priority, evicting others never helps).
fn fit_error(nodes: usize, prefilter: Option<&str>, refusals: &[Refusal]) -> String {
    let histogram = |reasons: Vec<&str>| {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for reason in reasons {
            *counts.entry(reason).or_default() += 1;
        }
        let mut lines: Vec<String> = counts
            .into_iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        lines.sort();
        lines.join(", ")
    };
    let (reasons, preemption) = match prefilter {
        Some(message) => (
            message.to_string(),
            format!("{nodes} Preemption is not helpful for scheduling"),
        ),
        None => (
            histogram(
                refusals
                    .iter()
                    .flat_map(|refusal| refusal.reasons.iter().map(String::as_str))
                    .collect(),
            ),
            histogram(
                refusals
                    .iter()
                    .map(|refusal| {
                        if refusal.resolvable {
                            "No preemption victims found for incoming pod"
                        } else {
                            "Preemption is not helpful for scheduling"
                        }
                    })
                    .collect(),
            ),
        ),
    };
    format!(
        "0/{nodes} nodes are available: {reasons}. preemption: 0/{nodes} nodes are available: {preemption}.."
    )
}

/// Sets the pod's PodScheduled condition to False with `reason` and
/// `message`, unless it says that already (so the status update does not
/// trigger another round of the same). Returns whether it changed.
async fn report_unscheduled(
    ctx: &ClusterContext,
    pod: &Pod,
    reason: &str,
    message: &str,
) -> kube::Result<bool> {
    let already = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|condition| {
                condition.type_ == "PodScheduled"
                    && condition.status == "False"
                    && condition.reason.as_deref() == Some(reason)
                    && condition.message.as_deref() == Some(message)
            })
        });
    if already {
        return Ok(false);
    }
    let condition = PodCondition {
        type_: "PodScheduled".to_string(),
        status: "False".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..PodCondition::default()
    };
    // Guarded by the resourceVersion: a pod bound meanwhile keeps its
    // status.
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": pod.resource_version() },
        "status": { "phase": "Pending", "conditions": [condition] },
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        result => result.map(|_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_error_counts_reasons_over_nodes_as_the_real_scheduler() {
        let refusals = [
            Refusal::unresolvable("node(s) had untolerated taint {dedicated: db}"),
            Refusal {
                reasons: vec![
                    "Insufficient cpu".to_string(),
                    "Insufficient memory".to_string(),
                ],
                resolvable: true,
            },
        ];
        assert_eq!(
            fit_error(2, None, &refusals),
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
             1 node(s) had untolerated taint {dedicated: db}. preemption: 0/2 nodes are \
             available: 1 No preemption victims found for incoming pod, 1 Preemption is not \
             helpful for scheduling.."
        );
        assert_eq!(
            fit_error(
                2,
                Some("pod has unbound immediate PersistentVolumeClaims"),
                &[]
            ),
            "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        );
    }
}
