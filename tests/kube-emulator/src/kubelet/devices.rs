//! Block volumes as devices: the disk image of a Block PV (see
//! `binder::BLOCK_IMAGE`) attached to a loop device while pods of the
//! cluster use it through `volumeDevices`, and given to each container as
//! a device node at its `devicePath` (`docker run --device`).
//!
//! - A loop device is attached (`losetup -f --show`) when the first pod
//!   using the volume starts a container, and detached (`losetup -d`) when
//!   the last one is done or gone, as the real kubelet maps and unmaps a
//!   volume's device. Both nodes of a cluster run on this host, so one
//!   table serves the cluster.
//! - Each container gets its own device node (under its pod's directory)
//!   owned by the container's `runAsUser`/`runAsGroup`, mode 0660, as
//!   containerd and CRI-O give it with `device_ownership_from_security_context`
//!   (the setting non-root pods need to use raw block volumes); a container
//!   without either gets root's, as runtimes do by default.
//! - [`detach_under`] detaches every loop device whose disk lies under a
//!   cluster's state directory: the cluster's shutdown calls it after its
//!   containers are gone, so no loop device outlives the emulator.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt as _;

use super::state::Waiting;
use super::volumes;
use crate::binder::BLOCK_IMAGE;

/// The loop devices of a cluster's Block volumes, by disk image.
#[derive(Default)]
pub(super) struct Loops {
    attached: Mutex<HashMap<PathBuf, Attached>>,
}

struct Attached {
    device: PathBuf,
    /// The uids of the pods using it.
    users: HashSet<String>,
}

/// One device a container gets.
pub(super) struct Device {
    /// The device node on the host (made for this container).
    pub source: PathBuf,
    /// The container's `devicePath`.
    pub target: String,
    pub read_only: bool,
}

impl Loops {
    /// The loop device of `image` for pod `uid`: the one already attached,
    /// or a new one.
    pub(super) fn attach(&self, image: &Path, uid: &str) -> std::io::Result<PathBuf> {
        let image = image.canonicalize()?;
        let mut attached = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = attached.get_mut(&image) {
            found.users.insert(uid.to_string());
            return Ok(found.device.clone());
        }
        let output = losetup(&["--find".as_ref(), "--show".as_ref(), image.as_os_str()])?;
        let device = PathBuf::from(output.trim());
        attached.insert(
            image,
            Attached {
                device: device.clone(),
                users: HashSet::from([uid.to_string()]),
            },
        );
        Ok(device)
    }

    /// Detaches every loop device pod `uid` was the last user of.
    pub(super) fn release(&self, uid: &str) {
        let mut attached = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        attached.retain(|image, loop_device| {
            loop_device.users.remove(uid);
            if !loop_device.users.is_empty() {
                return true;
            }
            if let Err(error) = losetup(&["--detach".as_ref(), loop_device.device.as_os_str()]) {
                tracing::warn!(
                    "detaching {} ({}): {error}",
                    loop_device.device.display(),
                    image.display()
                );
            }
            false
        });
    }
}

