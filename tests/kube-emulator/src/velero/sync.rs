//! Backup sync: making the bucket's backups visible as Backup objects in
//! every cluster that uses the bucket, as Velero's BackupStorageLocation
//! sync does. It is what lets the destination restore the source's backup,
//! a short while after the source completed it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::bucket::Bucket;
use super::{backups, is_new, patch_status, NAMESPACE, STORAGE_LOCATION, STORAGE_LOCATION_LABEL};
use crate::context::ClusterContext;

/// How often the bucket is looked at.
pub(super) const INTERVAL: Duration = Duration::from_secs(2);

/// Syncs every [`INTERVAL`] until the task is aborted.
pub(super) async fn run(ctx: &ClusterContext) {
    loop {
        if let Err(error) = sync_once(ctx).await {
            tracing::warn!("velero: syncing backups from the bucket: {error:#}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

async fn sync_once(ctx: &ClusterContext) -> anyhow::Result<()> {
    let bucket = Bucket(&ctx.shared.velero_bucket);
    let api = backups(ctx);
    let existing: HashMap<String, DynamicObject> = api
        .list(&ListParams::default())
        .await
        .context("listing Backups")?
        .items
        .into_iter()
        .map(|backup| (backup.name_any(), backup))
        .collect();
    for name in bucket.backups()? {
        let present = existing.get(&name);
        if present.is_some_and(|backup| !is_new(backup)) {
            continue;
        }
        let stored = match bucket.read_metadata(&name) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!("velero: backup {name} in the bucket is unreadable: {error:#}");
                continue;
            }
        };
        if present.is_none() {
            match api.create(&PostParams::default(), &synced(&stored)?).await {
                Ok(_) => tracing::info!("velero: synced backup {name} from the bucket"),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(error) => return Err(error).with_context(|| format!("creating Backup {name}")),
            }
        }
        // Creating ignores status; it comes from the bucket. A Backup left
        // without one (created, then the status write failed) is repaired
        // here on the next round.
        let status = stored.data.get("status").cloned().unwrap_or(json!({}));
        patch_status(&api, &name, status)
            .await
            .with_context(|| format!("writing the status of Backup {name}"))?;
    }
    Ok(())
}

/// The Backup object to create for a backup found in the bucket: the
/// stored one without what its original cluster's API server set.
fn synced(stored: &DynamicObject) -> anyhow::Result<DynamicObject> {
    let mut labels = stored.labels().clone();
    labels.insert(STORAGE_LOCATION_LABEL.into(), STORAGE_LOCATION.into());
    let object = json!({
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {
            "name": stored.name_any(),
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": stored.annotations(),
        },
        "spec": stored.data.get("spec").cloned().unwrap_or(Value::Null),
    });
    Ok(serde_json::from_value(object)?)
}
