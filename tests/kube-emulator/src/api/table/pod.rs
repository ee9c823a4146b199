//! A pod's row: READY, the STATUS kubectl is known for (a summary of the
//! phase, the init containers' progress and the containers' states:
//! `Init:0/1`, `ContainerCreating`, `CrashLoopBackOff`, `Completed`,
//! `Error`, `Terminating`, ...) and RESTARTS, worked out as Kubernetes'
//! pod printer does.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::{age, ago, int, list, name, or_none, text, Column, AGE, NAME};

pub(super) const COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column::new("Status", "string", "The aggregate status of the containers in this pod."),
    Column::new("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    Column::new("IP", "string", "podIP address allocated to the pod.").wide(),
    Column::new("Node", "string", "NodeName indicates in which node this pod is scheduled.").wide(),
    Column::new("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node.").wide(),
    Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.").wide(),
];

/// The pod's cells.
pub(super) fn cells(pod: &Value) -> Vec<Value> {
    let summary = Summary::of(pod);
    let restarts = match summary.last_restart.map(ago) {
        Some(ago) if summary.restarts != 0 => format!("{} ({ago} ago)", summary.restarts),
        _ => summary.restarts.to_string(),
    };
    let ip = list(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .unwrap_or_else(|| text(pod, "/status/podIP"));
    vec![
        json!(name(pod)),
        json!(format!("{}/{}", summary.ready, summary.total)),
        json!(summary.reason),
        json!(restarts),
        json!(age(pod)),
        json!(or_none(ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates(pod)),
    ]
}

/// The row condition of a pod that has finished.
pub(super) fn conditions(pod: &Value) -> Option<Value> {
    let finished = match text(pod, "/status/phase") {
        "Succeeded" => Some(("Succeeded", "The pod has completed successfully.")),
        "Failed" => Some(("Failed", "The pod failed.")),
        _ => None,
    };
    finished.map(|(reason, message)| {
        json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}])
    })
}

/// What the READY, STATUS and RESTARTS columns say.
struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<Timestamp>,
}

impl Summary {
    fn of(pod: &Value) -> Self {
        let phase = text(pod, "/status/phase");
        let mut reason = match text(pod, "/status/reason") {
            "" => phase.to_string(),
            given => given.to_string(),
        };
        let scheduling_gated = list(pod, "/status/conditions").iter().any(|condition| {
            text(condition, "/type") == "PodScheduled"
                && text(condition, "/reason") == "SchedulingGated"
        });
        if scheduling_gated {
            reason = "SchedulingGated".to_string();
        }
        let init_specs = list(pod, "/spec/initContainers");
        // Sidecars: init containers that keep running beside the others.
        let restartable = |name: &str| {
            init_specs
                .iter()
                .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
        };
        let mut summary = Self {
            ready: 0,
            total: list(pod, "/spec/containers").len()
                + init_specs
                    .iter()
                    .filter(|c| text(c, "/restartPolicy") == "Always")
                    .count(),
            reason,
            restarts: 0,
            last_restart: None,
        };
        let mut sidecar_restarts = 0;
        let mut last_sidecar_restart = None;
        let mut initializing = false;
        for (index, status) in list(pod, "/status/initContainerStatuses")
            .iter()
            .enumerate()
        {
            let count = int(status, "/restartCount");
            summary.restarts += count;
            let finished = last_termination(status);
            summary.last_restart = summary.last_restart.max(finished);
            let sidecar = restartable(text(status, "/name"));
            if sidecar {
                sidecar_restarts += count;
                last_sidecar_restart = last_sidecar_restart.max(finished);
            }
            let terminated = status.pointer("/state/terminated");
            let waiting_reason = text(status, "/state/waiting/reason");
            if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
                continue;
            }
            if sidecar && status["started"] == true {
                if status["ready"] == true {
                    summary.ready += 1;
                }
                continue;
            }
            summary.reason = match terminated {
                Some(terminated) => format!("Init:{}", termination_reason(terminated)),
                None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                    format!("Init:{waiting_reason}")
                }
                None => format!("Init:{index}/{}", init_specs.len()),
            };
            initializing = true;
            break;
        }
        let initialized = list(pod, "/status/conditions").iter().any(|condition| {
            text(condition, "/type") == "Initialized" && text(condition, "/status") == "True"
        });
        if !initializing || initialized {
            summary.restarts = sidecar_restarts;
            summary.last_restart = last_sidecar_restart;
            let mut running = false;
            for status in list(pod, "/status/containerStatuses").iter().rev() {
                summary.restarts += int(status, "/restartCount");
                summary.last_restart = summary.last_restart.max(last_termination(status));
                let waiting_reason = text(status, "/state/waiting/reason");
                if !waiting_reason.is_empty() {
                    summary.reason = waiting_reason.to_string();
                } else if let Some(terminated) = status.pointer("/state/terminated") {
                    summary.reason = termination_reason(terminated);
                } else if status["ready"] == true && status.pointer("/state/running").is_some() {
                    running = true;
                    summary.ready += 1;
                }
            }
            if summary.reason == "Completed" && running {
                let ready = list(pod, "/status/conditions").iter().any(|condition| {
                    text(condition, "/type") == "Ready" && text(condition, "/status") == "True"
                });
                summary.reason = if ready { "Running" } else { "NotReady" }.to_string();
            }
        }
        let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && text(pod, "/status/reason") == "NodeLost" {
            summary.reason = "Unknown".to_string();
        } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
            summary.reason = "Terminating".to_string();
        }
        summary
    }
}

