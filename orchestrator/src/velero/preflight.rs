//! Velero preflight (issue 13, step 1): everything the Velero stages need,
//! checked on both clusters, every problem at once, each naming the
//! cluster and the object.
//!
//! - Velero installed: the `velero.io` API served and its namespace there;
//! - recent enough: 1.11 for `existingResourcePolicy`, 1.12 for resource
//!   modifiers. The version comes from the `velero` Deployment's image tag
//!   when it has one (a read); otherwise (OADP pins images by digest) from
//!   a ServerStatusRequest, as `velero version` asks. That request is the
//!   one write preflight makes: it is created once under a deterministic
//!   name, and deleted once a pass has read the answers of both clusters
//!   (Velero would garbage-collect it after a minute anyway). Deleting each
//!   as soon as it was read would let a slow Velero answer the two sides
//!   in turn, one pass after the other, and no pass would ever see both.
//!   Until Velero answers, the check is pending, not failed;
//! - a BackupStorageLocation both share: the source's (named, or the
//!   default) is Available and not ReadOnly; the destination's names the
//!   same provider, bucket and prefix, so its sync shows the source's
//!   backups, and is Available (Velero syncs from Available locations
//!   only);
//! - no other migration's Backup or Restore in flight for the same
//!   namespaces (found by [`crate::names::VELERO_MIGRATION_LABEL`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use serde_json::{json, Value};

use super::{object, Kind, Phase, VeleroConfig};
use crate::clusters::Cluster;
use crate::kubeops::{create_if_missing, status_code};
use crate::names::{velero_name, VELERO_MIGRATION_LABEL};

/// A Velero version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// The first with `existingResourcePolicy` on restores.
    pub const EXISTING_RESOURCE_POLICY: Version = Version::new(1, 11, 0);
    /// The first with resource modifiers.
    pub const RESOURCE_MODIFIERS: Version = Version::new(1, 12, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Reads `v1.14.2`, `1.14.2`, `v1.14.2-rc.1`, `v1.14` (as image tags
    /// and `serverVersion` write it).
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One thing preflight found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The cluster, as [`Cluster::describe`] names it.
    pub cluster: String,
    /// The object, `Kind namespace/name`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.cluster, self.object, self.message)
    }
}

/// What preflight found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// Checks that need another pass (Velero has not answered yet).
    pub pending: Vec<String>,
    /// The versions found, source and destination.
    pub versions: Vec<(String, Version)>,
}

impl Report {
    /// True when nothing is wrong and nothing is pending.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.pending.is_empty()
    }
}

/// What the migration will use, and so what preflight must check.
#[derive(Debug, Clone)]
pub struct Needs<'a> {
    pub migration: &'a str,
    /// Source namespace to destination namespace.
    pub namespaces: &'a BTreeMap<String, String>,
    /// Whether the restore will name resource modifiers.
    pub resource_modifiers: bool,
}

impl Needs<'_> {
    fn minimum_version(&self) -> Version {
        if self.resource_modifiers {
            Version::RESOURCE_MODIFIERS
        } else {
            Version::EXISTING_RESOURCE_POLICY
        }
    }
}

/// The name of the ServerStatusRequest preflight may create.
pub fn server_status_request_name(migration: &str) -> String {
    velero_name(migration, "version")
}

/// Checks Velero on both clusters (one pass; see the module doc for the
/// one object it may create).
pub async fn check(
    source: &Cluster,
    destination: &Cluster,
    cfg: &VeleroConfig,
    needs: &Needs<'_>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut locations = Vec::new();
    let mut answered = Vec::new();
    for cluster in [source, destination] {
        let mut side = Side {
            cluster,
            cfg,
            report: &mut report,
            answered: false,
        };
        if !side.installed().await? {
            locations.push(None);
            continue;
        }
        side.version(needs).await?;
        if side.answered {
            answered.push(cluster);
        }
        locations.push(side.location().await?);
        side.conflicts(needs).await?;
    }
    if report.pending.is_empty() {
        let name = server_status_request_name(needs.migration);
        for cluster in answered {
            super::cleanup::delete(cluster, cfg, Kind::ServerStatusRequest, &name).await?;
        }
    }
    if let [Some(from), Some(to)] = locations.as_slice() {
        report.problems.extend(location_problems(
            &source.describe(),
            from,
            &destination.describe(),
            to,
        ));
    }
    Ok(report)
}

