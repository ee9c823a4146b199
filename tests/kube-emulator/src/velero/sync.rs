//! Backup sync: making the bucket's backups visible as Backup objects in
//! every cluster that uses the bucket, as Velero's
//! pkg/controller/backup_sync_controller.go does. It is what lets the
//! destination restore the source's backup, a sync period after the
//! source completed it.
//!
//! Per BackupStorageLocation: only Available ones; at most once per
//! `spec.backupSyncPeriod` (the server's period when unset; `0s` never),
//! measured from `status.lastSyncedTime`; backups still Finalizing in the
//! bucket are skipped until they are final (or expired); a synced Backup is
//! created with its status in one call, labelled with the location; a
//! Completed or PartiallyFailed Backup of the location that the bucket no
//! longer has is deleted (an orphan); then `lastSyncedTime` is set.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::location::{self, Location};
use super::{now, patch_status, phase, valid_label_value, Velero, STORAGE_LOCATION_LABEL};

/// Looks at the locations every server sync period (at most every second,
/// so that a location's own shorter period is honoured) until aborted.
pub(super) async fn run(v: &Velero) {
    let tick = v.options.sync_period.min(Duration::from_secs(1));
    loop {
        if let Err(error) = sync_locations(v).await {
            tracing::warn!("velero: syncing backups from the bucket: {error:#}");
        }
        tokio::time::sleep(tick).await;
    }
}

async fn sync_locations(v: &Velero) -> anyhow::Result<()> {
    let locations = v
        .locations()
        .list(&ListParams::default())
        .await
        .context("listing BackupStorageLocations")?;
    for object in &locations.items {
        let location = location::get(v, &object.name_any()).await?;
        let Some(location) = location else { continue };
        if due(v, &location, object) {
            sync_once(v, &location).await?;
            let status = json!({ "lastSyncedTime": now() });
            patch_status(&v.locations(), &location.name, status)
                .await
                .with_context(|| format!("writing lastSyncedTime of {}", location.name))?;
        }
    }
    Ok(())
}

/// `locationFilterFunc`: whether `location` is to be synced now.
fn due(v: &Velero, location: &Location, object: &DynamicObject) -> bool {
    if !location.available {
        return false;
    }
    let period = match location.sync_period {
        Some(Duration::ZERO) => return false,
        Some(period) => period,
        None => v.options.sync_period,
    };
    let last = object
        .data
        .pointer("/status/lastSyncedTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    match last {
        Some(last) => last
            .checked_add(period)
            .is_ok_and(|next| Timestamp::now() >= next),
        None => true,
    }
}

async fn sync_once(v: &Velero, location: &Location) -> anyhow::Result<()> {
    let bucket = v.bucket();
    let api = v.backups();
    let existing: HashSet<String> = api
        .list(&ListParams::default())
        .await
        .context("listing Backups")?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let in_bucket = bucket.backups()?;
    for name in in_bucket.iter().filter(|name| !existing.contains(*name)) {
        let stored = match bucket.read_metadata(name) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!("velero: backup {name} in the bucket is unreadable: {error:#}");
                continue;
            }
        };
        let Some(backup) = synced(v, &stored, &location.name)? else {
            continue;
        };
        match api.create(&PostParams::default(), &backup).await {
            Ok(_) => tracing::info!("velero: synced backup {name} from the bucket"),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error).with_context(|| format!("creating Backup {name}")),
        }
    }
    delete_orphans(v, location, &in_bucket).await
}

/// The Backup object to create for a backup found in the bucket, or `None`
/// while it is not final: the stored one without what its original
/// cluster's API server set, in this Velero's namespace and location.
fn synced(
    v: &Velero,
    stored: &DynamicObject,
    location: &str,
) -> anyhow::Result<Option<DynamicObject>> {
    let mut status = stored.data.get("status").cloned().unwrap_or(json!({}));
    if matches!(
        phase(stored),
        "WaitingForPluginOperations"
            | "WaitingForPluginOperationsPartiallyFailed"
            | "Finalizing"
            | "FinalizingPartiallyFailed"
    ) {
        let expired = status
            .get("expiration")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|expiration| expiration < Timestamp::now());
        if !expired {
            return Ok(None);
        }
        status["phase"] = json!("PartiallyFailed");
    }
    let mut labels = stored.labels().clone();
    labels.insert(STORAGE_LOCATION_LABEL.into(), valid_label_value(location));
    let mut spec = stored.data.get("spec").cloned().unwrap_or(json!({}));
    spec["storageLocation"] = json!(location);
    let object = json!({
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": stored.name_any(),
            "namespace": v.options.namespace,
            "labels": labels,
            "annotations": stored.annotations(),
        },
        "spec": spec,
        "status": status,
    });
    Ok(Some(serde_json::from_value(object)?))
}

/// `deleteOrphanedBackups`: Backups of `location` that are Completed or
/// PartiallyFailed but no longer in the bucket.
async fn delete_orphans(
    v: &Velero,
    location: &Location,
    in_bucket: &[String],
) -> anyhow::Result<()> {
    let api = v.backups();
    let selector = format!(
        "{STORAGE_LOCATION_LABEL}={}",
        valid_label_value(&location.name)
    );
    let backups = api
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing the location's Backups")?;
    for backup in backups.items {
        let name = backup.name_any();
        if matches!(phase(&backup), "Completed" | "PartiallyFailed") && !in_bucket.contains(&name) {
            tracing::info!("velero: deleting orphaned backup {name}");
            if let Err(error) = api.delete(&name, &DeleteParams::default()).await {
                tracing::warn!("velero: deleting orphaned backup {name}: {error}");
            }
        }
    }
    Ok(())
}
