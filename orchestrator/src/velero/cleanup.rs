//! Removing a migration's Velero objects, for rollback (issue 13,
//! "Rollback"), one pass at a time.
//!
//! - Restores on the destination are deleted (the restored objects are
//!   not: rollback removes those by their `velero.io/restore-name` label).
//! - Backups on the source go the way `velero backup delete` does it: a
//!   DeleteBackupRequest, so Velero also removes the bucket copy. Deleting
//!   only the Backup object would leave the copy, and the BSL sync would
//!   bring the Backup back.
//! - Backups on the destination are synced copies. Once the source's are
//!   gone (and with them the bucket copy), the destination's Backup objects
//!   are deleted plainly: a DeleteBackupRequest there would need write
//!   access to a location that should be read-only on the destination.
//! - The resource modifier ConfigMap, DownloadRequests and any
//!   ServerStatusRequest an interrupted preflight left go too.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, ResourceExt as _};
use serde_json::{json, Value};

use super::{object, Kind, Phase, VeleroConfig};
use crate::clusters::Cluster;
use crate::kubeops::{create_if_missing, status_code};
use crate::names::VELERO_MIGRATION_LABEL;

/// Where cleanup stands after one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    Done,
    /// What is still there, one line each (with Velero's deletion errors).
    Pending(Vec<String>),
}

/// One pass of removing `migration`'s Velero objects from both clusters.
pub async fn cleanup(
    source: &Cluster,
    destination: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
) -> anyhow::Result<Cleanup> {
    let mut pending = Vec::new();
    for restore in labelled(destination, cfg, Kind::Restore, migration).await? {
        delete(destination, cfg, Kind::Restore, &restore.name_any()).await?;
        pending.push(format!(
            "{}: Restore {} is being deleted",
            destination.describe(),
            restore.name_any()
        ));
    }
    let source_backups = labelled(source, cfg, Kind::Backup, migration).await?;
    for backup in &source_backups {
        pending.push(request_deletion(source, cfg, migration, backup).await?);
    }
    if source_backups.is_empty() {
        for backup in labelled(destination, cfg, Kind::Backup, migration).await? {
            delete(destination, cfg, Kind::Backup, &backup.name_any()).await?;
            pending.push(format!(
                "{}: Backup {} is being deleted",
                destination.describe(),
                backup.name_any()
            ));
        }
    } else {
        pending.push(format!(
            "{}: the migration's Backups wait for the source's to be deleted",
            destination.describe()
        ));
    }
    for cluster in [source, destination] {
        for kind in [Kind::DownloadRequest, Kind::ServerStatusRequest] {
            for request in labelled(cluster, cfg, kind, migration).await? {
                delete(cluster, cfg, kind, &request.name_any()).await?;
            }
        }
    }
    delete_configmap(destination, cfg, migration).await?;
    Ok(if pending.is_empty() {
        Cleanup::Done
    } else {
        Cleanup::Pending(pending)
    })
}

/// The name of the DeleteBackupRequest for one Backup object: its name and
/// uid, so a later Backup of the same name gets its own request.
pub fn deletion_request_name(backup: &str, uid: &str) -> String {
    let uid: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    crate::names::velero_name(backup, &format!("delete-{}", uid.to_ascii_lowercase()))
}

/// The DeleteBackupRequest spec and labels `velero backup delete` uses
/// (pkg/backup/delete_helpers.go): `backupName`, and the labels
/// `velero.io/backup-name` and `velero.io/backup-uid`.
pub fn deletion_request(
    cfg: &VeleroConfig,
    migration: &str,
    backup: &str,
    uid: &str,
) -> anyhow::Result<DynamicObject> {
    let mut request = object(
        Kind::DeleteBackupRequest,
        cfg,
        migration,
        &deletion_request_name(backup, uid),
        json!({ "backupName": backup }),
    )?;
    let labels = request.labels_mut();
    labels.insert(
        "velero.io/backup-name".into(),
        crate::names::label_safe(backup),
    );
    labels.insert("velero.io/backup-uid".into(), uid.into());
    Ok(request)
}

/// Asks Velero to delete `backup` (once), and says where that stands.
async fn request_deletion(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
    backup: &DynamicObject,
) -> anyhow::Result<String> {
    let name = backup.name_any();
    let uid = backup.uid().unwrap_or_default();
    let wanted = deletion_request(cfg, migration, &name, &uid)?;
    let found = create_if_missing(&Kind::DeleteBackupRequest.api(cluster, cfg), &wanted)
        .await
        .with_context(|| {
            format!(
                "{}: creating or reading the DeleteBackupRequest of Backup {}/{name}",
                cluster.describe(),
                cfg.namespace
            )
        })?;
    let status = found.data.get("status");
    let errors: Vec<&str> = status
        .and_then(|s| s.get("errors"))
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let phase = Phase::of(backup);
    Ok(if errors.is_empty() {
        format!(
            "{}: Backup {name} ({}) is being deleted",
            cluster.describe(),
            phase.name()
        )
    } else {
        format!(
            "{}: Velero could not delete Backup {name}: {}",
            cluster.describe(),
            errors.join("; ")
        )
    })
}

/// The objects of `kind` labelled for `migration`.
async fn labelled(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    kind: Kind,
    migration: &str,
) -> anyhow::Result<Vec<DynamicObject>> {
    let selector = format!(
        "{VELERO_MIGRATION_LABEL}={}",
        crate::names::label_safe(migration)
    );
    let list = kind
        .api(cluster, cfg)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!(
                "{}: listing the migration's {}s in {}",
                cluster.describe(),
                kind.name(),
                cfg.namespace
            )
        })?;
    Ok(list.items)
}

/// Deletes `kind` `name` if it exists; true when it did.
pub async fn delete(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    kind: Kind,
    name: &str,
) -> anyhow::Result<bool> {
    delete_in(&kind.api(cluster, cfg), name)
        .await
        .with_context(|| {
            format!(
                "{}: deleting {} {}/{name}",
                cluster.describe(),
                kind.name(),
                cfg.namespace
            )
        })
}

async fn delete_configmap(
    destination: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
) -> anyhow::Result<bool> {
    let name = super::modifiers::configmap_name(migration);
    let api = Api::<ConfigMap>::namespaced(destination.client.clone(), &cfg.namespace);
    delete_in(&api, &name).await.with_context(|| {
        format!(
            "{}: deleting ConfigMap {}/{name}",
            destination.describe(),
            cfg.namespace
        )
    })
}

async fn delete_in<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_requests_are_named_by_backup_and_uid_and_labelled_as_velero_does() {
        let cfg = VeleroConfig::default();
        let request = deletion_request(
            &cfg,
            "shop",
            "shop-initial",
            "0F1E2D3C-aaaa-bbbb-cccc-000000000000",
        )
        .unwrap();
        assert_eq!(request.name_any(), "shop-initial-delete-0f1e2d3c");
        assert_eq!(request.data["spec"], json!({"backupName": "shop-initial"}));
        let labels = request.labels();
        assert_eq!(labels["velero.io/backup-name"], "shop-initial");
        assert_eq!(
            labels["velero.io/backup-uid"],
            "0F1E2D3C-aaaa-bbbb-cccc-000000000000"
        );
        assert_eq!(labels[VELERO_MIGRATION_LABEL], "shop");
        assert_ne!(
            deletion_request_name("shop-initial", "11111111"),
            deletion_request_name("shop-initial", "22222222")
        );
    }
}
