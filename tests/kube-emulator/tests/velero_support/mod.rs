//! What the Velero tests share: requests to the emulated Velero and
//! reading what it stored, over the real HTTP API and the bucket.

#![allow(dead_code)] // each test file uses a part

use std::io::Read as _;
use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};

use crate::controller_support::{eventually, from_json};

/// The `velero.io/v1` `kind` of the namespace `velero`.
pub fn velero(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    velero_in(client, "velero", kind)
}

/// The `velero.io/v1` `kind` of the namespace `namespace`.
pub fn velero_in(client: &kube::Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

pub async fn create<K>(client: &kube::Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &from_json(object))
        .await
        .expect("creating a test object")
}

pub async fn namespace(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": name, "labels": { "team": "shop" } } })),
        )
        .await
        .expect("creating a namespace");
}

/// Creates a Backup or Restore named `name` with `spec`.
pub async fn request(api: &Api<DynamicObject>, kind: &str, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "velero.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": api.namespace().unwrap_or("velero") },
        "spec": spec,
    });
    api.create(&PostParams::default(), &from_json(object))
        .await
        .expect("creating a Velero request");
}

/// Waits until `name` reaches a final phase and returns its status.
pub async fn finished(api: &Api<DynamicObject>, name: &str) -> Value {
    eventually(&format!("{name} finishes"), || async {
        let object = api.get(name).await.map_err(|e| e.to_string())?;
        let status = object.data.get("status").cloned().unwrap_or(Value::Null);
        match status["phase"].as_str() {
            Some("Completed" | "PartiallyFailed" | "Failed" | "FailedValidation") => Ok(status),
            _ => Err(status.to_string()),
        }
    })
    .await
}

/// Waits until the destination's Velero has synced backup `name`.
pub async fn synced(api: &Api<DynamicObject>, name: &str) -> DynamicObject {
    eventually(&format!("backup {name} is synced"), || async {
        let backup = api.get_opt(name).await.map_err(|e| e.to_string())?;
        match backup {
            Some(backup) if backup.data.pointer("/status/phase").is_some() => Ok(backup),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// The results Velero stored for restore `restore`: gzipped JSON under
/// Velero's name.
pub fn restore_results(bucket: &Path, restore: &str) -> Value {
    let path = bucket
        .join("restores")
        .join(restore)
        .join(format!("restore-{restore}-results.gz"));
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_reader(flate2::read::GzDecoder::new(file))
        .expect("restore results are gzipped JSON")
}

/// Reads a gzipped file of the bucket.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
    bytes
}

/// Waits until `name` reaches `phase` and returns the object.
pub async fn in_phase(api: &Api<DynamicObject>, name: &str, phase: &str) -> DynamicObject {
    eventually(&format!("{name} is {phase}"), || async {
        let object = api.get_opt(name).await.map_err(|e| e.to_string())?;
        match object {
            Some(object) if object.data.pointer("/status/phase") == Some(&json!(phase)) => {
                Ok(object)
            }
            other => Err(format!("{:?}", other.map(|o| o.data))),
        }
    })
    .await
}

/// Waits until `name` is gone.
pub async fn gone(api: &Api<DynamicObject>, name: &str) {
    eventually(&format!("{name} is gone"), || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(object) => Err(format!("{:?}", object.data.get("status"))),
        }
    })
    .await
}

/// A ConfigMap of resource modifiers (`rules` YAML) named `name` in the
/// namespace `velero`.
pub async fn modifiers(client: &kube::Client, name: &str, rules: &str) {
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "velero")
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": name }, "data": { "rules.yaml": rules } })),
        )
        .await
        .expect("creating the resource modifiers");
}

/// A Backup of `spec` on `source`, Completed, then synced to
/// `destination`.
pub async fn backed_up(source: &kube::Client, destination: &kube::Client, name: &str, spec: Value) {
    let backups = velero(source, "Backup");
    request(&backups, "Backup", name, spec).await;
    let status = finished(&backups, name).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    synced(&velero(destination, "Backup"), name).await;
}

/// A started cluster pair (API servers and Velero, no Docker) and the
/// directory it lives in.
pub async fn start_pair() -> (tempfile::TempDir, kube_emulator::ClusterPair) {
    start_pair_with(&kube_emulator::VeleroOptions::default()).await
}

/// [`start_pair`] with Velero installed as `options` says.
pub async fn start_pair_with(
    options: &kube_emulator::VeleroOptions,
) -> (tempfile::TempDir, kube_emulator::ClusterPair) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pair = kube_emulator::ClusterPair::start_with_velero(dir.path(), false, options)
        .await
        .expect("starting the clusters");
    (dir, pair)
}

/// The namespace `shop` on the source, backed up as `backup` and synced
/// to the destination.
pub async fn shop_backed_up(pair: &kube_emulator::ClusterPair, backup: &str) {
    namespace(&pair.source.client, "shop").await;
    back_up_shop(pair, backup).await;
}

/// The source's namespace `shop` backed up as `backup` and synced to the
/// destination.
pub async fn back_up_shop(pair: &kube_emulator::ClusterPair, backup: &str) {
    backed_up(
        &pair.source.client,
        &pair.destination.client,
        backup,
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
}

/// Creates `kind` `name` with `spec` and waits until it is Completed.
pub async fn completed(api: &Api<DynamicObject>, kind: &str, name: &str, spec: Value) -> Value {
    request(api, kind, name, spec).await;
    let status = finished(api, name).await;
    assert_eq!(status["phase"], "Completed", "{name}: {status}");
    status
}

/// Merges `status` into the status of `name` (a BSL or request kind,
/// which the emulator serves with a `/status` subresource).
pub async fn set_status(api: &Api<DynamicObject>, name: &str, status: Value) {
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({ "status": status })),
    )
    .await
    .expect("setting a status");
}

/// Merges `patch` into the object `name`.
pub async fn merge_into<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("patching a test object");
}

/// The namespace `shop` with the ConfigMap `settings` (`a: b`).
pub async fn shop_with_settings(client: &kube::Client) {
    namespace(client, "shop").await;
    create::<k8s_openapi::api::core::v1::ConfigMap>(
        client,
        "shop",
        json!({ "metadata": { "name": "settings" }, "data": { "a": "b" } }),
    )
    .await;
}
