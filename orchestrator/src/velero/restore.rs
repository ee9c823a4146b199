//! The migration's restore on the destination (issue 13, step 6): its
//! spec as a pure function and its creation.
//!
//! - `existingResourcePolicy: none` (as MTC's final restore): an object
//!   that already exists on the destination is left as it is and Velero
//!   reports a warning. The namespaces and PVCs DVM created and bound,
//!   and the ImageStreams DIM wrote, must be kept, not replaced (the
//!   backup holds no PVCs anyway, so nothing could rebind them). A second
//!   restore after a partial one then adds what is missing without undoing
//!   what the first did. `update` would instead patch objects a user or
//!   another migration changed on the destination. Velero 1.11+ knows the
//!   field; preflight checks the version.
//! - `restorePVs: false`: the backup has no volume snapshots; DVM moved
//!   the data.
//! - `includeClusterResources` unset, as in the backup: every namespace of
//!   the backup is restored, so Velero restores the cluster-scoped items
//!   the backup holds (Namespaces, ClusterRoleBindings of the
//!   ServiceAccounts, CRDs).
//! - `namespaceMapping`: only the namespaces the plan renames.
//! - `resourceModifier`: the ConfigMap [`super::modifiers`] builds, when
//!   there is anything to rewrite (Velero refuses an empty rule list).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use super::modifiers::ensure_configmap;
use super::{ensure_run, get_opt, Kind, Phase, VeleroConfig};
use crate::clusters::Cluster;
use crate::names::velero_name;

/// The name of a migration's restore.
pub fn restore_name(migration: &str) -> String {
    velero_name(migration, "restore")
}

/// The spec of the restore of `backup`; `namespaces` maps source to
/// destination names (identical pairs are left out), `modifiers` names the
/// resource modifier ConfigMap in Velero's namespace, if any.
pub fn restore_spec(
    backup: &str,
    namespaces: &BTreeMap<String, String>,
    modifiers: Option<&str>,
) -> Value {
    let mapping: BTreeMap<&String, &String> =
        namespaces.iter().filter(|(from, to)| from != to).collect();
    let mut spec = json!({
        "backupName": backup,
        "existingResourcePolicy": "none",
        "restorePVs": false,
    });
    if !mapping.is_empty() {
        spec["namespaceMapping"] = json!(mapping);
    }
    if let Some(name) = modifiers {
        spec["resourceModifier"] = json!({ "kind": "ConfigMap", "name": name });
    }
    spec
}

/// Creates the Restore `name` on `cluster` unless it exists, and returns
/// its phase. The Restore is created only once the backup it names
/// (`spec.backupName`) is on `cluster`: Velero would fail a restore of a
/// missing backup validation, and under its deterministic name that
/// failure could not be retried. Until then this is an error (transient:
/// the BSL sync brings the backup).
pub async fn ensure_restore(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<Phase> {
    if let Some(found) = get_opt(cluster, cfg, Kind::Restore, name).await? {
        return Ok(Phase::of(&found));
    }
    let backup = spec.get("backupName").and_then(Value::as_str).unwrap_or("");
    if get_opt(cluster, cfg, Kind::Backup, backup).await?.is_none() {
        anyhow::bail!(
            "{}: Restore {}/{name} not created yet: Backup {backup:?} is not there (the BSL sync has not brought it)",
            cluster.describe(),
            cfg.namespace
        );
    }
    ensure_run(cluster, cfg, Kind::Restore, migration, name, spec).await
}

/// Writes the resource modifier ConfigMap the Restore `restore` will name,
/// unless that Restore exists already: Velero reads the ConfigMap when it
/// starts the restore, so it must be there before, and must not change
/// under a running one (nor after, so the migration's record stays true).
pub async fn prepare_modifiers(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    restore: &str,
    configmap: &ConfigMap,
) -> anyhow::Result<()> {
    if get_opt(cluster, cfg, Kind::Restore, restore)
        .await?
        .is_none()
    {
        ensure_configmap(cluster, configmap).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_spec_keeps_existing_objects_and_maps_renamed_namespaces() {
        let mapping = BTreeMap::from([
            ("shop".to_string(), "shop-copy".to_string()),
            ("db".to_string(), "db".to_string()),
        ]);
        let spec = restore_spec("m-initial", &mapping, Some("m-modifiers"));
        assert_eq!(
            spec,
            json!({
                "backupName": "m-initial",
                "existingResourcePolicy": "none",
                "restorePVs": false,
                "namespaceMapping": {"shop": "shop-copy"},
                "resourceModifier": {"kind": "ConfigMap", "name": "m-modifiers"},
            })
        );
        assert!(spec.get("includeClusterResources").is_none());
    }

    #[test]
    fn without_renames_or_rewrites_the_spec_has_neither() {
        let spec = restore_spec("b", &BTreeMap::new(), None);
        assert!(spec.get("namespaceMapping").is_none());
        assert!(spec.get("resourceModifier").is_none());
        assert_eq!(restore_name("shop"), "shop-restore");
    }
}
