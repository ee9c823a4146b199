//! `orchestrator submit` and `orchestrator watch`: the controller's way of
//! running a migration from a terminal. `submit` turns a plan file into a
//! MigrationPlan (its clusters named by MigrationCluster) and starts a
//! Migration of it; `watch` follows a Migration's status until it ends,
//! printing each step as it starts and ends and the volumes' progress, so
//! the terminal shows what `orchestrator migrate` would, while the
//! controller does the work and nothing is lost if the terminal goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

use crate::migration::{resource, MigrationStatus, RunKind, NAMESPACE};
use crate::plan::{PlanFile, PlanFlags};

/// What to submit.
pub struct Submission {
    /// The plan file, as read.
    pub file: Value,
    /// Where it was read from, for messages.
    pub origin: String,
    pub kind: RunKind,
    /// The MigrationClusters to migrate between (default: the plan's
    /// `source.context` and `destination.context`).
    pub source_cluster: Option<String>,
    pub destination_cluster: Option<String>,
}

/// Applies the MigrationPlan the submission describes and creates a
/// Migration of it on `host`; returns the Migration's name.
pub async fn submit(host: &kube::Client, submission: Submission) -> anyhow::Result<String> {
    let Submission {
        mut file,
        origin,
        kind,
        source_cluster,
        destination_cluster,
    } = submission;
    let Some(fields) = file.as_object_mut() else {
        bail!("{origin}: a plan file is a mapping of fields");
    };
    // Checked here with the plan file's own messages, before anything is
    // created; the controller checks again against the clusters.
    let parsed: PlanFile = serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let plan = crate::plan::resolve(parsed, &PlanFlags::default(), &origin)
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let mut cluster = |side: &str, given: Option<String>| -> anyhow::Result<String> {
        let from_plan = fields
            .remove(side)
            .and_then(|c| c["context"].as_str().map(str::to_string));
        given.or(from_plan).with_context(|| {
            format!(
                "{origin}: name the {side} MigrationCluster with --{side}-cluster (or \
                 {side}.context in the plan)"
            )
        })
    };
    let source = cluster("source", source_cluster)?;
    let destination = cluster("destination", destination_cluster)?;
    fields.remove("name");

    let plans = Api::<DynamicObject>::namespaced_with(
        host.clone(),
        NAMESPACE,
        &kube::api::ApiResource::erase::<crate::controller::plan::MigrationPlan>(&()),
    );
    let object = json!({
        "apiVersion": "mover.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": plan.name},
        "spec": {"sourceCluster": source, "destinationCluster": destination, "plan": fields},
    });
    plans
        .patch(
            &plan.name,
            &PatchParams::apply("mover-submit").force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying MigrationPlan {NAMESPACE}/{}", plan.name))?;
    let migration: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mover.io/v1alpha1",
        "kind": "Migration",
        "metadata": {"generateName": format!("{}-{}-", plan.name, kind.as_str())},
        "spec": {"planRef": plan.name, "kind": kind},
    }))?;
    let created = migrations(host)
        .create(&PostParams::default(), &migration)
        .await
        .with_context(|| format!("creating a Migration of plan {}", plan.name))?;
    Ok(created.metadata.name.unwrap_or_default())
}

fn migrations(host: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(host.clone(), NAMESPACE, &resource())
}

/// How often a volume's progress is printed while it copies.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Follows Migration `name` until it has finished, printing what changes;
/// returns its final status.
pub async fn watch(host: &kube::Client, name: &str) -> anyhow::Result<MigrationStatus> {
    let api = migrations(host);
    if api.get_opt(name).await?.is_none() {
        bail!("no Migration {NAMESPACE}/{name}");
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    let mut printer = Printer::default();
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => object,
            Ok(watcher::Event::Delete(_)) => bail!("Migration {NAMESPACE}/{name} was deleted"),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("watching Migration {name}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let run = crate::migration::store::decode(object)?;
        printer.show(&run.status);
        // A new Migration's empty status says Running with nothing done.
        if run.status.is_finished() && run.status.started.is_some() {
            print!("{}", crate::migrate::describe_run(&run));
            return Ok(run.status);
        }
    }
    bail!("the watch of Migration {name} ended")
}

/// What has been printed, so each change is printed once.
#[derive(Default)]
struct Printer {
    steps: HashMap<String, String>,
    volumes: HashMap<String, (String, Instant)>,
}

impl Printer {
    fn show(&mut self, status: &MigrationStatus) {
        for step in &status.steps {
            let phase = format!("{:?}", step.phase).to_lowercase();
            if phase == "pending" || self.steps.get(&step.name) == Some(&phase) {
                continue;
            }
            let message = step
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            println!("{} {phase}{message}", step.name);
            self.steps.insert(step.name.clone(), phase);
        }
        for pvc in &status.pvcs {
            let key = format!(
                "{}/{}",
                pvc["namespace"].as_str().unwrap_or_default(),
                pvc["name"].as_str().unwrap_or_default()
            );
            let state = pvc["state"].as_str().unwrap_or_default().to_string();
            let due = match self.volumes.get(&key) {
                Some((last, at)) => *last != state || at.elapsed() >= PROGRESS_EVERY,
                None => true,
            };
            if due {
                println!("  pvc {key}: {}", progress(pvc));
                self.volumes.insert(key, (state, Instant::now()));
            }
        }
    }
}

/// A volume's line: state, bytes done of bytes found, rate and ETA.
fn progress(pvc: &Value) -> String {
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / f64::from(1 << 20);
    let mut line = format!(
        "{} {:.1} of {:.1} MiB, {} files",
        pvc["state"].as_str().unwrap_or_default(),
        mib(&pvc["bytes_done"]),
        mib(&pvc["bytes_examined"]),
        pvc["files_examined"].as_u64().unwrap_or(0),
    );
    if let Some(rate) = pvc["rate_bytes_per_sec"].as_f64().filter(|r| *r > 0.0) {
        line.push_str(&format!(", {:.1} MiB/s", rate / f64::from(1 << 20)));
    }
    if let Some(eta) = pvc["eta_secs"].as_f64() {
        line.push_str(&format!(", {eta:.0}s left"));
    }
    if pvc["attempts"].as_u64().unwrap_or(0) > 1 {
        line.push_str(&format!(", attempt {}", pvc["attempts"]));
    }
    if let Some(error) = pvc["error"].as_str() {
        line.push_str(&format!(": {error}"));
    }
    line
}