/// One cluster's checks, adding to the report.
struct Side<'a> {
    cluster: &'a Cluster,
    cfg: &'a VeleroConfig,
    report: &'a mut Report,
    /// A ServerStatusRequest's answer was read (the request is deleted
    /// once nothing is pending).
    answered: bool,
}

impl Side<'_> {
    fn problem(&mut self, object: String, message: String) {
        self.report.problems.push(Problem {
            cluster: self.cluster.describe(),
            object,
            message,
        });
    }

    /// The namespace exists and the API is served.
    async fn installed(&mut self) -> anyhow::Result<bool> {
        let namespace = &self.cfg.namespace;
        let found = Api::<Namespace>::all(self.cluster.client.clone())
            .get_opt(namespace)
            .await
            .with_context(|| {
                format!("{}: reading namespace {namespace}", self.cluster.describe())
            })?;
        let served = match Kind::BackupStorageLocation
            .api(self.cluster, self.cfg)
            .list(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => true,
            Err(e) if status_code(&e) == Some(404) => false,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{}: listing BackupStorageLocations",
                        self.cluster.describe()
                    )
                })
            }
        };
        if !served {
            self.problem(
                "API group velero.io/v1".into(),
                "not served: Velero is not installed (install Velero, or OADP on OpenShift)".into(),
            );
        }
        if found.is_none() {
            self.problem(
                format!("Namespace {namespace}"),
                "does not exist: Velero is not installed there (set velero.namespace to where it is, e.g. openshift-adp for OADP)".into(),
            );
        }
        Ok(served && found.is_some())
    }

    async fn version(&mut self, needs: &Needs<'_>) -> anyhow::Result<()> {
        let version = match self.deployment_version().await? {
            Some(version) => Some(version),
            None => self.asked_version(needs.migration).await?,
        };
        let Some(version) = version else {
            return Ok(());
        };
        self.report
            .versions
            .push((self.cluster.side.to_string(), version));
        let minimum = needs.minimum_version();
        if version < minimum {
            let why = if needs.resource_modifiers {
                "resource modifiers"
            } else {
                "existingResourcePolicy"
            };
            self.problem(
                format!("Velero server in {}", self.cfg.namespace),
                format!("version {version} is too old: the migration uses {why}, which need {minimum} or newer"),
            );
        }
        Ok(())
    }

    /// The tag of the `velero` Deployment's `velero` container image.
    async fn deployment_version(&self) -> anyhow::Result<Option<Version>> {
        let found = Api::<Deployment>::namespaced(self.cluster.client.clone(), &self.cfg.namespace)
            .get_opt("velero")
            .await
            .with_context(|| {
                format!(
                    "{}: reading Deployment {}/velero",
                    self.cluster.describe(),
                    self.cfg.namespace
                )
            })?;
        let image = found
            .and_then(|d| d.spec.template.spec)
            .and_then(|s| s.containers.into_iter().find(|c| c.name == "velero"))
            .and_then(|c| c.image);
        Ok(image.as_deref().and_then(image_version))
    }

    /// The answer of a ServerStatusRequest; `None` (pending) until Velero
    /// has processed it.
    async fn asked_version(&mut self, migration: &str) -> anyhow::Result<Option<Version>> {
        let name = server_status_request_name(migration);
        let api = Kind::ServerStatusRequest.api(self.cluster, self.cfg);
        let wanted = object(
            Kind::ServerStatusRequest,
            self.cfg,
            migration,
            &name,
            json!({}),
        )?;
        let found = match create_if_missing(&api, &wanted).await {
            Ok(found) => found,
            Err(e) if status_code(&e) == Some(404) => {
                self.problem(
                    format!("ServerStatusRequest {}/{name}", self.cfg.namespace),
                    "the velero.io API has no ServerStatusRequests and the velero Deployment's image has no version tag: cannot tell Velero's version".into(),
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{}: creating or reading ServerStatusRequest {}/{name}",
                        self.cluster.describe(),
                        self.cfg.namespace
                    )
                })
            }
        };
        let Some(answer) = server_version(&found.data) else {
            self.report.pending.push(format!(
                "{}: waiting for Velero to answer ServerStatusRequest {}/{name}",
                self.cluster.describe(),
                self.cfg.namespace
            ));
            return Ok(None);
        };
        self.answered = true;
        match Version::parse(&answer) {
            Some(version) => Ok(Some(version)),
            None => {
                self.problem(
                    format!("ServerStatusRequest {}/{name}", self.cfg.namespace),
                    format!("Velero reported version {answer:?}, which is not a version"),
                );
                Ok(None)
            }
        }
    }

    /// The BackupStorageLocation the migration uses here, if usable.
    async fn location(&mut self) -> anyhow::Result<Option<DynamicObject>> {
        let list = Kind::BackupStorageLocation
            .api(self.cluster, self.cfg)
            .list(&ListParams::default())
            .await
            .with_context(|| {
                format!(
                    "{}: listing BackupStorageLocations in {}",
                    self.cluster.describe(),
                    self.cfg.namespace
                )
            })?;
        match choose_location(&list.items, self.cfg.storage_location.as_deref()) {
            Ok(location) => Ok(Some(location.clone())),
            Err(message) => {
                self.problem(
                    format!("BackupStorageLocation in {}", self.cfg.namespace),
                    message,
                );
                Ok(None)
            }
        }
    }

    /// Other migrations' Backups and Restores still running on these
    /// namespaces.
    async fn conflicts(&mut self, needs: &Needs<'_>) -> anyhow::Result<()> {
        let selector = ListParams::default().labels(VELERO_MIGRATION_LABEL);
        let mut lists = Vec::new();
        for kind in [Kind::Backup, Kind::Restore] {
            let items = kind
                .api(self.cluster, self.cfg)
                .list(&selector)
                .await
                .with_context(|| {
                    format!(
                        "{}: listing {}s in {}",
                        self.cluster.describe(),
                        kind.name(),
                        self.cfg.namespace
                    )
                })?
                .items;
            lists.push(items);
        }
        let ours = crate::names::label_safe(needs.migration);
        for (kind, name, other) in
            in_flight_conflicts(&lists[0], &lists[1], &ours, needs.namespaces)
        {
            self.problem(
                format!("{kind} {}/{name}", self.cfg.namespace),
                format!("migration {other:?} is still running on the same namespaces; wait for it or roll it back"),
            );
        }
        Ok(())
    }
}