/// A terminated state's reason, or its signal or exit code when it gives
/// none (`Signal:9`, `ExitCode:3`).
fn termination_reason(terminated: &Value) -> String {
    match text(terminated, "/reason") {
        "" if int(terminated, "/signal") != 0 => format!("Signal:{}", int(terminated, "/signal")),
        "" => format!("ExitCode:{}", int(terminated, "/exitCode")),
        reason => reason.to_string(),
    }
}

/// When a container's previous run ended, if it did.
fn last_termination(status: &Value) -> Option<Timestamp> {
    text(status, "/lastState/terminated/finishedAt")
        .parse()
        .ok()
}

/// `true conditions/gates`, or `<none>` without readiness gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = list(pod, "/status/conditions");
    let met = gates
        .iter()
        .filter(|gate| {
            conditions
                .iter()
                .find(|c| text(c, "/type") == text(gate, "/conditionType"))
                .is_some_and(|c| text(c, "/status") == "True")
        })
        .count();
    format!("{met}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(pod: Value) -> (String, String, String) {
        let cells = cells(&pod);
        let text = |i: usize| cells[i].as_str().unwrap_or_default().to_string();
        (text(1), text(2), text(3))
    }

    fn pod(init: usize, status: Value) -> Value {
        let inits: Vec<Value> = (0..init)
            .map(|i| json!({"name": format!("init-{i}")}))
            .collect();
        json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"initContainers": inits, "containers": [{"name": "main"}]},
            "status": status,
        })
    }

    #[test]
    fn the_status_column_summarises_phase_and_container_states() {
        let waiting = |reason: &str| json!({"name": "main", "state": {"waiting": {"reason": reason}}, "restartCount": 0});
        let cases = [
            (pod(0, json!({"phase": "Pending"})), "0/1", "Pending"),
            (
                pod(
                    0,
                    json!({"phase": "Pending", "containerStatuses": [waiting("ContainerCreating")]}),
                ),
                "0/1",
                "ContainerCreating",
            ),
            (
                pod(
                    0,
                    json!({"phase": "Running", "containerStatuses": [{"name": "main", "ready": true, "state": {"running": {}}}]}),
                ),
                "1/1",
                "Running",
            ),
            (
                pod(
                    0,
                    json!({"phase": "Succeeded", "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                ),
                "0/1",
                "Completed",
            ),
            (
                pod(
                    0,
                    json!({"phase": "Failed", "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}),
                ),
                "0/1",
                "Error",
            ),
            (
                pod(
                    0,
                    json!({"phase": "Failed", "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 3}}}]}),
                ),
                "0/1",
                "ExitCode:3",
            ),
            (
                pod(
                    0,
                    json!({"phase": "Running", "containerStatuses": [waiting("CrashLoopBackOff")]}),
                ),
                "0/1",
                "CrashLoopBackOff",
            ),
            (
                pod(
                    1,
                    json!({"phase": "Pending", "initContainerStatuses": [{"name": "init-0", "state": {"running": {}}}]}),
                ),
                "0/1",
                "Init:0/1",
            ),
            (
                pod(
                    2,
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init-0", "state": {"terminated": {"exitCode": 0}}},
                        {"name": "init-1", "state": {"waiting": {"reason": "PodInitializing"}}},
                    ]}),
                ),
                "0/1",
                "Init:1/2",
            ),
            (
                pod(
                    1,
                    json!({"phase": "Pending", "initContainerStatuses": [{"name": "init-0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
                ),
                "0/1",
                "Init:Error",
            ),
        ];
        for (pod, ready, status) in cases {
            let (shown_ready, shown_status, _) = status_of(pod.clone());
            assert_eq!(
                (shown_ready.as_str(), shown_status.as_str()),
                (ready, status),
                "{pod}"
            );
        }
    }

    #[test]
    fn a_deleted_pod_is_terminating_and_restarts_say_when() {
        let mut running = pod(
            0,
            json!({"phase": "Running", "containerStatuses": [{
                "name": "main", "ready": true, "state": {"running": {}}, "restartCount": 2,
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:00:00Z"}},
            }]}),
        );
        let (_, status, restarts) = status_of(running.clone());
        assert_eq!(status, "Running");
        assert!(
            restarts.starts_with("2 (") && restarts.ends_with(" ago)"),
            "{restarts}"
        );
        running["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
        assert_eq!(status_of(running).1, "Terminating");
    }
}
