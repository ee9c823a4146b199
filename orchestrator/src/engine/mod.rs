//! The migration engine: walks an itinerary (`crate::itinerary`) step by
//! step, keeping every step's state in the Migration resource
//! (`crate::migration`), so that running the same command again after a
//! crash or `kill -9` continues from the step it was in.
//!
//! Every step is idempotent: it looks at the clusters and the status, does
//! what is missing and reports an [`Outcome`]. An `Err` is transient (an
//! API error, a conflict): the step is retried with backoff and its
//! `retries` counted, until [`MAX_RETRIES`]. A `Failed` outcome is final:
//! the migration is marked Failed, transfer objects are removed, and the
//! report says what to do next.
//!
//! - `mod.rs`: the loop, status saving, the report;
//! - [`steps`]: what each step does.

pub mod steps;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::clusters::Cluster;
use crate::display::Board;
use crate::itinerary::{itinerary, Flags, StepName};
use crate::migration::store::{Migration, Store};
use crate::migration::{MigrationSpec, MigrationStatus, Phase, RunKind, StepPhase, StepStatus};
use crate::plan::Plan;
use crate::report::Report;

/// Transient failures a step may have before the migration fails.
pub const MAX_RETRIES: u32 = 8;
/// How often live progress (per-PVC counters) is saved into the status.
const PROGRESS_SAVE: Duration = Duration::from_secs(3);

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the message (if any) is shown with the step.
    Done(Option<String>),
    /// Failed for good: the migration stops.
    Failed(String),
}

/// Why a run could not start or continue at all.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Preflight found problems; nothing was changed.
    #[error("{0}")]
    Preflight(crate::preflight::Problems),
    /// The clusters could not be asked, or the Migration resource is
    /// unusable.
    #[error("{0:#}")]
    Cluster(anyhow::Error),
    /// A run of another kind of the same plan is in flight.
    #[error("{0}")]
    Conflict(String),
}

/// What every step may use.
pub struct Context<'a> {
    pub plan: &'a Plan,
    pub source: &'a Cluster,
    pub destination: &'a Cluster,
    pub board: Arc<Board>,
    /// The run's name (the Migration resource's).
    pub run: String,
    /// The Migration's uid, which its Events name.
    uid: Option<String>,
    pub kind: RunKind,
    status: Arc<Mutex<MigrationStatus>>,
    store: Store,
}

impl Context<'_> {
    /// A copy of the status as last saved or changed.
    pub async fn status(&self) -> MigrationStatus {
        self.status.lock().await.clone()
    }

    /// Changes the status and saves it at once.
    pub async fn update(&self, change: impl FnOnce(&mut MigrationStatus)) -> anyhow::Result<()> {
        let mut status = self.status.lock().await;
        change(&mut status);
        self.store.save(&self.run, &status).await
    }

    /// Publishes an Event on the Migration for `action` (a step, or
    /// `Migrate`); never fails the run.
    async fn event(&self, warning: bool, action: &str, reason: &str, note: String) {
        self.store
            .event(
                (&self.run, self.uid.as_deref()),
                warning,
                (action, reason),
                note,
            )
            .await;
    }

    /// Every run of the plan, oldest first (this one included).
    pub async fn runs(&self) -> anyhow::Result<Vec<Migration>> {
        self.store.list(Some(&self.plan.name)).await
    }

    /// The flags preflight recorded.
    pub async fn flags(&self) -> Flags {
        let status = self.status.lock().await;
        status
            .records
            .get("flags")
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default()
    }

    /// Sets the running step's message (shown live and by `status`).
    pub async fn say(&self, step: StepName, message: &str) {
        self.board.println(&format!("{}: {message}", step.as_str()));
        let result = self
            .update(|s| {
                if let Some(record) = s.step_mut(step.as_str()) {
                    record.message = Some(message.to_string());
                }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("saving progress: {e:#}");
        }
    }
}

