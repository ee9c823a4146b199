//! Direct volume migration (DESIGN.md stage 5): destination namespaces and
//! PVCs, a per-migration CA, one receiver per destination namespace, and
//! one sender per source PVC, run with bounded concurrency.
//!
//! A PVC's success is recorded on its destination twin (annotations
//! [`SYNCED_AT_ANNOTATION`] and [`SYNC_KIND_ANNOTATION`]), in the cluster,
//! so that a later run knows what is done without any local state.

mod receiver;
pub mod sender;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams};
use kube::Api;
use mover::certs::{Authority, Validity};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::clusters::Cluster;
use crate::display::Board;
use crate::kubeops::create_if_missing;
use crate::manifests::{self, VolumeMode};
use crate::names::{SYNCED_AT_ANNOTATION, SYNC_KIND_ANNOTATION};
use crate::plan::Plan;
use crate::preflight::{Inventory, NamespaceInventory};
use crate::report::{PvcReport, PvcState};

/// Days the migration's certificates are valid: long enough for any copy,
/// short enough that a leaked key soon stops mattering.
const CERT_DAYS: u32 = 7;

/// Copies every selected PVC; per-PVC results land on `board`. Returns
/// the problems that were not any single PVC's.
///
/// `final_copies` are the `(namespace, pvc)` whose copies count as final:
/// those of a final run whose users are stopped. Only such a copy is
/// recorded as final (and skipped by later runs); any other is recorded as
/// a stage copy.
pub async fn run(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
    inventory: &Inventory,
    board: &Board,
    final_copies: &BTreeSet<(String, String)>,
) -> Vec<String> {
    for ns in &inventory.namespaces {
        for pvc in &ns.pvcs {
            let mut report =
                PvcReport::new(&ns.mapping.source, pvc.name(), &ns.mapping.destination);
            report.block = pvc.mode() == VolumeMode::Block;
            if pvc.finished() && !plan.stage {
                report.state = PvcState::Skipped;
            }
            board.add(report);
        }
    }
    let validity = Validity::days(CERT_DAYS);
    let ca = match Authority::new(&format!("mover migration {}", plan.name), validity) {
        Ok(ca) => ca,
        Err(e) => return vec![format!("creating the migration CA: {e:#}")],
    };

    let mut errors = Vec::new();
    let mut jobs = Vec::new();
    for ns in &inventory.namespaces {
        let to_copy: Vec<(String, VolumeMode)> = ns
            .pvcs
            .iter()
            .filter(|p| plan.stage || !p.finished())
            .map(|p| (p.name().to_string(), p.mode()))
            .collect();
        if to_copy.is_empty() {
            continue;
        }
        let prepared = async {
            prepare_destination(plan, destination, ns).await?;
            receiver::start(
                plan,
                destination,
                &ns.mapping.destination,
                &to_copy,
                &ns.receiver,
                &ca,
                &validity,
            )
            .await
        }
        .await;
        let target = match prepared {
            Ok(target) => target,
            Err(e) => {
                let message = format!("{e:#}");
                for (pvc, _) in &to_copy {
                    board.update(&ns.mapping.source, pvc, |r| {
                        r.state = PvcState::Failed;
                        r.error = Some(message.clone());
                    });
                }
                errors.push(message);
                continue;
            }
        };
        for pvc in &ns.pvcs {
            if !to_copy.iter().any(|(name, _)| name == pvc.name()) {
                continue;
            }
            let client_pem = match ca.client("mover-sender", &[pvc.name().to_string()], validity) {
                Ok(pem) => pem,
                Err(e) => {
                    board.update(&ns.mapping.source, pvc.name(), |r| {
                        r.state = PvcState::Failed;
                        r.error = Some(format!("issuing the sender certificate: {e:#}"));
                    });
                    continue;
                }
            };
            jobs.push(sender::Job {
                plan,
                source,
                namespace: ns.mapping.source.clone(),
                pvc: pvc.name().to_string(),
                mode: pvc.mode(),
                placement: manifests::placement(&pvc.source, &ns.pods, ns.source_admission),
                target: target.clone(),
                final_copy: final_copies
                    .contains(&(ns.mapping.source.clone(), pvc.name().to_string())),
                ca_cert: ca.cert_pem().to_string(),
                client_pem,
            });
        }
    }

    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let runs = jobs.iter().map(|job| {
        let permits = permits.clone();
        async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            if sender::run(job, board).await {
                let dest_ns = plan
                    .destination_namespace(&job.namespace)
                    .unwrap_or(&job.namespace);
                if let Err(e) = mark_synced(destination, dest_ns, &job.pvc, job.final_copy).await {
                    board.update(&job.namespace, &job.pvc, |r| {
                        r.warning = Some(format!("copied, but recording it failed: {e:#}"));
                    });
                }
            }
        }
    });
    futures_util::future::join_all(runs).await;
    errors
}

/// Creates the destination namespace and PVCs that do not exist yet.
async fn prepare_destination(
    plan: &Plan,
    destination: &Cluster,
    ns: &NamespaceInventory,
) -> anyhow::Result<()> {
    let name = &ns.mapping.destination;
    let namespaces: Api<Namespace> = Api::all(destination.client.clone());
    create_if_missing(
        &namespaces,
        &manifests::destination_namespace(&ns.source, name, &plan.name),
    )
    .await
    .with_context(|| format!("creating namespace {name:?} in {}", destination.describe()))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(destination.client.clone(), name);
    for pvc in &ns.pvcs {
        create_if_missing(&pvcs, &manifests::destination_pvc(&pvc.source, name, plan))
            .await
            .with_context(|| {
                format!(
                    "creating PVC {name}/{} in {}",
                    pvc.name(),
                    destination.describe()
                )
            })?;
    }
    Ok(())
}

/// Records on the destination PVC that a copy finished, final or stage.
async fn mark_synced(
    destination: &Cluster,
    ns: &str,
    pvc: &str,
    final_copy: bool,
) -> anyhow::Result<()> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(destination.client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let kind = if final_copy { "final" } else { "stage" };
    let annotations: BTreeMap<&str, String> = BTreeMap::from([
        (SYNCED_AT_ANNOTATION, now),
        (SYNC_KIND_ANNOTATION, kind.to_string()),
    ]);
    pvcs.patch(
        pvc,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .with_context(|| format!("annotating PVC {ns}/{pvc}"))?;
    Ok(())
}
