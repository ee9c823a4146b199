//! The DaemonSet controller: one pod per Node that the template's
//! `nodeSelector` and required node affinity (nodeSelectorTerms with
//! In/NotIn/Exists/DoesNotExist/Gt/Lt expressions, and `metadata.name`
//! fields, see `placement::affinity`) admit, bound with `spec.nodeName`
//! (the pre-1.12 way, without the scheduler); pods on nodes that stop
//! matching are deleted, which is how a DaemonSet is parked with a
//! nodeSelector no node has. A template change is rolled out
//! (RollingUpdate, maxUnavailable 1 by default; OnDelete waits). The status
//! counts desired, current, misscheduled, ready, available, unavailable
//! and updated pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use serde_json::json;

use super::owners;
use super::pods::{self, NewPod};
use super::reconcile::{self, Failure};
use crate::context::ClusterContext;
use crate::placement::affinity;

const REVISION_LABEL: &str = "controller-revision-hash";
const GENERATION_LABEL: &str = "pod-template-generation";

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let daemon_sets = controller.store();
    let stream = controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        // Every DaemonSet looks again when a node appears, goes or changes labels.
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_| {
                daemon_sets
                    .state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            |ds, ctx| async move { reconcile(ds, ctx).await.map_err(Failure) },
            reconcile::retry,
            ctx,
        );
    reconcile::drive("daemonset", stream).await
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    let Some(ds) = reconcile::fresh(&ctx, ds.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let ds = Arc::new(ds);
    let namespace = ds.namespace().unwrap_or_default();
    let spec = &ds.spec;
    let hash = reconcile::template_hash(&spec.template);
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let client = ctx.client.clone();
    let owned = owners::claim(
        |ns| Api::<Pod>::namespaced(client.clone(), ns),
        &owners::controller_ref(ds.as_ref()),
        false,
        &spec.selector,
        pods::list(&ctx, &namespace).await?,
    )
    .await?;
    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for pod in &owned {
        if pods::is_failed(pod) {
            // A failed daemon pod is replaced.
            pods::delete(&ctx, pod).await?;
            continue;
        }
        if pods::is_active(pod) {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            by_node.entry(node).or_default().push(pod);
        }
    }
    let now = ctx.shared.clock.now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let wanted: Vec<&Node> = nodes.iter().filter(|node| should_run(&ds, node)).collect();
    let mut counts = Counts::default();
    let mut stale = Vec::new();
    for node in &nodes {
        let name = node.name_any();
        let mut here = by_node.remove(&name).unwrap_or_default();
        let should = wanted.iter().any(|wanted| wanted.name_any() == name);
        if !should {
            counts.misscheduled += usize::from(!here.is_empty());
            for pod in here {
                pods::delete(&ctx, pod).await?;
            }
            continue;
        }
        counts.desired += 1;
        if here.is_empty() {
            let pod = NewPod {
                template: &spec.template,
                namespace: &namespace,
                owner: owners::controller_ref(ds.as_ref()),
                name: None,
                generate_prefix: format!("{}-", ds.name_any()),
                extra_labels: BTreeMap::from([
                    (REVISION_LABEL.to_string(), hash.clone()),
                    (
                        GENERATION_LABEL.to_string(),
                        ds.metadata.generation.unwrap_or(1).to_string(),
                    ),
                ]),
            }
            .build();
            let mut pod = pod;
            pod.spec.get_or_insert_with(Default::default).node_name = Some(name.clone());
            pods::create(&ctx, &pod).await?;
            continue;
        }
        // Extra pods on a node go, the oldest stays.
        here.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for extra in here.split_off(1) {
            pods::delete(&ctx, extra).await?;
        }
        let pod = here[0];
        counts.current += 1;
        counts.ready += usize::from(pods::is_ready(pod));
        counts.available += usize::from(pods::is_available(pod, min_ready, now));
        if pod.labels().get(REVISION_LABEL) == Some(&hash) {
            counts.updated += 1;
        } else {
            stale.push(pod);
        }
    }
    // Pods bound to nodes that no longer exist.
    for pod in by_node.into_values().flatten() {
        pods::delete(&ctx, pod).await?;
    }
    roll_out(&ctx, &ds, &stale, counts.desired - counts.available).await?;

    let number = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": number(counts.desired),
        "currentNumberScheduled": number(counts.current),
        "numberMisscheduled": number(counts.misscheduled),
        "numberReady": number(counts.ready),
        "numberAvailable": number(counts.available),
        "numberUnavailable": number(counts.desired - counts.available),
        "updatedNumberScheduled": number(counts.updated),
    });
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, ds.as_ref(), status).await?;
    Ok(Action::requeue(reconcile::RESYNC))
}

#[derive(Default)]
struct Counts {
    desired: usize,
    current: usize,
    misscheduled: usize,
    ready: usize,
    available: usize,
    updated: usize,
}

/// RollingUpdate: deletes pods of the old template while fewer than
/// maxUnavailable pods are unavailable (their replacements come next round).
async fn roll_out(
    ctx: &ClusterContext,
    ds: &DaemonSet,
    stale: &[&Pod],
    unavailable: usize,
) -> anyhow::Result<()> {
    let strategy = ds.spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return Ok(());
    }
    let max = match strategy.rolling_update.and_then(|r| r.max_unavailable) {
        None => 1,
        Some(IntOrString::Int(n)) => usize::try_from(n).unwrap_or(0),
        Some(IntOrString::String(percent)) => {
            let percent: usize = percent.trim_end_matches('%').parse().unwrap_or(0);
            let desired = stale.len() + unavailable;
            (percent * desired).div_ceil(100)
        }
    }
    .max(1);
    let mut budget = max.saturating_sub(unavailable);
    // Unavailable stale pods go first: deleting them costs nothing.
    let (down, up): (Vec<&&Pod>, Vec<&&Pod>) = stale.iter().partition(|pod| !pods::is_ready(pod));
    for pod in down {
        pods::delete(ctx, pod).await?;
    }
    for pod in up {
        if budget == 0 {
            break;
        }
        pods::delete(ctx, pod).await?;
        budget -= 1;
    }
    Ok(())
}

/// Whether the DaemonSet's pods belong on `node`: its template's
/// nodeSelector and required node affinity admit it.
fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    ds.spec
        .template
        .spec
        .as_ref()
        .is_none_or(|spec| affinity::spec_fits(spec, node))
}
