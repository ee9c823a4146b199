//! The request kinds the velero CLI uses besides DownloadRequests:
//!
//! - ServerStatusRequest (`velero version`, `velero plugin get`;
//!   pkg/controller/server_status_request_controller.go): answered with
//!   phase Processed, the server version and the installed plugins;
//! - DeleteBackupRequest (`velero backup delete`;
//!   pkg/controller/backup_deletion_controller.go): removes the backup from
//!   the bucket (so no cluster's sync brings it back), the Restores of the
//!   backup and the Backup object, then every DeleteBackupRequest of the
//!   backup; a request that cannot be carried out ends Processed with
//!   Velero's error.

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::{location, now, patch_object_status, patch_status, phase, valid_label_value, Velero};

const BACKUP_NAME_LABEL: &str = "velero.io/backup-name";
const BACKUP_UID_LABEL: &str = "velero.io/backup-uid";

/// The plugins a default Velero install lists: its built-in item actions
/// and the object store the BSL uses.
const PLUGINS: &[(&str, &str)] = &[
    ("velero.io/crd-remap-version", "BackupItemAction"),
    ("velero.io/pod", "BackupItemAction"),
    ("velero.io/pv", "BackupItemAction"),
    ("velero.io/service-account", "BackupItemAction"),
    ("velero.io/kube-emulator", "ObjectStore"),
    ("velero.io/change-image-name", "RestoreItemAction"),
    ("velero.io/change-storage-class", "RestoreItemAction"),
    ("velero.io/cluster-role-bindings", "RestoreItemAction"),
    ("velero.io/job", "RestoreItemAction"),
    ("velero.io/pod", "RestoreItemAction"),
    ("velero.io/role-bindings", "RestoreItemAction"),
    ("velero.io/service", "RestoreItemAction"),
    ("velero.io/service-account", "RestoreItemAction"),
];

/// Waits until no Restore of `backup` is left, for at most a minute.
async fn restores_gone(v: &Velero, backup: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let restores = v
            .restores()
            .list(&ListParams::default())
            .await
            .map_err(|error| error.to_string())?;
        let left = restores
            .items
            .iter()
            .filter(|r| r.data.pointer("/spec/backupName").and_then(Value::as_str) == Some(backup))
            .count();
        if left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("context deadline exceeded".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Answers one new ServerStatusRequest.
pub(super) async fn server_status(v: &Velero, request: DynamicObject) {
    let plugins: Vec<Value> = PLUGINS
        .iter()
        .map(|(name, kind)| json!({ "name": name, "kind": kind }))
        .collect();
    let status = json!({
        "phase": "Processed",
        "processedTimestamp": now(),
        "serverVersion": v.options.server_version,
        "plugins": plugins,
    });
    let api = v.api("ServerStatusRequest", "serverstatusrequests");
    if let Err(error) = patch_status(&api, &request.name_any(), status).await {
        tracing::warn!("velero: answering server status request: {error}");
    }
}

/// Carries out one new DeleteBackupRequest.
pub(super) async fn delete_backup(v: &Velero, request: DynamicObject) {
    let name = request.name_any();
    let requests = v.api("DeleteBackupRequest", "deletebackuprequests");
    let errors = match deletion(v, &requests, &request).await {
        // Recorded, and the request deleted with the backup's others.
        Ok(errors) if errors.is_empty() => return,
        Ok(errors) => errors,
        Err(error) => vec![error],
    };
    let status = json!({ "phase": "Processed", "errors": errors });
    if let Err(error) = patch_status(&requests, &name, status).await {
        tracing::warn!("velero: recording delete backup request {name}: {error}");
    }
}

/// The deletion's errors, or the one error that stopped it before it
/// began (Velero's `patchDeleteBackupRequestWithError`).
async fn deletion(
    v: &Velero,
    requests: &kube::Api<DynamicObject>,
    request: &DynamicObject,
) -> Result<Vec<String>, String> {
    let backup_name = request
        .data
        .pointer("/spec/backupName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if backup_name.is_empty() {
        return Err("spec.backupName is required".into());
    }
    let backups = v.backups();
    let backup = match backups.get_opt(backup_name).await {
        Ok(Some(backup)) => backup,
        Ok(None) => return Err("backup not found".into()),
        Err(error) => return Err(format!("error getting backup: {error}")),
    };
    if matches!(
        phase(&backup),
        "InProgress" | "Finalizing" | "FinalizingPartiallyFailed"
    ) {
        return Err("backup is still in progress".into());
    }
    let location_name = backup
        .data
        .pointer("/spec/storageLocation")
        .and_then(Value::as_str)
        .unwrap_or("");
    match location::get(v, location_name).await {
        Ok(Some(location)) if location.read_only => return Err(format!("cannot delete backup because backup storage location {location_name} is currently in read-only mode")),
        Ok(Some(location)) if !location.available => return Err(format!("cannot delete backup because backup storage location {location_name} is currently in Unavailable state")),
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("backup storage location {location_name} not found")),
        Err(error) => return Err(format!("error getting backup storage location: {error}")),
    }
    let uid = backup.uid().unwrap_or_default();
    let labels = json!({ "metadata": { "labels": {
        BACKUP_NAME_LABEL: valid_label_value(backup_name),
        BACKUP_UID_LABEL: uid,
    } } });
    let name = request.name_any();
    let started = async {
        requests
            .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
            .await?;
        patch_status(requests, &name, json!({ "phase": "InProgress" })).await?;
        patch_object_status(&backups, backup_name, json!({ "phase": "Deleting" })).await
    };
    started.await.map_err(|error| error.to_string())?;

    let mut errors = Vec::new();
    if let Err(error) = v.bucket().delete_backup(backup_name) {
        errors.push(format!("{error:#}"));
    }
    match v.restores().list(&ListParams::default()).await {
        Ok(restores) => {
            for restore in restores.items.iter().filter(|r| {
                r.data.pointer("/spec/backupName").and_then(Value::as_str) == Some(backup_name)
            }) {
                if let Err(error) = v
                    .restores()
                    .delete(&restore.name_any(), &DeleteParams::default())
                    .await
                {
                    errors.push(format!(
                        "error deleting restore {}/{}: {error}",
                        v.options.namespace,
                        restore.name_any()
                    ));
                }
            }
        }
        Err(error) => tracing::warn!("velero: listing restores to delete: {error}"),
    }
    // Their finalizer removes their files first; wait up to a minute, as
    // Velero polls.
    if let Err(error) = restores_gone(v, backup_name).await {
        errors.push(format!("error deleting restore {error}"));
    }
    if errors.is_empty() {
        if let Err(error) = backups.delete(backup_name, &DeleteParams::default()).await {
            errors.push(format!(
                "error deleting backup {}/{backup_name}: {error}",
                v.options.namespace
            ));
        }
    }
    if errors.is_empty() {
        patch_status(
            requests,
            &name,
            json!({ "phase": "Processed", "errors": [] }),
        )
        .await
        .map_err(|error| error.to_string())?;
        // Everything went: so do the backup's DeleteBackupRequests.
        let selector = format!(
            "{BACKUP_NAME_LABEL}={},{BACKUP_UID_LABEL}={uid}",
            valid_label_value(backup_name)
        );
        if let Err(error) = requests
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await
        {
            tracing::warn!("velero: deleting the DeleteBackupRequests of {backup_name}: {error}");
        }
    }
    Ok(errors)
}
