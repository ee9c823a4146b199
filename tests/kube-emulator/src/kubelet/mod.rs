//! The kubelet (and the scheduler) of one emulated cluster: it registers
//! the cluster's two Node objects, assigns pods without `spec.nodeName` to
//! them, and runs the pods bound to them as Docker containers on the
//! cluster's Docker network, reporting their status through the API server
//! like a real kubelet.
//!
//! - `nodes`: the Node objects;
//! - `scheduler`: picks a node for a pod, or says why none fits;
//! - `pod_worker`: one task per pod that starts, watches, restarts and
//!   finally removes its containers, whose states `state` holds;
//! - `container`: the `docker run` command line of one container;
//! - `images`: the local image a container runs, pulled from loopback
//!   registries and mapped registry hosts only;
//! - `env` and `volumes`: what a container gets from its pod's spec,
//!   Secrets and ConfigMaps (fetched by `sources`) and
//!   PersistentVolumeClaims;
//! - `status`: the pod status computed from its containers, and reporting it;
//! - `logs`: container logs for the API server's `pods/{name}/log`.

mod container;
mod env;
mod images;
mod logs;
mod nodes;
mod pod_worker;
mod scheduler;
mod sources;
mod state;
mod status;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, ResourceExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::{ClusterContext, PodLogs};
use crate::docker;

/// Label on a pod's containers: the uid of the pod they belong to (the
/// label the real dockershim used).
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label on a pod's containers: the name of the container in the pod spec.
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Runs the kubelet until the task is aborted. Fails at once if Docker is
/// not running.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    docker::check().await?;
    let nodes = nodes::register(&ctx).await?;
    let mut kubelet = Kubelet {
        scheduler: Arc::new(scheduler::Scheduler::new(ctx.clone(), nodes)),
        ctx: ctx.clone(),
        workers: HashMap::new(),
        // Dropping this set (when the kubelet task is aborted) aborts every
        // pod worker and scheduling task with it.
        tasks: JoinSet::new(),
    };
    let mut events = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut listed = HashSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => anyhow::bail!("the watch of pods ended"),
                Some(Err(error)) => tracing::warn!("kubelet {}: watching pods: {error}", ctx.name),
                Some(Ok(Event::Init)) => listed.clear(),
                Some(Ok(Event::InitApply(pod))) => {
                    listed.extend(pod.uid());
                    kubelet.on_pod(pod);
                }
                // Pods deleted while the watch was down are not in the new list.
                Some(Ok(Event::InitDone)) => kubelet.workers.retain(|uid, _| listed.contains(uid)),
                Some(Ok(Event::Apply(pod))) => kubelet.on_pod(pod),
                Some(Ok(Event::Delete(pod))) => {
                    // Dropping the sender tells the worker its pod is gone.
                    kubelet.workers.remove(&pod.uid().unwrap_or_default());
                }
            },
            Some(done) = kubelet.tasks.join_next() => {
                if let Err(error) = done {
                    if error.is_panic() {
                        tracing::error!("kubelet {}: a pod task panicked: {error}", ctx.name);
                    }
                }
            }
        }
    }
}

/// The API server's source of pod logs.
pub fn log_source(ctx: Arc<ClusterContext>) -> Arc<dyn PodLogs> {
    Arc::new(logs::ContainerLogs::new(ctx))
}

struct Kubelet {
    ctx: Arc<ClusterContext>,
    scheduler: Arc<scheduler::Scheduler>,
    /// The pods this kubelet runs, by uid: each worker gets the latest
    /// version of its pod through this channel.
    workers: HashMap<String, watch::Sender<Pod>>,
    tasks: JoinSet<()>,
}

impl Kubelet {
    fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.uid() else {
            tracing::warn!(
                "kubelet {}: pod {} has no uid; ignored",
                self.ctx.name,
                pod.name_any()
            );
            return;
        };
        if let Some(worker) = self.workers.get(&uid) {
            // A worker that has finished (its pod was being deleted) no
            // longer listens; that is fine.
            let _ = worker.send(pod);
            return;
        }
        let finished = matches!(
            pod.status
                .as_ref()
                .and_then(|status| status.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        match node {
            _ if finished => {}
            None if pod.metadata.deletion_timestamp.is_some() => {}
            None => {
                let scheduler = self.scheduler.clone();
                self.tasks
                    .spawn(async move { scheduler.schedule(pod).await });
            }
            Some(node) if self.scheduler.is_ours(&node) => {
                let (updates, receiver) = watch::channel(pod.clone());
                self.workers.insert(uid, updates);
                let worker = pod_worker::PodWorker::new(self.ctx.clone(), pod);
                self.tasks.spawn(worker.run(receiver));
            }
            Some(node) => {
                let scheduler = self.scheduler.clone();
                self.tasks
                    .spawn(async move { scheduler.report_unknown_node(pod, &node).await });
            }
        }
    }
}
