//! The `migrate`, `plan` and `cleanup` commands, stage by stage.

use std::fmt::Write as _;

use crate::clusters::Cluster;
use crate::display::Board;
use crate::plan::Plan;
use crate::preflight::{self, Inventory};
use crate::report::Report;
use crate::{cleanup, dim, dvm};

/// Exit codes of the `orchestrator` binary.
pub mod exit {
    /// Everything copied.
    pub const SUCCESS: i32 = 0;
    /// The migration ran, and at least one PVC failed.
    pub const FAILED: i32 = 1;
    /// The command line or the plan is invalid.
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

/// Runs a volume migration: preflight, copy, cleanup. The error is the
/// preflight's (nothing was changed); a report is returned once anything
/// may have been.
pub async fn migrate(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
) -> Result<Report, preflight::Problems> {
    let inventory = preflight::check(plan, source, destination).await?;
    let board = Board::new();
    let (images, mut errors) = match &plan.images {
        Some(registries) => dim::run(plan, registries, source, destination, &board).await,
        None => (Vec::new(), Vec::new()),
    };
    errors.extend(dvm::run(plan, source, destination, &inventory, &board).await);
    let leftovers = cleanup::run(plan, source, destination).await;
    let pvcs = board.finish();
    let images_ok = images.iter().all(|i| i.state != dim::ImageState::Failed);
    Ok(Report {
        migration: plan.name.clone(),
        stage: plan.stage,
        succeeded: board.all_succeeded() && images_ok && errors.is_empty() && leftovers.is_empty(),
        pvcs,
        images,
        errors,
        leftovers,
    })
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
