//! A pod's volumes as host directories that containers bind-mount:
//! PersistentVolumeClaims resolve to their bound PV's host directory,
//! Secrets, ConfigMaps and projected volumes (`projected`) are written as
//! files under the pod's directory,
//! emptyDirs are directories there too. `fsGroup` gives the pod's group
//! access to its volumes as the real kubelet's volume ownership management
//! does.

use std::collections::{HashMap, HashSet};
use std::fs::Permissions;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ProjectedVolumeSource,
    Volume,
};
use kube::{Api, ResourceExt as _};

use super::projected::{Owners, Projector};
use super::sources::{Kind, Sources};
use super::state::Waiting;

/// A volume as the host directory containers mount.
pub(super) struct HostVolume {
    path: PathBuf,
    read_only: bool,
}

/// One bind mount of a container.
pub(super) struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Makes every volume that one of `containers` mounts ready on the host,
/// by name. Secret and ConfigMap files are (re)written each time, so a
/// restarted container sees their current content.
pub(super) async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    containers: &[&Container],
    pod_dir: &Path,
    sources: &mut Sources,
    projector: &mut Projector,
) -> Result<HashMap<String, HostVolume>, Waiting> {
    let spec = pod.spec.as_ref();
    let fs_group = spec
        .and_then(|spec| spec.security_context.as_ref())
        .and_then(|context| context.fs_group)
        .map(|gid| {
            u32::try_from(gid)
                .map_err(|_| Waiting::config(format!("fsGroup {gid} is not a valid group id")))
        })
        .transpose()?;
    let mounted: HashSet<&str> = containers
        .iter()
        .flat_map(|container| container.volume_mounts.iter().flatten())
        .map(|mount| mount.name.as_str())
        .collect();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut volumes = HashMap::new();
    for volume in spec
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if !mounted.contains(volume.name.as_str()) {
            continue;
        }
        let dir = pod_dir.join("volumes").join(&volume.name);
        let host = if let Some(claim) = &volume.persistent_volume_claim {
            let path = claim_path(client, namespace, &claim.claim_name).await?;
            let gid = fs_group;
            blocking(move || {
                std::fs::create_dir_all(&path)?;
                if let Some(gid) = gid {
                    give_group(&path, gid)?;
                }
                Ok(path)
            })
            .await
            .map(|path| HostVolume {
                path,
                read_only: claim.read_only.unwrap_or(false),
            })
        } else if let Some(host_path) = &volume.host_path {
            let path = PathBuf::from(&host_path.path);
            if matches!(host_path.type_.as_deref(), Some("DirectoryOrCreate")) {
                let create = path.clone();
                blocking(move || std::fs::create_dir_all(&create)).await?;
            }
            Ok(HostVolume {
                path,
                read_only: false,
            })
        } else if volume.empty_dir.is_some() {
            let gid = fs_group;
            blocking(move || {
                if !dir.exists() {
                    // World-writable like the real kubelet's emptyDir, so
                    // any user the container runs as can use it.
                    std::fs::create_dir_all(&dir)?;
                    std::fs::set_permissions(&dir, Permissions::from_mode(0o777))?;
                }
                if let Some(gid) = gid {
                    give_group(&dir, gid)?;
                }
                Ok(dir)
            })
            .await
            .map(|path| HostVolume {
                path,
                read_only: false,
            })
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let optional = secret.optional.unwrap_or(false);
            let files = match sources.get(Kind::Secret, name, optional).await? {
                Some(values) => key_files(
                    &volume.name,
                    &values,
                    secret.items.as_deref(),
                    secret.default_mode,
                )?,
                None => Vec::new(),
            };
            write_key_files(dir, files, fs_group).await
        } else if let Some(config_map) = &volume.config_map {
            let optional = config_map.optional.unwrap_or(false);
            let files = match sources
                .get(Kind::ConfigMap, &config_map.name, optional)
                .await?
            {
                Some(values) => key_files(
                    &volume.name,
                    &values,
                    config_map.items.as_deref(),
                    config_map.default_mode,
                )?,
                None => Vec::new(),
            };
            write_key_files(dir, files, fs_group).await
        } else if let Some(projected) = &volume.projected {
            let files = Projected {
                name: &volume.name,
                source: projected,
                dir,
            };
            files.write(pod, sources, projector).await
        } else {
            Err(Waiting::config(format!(
                "volume \"{}\": {} volumes are not supported by the emulator's kubelet",
                volume.name,
                volume_type(volume)
            )))
        }?;
        volumes.insert(volume.name.clone(), host);
    }
    Ok(volumes)
}

