//! The Velero of one emulated cluster: Backups to, and Restores from, the
//! bucket directory both clusters share (`Shared::velero_bucket`).
//!
//! It behaves like Velero where a migration tool depends on it, as a client
//! of the cluster's API. Its controllers:
//!
//! - [`backup`]: a new Backup snapshots the objects it selects into the
//!   bucket: InProgress, Finalizing (or FinalizingPartiallyFailed), then Completed or
//!   PartiallyFailed (Failed, FailedValidation for a bad spec);
//! - [`sync`]: every sync period each cluster creates the Backup objects
//!   for the bucket's final backups it lacks and deletes the orphans, as
//!   BSL sync does, which is how the destination sees the source's backup;
//! - [`restore`]: a new Restore recreates a backup's objects (namespace
//!   mapping, resource modifiers, existing-resource policy) and ends
//!   Completed, PartiallyFailed, Failed or FailedValidation;
//! - [`download`]: DownloadRequests get a signed, expiring URL of the
//!   emulator's own bucket HTTP server, as `velero ... describe --details`
//!   and `velero ... logs` read results and logs;
//! - [`requests`]: ServerStatusRequests (`velero version`) and
//!   DeleteBackupRequests (`velero backup delete`).
//!
//! Velero's namespace, BSL name, sync period and server version are
//! [`VeleroOptions`] (`Cluster::start_with_velero`).
//!
//! # Fidelity
//!
//! Matches real Velero (each module names the Velero source it follows):
//!
//! - resource modifiers (`internal/resourcemodifiers`): strict YAML via
//!   JSON, validation messages, JSON patches with the string `value`
//!   quoting rules, merge patches, conditions (groupResource glob with '.'
//!   separators, namespace globs, unanchored name regex, label selector,
//!   `test` matches), applied after the item actions and before the
//!   namespace remap, a failing patch an error of its item;
//! - phases: Backups and Restores pass InProgress and
//!   Finalizing (or FinalizingPartiallyFailed) to Completed or PartiallyFailed; the
//!   bucket metadata is rewritten final by the finalizer; FailedValidation
//!   carries `validationErrors` only; a name already in the bucket is
//!   Failed;
//! - status shape: no `/status` subresource for Backups and Restores,
//!   zero counters omitted, `version`, `formatVersion`, `expiration`;
//! - installation: Velero's namespace, BSL name, sync period and version
//!   are [`VeleroOptions`]; an empty `storageLocation` is the BSL with
//!   `spec.default`; ReadOnly and Unavailable BSLs refuse with Velero's
//!   messages;
//! - BSL sync: per BSL, Available only, `backupSyncPeriod` (0 never),
//!   `lastSyncedTime`, final backups only, orphans deleted, a Backup
//!   object deleted alone comes back;
//! - backup selection: cluster-scope rules, related PVs, CRDs,
//!   ClusterRoleBindings and ClusterRoles of ServiceAccounts,
//!   `velero.io/exclude-from-backup` on items and namespaces, terminating
//!   items skipped, `orLabelSelectors`, missing included namespaces as
//!   errors, resource names by short name, kind, singular or `name.group`,
//!   globs in lists;
//! - restore: validation messages, cluster-scoped items only when asked or
//!   with every namespace, completed Pods and Jobs and mirror Pods skipped,
//!   Velero's restore priorities, item actions (Services, Pods, Jobs,
//!   binding subjects, PVCs), labels through GetValidName, unlabelled
//!   namespaces, existing-object warnings in Velero's two wordings, the
//!   `update` policy's merge patch with the label fallback, merged
//!   ServiceAccounts, the external-resources finalizer;
//! - results, resource lists (with each restored item's action) and logs
//!   gzipped under Velero's names, served through
//!   DownloadRequests with expiring signed URLs; ServerStatusRequests;
//!   DeleteBackupRequests (bucket files, Restores, Backup, then the
//!   requests).
//!
//! Still differs:
//!
//! - the backup contents are unpacked in the bucket
//!   (`backups/<b>/resources/...`), not in `<b>.tar.gz`, without
//!   `-preferredversion` directories;
//! - strategic merge patches merge every list of named objects by `name`
//!   instead of by the schema's patch keys, and work on custom resources
//!   (Velero refuses kinds its scheme lacks);
//! - no volume snapshots, PodVolumeBackups, data movement, hooks,
//!   schedules (`scheduleName` restores fail validation), TTL garbage
//!   collection or item operations; a Pod does not bring its PVCs into a
//!   backup; PVs are restored whatever their reclaim policy; the
//!   change-image-name and change-storage-class plugin ConfigMaps are not
//!   read;
//! - the include/exclude cluster-/namespace-scoped resource filters (the
//!   "new" filter parameters) are ignored;
//! - expired DownloadRequests and processed ServerStatusRequests are not
//!   deleted; a DownloadRequest whose target is missing is left as it is
//!   (Velero also sets its expiration);
//! - the logs are short summaries in logrus's format, not Velero's log.

