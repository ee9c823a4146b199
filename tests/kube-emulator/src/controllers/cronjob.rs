//! The CronJob controller (the v2 one): at each time the schedule fires
//! (in UTC, read from the pair's clock, which tests may advance) it makes
//! the Job `<cronjob>-<minutes since the epoch>` from the jobTemplate,
//! honouring `suspend` (no new Jobs), startingDeadlineSeconds (a run
//! missed by longer is skipped) and concurrencyPolicy (Allow, Forbid: skip
//! while a Job runs, Replace: delete the running ones first); it keeps
//! successfulJobsHistoryLimit (3) and failedJobsHistoryLimit (1) finished
//! Jobs and reports active, lastScheduleTime and lastSuccessfulTime. A
//! schedule that does not parse, or a time zone other than UTC, is a
//! Warning Event and no Jobs.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use serde_json::json;

use super::job::{has_condition, is_finished};
use super::owners;
use super::reconcile::{self, Failure};
use super::schedule::Schedule;
use crate::context::ClusterContext;

/// How often a CronJob is looked at while it waits for its next run: the
/// clock may be advanced at any time by a test.
const TICK: Duration = Duration::from_secs(1);
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let stream = Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client), watcher::Config::default())
    .run(
        |cj, ctx| async move { reconcile(cj, ctx).await.map_err(Failure) },
        reconcile::retry,
        ctx,
    );
    reconcile::drive("cronjob", stream).await
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cj.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = cj.uid().unwrap_or_default();
    let mut children: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|job| owners::controller_uid(job) == Some(uid.as_str()))
        .collect();
    children.sort_by_key(|job| job.metadata.creation_timestamp.as_ref().map(|t| t.0));
    prune_history(&jobs, &cj, &mut children).await?;

    let spec = &cj.spec;
    let previous = cj.status.clone().unwrap_or_default();
    let mut last_schedule = previous.last_schedule_time.as_ref().map(|t| t.0);
    let now = ctx.shared.clock.now();
    let schedule = match spec.schedule.parse::<Schedule>() {
        Ok(schedule) => schedule,
        Err(error) => {
            reconcile::event(
                &ctx,
                cj.as_ref(),
                "Warning",
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {error}", spec.schedule),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    if let Some(zone) = spec
        .time_zone
        .as_deref()
        .filter(|zone| !matches!(*zone, "UTC" | "Etc/UTC"))
    {
        reconcile::event(
            &ctx,
            cj.as_ref(),
            "Warning",
            "UnknownTimeZone",
            format!("invalid timeZone: {zone:?}: the emulator only runs CronJobs in UTC"),
        )
        .await;
        return Ok(Action::await_change());
    }

    if spec.suspend != Some(true) {
        let since = last_schedule
            .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let (due, _) = schedule.most_recent(since, now);
        if let Some(due) = due {
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|deadline| due + SignedDuration::from_secs(deadline) < now);
            let running: Vec<&Job> = children.iter().filter(|job| !is_finished(job)).collect();
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if too_late {
                reconcile::event(
                    &ctx,
                    cj.as_ref(),
                    "Warning",
                    "MissSchedule",
                    format!("Missed scheduled time to start a job: {due}"),
                )
                .await;
                last_schedule = Some(due);
            } else if policy == "Forbid" && !running.is_empty() {
                reconcile::event(&ctx, cj.as_ref(), "Normal", "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".to_string()).await;
            } else {
                if policy == "Replace" {
                    for job in running {
                        delete_job(&jobs, job).await?;
                        reconcile::event(
                            &ctx,
                            cj.as_ref(),
                            "Normal",
                            "SuccessfulDelete",
                            format!("Deleted job {}", job.name_any()),
                        )
                        .await;
                    }
                }
                let job = job_for(&cj, due);
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        reconcile::event(
                            &ctx,
                            cj.as_ref(),
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created job {}", created.name_any()),
                        )
                        .await;
                        children.push(created);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => {
                        reconcile::event(
                            &ctx,
                            cj.as_ref(),
                            "Warning",
                            "FailedCreate",
                            format!("Error creating job: {error}"),
                        )
                        .await;
                        return Err(error.into());
                    }
                }
                last_schedule = Some(due);
            }
        }
    }

    let active: Vec<ObjectReference> = children
        .iter()
        .filter(|job| !is_finished(job))
        .map(|job| ObjectReference {
            api_version: Some("batch/v1".to_string()),
            kind: Some("Job".to_string()),
            name: Some(job.name_any()),
            namespace: job.namespace(),
            uid: job.uid(),
            resource_version: job.resource_version(),
            ..ObjectReference::default()
        })
        .collect();
    let last_success = children
        .iter()
        .filter(|job| has_condition(job, "Complete"))
        .filter_map(|job| job.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max()
        .or(previous.last_successful_time.as_ref().map(|t| t.0));
    let status = json!({
        "active": if active.is_empty() { serde_json::Value::Null } else { json!(active) },
        "lastScheduleTime": last_schedule.map(|t| t.to_string()),
        "lastSuccessfulTime": last_success.map(|t| t.to_string()),
    });
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, cj.as_ref(), status).await?;
    let until_next = schedule
        .next_after(now)
        .and_then(|next| Duration::try_from(next - now).ok())
        .unwrap_or(TICK);
    Ok(Action::requeue(until_next.min(TICK)))
}

/// The Job for the run scheduled at `due`.
fn job_for(cj: &CronJob, due: Timestamp) -> Job {
    let template = cj.spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_ANNOTATION.to_string(), due.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{}",
                cj.name_any(),
                due.as_second().div_euclid(60)
            )),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn prune_history(
    jobs: &Api<Job>,
    cj: &CronJob,
    children: &mut Vec<Job>,
) -> anyhow::Result<()> {
    let limits = [
        (
            "Complete",
            cj.spec.successful_jobs_history_limit.unwrap_or(3),
        ),
        ("Failed", cj.spec.failed_jobs_history_limit.unwrap_or(1)),
    ];
    for (condition, limit) in limits {
        let finished: Vec<Job> = children
            .iter()
            .filter(|job| has_condition(job, condition))
            .cloned()
            .collect();
        let surplus = finished
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for job in &finished[..surplus] {
            delete_job(jobs, job).await?;
            children.retain(|child| child.uid() != job.uid());
        }
    }
    Ok(())
}

async fn delete_job(jobs: &Api<Job>, job: &Job) -> anyhow::Result<()> {
    match jobs
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        result => result.map(drop).map_err(Into::into),
    }
}