/// Rewrites the pod's projected volumes that are set up already (their
/// tokens renewed by `projector`), as the real kubelet's periodic volume
/// sync does.
pub(super) async fn refresh_projected(
    pod: &Pod,
    pod_dir: &Path,
    sources: &mut Sources,
    projector: &mut Projector,
) -> Result<(), Waiting> {
    let volumes = pod.spec.as_ref().and_then(|spec| spec.volumes.as_ref());
    for volume in volumes.into_iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        if let (Some(projected), true) = (&volume.projected, dir.exists()) {
            let files = Projected {
                name: &volume.name,
                source: projected,
                dir,
            };
            files.write(pod, sources, projector).await?;
        }
    }
    Ok(())
}

/// A projected volume and its directory on the host.
struct Projected<'a> {
    name: &'a str,
    source: &'a ProjectedVolumeSource,
    dir: PathBuf,
}

impl Projected<'_> {
    async fn write(
        self,
        pod: &Pod,
        sources: &mut Sources,
        projector: &mut Projector,
    ) -> Result<HostVolume, Waiting> {
        let owners = Owners::of(pod);
        let files = projector
            .files(self.name, self.source, pod, sources, owners)
            .await?;
        write_key_files(self.dir, files, owners.group).await
    }
}

/// The bind mounts of `container`: its volumeMounts over the prepared
/// volumes, with subPaths created as the real kubelet creates them.
pub(super) fn mounts(
    container: &Container,
    volumes: &HashMap<String, HostVolume>,
) -> Result<Vec<Mount>, Waiting> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let volume = volumes.get(&mount.name).ok_or_else(|| {
                Waiting::config(format!(
                    "container {} mounts volume \"{}\", which the pod does not define",
                    container.name, mount.name
                ))
            })?;
            let mut source = volume.path.clone();
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|sub| !sub.is_empty()) {
                source = source.join(relative(sub_path).ok_or_else(|| {
                    Waiting::config(format!(
                        "container {}: subPath {sub_path:?} must be a relative path without '..'",
                        container.name
                    ))
                })?);
                std::fs::create_dir_all(&source).map_err(|error| {
                    Waiting::config(format!("creating subPath {}: {error}", source.display()))
                })?;
            }
            Ok(Mount {
                source,
                target: mount.mount_path.clone(),
                read_only: volume.read_only || mount.read_only.unwrap_or(false),
            })
        })
        .collect()
}

/// The host directory of the PV bound to claim `name`.
async fn claim_path(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<PathBuf, Waiting> {
    let volume = bound_volume(client, namespace, name).await?;
    let volume_name = volume.name_any();
    let spec = volume.spec.unwrap_or_default();
    spec.host_path
        .map(|host| host.path)
        .or(spec.local.map(|local| local.path))
        .map(PathBuf::from)
        .ok_or_else(|| {
            Waiting::config(format!(
                "persistentvolume \"{volume_name}\" is neither hostPath nor local, so the \
                 emulator's kubelet cannot mount it"
            ))
        })
}

/// The PV bound to claim `name`; the container waits while the claim is
/// not bound yet.
pub(super) async fn bound_volume(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<PersistentVolume, Waiting> {
    let failed = |error: kube::Error| {
        Waiting::config(format!("getting persistentvolumeclaim \"{name}\": {error}"))
    };
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(failed)?
        .ok_or_else(|| Waiting::config(format!("persistentvolumeclaim \"{name}\" not found")))?;
    let bound = claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        == Some("Bound");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref());
    let Some(volume_name) = volume_name.filter(|_| bound) else {
        return Err(Waiting::creating(format!(
            "waiting for persistentvolumeclaim \"{name}\" to be bound"
        )));
    };
    Api::<PersistentVolume>::all(client.clone())
        .get_opt(volume_name)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            Waiting::config(format!(
                "persistentvolume \"{volume_name}\" (bound to claim \"{name}\") not found"
            ))
        })
}

