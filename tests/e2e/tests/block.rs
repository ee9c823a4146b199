//! Block PVCs (`volumeMode: Block`) end to end: a namespace holding a
//! filesystem PVC and a Block PVC whose disk is an ext4 image with known
//! files migrates with the release `orchestrator` between two emulated
//! clusters (whose kubelets give the disks to the movers as loop
//! devices); the destination's disk, mounted read-only, holds the same
//! files, and a second stage after one file changed sends only the
//! segments that changed. The namespace enforces Pod Security's
//! `restricted` level (and so does its twin): the transfer pods map the
//! devices as the application's user, without privileges.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use e2e::migration::{
    app_pod, assert_same_tree, make_block_pvc, make_pvc, pvc_report, start, Env, Uses, APP_UID,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use kube_emulator::binder::{BLOCK_IMAGE, NO_BLOCK_ANNOTATION};
use serde_json::json;

/// The Block PVC's size, and the mover's segment size (256 KiB).
const DISK_BYTES: u64 = 64 << 20;
const SEGMENT_BYTES: u64 = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_pvc_migrates_beside_a_filesystem_one_and_resyncs_only_changed_segments() {
    let env = start().await.unwrap();
    let source = env.pair.source.client.clone();
    let notes = make_pvc(&source, "vm", "notes", &["ReadWriteOnce"])
        .await
        .unwrap();
    std::fs::write(notes.join("readme.txt"), "the VM's notes\n").unwrap();
    // A restricted receiver writes every file as the application's user.
    e2e::chown_tree(&notes.join("readme.txt"), APP_UID, APP_UID).unwrap();
    Api::<Namespace>::all(source.clone())
        .patch(
            "vm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
            }}})),
        )
        .await
        .unwrap();
    let disk = make_block_pvc(&source, "vm", "disk", "64Mi")
        .await
        .unwrap()
        .join(BLOCK_IMAGE);
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), DISK_BYTES);

    // An ext4 filesystem with known files, made before any pod uses the
    // disk; then the application maps it as its device.
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "vm-disk",
            // No background initialization that would write later.
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            path(&disk),
        ],
    )
    .unwrap();
    {
        let mounted = Mounted::new(&disk, false).unwrap();
        let root = mounted.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "vm-1\n").unwrap();
        std::fs::write(root.join("motd"), "before the move\n").unwrap();
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.join("data.bin"), data).unwrap();
    }
    app_pod(&source, "vm", "disk", Uses::Device).await.unwrap();

    refused_by_a_class_without_block_support(&env)
        .await
        .unwrap();

    let (code, report) = env
        .migrate(&["--namespace", "vm", "--stage"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{report:#}");
    let entry = pvc_report(&report, "vm", "notes");
    assert_eq!(entry["state"], "done", "{entry:#}");
    assert!(entry.get("block").is_none(), "{entry:#}");
    let first = pvc_report(&report, "vm", "disk");
    assert_eq!(first["state"], "done", "{first:#}");
    assert_eq!(first["block"], true, "{first:#}");
    assert_eq!(first["bytes_examined"], DISK_BYTES, "{first:#}");
    assert_eq!(first["segments_examined"], DISK_BYTES / SEGMENT_BYTES);

    let destination = env.pair.destination.client.clone();
    let labels = Api::<Namespace>::all(destination.clone())
        .get("vm")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let twin = Api::<PersistentVolumeClaim>::namespaced(destination.clone(), "vm")
        .get("disk")
        .await
        .unwrap();
    assert_eq!(
        twin.spec.unwrap().volume_mode.as_deref(),
        Some("Block"),
        "the destination PVC is a Block one too"
    );
    let notes_copy = e2e::volume_dir(&destination, "vm", "notes").await.unwrap();
    assert_same_tree(&notes, &notes_copy);
    let disk_copy = e2e::volume_dir(&destination, "vm", "disk")
        .await
        .unwrap()
        .join(BLOCK_IMAGE);
    detached(&disk_copy).await.unwrap();
    same_files(&disk, &disk_copy).unwrap();

    // The application stops; one file of its disk changes.
    Api::<Deployment>::namespaced(source.clone(), "vm")
        .delete("app-disk", &DeleteParams::default())
        .await
        .unwrap();
    no_pods(&source, "vm", "app=app-disk").await.unwrap();
    detached(&disk).await.unwrap();
    {
        let mounted = Mounted::new(&disk, false).unwrap();
        std::fs::write(mounted.path().join("motd"), "after the move\n").unwrap();
    }

    let (code, report) = env
        .migrate(&["--namespace", "vm", "--stage"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{report:#}");
    let second = pvc_report(&report, "vm", "disk");
    assert_eq!(second["state"], "done", "{second:#}");
    assert_eq!(second["segments_examined"], DISK_BYTES / SEGMENT_BYTES);
    let sent = second["segments_sent"].as_u64().unwrap();
    let bytes_sent = second["bytes_sent"].as_u64().unwrap();
    // The file's block, its inode, the bitmaps, the superblock and the
    // journal's few blocks: a handful of the disk's 256 segments.
    assert!(
        (1..=16).contains(&sent),
        "{sent} segments sent for one changed file: {second:#}"
    );
    assert!(
        bytes_sent <= 16 * SEGMENT_BYTES && bytes_sent < first["bytes_sent"].as_u64().unwrap(),
        "{bytes_sent} bytes sent for one changed file: {second:#}"
    );
    detached(&disk_copy).await.unwrap();
    same_files(&disk, &disk_copy).unwrap();
    let copy = Mounted::new(&disk_copy, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(copy.path().join("motd")).unwrap(),
        "after the move\n"
    );
    drop(copy);
    for image in [&disk, &disk_copy] {
        assert_eq!(
            loop_devices(image).unwrap(),
            Vec::<String>::new(),
            "a loop device of {} outlived the migration",
            image.display()
        );
    }
}

/// Preflight refuses to map the Block PVC to a class whose provisioner
/// is file-only (an NFS driver, which the emulator's binder models with
/// its annotation), naming the PVC and the class; nothing is created.
/// Mapped to a class that makes Block volumes, the plan says the disk is
/// copied as a device.
async fn refused_by_a_class_without_block_support(env: &Env) -> Result<()> {
    let destination = env.pair.destination.client.clone();
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": "shared-files", "annotations": { NO_BLOCK_ANNOTATION: "false" } },
        "provisioner": "nfs.csi.k8s.io",
    }))?;
    Api::<StorageClass>::all(destination)
        .create(&PostParams::default(), &class)
        .await?;
    let output = env
        .orchestrator(&[
            "plan",
            "--namespace",
            "vm",
            "--storage-class",
            "standard=shared-files",
        ])
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(3), "plan: {stderr}");
    let expected = "PVC vm/disk is a Block volume (volumeMode: Block), but storage class \
                    \"shared-files\"";
    ensure!(
        stderr.contains(expected),
        "missing {expected:?} in:\n{stderr}"
    );
    ensure!(
        stderr.contains("provisioner nfs.csi.k8s.io is file-only"),
        "{stderr}"
    );
    ensure!(!stderr.contains("PVC vm/notes"), "{stderr}");

    // With the default class the plan passes, and says how the disk goes.
    let output = env.orchestrator(&["plan", "--namespace", "vm"]).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "plan: {stdout}");
    let disk = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("pvc disk"))
        .with_context(|| format!("no line for the disk in:\n{stdout}"))?;
    ensure!(
        disk.contains("64Mi") && disk.ends_with("create and copy, as a block device"),
        "{disk}"
    );
    Ok(())
}