/// Finds the plan's run in flight (resuming it) or starts a new one of
/// `kind`, and drives it to its end.
pub async fn run(
    plan: &Plan,
    kind: RunKind,
    source: &Cluster,
    destination: &Cluster,
) -> Result<Report, StartError> {
    let store = Store::install(destination)
        .await
        .map_err(StartError::Cluster)?;
    let others = store.list(None).await.map_err(StartError::Cluster)?;
    if let Some(message) = overlapping(plan, &others) {
        return Err(StartError::Conflict(message));
    }
    let migration = match store
        .in_flight(&plan.name)
        .await
        .map_err(StartError::Cluster)?
    {
        Some(found) if kind == RunKind::Rollback && found.spec.kind != kind => {
            // A rollback supersedes an interrupted stage or final run.
            let mut status = found.status.clone();
            status.phase = Phase::Failed;
            status.finished = Some(now());
            status.errors.push("superseded by a rollback".to_string());
            store
                .save(&found.name, &status)
                .await
                .map_err(StartError::Cluster)?;
            store
                .create(spec(plan, kind))
                .await
                .map_err(StartError::Cluster)?
        }
        Some(found) if found.spec.kind != kind => {
            return Err(StartError::Conflict(format!(
                "a {} run of migration {:?} ({}) is in flight at step {}: run `orchestrator {}` \
                 again to finish it, or `orchestrator rollback` to undo it",
                found.spec.kind.as_str(),
                plan.name,
                found.name,
                found.status.step,
                match found.spec.kind {
                    RunKind::Stage => "migrate --stage",
                    RunKind::Final => "migrate",
                    RunKind::Rollback => "rollback",
                }
            )))
        }
        Some(found) => {
            eprintln!(
                "resuming {} at step {}",
                found.name,
                if found.status.step.is_empty() {
                    "Preflight"
                } else {
                    &found.status.step
                }
            );
            found
        }
        None => {
            // Preflight changes nothing: a plan that cannot run leaves no
            // Migration behind.
            if kind != RunKind::Rollback {
                crate::preflight::check(plan, source, destination)
                    .await
                    .map_err(StartError::Preflight)?;
            }
            store
                .create(spec(plan, kind))
                .await
                .map_err(StartError::Cluster)?
        }
    };
    Ok(drive(plan, source, destination, store, migration).await)
}

/// Drives the existing Migration `name` of `store` (a controller's, whose
/// spec the controller completed) from the step it is at to its end.
pub async fn resume(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
    store: Store,
    name: &str,
) -> Result<Report, StartError> {
    let migration = store
        .get(name)
        .await
        .map_err(StartError::Cluster)?
        .ok_or_else(|| StartError::Cluster(anyhow::anyhow!("Migration {name} not found")))?;
    Ok(drive(plan, source, destination, store, migration).await)
}

/// Another plan's run in flight over one of this plan's namespaces: two
/// migrations quiescing, copying into and restoring the same namespaces
/// would undo each other.
fn overlapping(plan: &Plan, runs: &[Migration]) -> Option<String> {
    let ours: Vec<&str> = plan.namespaces.iter().map(|m| m.source.as_str()).collect();
    runs.iter()
        .filter(|run| run.spec.plan_name != plan.name && !run.status.is_finished())
        .find_map(|run| {
            let shared: Vec<&str> = run
                .spec
                .namespaces
                .iter()
                .map(String::as_str)
                .filter(|ns| ours.contains(ns))
                .collect();
            (!shared.is_empty()).then(|| {
                format!(
                    "migration {} (plan {:?}) is in flight over namespace(s) {}: wait for it to \
                     finish or roll it back first",
                    run.name,
                    run.spec.plan_name,
                    shared.join(", ")
                )
            })
        })
}

/// The spec recorded for a new run.
fn spec(plan: &Plan, kind: RunKind) -> MigrationSpec {
    MigrationSpec {
        plan_name: plan.name.clone(),
        plan_ref: None,
        kind,
        namespaces: plan.namespaces.iter().map(|m| m.source.clone()).collect(),
        quiesce: plan.quiesce,
        plan: serde_json::to_value(plan).unwrap_or_default(),
    }
}