mod actions;
mod backup;
mod bucket;
mod download;
mod existing;
mod filter;
mod glob;
mod location;
mod modifiers;
mod requests;
mod restore;
mod results;
mod sync;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::context::ClusterContext;

pub use results::Messages;
use results::Results;

/// The namespace Velero lives in by default (OADP uses `openshift-adp`).
pub const NAMESPACE: &str = "velero";
/// The name of the BackupStorageLocation installed by default.
pub const STORAGE_LOCATION: &str = "default";
/// The version a ServerStatusRequest reports by default.
pub const SERVER_VERSION: &str = "v1.14.1";
/// The label Velero puts on Backups naming their storage location.
const STORAGE_LOCATION_LABEL: &str = "velero.io/storage-location";

/// How one cluster's Velero is installed.
#[derive(Clone, Debug)]
pub struct VeleroOptions {
    /// The namespace of Velero and of its objects (`velero`; OADP:
    /// `openshift-adp`).
    pub namespace: String,
    /// The name of the BackupStorageLocation installed (with
    /// `spec.default: true`).
    pub storage_location: String,
    /// The server's `--backup-sync-period` (Velero: 1 minute; short here
    /// so that tests do not wait). A BSL's `spec.backupSyncPeriod` wins.
    pub sync_period: Duration,
    /// What `velero version` shows as the server version.
    pub server_version: String,
}

impl Default for VeleroOptions {
    fn default() -> Self {
        Self {
            namespace: NAMESPACE.into(),
            storage_location: STORAGE_LOCATION.into(),
            sync_period: Duration::from_secs(1),
            server_version: SERVER_VERSION.into(),
        }
    }
}

/// One running Velero: the cluster it serves and how it is installed.
pub(crate) struct Velero {
    ctx: Arc<ClusterContext>,
    options: VeleroOptions,
    /// Signs and serves the bucket's files for DownloadRequests.
    downloads: download::Server,
}

impl Deref for Velero {
    type Target = ClusterContext;
    fn deref(&self) -> &ClusterContext {
        &self.ctx
    }
}

impl Velero {
    /// A `velero.io/v1` resource of Velero's namespace.
    fn api(&self, kind: &str, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.options.namespace,
            &velero_resource(kind, plural),
        )
    }

    fn backups(&self) -> Api<DynamicObject> {
        self.api("Backup", "backups")
    }

    fn restores(&self) -> Api<DynamicObject> {
        self.api("Restore", "restores")
    }

    fn locations(&self) -> Api<DynamicObject> {
        self.api("BackupStorageLocation", "backupstoragelocations")
    }

    fn bucket(&self) -> bucket::Bucket<'_> {
        bucket::Bucket(&self.shared.velero_bucket)
    }
}

/// A `velero.io/v1` resource.
fn velero_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "velero.io".into(),
        version: "v1".into(),
        api_version: "velero.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Runs Velero until the task is aborted.
