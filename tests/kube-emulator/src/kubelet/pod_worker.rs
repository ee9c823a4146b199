//! One task per pod: runs its init containers one after the other, then
//! its containers (the first on the cluster's network, the others in the
//! first one's network namespace, as a pod's containers share one
//! network), notices exits through `docker wait`, restarts per the pod's
//! restartPolicy with a back-off, reports status after every change, and
//! removes the containers and the pod's files when the pod goes away.
//!
//! A container that cannot start yet (missing Secret, unbound PVC, image
//! not on this machine and not pullable, see `images`) waits with the
//! reason a real kubelet gives and is
//! retried; nothing one pod does can stop another pod's worker.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::attach::{Attachments, Conflict};
use super::container::{check_non_root, Launch, CLUSTER_LABEL};
use super::devices::{self, Loops};
use super::env::PodFacts;
use super::projected::Projector;
use super::sources::Sources;
use super::state::{Slot, State, Terminated, Waiting};
use super::status::{self, Reporter};
use super::{env, images, probes, volumes, POD_UID_LABEL};
use crate::context::ClusterContext;
use crate::events::Type::{Normal, Warning};
use crate::{docker, events};

/// How long a container that cannot start yet waits before the next try.
const RETRY: Duration = Duration::from_secs(1);
/// How often a pod's tokens are checked for renewal.
const TOKEN_CHECK: Duration = Duration::from_secs(3);
/// The real kubelet's limits on a termination message, and on the log
/// tail used instead with `terminationMessagePolicy: FallbackToLogsOnError`.
const TERMINATION_MESSAGE_BYTES: usize = 4096;
const FALLBACK_LOG_LINES: u64 = 80;
const FALLBACK_LOG_BYTES: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Init(usize),
    Main(usize),
}

/// A container's exit, as `docker wait` reports it.
struct Exit(String);

pub(super) struct PodWorker {
    ctx: Arc<ClusterContext>,
    pub(super) pod: Pod,
    uid: String,
    /// `<state_dir>/pods/<uid>`: Secret and ConfigMap files, emptyDirs,
    /// termination logs.
    dir: PathBuf,
    pub(super) init: Vec<Slot>,
    pub(super) main: Vec<Slot>,
    pub(super) pod_ip: Option<String>,
    pub(super) start_time: Timestamp,
    exits: mpsc::UnboundedSender<Exit>,
    exited: mpsc::UnboundedReceiver<Exit>,
    /// The `docker wait` of each running container.
    waits: JoinSet<()>,
    reporter: Reporter,
    /// The cluster's attached volumes, and whether this pod's are among
    /// them.
    attachments: Arc<Attachments>,
    attached: bool,
    /// The loop devices of the cluster's Block volumes (this pod's are
    /// released with its volumes).
    loops: Arc<Loops>,
    /// The reasons of the Warning Events already recorded about the pod
    /// (each is recorded once, not at every retry).
    warned: HashSet<&'static str>,
    /// The pod's ServiceAccount tokens, for its projected volumes.
    projector: Projector,
}

