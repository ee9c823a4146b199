//! The kubelet (with the scheduler, the attach/detach controller and the
//! taint eviction controller) of one emulated cluster: it registers the
//! cluster's two Node objects, assigns pods without `spec.nodeName` to
//! them, and runs the pods bound to them as Docker containers on the
//! cluster's Docker network, reporting their status through the API server
//! like a real kubelet.
//!
//! - `nodes`: the Node objects and their capacity;
//! - `scheduler`: picks a node for a pod, or says why none fits, with
//!   `crate::placement` (taints, node affinity), `resources` (requests
//!   against allocatable) and `volume_binding` (claims, WaitForFirstConsumer);
//! - `admission`: the kubelet's admission of a pod bound to its node
//!   (resources, affinity, NoExecute taints);
//! - `taint_manager`: evicts pods from nodes with NoExecute taints they do
//!   not tolerate;
//! - `attach`: which node each ReadWriteOnce(Pod) volume is attached to
//!   (Multi-Attach);
//! - `devices`: Block volumes as loop devices given to containers at their
//!   `volumeDevices` paths;
//! - `pod_worker`: one task per pod that starts, watches, restarts and
//!   finally removes its containers, whose states `state` holds;
//! - `container`: the `docker run` command line of one container;
//! - `images`: the local image a container runs, pulled from loopback
//!   registries and mapped registry hosts only;
//! - `env` and `volumes`: what a container gets from its pod's spec,
//!   Secrets and ConfigMaps (fetched by `sources`),
//!   PersistentVolumeClaims and projected volumes (`projected`: with
//!   ServiceAccount tokens, renewed as they age);
//! - `probes`: readiness probes;
//! - `status`: the pod status computed from its containers, and reporting it;
//! - `logs` and `exec`: container logs and commands for the API server's
//!   `pods/{name}/log` and `pods/{name}/exec`.

mod admission;
mod attach;
mod container;
mod devices;
mod env;
mod exec;
mod images;
mod logs;
mod nodes;
mod pod_worker;
mod probes;
mod projected;
mod resources;
mod scheduler;
mod sources;
mod state;
mod status;
mod taint_manager;
mod volume_binding;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, ResourceExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::{ClusterContext, PodStreams};
use crate::docker;

pub use devices::detach_under as detach_loop_devices;