/// The version in an image reference's tag (`velero/velero:v1.14.0`).
pub fn image_version(image: &str) -> Option<Version> {
    let without_digest = image.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    Version::parse(tag)
}

/// `status.serverVersion` of a processed ServerStatusRequest.
pub fn server_version(request: &Value) -> Option<String> {
    let status = request.get("status")?;
    (status.get("phase").and_then(Value::as_str) == Some("Processed"))
        .then(|| status.get("serverVersion").and_then(Value::as_str))
        .flatten()
        .map(String::from)
}

/// The location named `name`, or the one marked default; a message when
/// there is none.
pub fn choose_location<'a>(
    locations: &'a [DynamicObject],
    name: Option<&str>,
) -> Result<&'a DynamicObject, String> {
    let found = match name {
        Some(name) => locations.iter().find(|l| l.name_any() == name),
        None => locations
            .iter()
            .find(|l| l.data.pointer("/spec/default") == Some(&json!(true))),
    };
    found.ok_or_else(|| match name {
        Some(name) => format!("no BackupStorageLocation named {name:?} (velero.storageLocation)"),
        None => "none is marked default: mark one (`velero backup-location set --default`) or set velero.storageLocation".into(),
    })
}

/// Where a location keeps backups: provider, bucket, prefix.
fn storage(location: &DynamicObject) -> (String, String, String) {
    let field = |pointer: &str| {
        location
            .data
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_matches('/')
            .to_string()
    };
    (
        field("/spec/provider"),
        field("/spec/objectStorage/bucket"),
        field("/spec/objectStorage/prefix"),
    )
}

