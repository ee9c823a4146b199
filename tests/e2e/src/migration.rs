//! What the orchestrator's end-to-end tests share: two emulated clusters
//! with a kubeconfig, the release `orchestrator` run against them, PVCs
//! made on the source, and comparing a copied tree with its source.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use kube_emulator::ClusterPair;
use serde_json::{json, Value};

/// Two emulated clusters and a kubeconfig for them.
pub struct Env {
    pub pair: ClusterPair,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Result<Env> {
    tokio::task::spawn_blocking(crate::build_images).await??;
    let dir = tempfile::tempdir()?;
    let pair = ClusterPair::start(&dir.path().join("state"), true).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig())?;
    Ok(Env {
        pair,
        kubeconfig,
        _dir: dir,
    })
}

impl Env {
    /// Runs the release `orchestrator` with both clusters' contexts.
    pub async fn orchestrator(&self, args: &[&str]) -> Result<Output> {
        let binary = crate::release_binary("orchestrator")?;
        let mut command = orchestrator_command(&self.kubeconfig, args)?;
        let output = command
            .output()
            .await
            .with_context(|| format!("running {}", binary.display()))?;
        eprintln!(
            "orchestrator {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }

    /// `orchestrator migrate --output json --volumes-only ARGS`: the exit
    /// code and report. These tests are about volumes; the whole
    /// application's itinerary (Velero) is tests/application.rs's.
    pub async fn migrate(&self, args: &[&str]) -> Result<(i32, Value)> {
        let mut all = vec!["migrate", "--output", "json", "--volumes-only"];
        all.extend_from_slice(args);
        let output = self.orchestrator(&all).await?;
        let report = serde_json::from_slice(&output.stdout)
            .with_context(|| "the JSON report on stdout".to_string())?;
        Ok((output.status.code().unwrap_or(-1), report))
    }
}

/// The release `orchestrator` with `args`, both clusters of `kubeconfig`
/// (contexts `source` and `destination`) and the `mover:dev` image.
pub fn orchestrator_command(kubeconfig: &Path, args: &[&str]) -> Result<tokio::process::Command> {
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut command = tokio::process::Command::new(crate::release_binary("orchestrator")?);
    command.args(args).args([
        "--source-kubeconfig",
        &kubeconfig,
        "--source-context",
        "source",
        "--destination-kubeconfig",
        &kubeconfig,
        "--destination-context",
        "destination",
        "--mover-image",
        crate::MOVER_IMAGE,
    ]);
    Ok(command)
}

/// Creates (if needed) namespace `ns` and a bound 1 GiB PVC in it; returns
/// the host directory of its volume.
pub async fn make_pvc(
    client: &kube::Client,
    ns: &str,
    name: &str,
    modes: &[&str],
) -> Result<PathBuf> {
    create_pvc(client, ns, name, modes, "1Gi", None).await
}

/// Creates (if needed) namespace `ns` and a bound `volumeMode: Block` PVC
/// of `size` in it; returns the host directory of its volume, which holds
/// the disk image (`kube_emulator::binder::BLOCK_IMAGE`).
pub async fn make_block_pvc(
    client: &kube::Client,
    ns: &str,
    name: &str,
    size: &str,
) -> Result<PathBuf> {
    create_pvc(client, ns, name, &["ReadWriteOnce"], size, Some("Block")).await
}

async fn create_pvc(
    client: &kube::Client,
    ns: &str,
    name: &str,
    modes: &[&str],
    size: &str,
    volume_mode: Option<&str>,
) -> Result<PathBuf> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await?.is_none() {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                annotations: Some(BTreeMap::from([(
                    "team".to_string(),
                    "storefront".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            storage_class_name: Some("standard".into()),
            volume_mode: volume_mode.map(String::from),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    crate::volume_dir(client, ns, name).await
}

/// The uid of the test applications (which own their volumes' files).
pub const APP_UID: u32 = 1000;

/// How an application uses its PVC.
#[derive(Clone, Copy, Debug)]
pub enum Uses {
    /// Mounted at `/data` (a Filesystem PVC).
    Mount,
    /// Mapped as the device `/dev/vda` (a Block PVC).
    Device,
}

/// An application (a Deployment `app-<claim>` of one busybox pod, sleeping)
/// running as [`APP_UID`] with PVC `claim` mounted or mapped, once its pod
/// runs; `restricted` admits it. A final migration quiesces it (scales it to zero) before the
/// final copy.
pub async fn app_pod(client: &kube::Client, ns: &str, claim: &str, uses: Uses) -> Result<Pod> {
    let image = kube_emulator::testing::busybox_image().await?;
    let name = format!("app-{claim}");
    // What Pod Security's `restricted` level asks of a container.
    let mut container = json!({
        "name": "app", "image": image, "command": ["sleep", "3600"],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    match uses {
        Uses::Mount => {
            container["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        }
        Uses::Device => {
            container["volumeDevices"] = json!([{"name": "data", "devicePath": "/dev/vda"}]);
        }
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {
                        "runAsUser": APP_UID, "runAsGroup": APP_UID, "runAsNonRoot": true,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for _ in 0..360 {
        let running = pods
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await?
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if let Some(pod) = running {
            return Ok(pod);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no pod of Deployment {ns}/{name} runs")
}

/// Every entry beneath `root` with its type, mode, owner, mtime, and a
/// blake3 of its contents (streamed: volumes hold large files). A work
/// area the mover kept in the root (a stage run's hash cache) is not the
/// application's and is left out.
pub fn tree(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(root).min_depth(1).into_iter();
    for entry in
        walk.filter_entry(|e| e.depth() != 1 || !mover::dest::work::is_kept_work_area(e.path()))
    {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        let what = if meta.is_file() {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(entry.path())?)?;
            format!("file {}", hasher.finalize())
        } else if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(entry.path())?.display())
        } else {
            "dir".to_string()
        };
        // Directory mtimes change when the mover's temporary files come
        // and go, and it sets them last; compare them too.
        out.insert(
            entry.path().strip_prefix(root)?.to_path_buf(),
            format!(
                "{what} mode {:o} owner {}:{} mtime {}.{}",
                meta.permissions().mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
    }
    Ok(out)
}

pub fn assert_same_tree(source: &Path, destination: &Path) {
    let (a, b) = (tree(source).unwrap(), tree(destination).unwrap());
    let differing: Vec<_> = a
        .iter()
        .filter(|(path, entry)| b.get(*path) != Some(*entry))
        .map(|(path, entry)| format!("{}: {entry} vs {:?}", path.display(), b.get(path)))
        .chain(
            b.keys()
                .filter(|path| !a.contains_key(*path))
                .map(|path| format!("{}: only at the destination", path.display())),
        )
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "{} differs from {}:\n{}",
        destination.display(),
        source.display(),
        differing.join("\n")
    );
}

pub fn pvc_report<'a>(report: &'a Value, ns: &str, name: &str) -> &'a Value {
    report["pvcs"]
        .as_array()
        .and_then(|pvcs| {
            pvcs.iter()
                .find(|p| p["namespace"] == ns && p["name"] == name)
        })
        .unwrap_or_else(|| panic!("no {ns}/{name} in the report: {report:#}"))
}
