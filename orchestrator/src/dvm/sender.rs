//! One PVC's copy: its sender pod, run until it succeeds, fails for good,
//! or runs out of retries, with progress read from the mover's JSON
//! events in the pod's log.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{ListParams, LogParams};
use kube::Api;
use serde::Deserialize;

use crate::clusters::Cluster;
use crate::display::Board;
use crate::kubeops::{apply, create_if_missing, delete_and_wait, poll};
use crate::manifests::{self, Placement, Target, VolumeMode};
use crate::names;
use crate::plan::Plan;
use crate::report::{Counters, PvcState};

/// Everything one PVC's copy needs.
pub struct Job<'a> {
    pub plan: &'a Plan,
    pub source: &'a Cluster,
    pub namespace: String,
    pub pvc: String,
    /// Whether the PVC is copied as a file tree or as a device.
    pub mode: VolumeMode,
    pub placement: Placement,
    pub target: Target,
    /// A final copy: the PVC's users are stopped, so a file changing
    /// while being read (exit 24) means the copy is not the last state and
    /// must be made again; it is never recorded as done.
    pub final_copy: bool,
    /// The CA certificate and this sender's certificate (for its volume
    /// only).
    pub ca_cert: String,
    pub client_pem: mover::certs::Pem,
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done {
        warning: Option<String>,
    },
    /// Retrying cannot help (unreadable files, refused certificate, ...).
    Permanent(String),
    /// Retrying may help (network, receiver restarted, pod evicted, ...).
    Retryable(String),
}

/// How long a sender may take to start (image pull, volume attach).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// The pause before looking again at a sender pod the API server would not
/// show.
const OBSERVE_PAUSE: Duration = Duration::from_secs(5);
/// How many non-JSON log lines to keep as the failure reason.
const REASON_LINES: usize = 4;

/// Runs the PVC's sender until it is done, updating `board`. Returns
/// true on success.
pub async fn run(job: &Job<'_>, board: &Board) -> bool {
    let (ns, pvc) = (job.namespace.as_str(), job.pvc.as_str());
    let started = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(job.source.client.clone(), ns);
    let secret = manifests::sender_secret(ns, pvc, job.plan, &job.ca_cert, &job.client_pem);
    if let Err(e) = apply(&secrets, &secret).await {
        board.update(ns, pvc, |r| {
            r.state = PvcState::Failed;
            r.error = Some(format!("creating Secret {ns}/{}: {e}", names::sender(pvc)));
        });
        return false;
    }
    let attempts = job.plan.retries + 1;
    for attempt in 1..=attempts {
        board.update(ns, pvc, |r| {
            r.attempts = attempt;
            r.state = PvcState::Starting;
        });
        let outcome = match attempt_once(job, board).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Retryable(format!("{e:#}")),
        };
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Done { warning } => {
                board.update(ns, pvc, |r| {
                    r.state = PvcState::Done;
                    r.warning = warning;
                    r.error = None;
                    r.duration_secs = elapsed;
                });
                return true;
            }
            Outcome::Permanent(reason) => {
                board.update(ns, pvc, |r| {
                    r.state = PvcState::Failed;
                    r.error = Some(reason);
                    r.duration_secs = elapsed;
                });
                return false;
            }
            Outcome::Retryable(reason) if attempt == attempts => {
                board.update(ns, pvc, |r| {
                    r.state = PvcState::Failed;
                    r.error = Some(format!("{reason} (after {attempts} attempts)"));
                    r.duration_secs = elapsed;
                });
                return false;
            }
            Outcome::Retryable(reason) => {
                board.update(ns, pvc, |r| {
                    r.state = PvcState::Retrying;
                    r.error = Some(reason);
                });
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    false
}

/// Seconds before retry `attempt + 1`: 2, 4, 8, ... up to 60.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt).min(60))
}