impl PodWorker {
    pub(super) fn new(
        ctx: Arc<ClusterContext>,
        pod: Pod,
        attachments: Arc<Attachments>,
        loops: Arc<Loops>,
    ) -> Self {
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|container| Slot::new(container, "PodInitializing"))
            .collect();
        let main_reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let main = spec
            .containers
            .iter()
            .map(|container| Slot::new(container, main_reason))
            .collect();
        let (exits, exited) = mpsc::unbounded_channel();
        Self {
            dir: ctx.state_dir.join("pods").join(&uid),
            pod,
            uid,
            init,
            main,
            pod_ip: None,
            start_time: Timestamp::now(),
            exits,
            exited,
            waits: JoinSet::new(),
            reporter: Reporter::default(),
            attachments,
            attached: false,
            loops,
            warned: HashSet::new(),
            projector: Projector::new(ctx.clone()),
            ctx,
        }
    }

    /// The node the pod is bound to.
    fn node(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .unwrap_or_default()
    }

    pub(super) fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// The node's address: every node of the cluster is the router address.
    pub(super) fn host_ip(&self) -> String {
        self.ctx.router_ip.to_string()
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        )
    }

    /// Runs the pod until it is deleted (`updates` closes) or marked for
    /// deletion, then removes its containers and files.
    pub(super) async fn run(mut self, mut updates: watch::Receiver<Pod>) {
        let mut deleted = false;
        while self.pod.metadata.deletion_timestamp.is_none() {
            while self.waits.try_join_next().is_some() {}
            let next_start = self.advance().await;
            let next_probe = self.probe_readiness().await;
            let next_refresh = self.refresh_tokens().await;
            let next_start = [next_start, next_probe, next_refresh]
                .into_iter()
                .flatten()
                .min();
            let status = status::compute(&self);
            if self.attached && status::phase(&self).is_finished() {
                // A pod that is done no longer holds its volumes.
                self.attachments.release(&self.uid);
                self.release_devices().await;
                self.attached = false;
            }
            let reported = self
                .reporter
                .report(&self.api(), &self.pod.name_any(), status)
                .await;
            let wake = match (next_start, reported) {
                (start, true) => start,
                (Some(start), false) => Some(start.min(Instant::now() + RETRY)),
                (None, false) => Some(Instant::now() + RETRY),
            };
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        deleted = true;
                        break;
                    }
                    self.pod = updates.borrow_and_update().clone();
                }
                Some(Exit(id)) = self.exited.recv() => self.on_exit(&id).await,
                () = sleep_until(wake) => {}
            }
        }
        self.stop_running().await;
        self.teardown().await;
        if !deleted {
            // Graceful deletion ends with the kubelet's final delete, as in
            // a real cluster (the API server removes the pod once its
            // finalizers, if any, are gone).
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(error) = self.api().delete(&self.pod.name_any(), &params).await {
                if !matches!(&error, kube::Error::Api(status) if status.code == 404) {
                    tracing::warn!(
                        "kubelet {}: deleting pod {}: {error}",
                        self.ctx.name,
                        self.pod.name_any()
                    );
                }
            }
        }
    }

    /// Starts whatever is due to start: the next init container, or every
    /// waiting container once initialization is done. Returns when to look
    /// again for containers that are still waiting.
    async fn advance(&mut self) -> Option<Instant> {
        if status::phase(self).is_finished() {
            return None;
        }
        for index in 0..self.init.len() {
            match &self.init[index].state {
                State::Terminated(done) if done.exit_code == 0 => continue,
                State::Waiting(_) => return self.start_if_due(Which::Init(index)).await,
                State::Running { .. } | State::Terminated(_) => return None,
            }
        }
        let mut next = None;
        for index in 0..self.main.len() {
            if matches!(self.main[index].state, State::Waiting(_)) {
                let retry = self.start_if_due(Which::Main(index)).await;
                next = match (next, retry) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
            }
        }
        next
    }

    /// Rewrites the projected volumes once a token is due for renewal.
    /// Returns when to look again: the pair's clock can jump (tests move
    /// it on), so tokens are checked every few seconds rather than timed.
    async fn refresh_tokens(&mut self) -> Option<Instant> {
        if !self.projector.has_tokens() || status::phase(self).is_finished() {
            return None;
        }
        if self.projector.refresh_due() {
            let namespace = self.pod.namespace().unwrap_or_default();
            let mut sources = Sources::new(self.ctx.client.clone(), &namespace);
            let refreshed =
                volumes::refresh_projected(&self.pod, &self.dir, &mut sources, &mut self.projector)
                    .await;
            if let Err(waiting) = refreshed {
                tracing::warn!(
                    "kubelet {}: refreshing the projected volumes of pod {}: {}",
                    self.ctx.name,
                    self.pod.name_any(),
                    waiting.message
                );
            }
        }
        Some(Instant::now() + TOKEN_CHECK)
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Init(index) => &mut self.init[index],
            Which::Main(index) => &mut self.main[index],
        }
    }

    /// Starts the container if its retry time has come; returns when to
    /// try again if it is (still) waiting.
    async fn start_if_due(&mut self, which: Which) -> Option<Instant> {
        if self.slot(which).retry_at > Instant::now() {
            return Some(self.slot(which).retry_at);
        }
        match self.launch(which).await {
            Ok(()) => {}
            Err(Failure::Waiting(waiting)) => {
                let slot = self.slot(which);
                slot.state = State::Waiting(waiting);
                slot.retry_at = Instant::now() + RETRY;
            }
            Err(Failure::StartError(message)) => {
                let terminated = Terminated {
                    id: None,
                    exit_code: 128,
                    reason: "StartError".to_string(),
                    message: Some(message),
                    started_at: None,
                    finished_at: Timestamp::now(),
                };
                self.after_exit(which, terminated);
            }
        }
        let slot = self.slot(which);
        matches!(slot.state, State::Waiting(_)).then_some(slot.retry_at)
    }

    /// With the cluster's `storage` policy: checks that the pod uses its
    /// PersistentVolumeClaims as their volume modes allow and attaches
    /// them to its node, once, before its first container starts. A volume
    /// that cannot be used (yet) leaves the container ContainerCreating,
    /// with an Event saying why.
    async fn attach_volumes(&mut self) -> Result<(), Failure> {
        if self.attached || !self.ctx.policy.storage {
            return Ok(());
        }
        let claimed = volumes::claimed(&self.ctx.client, &self.pod).await?;
        if let Err(unusable) = volumes::check_modes(&self.pod, &claimed) {
            self.warn_once(None, unusable.reason, &unusable.message)
                .await;
            return Err(Failure::Waiting(Waiting::creating(unusable.message)));
        }
        let node = self.node().to_string();
        for claim in &claimed {
            let (controller, reason, message) =
                match self.attachments.attach(&claim.volume, &node, &self.pod) {
                    Ok(()) => continue,
                    Err(Conflict::MultiAttach(message)) => (
                        Some("attachdetach-controller"),
                        "FailedAttachVolume",
                        message,
                    ),
                    Err(Conflict::ReadWriteOncePod(message)) => (None, "FailedMount", message),
                };
            // Volumes attached for the pod so far stay attached (until its
            // teardown), as they do on a real node.
            self.warn_once(controller, reason, &message).await;
            return Err(Failure::Waiting(Waiting::creating(message)));
        }
        self.attached = true;
        Ok(())
    }

    /// Records a Warning Event about the pod from `controller`, or from the
    /// kubelet of its node, unless one with this reason was recorded
    /// already.
    async fn warn_once(&mut self, controller: Option<&str>, reason: &'static str, message: &str) {
        if !self.warned.insert(reason) {
            return;
        }
        let node = self.node().to_string();
        let reporter = match controller {
            Some(controller) => events::Reporter::new(controller),
            None => events::Reporter::on_host("kubelet", &node),
        };
        let client = &self.ctx.client;
        events::record(
            client,
            reporter,
            &self.pod,
            events::Type::Warning,
            reason,
            message,
        )
        .await;
    }

    /// Creates and starts the container's next Docker container.
    async fn launch(&mut self, which: Which) -> Result<(), Failure> {
        self.attach_volumes().await?;
        let container = self.slot(which).spec.clone();
        let namespace = self.pod.namespace().unwrap_or_default();
        let mut sources = Sources::new(self.ctx.client.clone(), &namespace);
        let volumes = volumes::prepare(
            &self.ctx.client,
            &self.pod,
            &[&container],
            &self.dir,
            &mut sources,
            &mut self.projector,
        )
        .await?;
        let mounts = volumes::mounts(&container, &volumes)?;
        let devices = devices::prepare(
            &self.ctx.client,
            &self.pod,
            &container,
            &self.dir,
            &self.loops,
        )
        .await?;

        let network_of = match which {
            Which::Main(index) if index > 0 => match &self.main[0].state {
                State::Running { id, .. } => Some(id.clone()),
                _ => {
                    return Err(Failure::Waiting(Waiting::creating(format!(
                        "waiting for container {} to run: it holds the pod's network",
                        self.main[0].spec.name
                    ))))
                }
            },
            _ => None,
        };
        let host_ip = self.host_ip();
        let facts = PodFacts {
            pod: &self.pod,
            host_ip: &host_ip,
            pod_ip: network_of.as_ref().and(self.pod_ip.as_deref()),
            api_server: self.ctx.api_server.address,
        };
        let env = env::resolve(&container, &facts, &mut sources).await?;

        let image = container.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(Failure::Waiting(Waiting::config(format!(
                "container {} has no image",
                container.name
            ))));
        }
        let local = match images::ensure(&self.ctx, &image).await {
            Ok(local) => local,
            Err(images::Missing::Docker(error)) => return Err(Failure::docker(error)),
            Err(images::Missing::NeverPulled(message) | images::Missing::PullFailed(message)) => {
                let pulled_before = matches!(
                    &self.slot(which).state,
                    State::Waiting(Waiting {
                        reason: "ErrImagePull" | "ImagePullBackOff",
                        ..
                    })
                );
                if pulled_before {
                    let message = format!("Back-off pulling image {image:?}");
                    self.container_event(which, Warning, "BackOff", &message)
                        .await;
                } else {
                    self.container_event(which, Warning, "Failed", &message)
                        .await;
                    let error = "Error: ErrImagePull";
                    self.container_event(which, Warning, "Failed", error).await;
                }
                return Err(Failure::Waiting(Waiting {
                    reason: if pulled_before {
                        "ImagePullBackOff"
                    } else {
                        "ErrImagePull"
                    },
                    message,
                }));
            }
        };
        match &local.pulled {
            None => {
                let message = format!("Container image {image:?} already present on machine");
                self.container_event(which, Normal, "Pulled", &message)
                    .await;
            }
            Some(pulled) => {
                let message = format!("Pulling image {image:?}");
                self.container_event(which, Normal, "Pulling", &message)
                    .await;
                let took = format!("{:.3}s", pulled.took.as_secs_f64());
                let message = format!(
                    "Successfully pulled image {image:?} in {took} ({took} including waiting). \
                     Image size: {} bytes.",
                    pulled.size
                );
                self.container_event(which, Normal, "Pulled", &message)
                    .await;
            }
        }
        let image_id = local.id;
        let image = local.reference;
        let mut container = container;
        container.image = Some(image.clone());
        let image_user = docker::image_user(&image).await.map_err(Failure::docker)?;
        check_non_root(&self.pod, &container, &image_user)?;

        let termination_log = self.termination_log(&container.name).await?;
        let slot = self.slot(which);
        slot.image_id = Some(image_id);
        let attempt = slot.created;
        // The previous instance is kept until now for its logs.
        let previous = slot.last_state.as_ref().and_then(|last| last.id.clone());
        let launch = Launch {
            ctx: &self.ctx,
            pod: &self.pod,
            container: &container,
            attempt,
            image_user: &image_user,
            env: &env,
            mounts: &mounts,
            devices: &devices,
            network_of: network_of.as_deref(),
            termination_log: &termination_log,
        };
        let args = launch.docker_run_args()?;
        let name = launch.docker_name();
        if let Some(previous) = previous {
            if let Err(error) = docker::remove(&[previous]).await {
                tracing::warn!(
                    "kubelet {}: removing an old container: {error}",
                    self.ctx.name
                );
            }
        }
        let slot = self.slot(which);
        slot.created += 1;
        slot.restart_count = i32::try_from(attempt).unwrap_or(i32::MAX);
        let id = match docker::run_detached(args).await {
            Ok(id) => id,
            Err(error) => {
                // `docker run` may have created the container before failing
                // to start it.
                let _ = docker::remove(&[name]).await;
                let message = format!("Error: {error}");
                self.container_event(which, Warning, "Failed", &message)
                    .await;
                return Err(Failure::StartError(error.to_string()));
            }
        };
        let message = format!("Created container: {}", container.name);
        self.container_event(which, Normal, "Created", &message)
            .await;
        let message = format!("Started container {}", container.name);
        self.container_event(which, Normal, "Started", &message)
            .await;
        let started_at = match docker::inspect(&id).await {
            Ok(info) => {
                if which == Which::Main(0) {
                    self.pod_ip = info
                        .network_settings
                        .networks
                        .get(&self.ctx.network)
                        .map(|endpoint| endpoint.ip_address.clone())
                        .filter(|ip| !ip.is_empty());
                }
                info.state
                    .started_at
                    .parse()
                    .unwrap_or_else(|_| Timestamp::now())
            }
            Err(error) => {
                tracing::warn!(
                    "kubelet {}: inspecting container {id}: {error:#}",
                    self.ctx.name
                );
                Timestamp::now()
            }
        };
        let slot = self.slot(which);
        slot.state = State::Running {
            id: id.clone(),
            started_at,
        };
        let spec = slot.spec.clone();
        slot.readiness.started(&spec);
        let exits = self.exits.clone();
        self.waits.spawn(async move {
            loop {
                match docker::wait(&id).await {
                    Ok(()) => break,
                    Err(error) if error.is_not_found() => break,
                    Err(error) => {
                        tracing::warn!("waiting for container {id}: {error}");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            let _ = exits.send(Exit(id));
        });
        Ok(())
    }

    /// Runs the readiness probes that are due; returns when the next one is.
    async fn probe_readiness(&mut self) -> Option<Instant> {
        let pod_ip = self.pod_ip.clone();
        let mut next: Option<Instant> = None;
        for slot in &mut self.main {
            let State::Running { id, .. } = &slot.state else {
                slot.readiness.stopped();
                continue;
            };
            let Some(probe) = slot.spec.readiness_probe.clone() else {
                continue;
            };
            if slot
                .readiness
                .next_at
                .is_some_and(|at| at <= Instant::now())
            {
                let passed = probes::run(&slot.spec, &probe, id, pod_ip.as_deref()).await;
                slot.readiness.record(&probe, passed);
            }
            next = match (next, slot.readiness.next_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    /// A fresh, empty, world-writable file for the container's termination
    /// message (any user the container runs as may write it).
    async fn termination_log(&self, container: &str) -> Result<PathBuf, Failure> {
        let path = self.termination_log_path(container);
        let file = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt as _;
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file, b"")?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
        })
        .await
        .map_err(|error| {
            Failure::Waiting(Waiting::creating(format!(
                "creating the termination log: {error}"
            )))
        })?
        .map_err(|error| {
            Failure::Waiting(Waiting::creating(format!(
                "creating the termination log {}: {error}",
                path.display()
            )))
        })?;
        Ok(path)
    }

    fn termination_log_path(&self, container: &str) -> PathBuf {
        self.dir
            .join("containers")
            .join(container)
            .join("termination-log")
    }

    /// Records how a running container ended.
    async fn on_exit(&mut self, id: &str) {
        let running = |slot: &Slot| matches!(&slot.state, State::Running { id: running, .. } if running == id);
        let which = if let Some(index) = self.init.iter().position(running) {
            Which::Init(index)
        } else if let Some(index) = self.main.iter().position(running) {
            Which::Main(index)
        } else {
            return;
        };
        let State::Running { started_at, .. } = self.slot(which).state.clone() else {
            return;
        };
        let terminated = match docker::inspect(id).await {
            Ok(info) => {
                let state = info.state;
                let reason = if state.oom_killed {
                    "OOMKilled"
                } else if state.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                Terminated {
                    id: Some(id.to_string()),
                    exit_code: state.exit_code,
                    reason: reason.to_string(),
                    message: self.termination_message(which, id, state.exit_code).await,
                    started_at: Some(state.started_at.parse().unwrap_or(started_at)),
                    finished_at: state
                        .finished_at
                        .parse()
                        .unwrap_or_else(|_| Timestamp::now()),
                }
            }
            Err(error) => Terminated {
                id: None,
                exit_code: 137,
                reason: "ContainerStatusUnknown".to_string(),
                message: Some(format!("the container vanished: {error:#}")),
                started_at: Some(started_at),
                finished_at: Timestamp::now(),
            },
        };
        self.after_exit(which, terminated);
        if let State::Waiting(Waiting {
            reason: "CrashLoopBackOff",
            ..
        }) = &self.slot(which).state
        {
            let container = self.slot(which).spec.name.clone();
            let message = format!(
                "Back-off restarting failed container {container} in pod {}",
                self.pod_for_humans()
            );
            self.container_event(which, Warning, "BackOff", &message)
                .await;
        }
    }

    /// The pod as the kubelet names it in messages: `name_namespace(uid)`.
    fn pod_for_humans(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.name_any(),
            self.pod.namespace().unwrap_or_default(),
            self.uid
        )
    }

    /// Records an Event from this node's kubelet about one of the pod's
    /// containers.
    async fn container_event(
        &mut self,
        which: Which,
        type_: events::Type,
        reason: &str,
        message: &str,
    ) {
        let field_path = match which {
            Which::Init(index) => format!("spec.initContainers{{{}}}", self.init[index].spec.name),
            Which::Main(index) => format!("spec.containers{{{}}}", self.main[index].spec.name),
        };
        let node = self.node().to_string();
        let reporter = events::Reporter::on_host("kubelet", &node);
        events::record_container(
            &self.ctx.client,
            reporter,
            &self.pod,
            field_path,
            type_,
            reason,
            message,
        )
        .await;
    }

    /// The container's termination message: what it wrote to its
    /// terminationMessagePath, or with `FallbackToLogsOnError` the tail of
    /// its log when it failed without writing one.
    async fn termination_message(
        &mut self,
        which: Which,
        id: &str,
        exit_code: i32,
    ) -> Option<String> {
        let spec = self.slot(which).spec.clone();
        let fallback = spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let path = self.termination_log_path(&spec.name);
        let written = tokio::fs::read(&path).await.unwrap_or_default();
        let mut message = written[..written.len().min(TERMINATION_MESSAGE_BYTES)].to_vec();
        if message.is_empty() && fallback && exit_code != 0 {
            if let Ok(mut log) = docker::logs(id, false, Some(FALLBACK_LOG_LINES)) {
                while let Some(Ok(chunk)) = log.next().await {
                    message.extend_from_slice(&chunk);
                }
            }
            message.drain(..message.len().saturating_sub(FALLBACK_LOG_BYTES));
        }
        (!message.is_empty()).then(|| String::from_utf8_lossy(&message).into_owned())
    }

    /// Applies the restart policy to a container that ended (or failed to
    /// start): it either waits in CrashLoopBackOff to be started again, or
    /// stays terminated.
    fn after_exit(&mut self, which: Which, terminated: Terminated) {
        let policy = self.restart_policy().to_string();
        let failed = terminated.exit_code != 0;
        let restart = match (which, policy.as_str()) {
            (_, "Never") => false,
            // Init containers run to completion once.
            (Which::Init(_), _) | (Which::Main(_), "OnFailure") => failed,
            (Which::Main(_), _) => true,
        };
        let pod = self.pod_for_humans();
        let slot = self.slot(which);
        if !restart {
            slot.state = State::Terminated(terminated);
            return;
        }
        let delay = slot.back_off(&terminated);
        slot.state = State::Waiting(Waiting {
            reason: "CrashLoopBackOff",
            message: format!(
                "back-off {}s restarting failed container={} pod={pod}",
                delay.as_secs(),
                slot.spec.name
            ),
        });
        slot.last_state = Some(terminated);
    }

    /// Says which containers are being stopped (`Killing`), as the kubelet
    /// does when their pod is deleted.
    async fn stop_running(&mut self) {
        let running: Vec<Which> = (0..self.init.len())
            .map(Which::Init)
            .chain((0..self.main.len()).map(Which::Main))
            .filter(|which| matches!(self.slot(*which).state, State::Running { .. }))
            .collect();
        for which in running {
            let message = format!("Stopping container {}", self.slot(which).spec.name);
            self.container_event(which, Normal, "Killing", &message)
                .await;
        }
    }

    /// Removes the pod's containers and files, and detaches its volumes.
    async fn teardown(&mut self) {
        self.waits.abort_all();
        let labels = [
            format!("{CLUSTER_LABEL}={}", self.ctx.name),
            format!("{POD_UID_LABEL}={}", self.uid),
        ];
        let removed = match docker::containers(&self.ctx.shared.instance, &labels).await {
            Ok(containers) => docker::remove(&containers).await,
            Err(error) => Err(error),
        };
        if let Err(error) = removed {
            tracing::warn!(
                "kubelet {}: removing the containers of pod {}: {error}",
                self.ctx.name,
                self.pod.name_any()
            );
        }
        if let Err(error) = tokio::fs::remove_dir_all(&self.dir).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "kubelet {}: removing {}: {error}",
                    self.ctx.name,
                    self.dir.display()
                );
            }
        }
        self.attachments.release(&self.uid);
        self.release_devices().await;
    }

    /// Detaches the loop devices this pod was the last user of.
    async fn release_devices(&self) {
        let (loops, uid) = (self.loops.clone(), self.uid.clone());
        let _ = tokio::task::spawn_blocking(move || loops.release(&uid)).await;
    }
}

/// Why a launch did not produce a running container.
enum Failure {
    /// Not yet: the container waits and is retried.
    Waiting(Waiting),
    /// Docker could not start it: this counts as a run that failed.
    StartError(String),
}

impl Failure {
    fn docker(error: docker::DockerError) -> Self {
        Failure::Waiting(Waiting {
            reason: "CreateContainerError",
            message: error.to_string(),
        })
    }
}

impl From<Waiting> for Failure {
    fn from(waiting: Waiting) -> Self {
        Failure::Waiting(waiting)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
