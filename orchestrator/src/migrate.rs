//! The commands' shared parts: exit codes, connecting to both clusters,
//! and what `orchestrator plan` and `orchestrator status` print.

use std::fmt::Write as _;

use crate::clusters::Cluster;
use crate::itinerary::{steps_for, Flags};
use crate::manifests;
use crate::migration::store::Migration;
use crate::migration::{RunKind, StepPhase};
use crate::plan::Plan;
use crate::preflight::Inventory;
use crate::security::{ReceiverMode, ANYUID_ROLE, ENFORCE_LABEL};

/// Exit codes of the `orchestrator` binary.
pub mod exit {
    /// Everything copied.
    pub const SUCCESS: i32 = 0;
    /// The migration ran, and something failed.
    pub const FAILED: i32 = 1;
    /// The command line or the plan is invalid, or another run of the
    /// plan is in flight.
    pub const USAGE: i32 = 2;
    /// Preflight found problems; nothing was changed.
    pub const PREFLIGHT: i32 = 3;
}

/// Connects to both clusters named by the plan.
pub async fn connect(plan: &Plan) -> anyhow::Result<(Cluster, Cluster)> {
    Ok((
        Cluster::connect("source", &plan.source).await?,
        Cluster::connect("destination", &plan.destination).await?,
    ))
}

/// What `orchestrator status` prints: where a run stands, step by step.
pub fn describe_run(migration: &Migration) -> String {
    let status = &migration.status;
    let mut out = format!(
        "{} ({} run of {:?}): {:?}{}\n",
        migration.name,
        migration.spec.kind.as_str(),
        migration.spec.plan_name,
        status.phase,
        if status.step.is_empty() {
            String::new()
        } else {
            format!(" at step {}", status.step)
        }
    );
    for step in &status.steps {
        let times = match (&step.started, &step.finished) {
            (Some(started), Some(finished)) => format!("{started} .. {finished}"),
            (Some(started), None) => format!("since {started}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<20} {:<8} {times}{}",
            step.name,
            format!("{:?}", step.phase).to_lowercase(),
            match (&step.message, step.phase) {
                (Some(message), _) => format!("  {message}"),
                (None, StepPhase::Pending) => String::new(),
                (None, _) => String::new(),
            }
        );
    }
    for pvc in &status.pvcs {
        let _ = writeln!(
            out,
            "  pvc {}/{} {} {} bytes, {} files, attempt {}{}",
            pvc["namespace"].as_str().unwrap_or_default(),
            pvc["name"].as_str().unwrap_or_default(),
            pvc["state"].as_str().unwrap_or_default(),
            pvc["bytes_done"],
            pvc["files_examined"],
            pvc["attempts"],
            pvc["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    for error in &status.errors {
        let _ = writeln!(out, "  error: {error}");
    }
    out
}

/// What `orchestrator plan` prints: what would be created and copied.
pub fn describe(plan: &Plan, inventory: &Inventory) -> String {
    let mut out = format!(
        "migration {:?} ({}, endpoint {}, image {})\n",
        plan.name,
        if plan.stage { "stage" } else { "final" },
        plan.endpoint,
        plan.mover_image
    );
    let kind = if plan.stage {
        RunKind::Stage
    } else {
        RunKind::Final
    };
    let pvcs = inventory.namespaces.iter().any(|ns| !ns.pvcs.is_empty());
    let flags = Flags::for_plan(plan, kind, pvcs);
    let steps: Vec<&str> = steps_for(kind, &flags)
        .into_iter()
        .map(|s| s.as_str())
        .collect();
    let _ = writeln!(out, "steps: {}", steps.join(" -> "));
    for ns in &inventory.namespaces {
        let (src, dst) = (&ns.mapping.source, &ns.mapping.destination);
        let _ = writeln!(
            out,
            "namespace {src} -> {dst}{}",
            if ns.destination_exists {
                ""
            } else {
                " (will be created)"
            }
        );
        let mut copies = Vec::new();
        for pvc in &ns.pvcs {
            let spec = pvc.source.spec.clone().unwrap_or_default();
            let size = spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").map(|q| q.0.clone()))
                .unwrap_or_else(|| "?".into());
            let class = spec.storage_class_name.as_deref();
            let mapped = plan.map_storage_class(class);
            let skip = pvc.finished() && !plan.stage;
            let action = match (skip, pvc.destination.is_some()) {
                (true, _) => "skip (copied by an earlier final run)",
                (false, true) => "copy (incremental)",
                (false, false) => "create and copy",
            };
            let action = match pvc.mode() {
                crate::manifests::VolumeMode::Block => format!("{action}, as a block device"),
                crate::manifests::VolumeMode::Filesystem => action.to_string(),
            };
            if !skip {
                copies.push(pvc.name());
            }
            let _ = writeln!(
                out,
                "  pvc {:<30} {size:>8}  class {} -> {}  modes {:?} -> {:?}  {action}",
                pvc.name(),
                class.unwrap_or("(default)"),
                mapped.as_deref().unwrap_or("(default)"),
                spec.access_modes.clone().unwrap_or_default(),
                plan.map_access_modes(&spec.access_modes.unwrap_or_default()),
            );
            if !skip {
                let placement = manifests::placement(&pvc.source, &ns.pods, ns.source_admission);
                let _ = writeln!(
                    out,
                    "      sender runs {}",
                    placement.sender_mode().describe()
                );
            }
        }
        if !copies.is_empty() {
            let _ = writeln!(
                out,
                "  receiver runs {} (destination namespace enforces Pod Security {:?}{})",
                ns.receiver.mode.describe(),
                ns.receiver.admission.level.name(),
                if ns.receiver.admission.openshift {
                    ", OpenShift SCCs"
                } else {
                    ""
                }
            );
            if matches!(ns.receiver.mode, ReceiverMode::AsApplication(_)) {
                let how = if ns.receiver.admission.openshift {
                    format!(
                        "be allowed to create ServiceAccounts and RoleBindings in {dst} and to \
                         bind ClusterRole {ANYUID_ROLE}"
                    )
                } else {
                    format!("label namespace {dst} {ENFORCE_LABEL}=baseline")
                };
                let _ = writeln!(out, "      to keep every file's owner instead: {how}");
            }
        }
        if !copies.is_empty() {
            let _ = writeln!(
                out,
                "  transfer: destination {dst}: receiver pod, Secret, Service, {} ; source {src}: {} sender pod(s) and Secret(s)",
                plan.endpoint,
                copies.len()
            );
        }
    }
    out
}
