//! The orchestrator's Velero client: everything a migration asks of Velero
//! (DESIGN.md stages 3 and 6, issue 13), as one-pass functions the
//! migration engine calls from its steps.
//!
//! Velero has no Rust crate, so its `velero.io/v1` objects are
//! [`DynamicObject`]s built from JSON that follows Velero's Go types
//! (pkg/apis/velero/v1). Every function here makes one pass and never
//! waits: it creates what is missing under a deterministic name, reads
//! what is there, and returns where things stand ([`Phase`], `Option`,
//! "not yet"). The engine keeps deadlines in the Migration status and
//! calls again. A Backup or Restore in flight is therefore observed,
//! never created twice, whatever crashed in between.
//!
//! Errors: `anyhow::Result` carries API failures (the engine treats them
//! as transient and retries); domain outcomes (a backup that failed
//! validation, a BSL that is read-only) are plain values.
//!
//! - [`preflight`]: Velero installed and recent enough on both sides, a
//!   storage location both share, no other migration in flight;
//! - [`backup`]: the initial backup's spec and its creation;
//! - [`restore`]: the restore's spec and its creation;
//! - [`modifiers`]: the resource modifier rules that rewrite what the
//!   destination must not keep as it was (images, Route hosts, storage
//!   classes, node pinning);
//! - [`results`]: per-resource warnings and errors, through a
//!   DownloadRequest, as `velero restore describe` reads them;
//! - [`cleanup`]: removing the migration's Velero objects for rollback.

pub mod backup;
pub mod cleanup;
pub mod modifiers;
pub mod preflight;
pub mod restore;
pub mod results;

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject};
use kube::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clusters::Cluster;
use crate::kubeops::create_if_missing;
use crate::names::VELERO_MIGRATION_LABEL;

/// Velero's API group and version.
pub const API_VERSION: &str = "velero.io/v1";
/// The namespace `velero install` uses.
pub const DEFAULT_NAMESPACE: &str = "velero";

/// Where Velero lives on both clusters, as the plan's `velero:` section
/// gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroConfig {
    /// The namespace Velero was installed in, on both clusters (`velero`;
    /// OADP installs into `openshift-adp`). Backups, Restores and the
    /// resource modifier ConfigMap go there.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The BackupStorageLocation to back up to, by name, the same on both
    /// clusters. Default: the one marked `spec.default` on each side.
    #[serde(default)]
    pub storage_location: Option<String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

impl Default for VeleroConfig {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            storage_location: None,
        }
    }
}

impl VeleroConfig {
    /// Every problem with the fields, each naming its field (as `velero.x`).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = crate::plan::check_dns_label(&self.namespace) {
            problems.push(format!("velero.namespace: {e}"));
        }
        if let Some(location) = &self.storage_location {
            if let Err(e) = crate::plan::check_dns_subdomain(location) {
                problems.push(format!("velero.storageLocation: {e}"));
            }
        }
        problems
    }
}

/// The `velero.io/v1` kinds the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backup,
    Restore,
    BackupStorageLocation,
    ServerStatusRequest,
    DownloadRequest,
    DeleteBackupRequest,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Backup => "Backup",
            Kind::Restore => "Restore",
            Kind::BackupStorageLocation => "BackupStorageLocation",
            Kind::ServerStatusRequest => "ServerStatusRequest",
            Kind::DownloadRequest => "DownloadRequest",
            Kind::DeleteBackupRequest => "DeleteBackupRequest",
        }
    }

    pub fn resource(self) -> ApiResource {
        let kind = self.name();
        ApiResource {
            group: "velero.io".into(),
            version: "v1".into(),
            api_version: API_VERSION.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_ascii_lowercase()),
        }
    }

    /// This kind in `cfg`'s Velero namespace of `cluster`.
    pub fn api(self, cluster: &Cluster, cfg: &VeleroConfig) -> Api<DynamicObject> {
        Api::namespaced_with(cluster.client.clone(), &cfg.namespace, &self.resource())
    }
}

/// The labels on every Velero object a migration creates, so that
/// preflight finds other migrations' objects and cleanup finds its own.
pub fn migration_labels(migration: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        VELERO_MIGRATION_LABEL.to_string(),
        crate::names::label_safe(migration),
    )])
}

/// A `velero.io/v1` object of `kind` named `name` in `cfg`'s namespace,
/// labelled for `migration`, with `spec`.
pub fn object(
    kind: Kind,
    cfg: &VeleroConfig,
    migration: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": API_VERSION,
        "kind": kind.name(),
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": migration_labels(migration),
        },
        "spec": spec,
    }))
    .with_context(|| format!("building {} {name}", kind.name()))
}