/// One sender pod from creation to exit.
async fn attempt_once(job: &Job<'_>, board: &Board) -> anyhow::Result<Outcome> {
    let (ns, pvc) = (job.namespace.as_str(), job.pvc.as_str());
    let name = names::sender(pvc);
    let pods: Api<Pod> = Api::namespaced(job.source.client.clone(), ns);
    delete_and_wait(&pods, &name, START_TIMEOUT).await?;
    let placement = current_placement(job, &pods).await;
    let pod = manifests::sender_pod(ns, pvc, job.mode, job.plan, &placement, &job.target);
    // A create retried after its answer was lost finds its own pod.
    create_if_missing(&pods, &pod).await?;

    // Watch the pod until its container runs (or fails before it could).
    let started = poll(&pods, &name, START_TIMEOUT, "to start", |pod| {
        let Some(pod) = pod else {
            return Some(Err(Outcome::Retryable(format!(
                "sender pod {ns}/{name} was deleted before it started"
            ))));
        };
        if let Some(problem) = container_problem(pod) {
            return Some(Err(Outcome::Permanent(format!(
                "sender pod {ns}/{name}: {problem}"
            ))));
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Running" | "Succeeded" | "Failed")).then_some(Ok(()))
    })
    .await;
    match started {
        Ok(Ok(())) => {}
        Ok(Err(outcome)) => return Ok(outcome),
        Err(timeout) => {
            return Ok(Outcome::Retryable(format!(
                "sender pod {ns}/{name}: {timeout:#}"
            )))
        }
    }

    board.update(ns, pvc, |r| r.state = PvcState::Copying);
    let mut reason_lines = VecDeque::new();
    let mut summary = None;
    // Follow the log until the container ends; a log stream that breaks
    // or stalls (the client's read timeout) is opened again from the
    // start: the events carry absolute counters and the reason window ends
    // with the log's last lines, so reading a line twice changes nothing.
    loop {
        follow_log(&pods, &name, job, board, &mut reason_lines, &mut summary).await;
        let pod = observe(&pods, &name).await?;
        if let Some((code, message)) = termination(&pod) {
            let log_reason = Vec::from(reason_lines).join("; ");
            let reason = if log_reason.is_empty() {
                message
            } else {
                log_reason
            };
            let _ = pods.delete(&name, &Default::default()).await;
            return Ok(classify(code, summary, reason, job.final_copy));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where the sender must run now: an application pod using a
/// ReadWriteOnce volume may have moved to another node since preflight
/// (rescheduled, or restarted by a stage run's retry), so the pods using
/// the PVC are looked up again on every attempt. When none runs (a final
/// copy, users stopped) the placement from preflight, taken from the
/// recorded users, stands.
async fn current_placement(job: &Job<'_>, pods: &Api<Pod>) -> Placement {
    let applications = ListParams::default().labels(&format!("!{}", names::TRANSFER_LABEL));
    let Ok(live) = pods.list(&applications).await else {
        return job.placement.clone();
    };
    let Ok(pvc) =
        Api::<PersistentVolumeClaim>::namespaced(job.source.client.clone(), &job.namespace)
            .get(&job.pvc)
            .await
    else {
        return job.placement.clone();
    };
    let now = manifests::placement(&pvc, &live.items, job.placement.admission);
    if now.security.is_some() || now.node.is_some() {
        now
    } else {
        job.placement.clone()
    }
}

/// The sender pod as it is now. A look that fails because the API server
/// is busy or away (after the client's own retries) is no reason to give
/// up a transfer whose pod keeps running: the look is repeated until it
/// succeeds or fails for a reason that will not pass (the pod was
/// deleted, reading it is forbidden).
async fn observe(pods: &Api<Pod>, name: &str) -> kube::Result<Pod> {
    loop {
        match pods.get(name).await {
            Err(e) if crate::client::is_transient(&e) => {
                tracing::warn!("sender pod {name}: cannot look at it now ({e}); looking again");
                tokio::time::sleep(OBSERVE_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Reads the pod's log as it grows, turning the mover's events into board
/// updates and keeping the last other lines as a possible failure reason.
async fn follow_log(
    pods: &Api<Pod>,
    name: &str,
    job: &Job<'_>,
    board: &Board,
    reason_lines: &mut VecDeque<String>,
    summary: &mut Option<Summary>,
) {
    let params = LogParams {
        follow: true,
        container: Some("mover".into()),
        ..LogParams::default()
    };
    let Ok(stream) = pods.log_stream(name, &params).await else {
        return;
    };
    let mut lines = stream.lines();
    while let Ok(Some(line)) = lines.try_next().await {
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Progress {
                counters,
                rate_bytes_per_sec,
                eta_secs,
            }) => board.update(&job.namespace, &job.pvc, |r| {
                r.counters = counters;
                r.rate = rate_bytes_per_sec;
                r.eta_secs = eta_secs;
            }),
            Ok(Event::Summary(s)) => {
                board.update(&job.namespace, &job.pvc, |r| {
                    r.counters = s.counters;
                    r.files_deleted = s.files_deleted;
                    if s.duration_secs > 0.0 {
                        r.rate = s.counters.bytes_done as f64 / s.duration_secs;
                    }
                });
                *summary = Some(s);
            }
            Err(_) => {
                let line = line.trim();
                if !line.is_empty() {
                    if reason_lines.len() == REASON_LINES {
                        reason_lines.pop_front();
                    }
                    reason_lines.push_back(line.to_string());
                }
            }
        }
    }
}

/// The mover's JSON events (see `mover::progress`).
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    /// The counters are fields of the event itself, as the summary's are.
    Progress {
        #[serde(flatten)]
        counters: Counters,
        rate_bytes_per_sec: f64,
        eta_secs: Option<f64>,
    },
    Summary(Summary),
}

#[derive(Debug, Deserialize)]
struct Summary {
    #[serde(flatten)]
    counters: Counters,
    #[serde(default)]
    files_deleted: u64,
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    problems: Vec<String>,
}

/// What an exit code means, by the mover's documented codes, for a stage
/// or a final copy.
fn classify(code: i32, summary: Option<Summary>, reason: String, final_copy: bool) -> Outcome {
    let problems = || {
        summary
            .as_ref()
            .map(|s| {
                s.problems
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| reason.clone())
    };
    match code {
        0 => Outcome::Done { warning: None },
        24 if final_copy => Outcome::Retryable(format!(
            "files changed during the final copy although the PVC's users were stopped \
             (something still writes to it): {}",
            problems()
        )),
        24 => Outcome::Done {
            warning: Some(format!("files changed while being read: {}", problems())),
        },
        23 => Outcome::Permanent(format!(
            "some source files could not be read: {}",
            problems()
        )),
        1 | 2 => Outcome::Permanent(reason),
        75 => Outcome::Retryable(reason),
        _ => Outcome::Retryable(format!("sender exited with code {code}: {reason}")),
    }
}

/// Why a pod's container cannot run at all, if that is the case.
pub fn container_problem(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "InvalidImageName"
                | "CreateContainerConfigError"
                | "CreateContainerError"
                | "CrashLoopBackOff"
        )
        .then(|| {
            format!(
                "{reason}: {}",
                waiting.message.as_deref().unwrap_or("no message")
            )
        })
    })
}

/// The exit code and termination message of a pod's ended container.
pub fn termination(pod: &Pod) -> Option<(i32, String)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let terminated = status.state.as_ref()?.terminated.as_ref()?;
        let message = terminated
            .message
            .clone()
            .or_else(|| terminated.reason.clone())
            .unwrap_or_default();
        Some((terminated.exit_code, message.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A progress line as `mover send --progress json` prints it, taken
    /// from the real binary's output.
    #[test]
    fn the_movers_progress_events_are_read() {
        let line = r#"{"event":"progress","volume":"v","attempt":1,"elapsed_secs":2.0,"rate_bytes_per_sec":1998072.9,"eta_secs":3.5,"files_examined":2,"bytes_examined":4000000,"files_sent":1,"bytes_sent":4000000,"bytes_matched":0,"bytes_done":4000000,"wire_bytes":2099983,"vanished":0,"errors":0}"#;
        let Ok(Event::Progress {
            counters,
            rate_bytes_per_sec,
            eta_secs,
        }) = serde_json::from_str::<Event>(line)
        else {
            panic!("not read as progress: {line}");
        };
        assert_eq!(
            (counters.wire_bytes, counters.bytes_done),
            (2099983, 4000000)
        );
        assert_eq!(
            (rate_bytes_per_sec.round(), eta_secs),
            (1998073.0, Some(3.5))
        );
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(
            classify(0, None, String::new(), false),
            Outcome::Done { warning: None }
        );
        let summary = Summary {
            counters: Counters::default(),
            files_deleted: 0,
            duration_secs: 1.0,
            problems: vec!["secret.txt: Permission denied".into()],
        };
        assert_eq!(
            classify(23, Some(summary), "mover: 1 entries".into(), false),
            Outcome::Permanent(
                "some source files could not be read: secret.txt: Permission denied".into()
            )
        );
        assert!(matches!(
            classify(24, None, "x".into(), false),
            Outcome::Done { warning: Some(_) }
        ));
        assert!(
            matches!(classify(24, None, "x".into(), true), Outcome::Retryable(m) if m.contains("final copy")),
            "a final copy whose source changed is never done"
        );
        assert_eq!(
            classify(1, None, "bad cert".into(), false),
            Outcome::Permanent("bad cert".into())
        );
        assert_eq!(
            classify(75, None, "reset".into(), false),
            Outcome::Retryable("reset".into())
        );
        assert!(
            matches!(classify(137, None, "killed".into(), false), Outcome::Retryable(m) if m.contains("137"))
        );
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(10), Duration::from_secs(60));
    }

    #[test]
    fn mover_summaries_parse() {
        let summary = r#"{"event":"summary","attempt":1,"volume":"data","duration_secs":1.5,"files_examined":3,
            "bytes_examined":30,"files_sent":3,"bytes_sent":30,"bytes_matched":0,"bytes_done":30,"wire_bytes":40,
            "vanished":0,"errors":0,"files_deleted":2,"files_written":3,"problems":[]}"#;
        match serde_json::from_str::<Event>(&summary.replace('\n', "")).unwrap() {
            Event::Summary(s) => assert_eq!((s.counters.wire_bytes, s.files_deleted), (40, 2)),
            Event::Progress { .. } => panic!("wrong event"),
        }
        assert!(serde_json::from_str::<Event>("mover: connection refused").is_err());
    }
}