async fn drive(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
    store: Store,
    migration: Migration,
) -> Report {
    let Migration {
        name,
        uid,
        spec,
        status,
    } = migration;
    let ctx = Context {
        plan,
        source,
        destination,
        board: Arc::new(Board::new()),
        run: name,
        uid,
        kind: spec.kind,
        status: Arc::new(Mutex::new(status)),
        store,
    };
    let steps = itinerary(spec.kind);
    let init = ctx
        .update(|s| {
            if s.steps.is_empty() {
                s.steps = steps
                    .iter()
                    .map(|step| StepStatus {
                        name: step.name.as_str().to_string(),
                        ..StepStatus::default()
                    })
                    .collect();
            }
            s.started.get_or_insert_with(now);
        })
        .await;
    if let Err(e) = init {
        return ctx.fail_report(format!("{e:#}")).await;
    }

    let progress = tokio::spawn(save_progress(
        ctx.board.clone(),
        ctx.status.clone(),
        ctx.store.clone(),
        ctx.run.clone(),
    ));
    let mut failure = None;
    for step in steps {
        let record = ctx.status().await.step(step.name.as_str()).cloned();
        if matches!(
            record.map(|r| r.phase),
            Some(StepPhase::Done | StepPhase::Skipped)
        ) {
            continue;
        }
        // Preflight decides the flags; every later step reads them.
        if step.name != StepName::Preflight && !(step.when)(&ctx.flags().await) {
            let _ = ctx
                .update(|s| set_phase(s, step.name, StepPhase::Skipped, None))
                .await;
            continue;
        }
        ctx.board
            .println(&format!("{}: {}", step.name.as_str(), step.description));
        if let Err(e) = ctx
            .update(|s| {
                s.step = step.name.as_str().to_string();
                set_phase(s, step.name, StepPhase::Running, None);
            })
            .await
        {
            failure = Some(format!("{e:#}"));
            break;
        }
        let name = step.name.as_str();
        ctx.event(
            false,
            name,
            "StepStarted",
            format!("{name}: {}", step.description),
        )
        .await;
        match run_with_retries(&ctx, step.name).await {
            Outcome::Done(message) => {
                let note = match &message {
                    Some(message) => format!("{name}: {message}"),
                    None => format!("{name} done"),
                };
                let saved = ctx
                    .update(|s| set_phase(s, step.name, StepPhase::Done, message))
                    .await;
                if let Err(e) = saved {
                    failure = Some(format!("{e:#}"));
                    break;
                }
                ctx.event(false, name, "StepSucceeded", note).await;
            }
            Outcome::Failed(reason) => {
                let _ = ctx
                    .update(|s| set_phase(s, step.name, StepPhase::Failed, Some(reason.clone())))
                    .await;
                ctx.event(true, name, "StepFailed", format!("{name}: {reason}"))
                    .await;
                failure = Some(format!("{name}: {reason}"));
                break;
            }
        }
    }
    progress.abort();

    match failure {
        None => {
            let _ = ctx
                .update(|s| {
                    s.phase = Phase::Succeeded;
                    s.finished = Some(now());
                })
                .await;
            ctx.event(
                false,
                "Migrate",
                "Succeeded",
                format!("{} run succeeded", ctx.kind.as_str()),
            )
            .await;
            ctx.report().await
        }
        Some(reason) => {
            ctx.event(true, "Migrate", "Failed", reason.clone()).await;
            ctx.fail_report(reason).await
        }
    }
}

