//! The migration's initial backup on the source (issue 13, step 3): its
//! spec as a pure function, its creation, and its arrival on the
//! destination through Velero's BackupStorageLocation sync.
//!
//! What the backup leaves out, and why:
//!
//! - PersistentVolumes and PersistentVolumeClaims: DVM creates the
//!   destination PVCs and copies their data;
//! - ImageStreams, ImageStreamTags, ImageTags: DIM copies the images and
//!   writes the destination ImageStreams;
//! - Pods: their controllers recreate them on the destination;
//! - ReplicaSets: Velero cannot exclude by owner, so all of
//!   `replicasets.apps` stays out and restored Deployments create their
//!   own. A ReplicaSet no Deployment owns is therefore not migrated;
//!   [`standalone_replica_sets`] finds them so that preflight can say so;
//! - Events: history of the source, meaningless on the destination;
//! - the migration's own transfer objects: the label selector
//!   `mover.io/transfer DoesNotExist`.
//!
//! `includeClusterResources` is left unset (Velero's "auto"): a backup of
//! namespaces then also holds the cluster-scoped objects its items need,
//! which Velero finds through its backup item actions: the Namespace
//! objects themselves (labels such as Pod Security levels come along), the
//! ClusterRoleBindings and ClusterRoles of the namespaces'
//! ServiceAccounts, and the CRDs of custom resources in the namespaces.
//! `false` would drop all of these, and the restored application would
//! lack its cluster-wide rights. `true` would take every cluster-scoped
//! object. The restore leaves it unset too ([`super::restore`]), which
//! restores those items because the restore includes every namespace of
//! the backup.
//!
//! No volume data goes through Velero: `snapshotVolumes: false` and
//! `defaultVolumesToFsBackup: false`.

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{json, Value};

use super::{ensure_run, get_opt, Kind, Phase, VeleroConfig};
use crate::clusters::Cluster;
use crate::names::{velero_name, TRANSFER_LABEL};

/// Resources the backup never holds (Velero's `resource.group` names).
pub const EXCLUDED_RESOURCES: &[&str] = &[
    "persistentvolumes",
    "persistentvolumeclaims",
    "imagestreams.image.openshift.io",
    "imagestreamtags.image.openshift.io",
    "imagetags.image.openshift.io",
    "pods",
    "replicasets.apps",
    "events",
    "events.events.k8s.io",
];

/// How long Velero keeps the backup (Velero's own default, 30 days):
/// long enough to restore again or inspect after a migration; rollback
/// deletes it sooner ([`super::cleanup`]).
pub const BACKUP_TTL: &str = "720h0m0s";

/// The name of a migration's initial backup.
pub fn backup_name(migration: &str) -> String {
    velero_name(migration, "initial")
}

/// The spec of the initial backup of `namespaces` (source names).
pub fn backup_spec(namespaces: &[String], cfg: &VeleroConfig) -> Value {
    let mut spec = json!({
        "includedNamespaces": namespaces,
        "excludedResources": EXCLUDED_RESOURCES,
        "labelSelector": {
            "matchExpressions": [{ "key": TRANSFER_LABEL, "operator": "DoesNotExist" }],
        },
        "snapshotVolumes": false,
        "defaultVolumesToFsBackup": false,
        "ttl": BACKUP_TTL,
    });
    if let Some(location) = &cfg.storage_location {
        spec["storageLocation"] = json!(location);
    }
    spec
}

/// Creates the Backup `name` on `cluster` unless it exists, and returns
/// its phase.
pub async fn ensure_backup(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<Phase> {
    ensure_run(cluster, cfg, Kind::Backup, migration, name, spec).await
}

/// The Backup `name` as the destination sees it: `None` until its BSL sync
/// has brought it over (Velero syncs only backups whose metadata in the
/// bucket is final, so a synced backup is Completed or PartiallyFailed).
pub async fn backup_visible(
    destination: &Cluster,
    cfg: &VeleroConfig,
    name: &str,
) -> anyhow::Result<Option<Phase>> {
    let found = get_opt(destination, cfg, Kind::Backup, name).await?;
    Ok(found.as_ref().map(Phase::of))
}

/// The ReplicaSets of `sets` that no controller owns, which the backup
/// leaves out with all ReplicaSets: `namespace/name` each, for preflight
/// to report.
pub fn standalone_replica_sets(sets: &[ReplicaSet]) -> Vec<String> {
    sets.iter()
        .filter(|set| {
            !set.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.controller == Some(true))
        })
        .map(|set| {
            format!(
                "{}/{}",
                set.metadata.namespace.as_deref().unwrap_or_default(),
                set.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_spec_leaves_out_what_other_stages_move() {
        let spec = backup_spec(&["shop".into(), "db".into()], &VeleroConfig::default());
        assert_eq!(spec["includedNamespaces"], json!(["shop", "db"]));
        let excluded: Vec<&str> = spec["excludedResources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for resource in [
            "persistentvolumes",
            "persistentvolumeclaims",
            "imagestreams.image.openshift.io",
            "imagestreamtags.image.openshift.io",
            "pods",
            "replicasets.apps",
            "events",
            "events.events.k8s.io",
        ] {
            assert!(excluded.contains(&resource), "{resource}");
        }
        assert_eq!(
            spec["labelSelector"],
            json!({"matchExpressions": [{"key": "mover.io/transfer", "operator": "DoesNotExist"}]})
        );
        assert_eq!(spec["snapshotVolumes"], false);
        assert_eq!(spec["defaultVolumesToFsBackup"], false);
        assert_eq!(spec["ttl"], "720h0m0s");
        assert!(
            spec.get("includeClusterResources").is_none(),
            "auto: related cluster-scoped objects come along"
        );
        assert!(spec.get("storageLocation").is_none(), "default BSL");
    }

    #[test]
    fn a_named_storage_location_is_used() {
        let cfg = VeleroConfig {
            storage_location: Some("dpa-1".into()),
            ..VeleroConfig::default()
        };
        assert_eq!(backup_spec(&["a".into()], &cfg)["storageLocation"], "dpa-1");
        assert_eq!(backup_name("shop"), "shop-initial");
    }

    #[test]
    fn standalone_replica_sets_are_those_without_a_controller() {
        let set = |name: &str, owned: bool| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "namespace": "shop",
                    "ownerReferences": if owned {
                        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1", "controller": true}])
                    } else {
                        json!([])
                    },
                },
            }))
            .unwrap()
        };
        assert_eq!(
            standalone_replica_sets(&[set("web-1", true), set("lonely", false)]),
            vec!["shop/lonely".to_string()]
        );
    }
}