/// A pod volume backed by a PersistentVolumeClaim, with its bound PV.
pub(super) struct Claimed {
    /// The volume's name in the pod spec.
    pub name: String,
    pub volume: PersistentVolume,
}

/// The pod's PersistentVolumeClaim volumes that a container uses, with
/// their PVs (waiting while a claim is not bound).
pub(super) async fn claimed(client: &kube::Client, pod: &Pod) -> Result<Vec<Claimed>, Waiting> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let used = used_volumes(pod);
    let mut claimed = Vec::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(claim) = &volume.persistent_volume_claim else {
            continue;
        };
        if used.contains_key(volume.name.as_str()) {
            claimed.push(Claimed {
                name: volume.name.clone(),
                volume: bound_volume(client, namespace, &claim.claim_name).await?,
            });
        }
    }
    Ok(claimed)
}

/// How containers use a volume: mounted as a directory, or as a raw
/// device.
#[derive(Clone, Copy, Default)]
struct Use {
    mounted: bool,
    device: bool,
}

/// The pod's volumes its containers (init containers included) use, by
/// name.
fn used_volumes(pod: &Pod) -> HashMap<&str, Use> {
    let mut used: HashMap<&str, Use> = HashMap::new();
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|spec| &spec.containers)
        .into_iter()
        .flatten()
        .chain(
            spec.and_then(|spec| spec.init_containers.as_ref())
                .into_iter()
                .flatten(),
        );
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            used.entry(&mount.name).or_default().mounted = true;
        }
        for device in container.volume_devices.iter().flatten() {
            used.entry(&device.name).or_default().device = true;
        }
    }
    used
}

/// A claimed volume the kubelet will not set up, with the Event reason
/// and message it reports.
#[derive(Debug)]
pub(super) struct Unusable {
    pub reason: &'static str,
    pub message: String,
}

/// Checks that each claimed volume is used as its volumeMode allows, as
/// the real kubelet's volume manager does: a `Block` volume only through
/// `volumeDevices`, a `Filesystem` one only through `volumeMounts` (see
/// `devices` for how a Block one is given to containers).
pub(super) fn check_modes(pod: &Pod, claimed: &[Claimed]) -> Result<(), Unusable> {
    let used = used_volumes(pod);
    for claim in claimed {
        let usage = used.get(claim.name.as_str()).copied().unwrap_or_default();
        let mode = claim
            .volume
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_mode.as_deref())
            .unwrap_or("Filesystem");
        let wrong = match mode {
            "Block" if usage.mounted => Some("volumeMounts"),
            "Block" => None,
            _ if usage.device => Some("volumeDevices"),
            _ => None,
        };
        if let Some(field) = wrong {
            return Err(Unusable {
                reason: "FailedMount",
                message: format!(
                    "Unable to attach or mount volumes: unmounted volumes=[{0}], unattached \
                     volumes=[], failed to process volumes=[{0}]: volume {0} has volumeMode \
                     {mode}, but is specified in {field}",
                    claim.name
                ),
            });
        }
    }
    Ok(())
}

/// A file of a Secret, ConfigMap or projected volume.
pub(super) struct KeyFile {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
    /// The file's user, when not root.
    pub owner: Option<u32>,
}

/// The files of a Secret or ConfigMap volume: every key, or the listed
/// `items`, with their modes.
pub(super) fn key_files(
    volume: &str,
    values: &super::sources::KeyValues,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
) -> Result<Vec<KeyFile>, Waiting> {
    match items {
        None => values
            .data
            .iter()
            .map(|(key, data)| {
                Ok(KeyFile {
                    path: item_path(volume, key)?,
                    data: data.clone(),
                    mode: file_mode(volume, default_mode)?,
                    owner: None,
                })
            })
            .collect(),
        Some(items) => items
            .iter()
            .map(|item| {
                Ok(KeyFile {
                    path: item_path(volume, &item.path)?,
                    data: values.get(&item.key)?.to_vec(),
                    mode: file_mode(volume, item.mode.or(default_mode))?,
                    owner: None,
                })
            })
            .collect(),
    }
}

