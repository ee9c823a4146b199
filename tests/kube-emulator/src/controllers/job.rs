//! The Job controller: runs pods from the template (`<job>-<5
//! characters>`, labelled `controller-uid`, `batch.kubernetes.io/controller-uid`,
//! `job-name` and `batch.kubernetes.io/job-name`) up to `parallelism` at a
//! time until `completions` have succeeded (without completions: until one
//! has, the work-queue pattern), and fails the Job once more than
//! `backoffLimit` pods have failed (restarts count with OnFailure) or
//! activeDeadlineSeconds has passed. Failed pods are replaced after the
//! real controller's back-off (10 s doubling, at most 6 min). Suspending,
//! or setting parallelism to 0, deletes the active pods. The status has
//! active/ready/succeeded/failed, startTime/completionTime and the
//! conditions of 1.31+: SuccessCriteriaMet then Complete, FailureTarget
//! then Failed, Suspended. Indexed completion mode, pod failure policies
//! and success policies are not modelled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt as _};
use serde_json::{json, Value};

use super::owners;
use super::pods::{self, NewPod};
use super::reconcile;
use crate::context::ClusterContext;

const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    reconcile::run_owning::<Job, Pod, _>(ctx, "job", reconcile).await
}

/// Whether the Job has the condition `type_` True.
pub(super) fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
}

/// Whether the Job is done for good (Complete or Failed).
pub(super) fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