/// The devices of `container`'s `volumeDevices`: each volume's loop
/// device (attached for the pod if it is not yet) as a node of the
/// container's own, under `pod_dir`.
pub(super) async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
    loops: &Arc<Loops>,
) -> Result<Vec<Device>, Waiting> {
    let namespace = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let owner = owner(pod, container);
    let mut devices = Vec::new();
    for wanted in container.volume_devices.iter().flatten() {
        let claim = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.volumes.as_ref())
            .into_iter()
            .flatten()
            .find(|volume| volume.name == wanted.name)
            .ok_or_else(|| {
                Waiting::config(format!(
                    "container {} maps volume \"{}\", which the pod does not define",
                    container.name, wanted.name
                ))
            })?
            .persistent_volume_claim
            .as_ref()
            .ok_or_else(|| {
                Waiting::config(format!(
                    "volume \"{}\": only PersistentVolumeClaims can be used in volumeDevices",
                    wanted.name
                ))
            })?;
        let volume = volumes::bound_volume(client, &namespace, &claim.claim_name).await?;
        let volume_name = volume.name_any();
        let spec = volume.spec.unwrap_or_default();
        let mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
        if mode != "Block" {
            return Err(Waiting::creating(format!(
                "volume {} has volumeMode {mode}, but is specified in volumeDevices",
                wanted.name
            )));
        }
        let image = spec
            .host_path
            .map(|host| PathBuf::from(host.path).join(BLOCK_IMAGE))
            .ok_or_else(|| {
                Waiting::config(format!(
                    "persistentvolume \"{volume_name}\" is not a hostPath volume, so the \
                     emulator's kubelet has no disk image to map"
                ))
            })?;
        let node = pod_dir
            .join("devices")
            .join(&container.name)
            .join(&wanted.name);
        let (loops, uid) = (loops.clone(), uid.clone());
        let source = tokio::task::spawn_blocking(move || {
            let device = loops.attach(&image, &uid)?;
            make_node(&device, &node, owner)?;
            Ok::<_, std::io::Error>(node)
        })
        .await
        .map_err(|error| Waiting::creating(format!("mapping {volume_name}: {error}")))?
        .map_err(|error| {
            Waiting::creating(format!(
                "MapVolume.MapPodDevice failed for volume \"{volume_name}\" : {error}"
            ))
        })?;
        devices.push(Device {
            source,
            target: wanted.device_path.clone(),
            read_only: claim.read_only.unwrap_or(false),
        });
    }
    Ok(devices)
}

/// Who owns a container's device nodes: its runAsUser and runAsGroup (the
/// container's over the pod's), root where neither says.
fn owner(pod: &Pod, container: &Container) -> (u32, u32) {
    let own = container.security_context.as_ref();
    let pod_level = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.security_context.as_ref());
    let user = own
        .and_then(|context| context.run_as_user)
        .or(pod_level.and_then(|context| context.run_as_user));
    let group = own
        .and_then(|context| context.run_as_group)
        .or(pod_level.and_then(|context| context.run_as_group));
    let id = |value: Option<i64>| value.and_then(|id| u32::try_from(id).ok()).unwrap_or(0);
    (id(user), id(group))
}

/// Makes `node` a block device node for `device`, owned by `owner`
/// (uid, gid), mode 0660, replacing whatever was there.
pub(super) fn make_node(device: &Path, node: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    let metadata = std::fs::metadata(device)?;
    if !metadata.file_type().is_block_device() {
        return Err(std::io::Error::other(format!(
            "{} is not a block device",
            device.display()
        )));
    }
    if let Some(dir) = node.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(node) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        node,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        metadata.rdev(),
    )?;
    // mknod's mode is masked by the umask.
    std::fs::set_permissions(
        node,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o660),
    )?;
    std::os::unix::fs::chown(node, Some(owner.0), Some(owner.1))
}

/// Detaches every loop device whose backing file is under `dir` (a
/// cluster's state directory), whoever attached it.
pub fn detach_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let listed = match losetup(&[
        "--list".as_ref(),
        "--noheadings".as_ref(),
        "--raw".as_ref(),
        "--output".as_ref(),
        "NAME,BACK-FILE".as_ref(),
    ]) {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!("listing loop devices: {error}");
            return;
        }
    };
    for line in listed.lines() {
        let Some((device, file)) = line.split_once(' ') else {
            continue;
        };
        // `--raw` escapes spaces and other odd bytes as `\xHH`.
        let file = unescape(file.trim_end_matches(" (deleted)"));
        if Path::new(&file).starts_with(&dir) {
            if let Err(error) = losetup(&["--detach".as_ref(), device.as_ref()]) {
                eprintln!("kube-emulator: detaching {device} ({file}): {error}");
            }
        }
    }
}

/// `losetup --raw`'s `\xHH` escapes undone.
fn unescape(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let raw = text.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x') {
            if let Some(byte) = text
                .get(i + 2..i + 4)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                bytes.push(byte);
                i += 4;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn losetup(args: &[&std::ffi::OsStr]) -> std::io::Result<String> {
    let output = Command::new("losetup").args(args).output()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!(
            "losetup {}: {}",
            args.iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_listing_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\x20b/disk.img"), "/tmp/a b/disk.img");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
    }
}
