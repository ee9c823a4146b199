//! A pod's status as the real kubelet computes it from its containers
//! (phase, conditions, container statuses), and reporting it through the
//! status subresource whenever it changes.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::pod_worker::PodWorker;
use super::probes;
use super::state::{Slot, State, Terminated};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    /// Whether the pod is done for good: its containers are never
    /// (re)started again.
    pub(super) fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// The pod's phase, by the real kubelet's rules (`getPhase`): Pending while
/// initializing or while a container has never started; Running while a
/// container runs or will be restarted; Succeeded when every container
/// ended successfully for good; Failed when one failed for good.
pub(super) fn phase(worker: &PodWorker) -> Phase {
    let policy = worker.restart_policy();
    for slot in &worker.init {
        match &slot.state {
            State::Terminated(done) if done.exit_code == 0 => {}
            State::Terminated(_) if policy == "Never" => return Phase::Failed,
            _ => return Phase::Pending,
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for slot in &worker.main {
        match &slot.state {
            State::Running { .. } => running += 1,
            State::Terminated(done) => {
                stopped += 1;
                if done.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting to be restarted counts as stopped.
            State::Waiting(_) if slot.last_state.is_some() => stopped += 1,
            State::Waiting(_) => waiting += 1,
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 || policy == "Always" {
        Phase::Running
    } else if stopped == succeeded {
        Phase::Succeeded
    } else if policy == "Never" {
        Phase::Failed
    } else {
        Phase::Running
    }
}

/// The pod's status (condition transition times are filled in by the
/// [`Reporter`]).
pub(super) fn compute(worker: &PodWorker) -> PodStatus {
    let phase = phase(worker);
    let host_ip = worker.host_ip();
    let incomplete: Vec<&str> = worker
        .init
        .iter()
        .filter(|slot| !matches!(&slot.state, State::Terminated(done) if done.exit_code == 0))
        .map(|slot| slot.spec.name.as_str())
        .collect();
    let unready: Vec<&str> = worker
        .main
        .iter()
        .filter(|slot| {
            !matches!(slot.state, State::Running { .. })
                || !probes::is_ready(&slot.spec, &slot.readiness)
        })
        .map(|slot| slot.spec.name.as_str())
        .collect();
    let initialized = if incomplete.is_empty() {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };
    let ready = |type_: &str| {
        if unready.is_empty() {
            condition(type_, true, None, None)
        } else if phase.is_finished() {
            condition(type_, false, Some("PodCompleted"), None)
        } else {
            condition(
                type_,
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        }
    };
    PodStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(vec![
            condition("PodScheduled", true, None, None),
            initialized,
            ready("ContainersReady"),
            ready("Ready"),
        ]),
        host_ip: Some(host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: host_ip }]),
        pod_ip: worker.pod_ip.clone(),
        pod_ips: worker.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(worker.start_time)),
        init_container_statuses: (!worker.init.is_empty())
            .then(|| worker.init.iter().map(container_status).collect()),
        container_statuses: Some(worker.main.iter().map(container_status).collect()),
        ..PodStatus::default()
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message,
        ..PodCondition::default()
    }
}

fn container_status(slot: &Slot) -> ContainerStatus {
    let (state, container_id) = match &slot.state {
        State::Waiting(waiting) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(waiting.reason.to_string()),
                    message: Some(waiting.message.clone()).filter(|message| !message.is_empty()),
                }),
                ..ContainerState::default()
            },
            None,
        ),
        State::Running { id, started_at } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            Some(id.clone()),
        ),
        State::Terminated(terminated) => (terminated_state(terminated), terminated.id.clone()),
    };
    let running = matches!(slot.state, State::Running { .. });
    let ready = running && probes::is_ready(&slot.spec, &slot.readiness);
    ContainerStatus {
        name: slot.spec.name.clone(),
        image: slot.spec.image.clone().unwrap_or_default(),
        image_id: slot.image_id.clone().unwrap_or_default(),
        container_id: container_id.map(|id| format!("docker://{id}")),
        ready,
        started: Some(running),
        restart_count: slot.restart_count,
        state: Some(state),
        last_state: Some(
            slot.last_state
                .as_ref()
                .map(terminated_state)
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

fn terminated_state(terminated: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: terminated.id.as_ref().map(|id| format!("docker://{id}")),
            exit_code: terminated.exit_code,
            reason: Some(terminated.reason.clone()),
            message: terminated.message.clone(),
            started_at: terminated.started_at.map(Time),
            finished_at: Some(Time(terminated.finished_at)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// Sends a pod's status when it differs from what was last sent, keeping
/// each condition's lastTransitionTime from when its status last changed.
#[derive(Default)]
pub(super) struct Reporter {
    sent: Option<serde_json::Value>,
    transitions: HashMap<String, (String, Time)>,
}

impl Reporter {
    /// Whether the status is reported (or did not need to be).
    pub(super) async fn report(
        &mut self,
        api: &Api<Pod>,
        name: &str,
        mut status: PodStatus,
    ) -> bool {
        for condition in status.conditions.iter_mut().flatten() {
            let since = match self.transitions.get(&condition.type_) {
                Some((status, since)) if *status == condition.status => since.clone(),
                _ => Time(Timestamp::now()),
            };
            self.transitions.insert(
                condition.type_.clone(),
                (condition.status.clone(), since.clone()),
            );
            condition.last_transition_time = Some(since);
        }
        let status = match serde_json::to_value(&status) {
            Ok(status) => status,
            Err(error) => {
                tracing::error!("pod {name}: serializing its status: {error}");
                return true;
            }
        };
        if self.sent.as_ref() == Some(&status) {
            return true;
        }
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.sent = Some(status);
                true
            }
            // The pod is gone; its worker is about to hear so.
            Err(kube::Error::Api(error)) if error.code == 404 => true,
            Err(error) => {
                tracing::warn!("pod {name}: reporting its status: {error}");
                false
            }
        }
    }
}