/// The files of the ext4 disks `a` and `b`, each mounted read-only, are
/// the same (contents, modes, owners, times); and so are the disks.
fn same_files(a: &Path, b: &Path) -> Result<()> {
    let (left, right) = (Mounted::new(a, true)?, Mounted::new(b, true)?);
    assert_same_tree(left.path(), right.path());
    drop((left, right));
    ensure!(
        hash(a)? == hash(b)?,
        "{} and {} differ",
        a.display(),
        b.display()
    );
    Ok(())
}

fn hash(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize())
}

/// An ext4 disk image mounted through a loop device of its own, unmounted
/// (and the loop device detached) when dropped.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(image: &Path, read_only: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let options = if read_only { "loop,ro" } else { "loop" };
        run("mount", &["-o", options, path(image), path(dir.path())])?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(error) = run("umount", &[path(self.dir.path())]) {
            eprintln!("{error:#}");
        }
    }
}

/// Waits until no loop device is attached to `image` (the kubelet detaches
/// it once the last pod using it is gone).
async fn detached(image: &Path) -> Result<()> {
    for _ in 0..240 {
        if loop_devices(image)?.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "{} stays attached: {:?}",
        image.display(),
        loop_devices(image)?
    )
}

async fn no_pods(client: &kube::Client, ns: &str, selector: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for _ in 0..240 {
        if pods
            .list(&ListParams::default().labels(selector))
            .await?
            .items
            .is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("pods {selector} of {ns} are still there")
}

/// The loop devices attached to `image` (`losetup -j`).
fn loop_devices(image: &Path) -> Result<Vec<String>> {
    let listed = run("losetup", &["-j", path(image)])?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split(':').next().map(String::from))
        .collect())
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn path(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