/// The label every node carries with its own name, which pods select in
/// `nodeSelector` (and local volumes in their node affinity) to pin
/// themselves to a node.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Label on a pod's containers: the uid of the pod they belong to (the
/// label the real dockershim used).
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label on a pod's containers: the name of the container in the pod spec.
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Runs the kubelet (with the scheduler and, with the `scheduling` policy,
/// the taint manager) until the task is aborted. Fails at once if Docker
/// is not running.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    docker::check().await?;
    let nodes = nodes::register(&ctx).await?;
    let scheduler = Arc::new(scheduler::Scheduler::new(ctx.clone(), nodes.clone()));
    let mut kubelet = Kubelet {
        scheduler: scheduler.clone(),
        ctx: ctx.clone(),
        workers: HashMap::new(),
        admitted: HashMap::new(),
        attachments: Arc::default(),
        loops: Arc::default(),
        // Dropping this set (when the kubelet task is aborted) aborts every
        // pod worker with it.
        tasks: JoinSet::new(),
    };
    let taint_manager = async {
        if ctx.policy.scheduling {
            taint_manager::run(ctx.clone(), nodes).await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        result = kubelet.run() => result,
        result = scheduler.run() => result,
        result = taint_manager => result,
    }
}

/// The API server's source of pod logs.
pub fn log_source(ctx: Arc<ClusterContext>) -> Arc<dyn PodStreams> {
    Arc::new(logs::ContainerLogs::new(ctx))
}

struct Kubelet {
    ctx: Arc<ClusterContext>,
    scheduler: Arc<scheduler::Scheduler>,
    /// The pods this kubelet runs, by uid: each worker gets the latest
    /// version of its pod through this channel.
    workers: HashMap<String, watch::Sender<Pod>>,
    /// The pods admitted that have not terminated, by uid: what the
    /// kubelet's admission counts on each node.
    admitted: HashMap<String, Pod>,
    attachments: Arc<attach::Attachments>,
    loops: Arc<devices::Loops>,
    tasks: JoinSet<()>,
}

impl Kubelet {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut events = watcher(
            Api::<Pod>::all(self.ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let mut listed = HashSet::new();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => anyhow::bail!("the watch of pods ended"),
                    Some(Err(error)) => tracing::warn!("kubelet {}: watching pods: {error}", self.ctx.name),
                    Some(Ok(Event::Init)) => listed.clear(),
                    Some(Ok(Event::InitApply(pod))) => {
                        listed.extend(pod.uid());
                        self.on_pod(pod).await;
                    }
                    // Pods deleted while the watch was down are not in the new list.
                    Some(Ok(Event::InitDone)) => {
                        self.workers.retain(|uid, _| listed.contains(uid));
                        self.admitted.retain(|uid, _| listed.contains(uid));
                    }
                    Some(Ok(Event::Apply(pod))) => self.on_pod(pod).await,
                    Some(Ok(Event::Delete(pod))) => {
                        let uid = pod.uid().unwrap_or_default();
                        // Dropping the sender tells the worker its pod is gone.
                        self.workers.remove(&uid);
                        self.admitted.remove(&uid);
                    }
                },
                Some(done) = self.tasks.join_next() => {
                    if let Err(error) = done {
                        if error.is_panic() {
                            tracing::error!("kubelet {}: a pod task panicked: {error}", self.ctx.name);
                        }
                    }
                }
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.uid() else {
            tracing::warn!(
                "kubelet {}: pod {} has no uid; ignored",
                self.ctx.name,
                pod.name_any()
            );
            return;
        };
        let finished = matches!(
            pod.status
                .as_ref()
                .and_then(|status| status.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if finished {
            // A pod that is done no longer counts against its node.
            self.admitted.remove(&uid);
        }
        if let Some(worker) = self.workers.get(&uid) {
            // A worker that has finished (its pod was being deleted) no
            // longer listens; that is fine.
            let _ = worker.send(pod);
            return;
        }
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        match node {
            // The scheduler's business.
            None => {}
            _ if finished => {}
            Some(node) if self.scheduler.is_ours(&node) => {
                if self.ctx.policy.scheduling && !self.admit(&pod, &node).await {
                    return;
                }
                self.admitted.insert(uid.clone(), pod.clone());
                let (updates, receiver) = watch::channel(pod.clone());
                self.workers.insert(uid, updates);
                let worker = pod_worker::PodWorker::new(
                    self.ctx.clone(),
                    pod,
                    self.attachments.clone(),
                    self.loops.clone(),
                );
                self.tasks.spawn(worker.run(receiver));
            }
            Some(node) => {
                let scheduler = self.scheduler.clone();
                self.tasks
                    .spawn(async move { scheduler.report_unknown_node(pod, &node).await });
            }
        }
    }

    /// The kubelet's admission (see `admission`): whether the pod may run
    /// on `node`; a pod that may not is rejected.
    async fn admit(&mut self, pod: &Pod, node_name: &str) -> bool {
        let node = match Api::<Node>::all(self.ctx.client.clone())
            .get(node_name)
            .await
        {
            Ok(node) => node,
            Err(error) => {
                // Without the node there is nothing to check against; the
                // pod runs, as it did before admission was looked at.
                tracing::warn!(
                    "kubelet {}: getting node {node_name} to admit pod {}: {error}",
                    self.ctx.name,
                    pod.name_any()
                );
                return true;
            }
        };
        let admitted = self.admitted.values().filter(|other| {
            other
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                == Some(node_name)
        });
        match admission::admit(pod, &node, admitted) {
            Ok(()) => true,
            Err(rejection) => {
                admission::reject(&self.ctx, pod, node_name, &rejection).await;
                false
            }
        }
    }
}