/// A volume item's path, relative and below the volume.
pub(super) fn item_path(volume: &str, path: &str) -> Result<PathBuf, Waiting> {
    relative(path).ok_or_else(|| {
        Waiting::config(format!(
            "volume \"{volume}\": item path {path:?} must be a relative path without '..'"
        ))
    })
}

/// A volume item's file mode: `mode`, or 0644.
pub(super) fn file_mode(volume: &str, mode: Option<i32>) -> Result<u32, Waiting> {
    mode.map_or(Ok(0o644), |mode| {
        u32::try_from(mode)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                Waiting::config(format!(
                    "volume \"{volume}\": mode {mode:o} is not a file mode"
                ))
            })
    })
}

/// Writes a Secret, ConfigMap or projected volume's files into `dir`, each replaced
/// atomically (containers that already mount `dir` see the new content).
/// With an fsGroup the files belong to that group and are group-readable,
/// as the real kubelet sets them.
async fn write_key_files(
    dir: PathBuf,
    files: Vec<KeyFile>,
    fs_group: Option<u32>,
) -> Result<HostVolume, Waiting> {
    blocking(move || {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755))?;
        for file in files {
            let path = dir.join(&file.path);
            let parent = path.parent().unwrap_or(&dir);
            std::fs::create_dir_all(parent)?;
            let mut temporary = tempfile::NamedTempFile::new_in(parent)?;
            temporary.write_all(&file.data)?;
            if let Some(uid) = file.owner {
                std::os::unix::fs::chown(temporary.path(), Some(uid), None)?;
            }
            let mut mode = file.mode;
            if let Some(gid) = fs_group {
                std::os::unix::fs::chown(temporary.path(), None, Some(gid))?;
                mode |= 0o440;
            }
            std::fs::set_permissions(temporary.path(), Permissions::from_mode(mode))?;
            temporary.persist(&path).map_err(|error| error.error)?;
        }
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&dir, None, Some(gid))?;
        }
        Ok(HostVolume {
            path: dir,
            read_only: true,
        })
    })
    .await
}

/// The real kubelet's volume ownership management for `fsGroup`: every
/// file and directory gets the group, group read/write (and for
/// directories search and setgid, so new files inherit the group). Like
/// `fsGroupChangePolicy: OnRootMismatch`, a volume whose root already has
/// the group and setgid is left alone.
fn give_group(root: &Path, gid: u32) -> std::io::Result<()> {
    const SETGID: u32 = 0o2000;
    let metadata = std::fs::metadata(root)?;
    if metadata.gid() == gid && metadata.mode() & SETGID != 0 {
        return Ok(());
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        if metadata.is_symlink() {
            continue;
        }
        let mut mode = metadata.mode() & 0o7777 | 0o660;
        if metadata.is_dir() {
            mode |= 0o110 | SETGID;
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
        std::fs::set_permissions(&path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `path` if it is relative and stays below the directory it is joined to.
pub(super) fn relative(path: &str) -> Option<PathBuf> {
    let path = PathBuf::from(path);
    let normal = path
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    (normal && !path.as_os_str().is_empty()).then_some(path)
}

/// The type of a volume (the field set besides its name), for messages.
fn volume_type(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|value| {
            value
                .as_object()?
                .keys()
                .find(|key| *key != "name")
                .cloned()
        })
        .unwrap_or_else(|| "untyped".to_string())
}

/// Runs file system work off the async threads; an I/O failure leaves the
/// container waiting with the error as its message.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Waiting> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Waiting::creating(format!("preparing volumes: {error}"))),
        Err(error) => Err(Waiting::creating(format!("preparing volumes: {error}"))),
    }
}