/// Where a Backup or Restore stands, from its `status.phase` and the
/// counters Velero writes beside it (omitted when zero). One type for
/// both: Velero's two phase lists are the same but for the Backup-only
/// Queued, ReadyToStart and Deleting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase")]
pub enum Phase {
    /// Created, not yet picked up (`New` or no status at all).
    New,
    /// Backups, Velero 1.18+: waiting for a worker.
    Queued,
    ReadyToStart,
    InProgress,
    /// Plugins' asynchronous operations (CSI data movement) are running.
    WaitingForPluginOperations,
    WaitingForPluginOperationsPartiallyFailed,
    /// The items are done; Velero is uploading metadata and final results.
    Finalizing,
    FinalizingPartiallyFailed,
    Completed {
        warnings: u64,
    },
    PartiallyFailed {
        errors: u64,
        warnings: u64,
    },
    Failed {
        reason: String,
    },
    /// Refused before it started: the spec, the storage location or the
    /// resource modifier ConfigMap was not usable.
    FailedValidation {
        errors: Vec<String>,
    },
    /// Backups: a DeleteBackupRequest is removing it.
    Deleting,
    /// A phase this client does not know (a newer Velero).
    Unknown {
        name: String,
    },
}

impl Phase {
    /// Reads the phase from a Backup's or Restore's `status` (absent for an
    /// object Velero has not seen yet).
    pub fn from_status(status: Option<&Value>) -> Phase {
        let empty = Value::Null;
        let status = status.unwrap_or(&empty);
        let count = |field: &str| status.get(field).and_then(Value::as_u64).unwrap_or(0);
        let phase = status.get("phase").and_then(Value::as_str).unwrap_or("");
        match phase {
            "" | "New" => Phase::New,
            "Queued" => Phase::Queued,
            "ReadyToStart" => Phase::ReadyToStart,
            "InProgress" => Phase::InProgress,
            "WaitingForPluginOperations" => Phase::WaitingForPluginOperations,
            "WaitingForPluginOperationsPartiallyFailed" => {
                Phase::WaitingForPluginOperationsPartiallyFailed
            }
            "Finalizing" => Phase::Finalizing,
            "FinalizingPartiallyFailed" => Phase::FinalizingPartiallyFailed,
            "Completed" => Phase::Completed {
                warnings: count("warnings"),
            },
            "PartiallyFailed" => Phase::PartiallyFailed {
                errors: count("errors"),
                warnings: count("warnings"),
            },
            "Failed" => Phase::Failed {
                reason: status
                    .get("failureReason")
                    .and_then(Value::as_str)
                    .unwrap_or("Velero gave no reason (see `velero describe` and its logs)")
                    .to_string(),
            },
            "FailedValidation" => Phase::FailedValidation {
                errors: status
                    .get("validationErrors")
                    .and_then(Value::as_array)
                    .map(|errors| {
                        errors
                            .iter()
                            .filter_map(|e| e.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            "Deleting" => Phase::Deleting,
            other => Phase::Unknown {
                name: other.to_string(),
            },
        }
    }

    /// The phase of a Backup or Restore object.
    pub fn of(object: &DynamicObject) -> Phase {
        Phase::from_status(object.data.get("status"))
    }

    /// True once Velero will not change the phase again (Deleting is not
    /// final: the object is on its way out).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Phase::Completed { .. }
                | Phase::PartiallyFailed { .. }
                | Phase::Failed { .. }
                | Phase::FailedValidation { .. }
        )
    }

    /// Velero's name of the phase.
    pub fn name(&self) -> &str {
        match self {
            Phase::New => "New",
            Phase::Queued => "Queued",
            Phase::ReadyToStart => "ReadyToStart",
            Phase::InProgress => "InProgress",
            Phase::WaitingForPluginOperations => "WaitingForPluginOperations",
            Phase::WaitingForPluginOperationsPartiallyFailed => {
                "WaitingForPluginOperationsPartiallyFailed"
            }
            Phase::Finalizing => "Finalizing",
            Phase::FinalizingPartiallyFailed => "FinalizingPartiallyFailed",
            Phase::Completed { .. } => "Completed",
            Phase::PartiallyFailed { .. } => "PartiallyFailed",
            Phase::Failed { .. } => "Failed",
            Phase::FailedValidation { .. } => "FailedValidation",
            Phase::Deleting => "Deleting",
            Phase::Unknown { name } => name,
        }
    }
}

/// Creates the Backup or Restore `name` with `spec` unless it exists, and
/// returns its phase. An existing object is only read: its spec is never
/// changed under a running Velero.
async fn ensure_run(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    kind: Kind,
    migration: &str,
    name: &str,
    spec: Value,
) -> anyhow::Result<Phase> {
    let wanted = object(kind, cfg, migration, name, spec)?;
    let found = create_if_missing(&kind.api(cluster, cfg), &wanted)
        .await
        .with_context(|| {
            format!(
                "{}: creating or reading {} {}/{name}",
                cluster.describe(),
                kind.name(),
                cfg.namespace
            )
        })?;
    Ok(Phase::of(&found))
}

/// Reads `kind` `name`, `None` when it does not exist, with an error that
/// names the cluster and the object.
async fn get_opt(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    kind: Kind,
    name: &str,
) -> anyhow::Result<Option<DynamicObject>> {
    kind.api(cluster, cfg).get_opt(name).await.with_context(|| {
        format!(
            "{}: reading {} {}/{name}",
            cluster.describe(),
            kind.name(),
            cfg.namespace
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_velero_and_the_default_location() {
        let cfg: VeleroConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(cfg, VeleroConfig::default());
        assert_eq!(cfg.namespace, "velero");
        let cfg: VeleroConfig =
            serde_yaml::from_str("namespace: openshift-adp\nstorageLocation: dpa-1\n").unwrap();
        assert_eq!(cfg.namespace, "openshift-adp");
        assert_eq!(cfg.storage_location.as_deref(), Some("dpa-1"));
        assert!(cfg.check().is_empty());
    }

    #[test]
    fn config_refuses_unknown_fields_and_names_bad_ones() {
        let error = serde_yaml::from_str::<VeleroConfig>("namespaces: x\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `namespaces`"),
            "{error}"
        );
        let cfg = VeleroConfig {
            namespace: "Velero NS".into(),
            storage_location: Some("bad_name".into()),
        };
        let problems = cfg.check();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("velero.namespace: "),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("velero.storageLocation: "),
            "{problems:?}"
        );
    }

    #[test]
    fn phases_map_from_status_with_omitted_zero_counters() {
        assert_eq!(Phase::from_status(None), Phase::New);
        assert_eq!(Phase::from_status(Some(&json!({}))), Phase::New);
        let cases = [
            (json!({"phase": "New"}), Phase::New),
            (json!({"phase": "Queued"}), Phase::Queued),
            (json!({"phase": "ReadyToStart"}), Phase::ReadyToStart),
            (json!({"phase": "InProgress"}), Phase::InProgress),
            (
                json!({"phase": "WaitingForPluginOperations"}),
                Phase::WaitingForPluginOperations,
            ),
            (
                json!({"phase": "WaitingForPluginOperationsPartiallyFailed"}),
                Phase::WaitingForPluginOperationsPartiallyFailed,
            ),
            (json!({"phase": "Finalizing"}), Phase::Finalizing),
            (
                json!({"phase": "FinalizingPartiallyFailed"}),
                Phase::FinalizingPartiallyFailed,
            ),
            (
                json!({"phase": "Completed"}),
                Phase::Completed { warnings: 0 },
            ),
            (
                json!({"phase": "Completed", "warnings": 3}),
                Phase::Completed { warnings: 3 },
            ),
            (
                json!({"phase": "PartiallyFailed", "errors": 2}),
                Phase::PartiallyFailed {
                    errors: 2,
                    warnings: 0,
                },
            ),
            (
                json!({"phase": "Failed", "failureReason": "backup already exists in object storage"}),
                Phase::Failed {
                    reason: "backup already exists in object storage".into(),
                },
            ),
            (
                json!({"phase": "FailedValidation", "validationErrors": ["a", "b"]}),
                Phase::FailedValidation {
                    errors: vec!["a".into(), "b".into()],
                },
            ),
            (json!({"phase": "Deleting"}), Phase::Deleting),
            (
                json!({"phase": "Sleeping"}),
                Phase::Unknown {
                    name: "Sleeping".into(),
                },
            ),
        ];
        for (status, phase) in cases {
            let got = Phase::from_status(Some(&status));
            assert_eq!(got, phase, "{status}");
            assert_eq!(got.name(), status["phase"].as_str().unwrap(), "{status}");
        }
        assert!(Phase::from_status(Some(&json!({"phase": "Failed"}))).is_final());
        assert!(!Phase::Finalizing.is_final());
        assert!(!Phase::Deleting.is_final());
    }

    #[test]
    fn kinds_have_velero_plurals() {
        assert_eq!(Kind::Backup.resource().plural, "backups");
        assert_eq!(
            Kind::BackupStorageLocation.resource().plural,
            "backupstoragelocations"
        );
        assert_eq!(
            Kind::ServerStatusRequest.resource().plural,
            "serverstatusrequests"
        );
        assert_eq!(
            Kind::DeleteBackupRequest.resource().plural,
            "deletebackuprequests"
        );
        let backup = object(
            Kind::Backup,
            &VeleroConfig::default(),
            "m",
            "m-initial",
            json!({}),
        )
        .unwrap();
        assert_eq!(backup.metadata.namespace.as_deref(), Some("velero"));
        assert_eq!(backup.metadata.labels.unwrap()[VELERO_MIGRATION_LABEL], "m");
    }
}
