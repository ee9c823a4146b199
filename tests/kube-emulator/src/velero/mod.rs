//! The Velero of one emulated cluster: Backups to, and Restores from, the
//! bucket directory both clusters share (`Shared::velero_bucket`).
//!
//! It behaves like Velero where a migration tool depends on it, as a client
//! of the cluster's API:
//!
//! - the namespace `velero` holds a BackupStorageLocation `default` (phase
//!   Available) and the Backups and Restores;
//! - [`backup`]: a new Backup snapshots the objects it selects into the
//!   bucket and ends Completed, PartiallyFailed or Failed (FailedValidation
//!   for a bad spec);
//! - [`sync`]: every [`sync::INTERVAL`] each cluster creates the Backup
//!   objects for the bucket's backups it lacks, as BSL sync does, which is
//!   how the destination sees the source's backup;
//! - [`restore`]: a new Restore recreates a Completed backup's objects (with
//!   namespace mapping) and ends Completed, PartiallyFailed or Failed
//!   (FailedValidation when the backup is missing or unusable).
//!
//! Phases, status fields, resource names in include/exclude lists, the
//! metadata reset on restore and the restore order are Velero's.

mod backup;
mod bucket;
mod filter;
mod restore;
mod sync;

use std::collections::BTreeMap;
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

/// The namespace Velero lives in and keeps its objects in.
pub const NAMESPACE: &str = "velero";
/// The name of the one BackupStorageLocation.
pub const STORAGE_LOCATION: &str = "default";
/// The label Velero puts on Backups naming their storage location.
const STORAGE_LOCATION_LABEL: &str = "velero.io/storage-location";

/// A `velero.io/v1` resource of the namespace `velero`.
fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "velero.io".into(),
        version: "v1".into(),
        api_version: "velero.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn api(ctx: &ClusterContext, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), NAMESPACE, &resource(kind, plural))
}

fn backups(ctx: &ClusterContext) -> Api<DynamicObject> {
    api(ctx, "Backup", "backups")
}

fn restores(ctx: &ClusterContext) -> Api<DynamicObject> {
    api(ctx, "Restore", "restores")
}

/// Runs Velero until the task is aborted.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    install(&ctx).await?;
    tokio::select! {
        () = work_queue(backups(&ctx), |backup| backup::run(&ctx, backup)) => {}
        () = work_queue(restores(&ctx), |restore| restore::run(&ctx, restore)) => {}
        () = sync::run(&ctx) => {}
    }
    Ok(())
}

/// Creates the namespace `velero` and the BackupStorageLocation `default`,
/// retrying while the API server comes up.
async fn install(ctx: &ClusterContext) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match try_install(ctx).await {
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

async fn try_install(ctx: &ClusterContext) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    create_if_absent(&Api::<Namespace>::all(ctx.client.clone()), &namespace).await?;
    let locations = api(ctx, "BackupStorageLocation", "backupstoragelocations");
    let location: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": { "name": STORAGE_LOCATION, "namespace": NAMESPACE },
        "spec": {
            "provider": "kube-emulator",
            "default": true,
            "accessMode": "ReadWrite",
            "objectStorage": { "bucket": "velero-bucket" },
            "config": { "path": ctx.shared.velero_bucket.display().to_string() },
        },
    }))?;
    create_if_absent(&locations, &location).await?;
    let status = json!({ "status": { "phase": "Available", "lastValidationTime": now() } });
    locations
        .patch_status(
            STORAGE_LOCATION,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .context("marking the BackupStorageLocation Available")?;
    Ok(())
}

async fn create_if_absent<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
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

/// Merges `status` into the object's status.
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
/// reasons, as Velero does with `FailedValidation`.
async fn fail_validation(api: &Api<DynamicObject>, name: &str, errors: Vec<String>) {
    tracing::info!(
        "velero: {} {name} failed validation: {}",
        api.resource_url(),
        errors.join("; ")
    );
    let status = json!({
        "phase": "FailedValidation",
        "validationErrors": errors,
        "failureReason": errors.join("; "),
        "completionTimestamp": now(),
    });
    if let Err(error) = patch_status(api, name, status).await {
        tracing::warn!("velero: recording the failed validation of {name}: {error}");
    }
}

/// Now, as Kubernetes writes times.
fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// Per-namespace messages, as in Velero's restore results and describe
/// output: `velero` (the tool itself), `cluster` (cluster-scoped objects)
/// and `namespaces`.
#[derive(Debug, Default, serde::Serialize)]
struct Messages {
    velero: Vec<String>,
    cluster: Vec<String>,
    namespaces: BTreeMap<String, Vec<String>>,
}

impl Messages {
    fn add(&mut self, namespace: Option<&str>, message: String) {
        match namespace {
            Some(namespace) => self
                .namespaces
                .entry(namespace.to_string())
                .or_default()
                .push(message),
            None => self.cluster.push(message),
        }
    }

    fn count(&self) -> usize {
        self.velero.len()
            + self.cluster.len()
            + self.namespaces.values().map(Vec::len).sum::<usize>()
    }
}