pub async fn run(ctx: Arc<ClusterContext>, options: VeleroOptions) -> anyhow::Result<()> {
    let (downloads, serve) = download::Server::start(ctx.shared.velero_bucket.clone()).await?;
    let velero = Velero {
        ctx,
        options,
        downloads,
    };
    let v = &velero;
    install(v).await?;
    let downloads = v.api("DownloadRequest", "downloadrequests");
    let statuses = v.api("ServerStatusRequest", "serverstatusrequests");
    let deletions = v.api("DeleteBackupRequest", "deletebackuprequests");
    tokio::select! {
        result = serve => result?,
        () = work_queue(v.backups(), |backup| backup::run(v, backup)) => {}
        () = work_queue(v.restores(), |restore| restore::run(v, restore)) => {}
        () = restore::finalize_deleted(v) => {}
        () = work_queue(downloads, |request| download::process(v, request)) => {}
        () = work_queue(statuses, |request| requests::server_status(v, request)) => {}
        () = work_queue(deletions, |request| requests::delete_backup(v, request)) => {}
        () = sync::run(v) => {}
    }
    Ok(())
}

/// Creates Velero's namespace and its BackupStorageLocation, retrying
/// while the API server comes up.
async fn install(v: &Velero) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match try_install(v).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 50 => {
                tracing::debug!("velero: installing (will retry): {error:#}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                return Err(error.context("installing Velero (namespace and BackupStorageLocation)"))
            }
        }
    }
}

async fn try_install(v: &Velero) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(v.options.namespace.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    create_if_absent(&Api::<Namespace>::all(v.client.clone()), &namespace).await?;
    let name = &v.options.storage_location;
    let location: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": { "name": name, "namespace": v.options.namespace },
        "spec": {
            "provider": "kube-emulator",
            "default": true,
            "accessMode": "ReadWrite",
            "objectStorage": { "bucket": "velero-bucket" },
            "config": { "path": v.shared.velero_bucket.display().to_string() },
        },
    }))?;
    create_if_absent(&v.locations(), &location).await?;
    let status = json!({ "phase": "Available", "lastValidationTime": now() });
    patch_status(&v.locations(), name, status)
        .await
        .context("marking the BackupStorageLocation Available")?;
    Ok(())
}

/// Creates `object` unless it exists.
pub(crate) async fn create_if_absent<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating {}", object.name_any())),
    }
}

/// Hands each new object of `api` (phase empty or `New`) to `process`, one
/// at a time, as Velero's controllers do. The phase is checked again on a
/// fresh read, so an object seen New in an old event is not processed twice.
async fn work_queue<F, Fut>(api: Api<DynamicObject>, process: F)
where
    F: Fn(DynamicObject) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(object) => object,
            Err(error) => {
                tracing::warn!("velero: watching: {error}");
                continue;
            }
        };
        if !is_new(&object) {
            continue;
        }
        match api.get_opt(&object.name_any()).await {
            Ok(Some(fresh)) if is_new(&fresh) => process(fresh).await,
            Ok(_) => {}
            Err(error) => tracing::warn!("velero: reading {}: {error}", object.name_any()),
        }
    }
}