impl Context<'_> {
    /// Marks the run Failed with `reason`, removes transfer objects (a
    /// failed run leaves no sender or receiver behind), and reports.
    async fn fail_report(&self, reason: String) -> Report {
        let leftovers = if self.kind == RunKind::Rollback {
            Vec::new()
        } else {
            crate::cleanup::run(self.plan, self.source, self.destination).await
        };
        let quiesced = self
            .status()
            .await
            .step(StepName::Quiesce.as_str())
            .is_some_and(|s| {
                matches!(
                    s.phase,
                    StepPhase::Done | StepPhase::Running | StepPhase::Failed
                )
            });
        let _ = self
            .update(|s| {
                s.phase = Phase::Failed;
                s.finished = Some(now());
                s.errors.push(reason);
                if quiesced {
                    s.errors.push(
                        "the source application is still stopped: run the same command again \
                         to retry, or `orchestrator rollback` to restart it on the source"
                            .to_string(),
                    );
                }
                s.records.insert("leftovers".into(), json!(leftovers));
            })
            .await;
        self.report().await
    }

    /// The report of the run as its status now stands.
    async fn report(&self) -> Report {
        let pvcs = self.board.finish();
        let status = self.status().await;
        Report::from_status(&self.plan.name, &self.run, self.kind, &status, pvcs)
    }
}

/// Runs one step, retrying transient errors with backoff.
async fn run_with_retries(ctx: &Context<'_>, step: StepName) -> Outcome {
    let mut retries = ctx
        .status()
        .await
        .step(step.as_str())
        .map_or(0, |s| s.retries);
    loop {
        match steps::run(ctx, step).await {
            Ok(outcome) => return outcome,
            Err(e) if retries < MAX_RETRIES => {
                retries += 1;
                let message = format!("{e:#} (retry {retries} of {MAX_RETRIES})");
                ctx.board.println(&format!("{}: {message}", step.as_str()));
                let _ = ctx
                    .update(|s| {
                        if let Some(record) = s.step_mut(step.as_str()) {
                            record.retries = retries;
                            record.message = Some(message);
                        }
                    })
                    .await;
                tokio::time::sleep(backoff(retries)).await;
            }
            Err(e) => {
                return Outcome::Failed(format!(
                    "{e:#} (still failing after {MAX_RETRIES} retries)"
                ))
            }
        }
    }
}

/// 1, 2, 4, ... 30 seconds.
fn backoff(retry: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(retry.saturating_sub(1)).min(30))
}

fn set_phase(
    status: &mut MigrationStatus,
    step: StepName,
    phase: StepPhase,
    message: Option<String>,
) {
    if let Some(record) = status.step_mut(step.as_str()) {
        match phase {
            StepPhase::Running => {
                record.started.get_or_insert_with(now);
            }
            StepPhase::Done | StepPhase::Failed | StepPhase::Skipped => {
                record.finished = Some(now());
            }
            StepPhase::Pending => {}
        }
        record.phase = phase;
        if message.is_some() || phase != StepPhase::Running {
            record.message = message;
        }
    }
}

/// Saves the PVCs' live counters into the status every few seconds, so
/// `orchestrator status` (and a controller's readers) see progress.
async fn save_progress(
    board: Arc<Board>,
    status: Arc<Mutex<MigrationStatus>>,
    store: Store,
    run: String,
) {
    let mut last = Vec::new();
    loop {
        tokio::time::sleep(PROGRESS_SAVE).await;
        // The live rate and ETA too, which the final report leaves out.
        let pvcs: Vec<serde_json::Value> = board
            .snapshot()
            .iter()
            .filter_map(|r| {
                let mut value = serde_json::to_value(r).ok()?;
                value["rate_bytes_per_sec"] = json!(r.rate.round());
                value["eta_secs"] = json!(r.eta_secs.map(f64::round));
                Some(value)
            })
            .collect();
        if pvcs.is_empty() || pvcs == last {
            continue;
        }
        let mut status = status.lock().await;
        status.pvcs = pvcs.clone();
        if let Err(e) = store.save(&run, &status).await {
            tracing::debug!("saving progress: {e:#}");
        }
        last = pvcs;
    }
}

/// Now, RFC 3339.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