fn phase(location: &DynamicObject) -> &str {
    location
        .data
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
}

/// What is wrong with the pair of locations (pure).
pub fn location_problems(
    source: &str,
    from: &DynamicObject,
    destination: &str,
    to: &DynamicObject,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |cluster: &str, location: &DynamicObject, message: String| {
        problems.push(Problem {
            cluster: cluster.to_string(),
            object: format!(
                "BackupStorageLocation {}/{}",
                location.namespace().unwrap_or_default(),
                location.name_any()
            ),
            message,
        })
    };
    if phase(from) != "Available" {
        add(
            source,
            from,
            format!(
                "is {}, not Available: Velero cannot write backups to it",
                phase(from)
            ),
        );
    }
    if from
        .data
        .pointer("/spec/accessMode")
        .and_then(Value::as_str)
        == Some("ReadOnly")
    {
        add(
            source,
            from,
            "is ReadOnly: the backup must be written there".into(),
        );
    }
    if phase(to) != "Available" {
        add(
            destination,
            to,
            format!(
                "is {}, not Available: Velero syncs backups only from Available locations",
                phase(to)
            ),
        );
    }
    let (wanted, found) = (storage(from), storage(to));
    if wanted != found {
        add(
            destination,
            to,
            format!(
                "stores in provider {:?} bucket {:?} prefix {:?}, the source's in provider {:?} bucket {:?} prefix {:?}: it would never show the source's backups",
                found.0, found.1, found.2, wanted.0, wanted.1, wanted.2
            ),
        );
    }
    problems
}

/// Backups and Restores of other migrations (label value not `ours`) not
/// yet finished and touching the same namespaces: `(kind, name, other
/// migration)` each (pure).
pub fn in_flight_conflicts(
    backups: &[DynamicObject],
    restores: &[DynamicObject],
    ours: &str,
    namespaces: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, String)> {
    let sources: BTreeSet<&str> = namespaces.keys().map(String::as_str).collect();
    let destinations: BTreeSet<&str> = namespaces.values().map(String::as_str).collect();
    let other = |object: &DynamicObject| {
        object
            .labels()
            .get(VELERO_MIGRATION_LABEL)
            .filter(|value| value.as_str() != ours)
            .filter(|_| !Phase::of(object).is_final())
            .cloned()
    };
    let included = |backup: &DynamicObject| -> Vec<String> {
        backup
            .data
            .pointer("/spec/includedNamespaces")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for backup in backups {
        if let Some(migration) = other(backup) {
            if included(backup)
                .iter()
                .any(|ns| sources.contains(ns.as_str()))
            {
                out.push(("Backup", backup.name_any(), migration));
            }
        }
    }
    for restore in restores {
        let Some(migration) = other(restore) else {
            continue;
        };
        let backup = restore
            .data
            .pointer("/spec/backupName")
            .and_then(Value::as_str);
        let from: Vec<String> = backups
            .iter()
            .find(|b| Some(b.name_any().as_str()) == backup)
            .map(included)
            .unwrap_or_default();
        let mapping = restore
            .data
            .pointer("/spec/namespaceMapping")
            .and_then(Value::as_object);
        let to: Vec<&str> = from
            .iter()
            .map(|ns| {
                mapping
                    .and_then(|m| m.get(ns))
                    .and_then(Value::as_str)
                    .unwrap_or(ns)
            })
            .chain(
                mapping
                    .into_iter()
                    .flat_map(|m| m.values().filter_map(Value::as_str)),
            )
            .collect();
        if to.iter().any(|ns| destinations.contains(ns)) {
            out.push(("Restore", restore.name_any(), migration));
        }
    }
    out
}

#[cfg(test)]
mod tests;