fn phase(object: &DynamicObject) -> &str {
    object
        .data
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_new(object: &DynamicObject) -> bool {
    matches!(phase(object), "" | "New")
}

/// Merges `status` into the status of a Backup or Restore. Their CRDs have
/// no status subresource (Velero's config/crd/v1/bases), so status is
/// written with the object, as Velero's controllers patch it.
async fn patch_object_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> Result<(), kube::Error> {
    let patch = json!({ "status": status });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Merges `status` into the status of a Velero object the emulator's API
/// serves with a `/status` subresource (BSLs and the request kinds).
async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> Result<(), kube::Error> {
    let patch = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Marks a Backup or Restore as refused before it started, with the
/// reasons in `validationErrors` and nothing else, as Velero's
/// backup_controller.go and restore_controller.go do. `extra` carries the
/// fields Velero fills before validating (a Backup's version, expiration).
async fn fail_validation(api: &Api<DynamicObject>, name: &str, errors: Vec<String>, extra: Value) {
    tracing::info!("velero: {name} failed validation: {}", errors.join("; "));
    let mut status = json!({ "phase": "FailedValidation", "validationErrors": errors });
    merge(&mut status, extra);
    if let Err(error) = patch_object_status(api, name, status).await {
        tracing::warn!("velero: recording the failed validation of {name}: {error}");
    }
}

/// Marks a Backup or Restore Failed with `reason`, as Velero does when it
/// cannot carry one out.
async fn fail(api: &Api<DynamicObject>, name: &str, reason: String) {
    tracing::info!("velero: {name} failed: {reason}");
    let status =
        json!({ "phase": "Failed", "failureReason": reason, "completionTimestamp": now() });
    if let Err(error) = patch_object_status(api, name, status).await {
        tracing::warn!("velero: recording the failure of {name}: {error}");
    }
}

/// The `spec` of a Backup or Restore, or the FailedValidation message.
fn spec<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<T, Vec<String>> {
    serde_json::from_value(object.data.get("spec").cloned().unwrap_or(json!({})))
        .map_err(|error| vec![format!("invalid spec: {error}")])
}

/// Adds the fields of `extra` (an object) to `value` (an object).
fn merge(value: &mut Value, extra: Value) {
    if let (Some(value), Value::Object(extra)) = (value.as_object_mut(), extra) {
        value.extend(extra);
    }
}

/// Sets `errors`, `warnings` (and nothing when zero: Velero's status
/// fields are `omitempty`).
fn counters(status: &mut Value, errors: usize, warnings: usize) {
    if errors > 0 {
        status["errors"] = json!(errors);
    }
    if warnings > 0 {
        status["warnings"] = json!(warnings);
    }
}

/// The Finalizing status of a backup or restore (`what` `name`) with
/// `results` and `progress`, and whether it is partially failed; the
/// errors are logged.
fn finalizing(what: &str, name: &str, results: &Results<'_>, progress: Value) -> (Value, bool) {
    for message in results.errors.all() {
        tracing::warn!("velero: {what} {name}: {message}");
    }
    let partially = results.errors.count() > 0;
    let mut status = json!({
        "phase": if partially { "FinalizingPartiallyFailed" } else { "Finalizing" },
        "progress": progress,
    });
    counters(
        &mut status,
        results.errors.count(),
        results.warnings.count(),
    );
    (status, partially)
}

/// Now, as Kubernetes writes times.
fn now() -> Value {
    time(Timestamp::now())
}

fn time(at: Timestamp) -> Value {
    serde_json::to_value(Time(at)).unwrap_or(Value::Null)
}

/// Velero's `label.GetValidName` (pkg/label/label.go): a name as a label
/// value, at most 63 characters, a longer one cut to 57 and suffixed with
/// the first 6 hex digits of its SHA-256.
pub fn valid_label_value(name: &str) -> String {
    use sha2::Digest as _;
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_string();
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // Go cuts bytes; a name the API server accepted is ASCII, and anything
    // else is cut at a character boundary rather than split.
    let mut cut = MAX - 6;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &name[..cut], &hex[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_and_hashed_as_get_valid_name_does() {
        assert_eq!(valid_label_value("short"), "short");
        let long = "a".repeat(70);
        let valid = valid_label_value(&long);
        assert_eq!(valid.len(), 63);
        assert!(valid.starts_with(&"a".repeat(57)));
        // sha256("a" x 70) starts with these digits (checked with sha256sum).
        assert_eq!(&valid[57..], &sha_prefix(&long));
        let wide = "é".repeat(40);
        assert!(valid_label_value(&wide).len() <= 63);
    }

    fn sha_prefix(text: &str) -> String {
        let output = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .expect("running sha256sum");
        String::from_utf8_lossy(&output.stdout)[..6].to_string()
    }
}
