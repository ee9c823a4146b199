//! The `Migration` custom resource: where a migration's progress lives, in
//! the destination cluster, so that a killed orchestrator (or, later, a
//! controller replica) continues from the step it was in instead of
//! starting over (DESIGN.md "One engine, two drivers").
//!
//! Why the destination: it is the cluster the application ends up on and
//! the one a user keeps working with; the source may be decommissioned
//! after the move, and a rollback (which needs the saved state) is a
//! destination-side operation first. MTC keeps its MigMigrations on the
//! host cluster, which is usually the destination too.
//!
//! - `mod.rs`: the resource's types ([`MigrationSpec`], [`MigrationStatus`])
//!   and the CRD ([`crd`]);
//! - [`store`]: reading, creating and saving Migrations in the cluster.

pub mod store;

use std::collections::BTreeMap;

use kube::api::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// API group of the orchestrator's resources.
pub const GROUP: &str = "mover.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Migration";
pub const PLURAL: &str = "migrations";
/// The namespace Migrations are kept in on the destination cluster.
pub const NAMESPACE: &str = "mover-system";
/// On a Migration: the plan (migration name) it runs.
pub const PLAN_LABEL: &str = "mover.io/plan";

/// The `mover.io/v1alpha1` Migration resource.
pub fn resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// Which itinerary a Migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// Images and volumes while the application runs; repeatable.
    Stage,
    /// Everything, with the source quiesced: the application moves.
    Final,
    /// Undo: delete what was migrated, unquiesce the source.
    Rollback,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Stage => "stage",
            RunKind::Final => "final",
            RunKind::Rollback => "rollback",
        }
    }
}

/// What the Migration was asked to do. The plan itself is recorded as it
/// was resolved (for `status` and for checking that a resumed run is the
/// same migration); the CLI resumes with the plan it is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// The plan's name: every object the migration makes is labelled
    /// with it. (A Migration written for the controller names its
    /// MigrationPlan in `planRef` instead; the controller fills this in.)
    #[serde(default)]
    pub plan_name: String,
    /// The MigrationPlan a controller-driven Migration runs; absent on
    /// the runs `orchestrator migrate` drives itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_ref: Option<String>,
    pub kind: RunKind,
    /// Source namespaces, for finding migrations that overlap.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Whether a final run stops the source application.
    #[serde(default)]
    pub quiesce: bool,
    /// The resolved plan, as JSON.
    #[serde(default)]
    pub plan: Value,
}

/// Where a Migration stands overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Running,
    Succeeded,
    Failed,
}

/// Where one step of the itinerary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StepPhase {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    /// Its condition was false for this migration (no images, ...).
    Skipped,
}

/// One step's record: the condition the user sees, with times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub name: String,
    pub phase: StepPhase,
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub finished: Option<String>,
    /// What the step is doing or waiting for, or why it failed.
    #[serde(default)]
    pub message: Option<String>,
    /// Transient failures seen (API errors); the step was retried.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The Migration's status: everything a resumed run needs, and everything
/// `orchestrator status` shows. Saved as a JSON merge patch, so optional
/// fields serialise as `null` (which removes them) rather than being left
/// out (which would keep a stale value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub phase: Phase,
    /// The step in progress (or the one that failed).
    #[serde(default)]
    pub step: String,
    /// Every step of the itinerary, in order.
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    /// Per-PVC progress: the last copy's counters and outcome.
    #[serde(default)]
    pub pvcs: Vec<Value>,
    /// Per-image results.
    #[serde(default)]
    pub images: Vec<Value>,
    /// Values steps leave for later steps and for the report, by name
    /// (the backup's name and outcome, the quiesced workloads, hooks'
    /// logs, the restore's warnings...).
    #[serde(default)]
    pub records: BTreeMap<String, Value>,
    /// Problems outside any one PVC or image.
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub finished: Option<String>,
}

impl MigrationStatus {
    /// The record of step `name`.
    pub fn step_mut(&mut self, name: &str) -> Option<&mut StepStatus> {
        self.steps.iter_mut().find(|s| s.name == name)
    }

    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn is_finished(&self) -> bool {
        self.phase != Phase::Running
    }
}

/// The CustomResourceDefinition of Migrations. The schema is structural
/// (as apiextensions.k8s.io/v1 requires) and keeps spec and status open:
/// the orchestrator validates the plan itself and owns the status shape.
pub fn crd() -> Value {
    let columns = json!([
        {"name": "Plan", "type": "string", "jsonPath": ".spec.planName"},
        {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "string", "jsonPath": ".status.step"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]);
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{PLURAL}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "migration",
                "kind": KIND,
                "listKind": "MigrationList",
                "shortNames": ["mig"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "planName": {"type": "string"},
                                "planRef": {"type": "string"},
                                "kind": {"type": "string", "enum": ["stage", "final", "rollback"]},
                                "namespaces": {"type": "array", "items": {"type": "string"}},
                                "quiesce": {"type": "boolean"},
                                "plan": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            },
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_json() {
        let mut status = MigrationStatus {
            step: "Quiesce".into(),
            steps: vec![StepStatus {
                name: "Quiesce".into(),
                phase: StepPhase::Running,
                ..StepStatus::default()
            }],
            ..MigrationStatus::default()
        };
        status
            .records
            .insert("backup".into(), json!({"name": "b", "phase": "Completed"}));
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["steps"][0]["phase"], "Running");
        assert!(json["steps"][0].get("retries").is_none());
        let back: MigrationStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
        assert_eq!(back.step("Quiesce").unwrap().phase, StepPhase::Running);
        assert!(!back.is_finished());
    }

    #[test]
    fn crd_names_the_resource_it_serves() {
        let crd = crd();
        assert_eq!(crd["metadata"]["name"], "migrations.mover.io");
        assert_eq!(crd["spec"]["versions"][0]["name"], VERSION);
        assert_eq!(resource().api_version, "mover.io/v1alpha1");
    }
}
