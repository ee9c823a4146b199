//! What the tests of `orchestrator controller` share: the release
//! controller run with the destination cluster as its host, the clusters
//! registered as MigrationClusters, resources created from JSON, and
//! waiting on a Migration's status.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{json, Value};

/// The controller's namespace on the host.
pub const NS: &str = "mover-system";

/// The release controller with the destination as its host, serving its
/// metrics on loopback port `port`; add arguments, then spawn it.
pub fn controller_command(kubeconfig: &Path, port: u16) -> Result<tokio::process::Command> {
    let binary = crate::release_binary("orchestrator")?;
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("controller")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "destination", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .kill_on_drop(true);
    Ok(command)
}

/// Starts [`controller_command`] as it is.
pub fn start_controller(kubeconfig: &Path, port: u16) -> Result<tokio::process::Child> {
    controller_command(kubeconfig, port)?
        .spawn()
        .context("starting the release orchestrator controller")
}

/// Registers the source (at `source_url`, with an admin token Secret) and
/// the host itself as MigrationClusters `source` and `host`.
pub async fn register_clusters(pair: &kube_emulator::ClusterPair, source_url: &str) -> Result<()> {
    let host = pair.destination.client.clone();
    let token = pair.source.token_for("migrator", &["system:masters"]);
    create(
        &Api::<Secret>::namespaced(host.clone(), NS),
        json!({"metadata": {"name": "source-token"},
               "stringData": {"token": token, "ca.crt": pair.source.ca_pem()}}),
    )
    .await?;
    let clusters = clusters(&host);
    create(
        &clusters,
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "MigrationCluster",
               "metadata": {"name": "source"},
               "spec": {"url": source_url, "secretRef": {"name": "source-token"}}}),
    )
    .await?;
    create(
        &clusters,
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "MigrationCluster",
               "metadata": {"name": "host"}, "spec": {"isHostCluster": true}}),
    )
    .await?;
    Ok(())
}

/// The images built, a pair of emulated clusters running pods in Docker,
/// and their kubeconfig, all in a temporary directory.
pub async fn start_pair() -> Result<(tempfile::TempDir, kube_emulator::ClusterPair, PathBuf)> {
    tokio::task::spawn_blocking(crate::build_images).await??;
    let dir = tempfile::tempdir()?;
    let pair = kube_emulator::ClusterPair::start(&dir.path().join("state"), true).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig())?;
    Ok((dir, pair, kubeconfig))
}

/// `len` incompressible bytes from `seed` (compression would let a
/// bandwidth-limited copy finish too soon to watch).
pub fn noise(seed: &[u8], len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Creates `object` (JSON) through `api`.
pub async fn create<K>(api: &Api<K>, object: Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    Ok(api.create(&PostParams::default(), &object).await?)
}

/// The host's Migrations.
pub fn migrations(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &orchestrator::migration::resource())
}

/// The host's MigrationClusters.
pub fn clusters(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<orchestrator::controller::cluster::MigrationCluster>(&()),
    )
}

/// The host's MigrationPlans.
pub fn plans(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<orchestrator::controller::plan::MigrationPlan>(&()),
    )
}

/// Waits until the controller has installed its CRDs (it does so first).
pub async fn wait_for_crds(host: &kube::Client) -> Result<()> {
    for _ in 0..200 {
        if plans(host).list(&Default::default()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the controller did not install its CRDs")
}

/// Waits until Migration `name`'s status satisfies `done`, failing early
/// (with the status) if it fails.
pub async fn wait_migration(
    client: &kube::Client,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let api = migrations(client);
    let mut status = Value::Null;
    for _ in 0..720 {
        status = api.get(name).await?.data["status"].clone();
        if done(&status) {
            return Ok(status);
        }
        if status["phase"] == "Failed" {
            bail!("Migration {name} failed: {status:#}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("Migration {name} did not get there: {status:#}")
}

pub fn succeeded(status: &Value) -> bool {
    status["phase"] == "Succeeded"
}

/// A source namespace `ns` with PVC `data` holding `files`; returns its
/// host directory.
pub async fn source_volume(
    client: &kube::Client,
    ns: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<PathBuf> {
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": ns}}),
    )
    .await?;
    create(
        &Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
        json!({"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await?;
    let dir = crate::volume_dir(client, ns, "data").await?;
    for (name, data) in files {
        let path = dir.join(name);
        std::fs::write(&path, data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(dir)
}