async fn reconcile(job: Arc<Job>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    if job.metadata.deletion_timestamp.is_some() || is_finished(&job) {
        return Ok(Action::await_change());
    }
    let Some(spec) = job.spec.clone() else {
        anyhow::bail!("Job {} has no spec", job.name_any());
    };
    let restart_policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_default();
    if !matches!(restart_policy.as_str(), "Never" | "OnFailure") {
        reconcile::event(&ctx, job.as_ref(), "Warning", "FailedCreate",
            format!("spec.template.spec.restartPolicy: Unsupported value: {restart_policy:?}: supported values: \"OnFailure\", \"Never\"")).await;
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let identity = BTreeMap::from([
        ("controller-uid".to_string(), uid.clone()),
        (
            "batch.kubernetes.io/controller-uid".to_string(),
            uid.clone(),
        ),
        ("job-name".to_string(), job.name_any()),
        ("batch.kubernetes.io/job-name".to_string(), job.name_any()),
    ]);
    let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "batch.kubernetes.io/controller-uid".to_string(),
            uid.clone(),
        )])),
        match_expressions: None,
    });
    let client = ctx.client.clone();
    let owned = owners::claim(
        |ns| Api::<Pod>::namespaced(client.clone(), ns),
        &owners::controller_ref(job.as_ref()),
        false,
        &selector,
        pods::list(&ctx, &namespace).await?,
    )
    .await?;
    let mut active: Vec<&Pod> = owned.iter().filter(|pod| pods::is_active(pod)).collect();
    let previous = job.status.clone().unwrap_or_default();
    // The counts only grow, as the real controller's (it tracks finished
    // pods and adds them up): a finished pod that is gone still counts.
    let succeeded = count(owned.iter().filter(|pod| pods::is_succeeded(pod)))
        .max(previous.succeeded.unwrap_or(0));
    let restarts: i32 = if restart_policy == "OnFailure" {
        active.iter().map(|pod| restart_count(pod)).sum()
    } else {
        0
    };
    let failed = (count(owned.iter().filter(|pod| pods::is_failed(pod))) + restarts)
        .max(previous.failed.unwrap_or(0));
    let now = ctx.shared.clock.now();
    let suspended = spec.suspend == Some(true);
    let start_time = previous
        .start_time
        .as_ref()
        .map(|t| t.0)
        .or((!suspended).then_some(now));
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions.or(spec.parallelism.is_none().then_some(1));
    let backoff_limit = spec.backoff_limit.unwrap_or(6);

    let mut conditions: Vec<Value> = Vec::new();
    let mut completion_time = None;
    let mut wake = reconcile::RESYNC;
    let failure = if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else {
        spec.active_deadline_seconds
            .zip(start_time)
            .filter(|(deadline, start)| *start + SignedDuration::from_secs(*deadline) <= now)
            .map(|_| {
                (
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".to_string(),
                )
            })
    };
    let complete = match completions {
        Some(wanted) => succeeded >= wanted,
        None => succeeded > 0 && active.is_empty(),
    };
    if let Some((reason, message)) = failure {
        for pod in &active {
            pods::delete(&ctx, pod).await?;
        }
        active.clear();
        conditions.push(condition("FailureTarget", reason, &message, now));
        conditions.push(condition("Failed", reason, &message, now));
        reconcile::event(&ctx, job.as_ref(), "Warning", reason, message).await;
    } else if complete {
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        ));
        conditions.push(condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        ));
        completion_time = Some(now);
        reconcile::event(
            &ctx,
            job.as_ref(),
            "Normal",
            "Completed",
            "Job completed".to_string(),
        )
        .await;
    } else {
        let wanted = if suspended {
            0
        } else if let Some(completions) = completions {
            parallelism.min(completions - succeeded)
        } else if succeeded > 0 {
            count(active.iter())
        } else {
            parallelism
        };
        let running = count(active.iter());
        if running > wanted {
            active.sort_by(|a, b| pods::deletion_order(a, b));
            let surplus = usize::try_from(running - wanted).unwrap_or(0);
            for pod in active.drain(..surplus) {
                pods::delete(&ctx, pod).await?;
            }
        } else if running < wanted {
            match backoff_remaining(&owned, failed - restarts, now) {
                Some(wait) => wake = wake.min(wait),
                None => {
                    for _ in running..wanted {
                        let pod = NewPod {
                            template: &spec.template,
                            namespace: &namespace,
                            owner: owners::controller_ref(job.as_ref()),
                            name: None,
                            generate_prefix: format!("{}-", job.name_any()),
                            extra_labels: identity.clone(),
                        }
                        .build();
                        if let Err(error) = pods::create(&ctx, &pod).await {
                            reconcile::event(
                                &ctx,
                                job.as_ref(),
                                "Warning",
                                "FailedCreate",
                                format!("Error creating: {error:#}"),
                            )
                            .await;
                            return Err(error);
                        }
                    }
                    reconcile::event(
                        &ctx,
                        job.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created {} pod(s)", wanted - running),
                    )
                    .await;
                }
            }
        }
        if suspended {
            conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
        } else if has_condition(&job, "Suspended") {
            let mut resumed = condition("Suspended", "JobResumed", "Job resumed", now);
            resumed["status"] = json!("False");
            conditions.push(resumed);
        }
    }
    // Conditions already there keep their times.
    for old in previous.conditions.iter().flatten() {
        if let Some(new) = conditions
            .iter_mut()
            .find(|c| c["type"] == old.type_.as_str() && c["status"] == old.status.as_str())
        {
            new["lastTransitionTime"] =
                json!(old.last_transition_time.as_ref().map(|t| t.0.to_string()));
            new["lastProbeTime"] = new["lastTransitionTime"].clone();
        }
    }
    let status = json!({
        "active": count(active.iter()),
        "ready": count(active.iter().filter(|pod| pods::is_ready(pod))),
        "succeeded": succeeded,
        "failed": failed,
        "terminating": 0,
        "startTime": start_time.map(|t| t.to_string()),
        "completionTime": completion_time.map(|t: Timestamp| t.to_string()),
        "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
    });
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, job.as_ref(), status).await?;
    Ok(Action::requeue(wake))
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map_or(0, |statuses| statuses.iter().map(|s| s.restart_count).sum())
}

/// How long until a replacement for a failed pod may be made: 10 s after
/// the last failure, doubling with each failure.
fn backoff_remaining(owned: &[Pod], failures: i32, now: Timestamp) -> Option<Duration> {
    if failures <= 0 {
        return None;
    }
    let last_failure = owned
        .iter()
        .filter(|pod| pods::is_failed(pod))
        .filter_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            statuses
                .iter()
                .filter_map(|s| {
                    s.state
                        .as_ref()?
                        .terminated
                        .as_ref()?
                        .finished_at
                        .as_ref()
                        .map(|t| t.0)
                })
                .max()
        })
        .max()?;
    let exponent = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(10);
    let delay = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(BACKOFF_MAX);
    let ready_at = last_failure + SignedDuration::try_from(delay).unwrap_or_default();
    (ready_at > now).then(|| Duration::try_from(ready_at - now).unwrap_or_default())
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    json!({
        "type": type_, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now.to_string(), "lastTransitionTime": now.to_string(),
    })
}
