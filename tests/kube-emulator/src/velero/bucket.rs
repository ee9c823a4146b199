//! The backup storage location: a directory both clusters' Velero use, as
//! two real clusters share an object storage bucket.
//!
//! The layout follows what Velero puts in a bucket, with the tarball
//! unpacked so that a test (or a person) can read it:
//!
//! ```text
//! backups/<backup>/velero-backup.json          the Backup, written last
//! backups/<backup>/resources/<resource>/namespaces/<namespace>/<name>.json
//! backups/<backup>/resources/<resource>/cluster/<name>.json
//! backups/<backup>/<backup>-results.gz         warnings and errors
//! backups/<backup>/<backup>-resource-list.json.gz
//! backups/<backup>/<backup>-logs.gz
//! restores/<restore>/restore-<restore>-results.gz
//! restores/<restore>/restore-<restore>-resource-list.json.gz
//! restores/<restore>/restore-<restore>-logs.gz
//! ```
//!
//! The file names beside the contents are Velero's
//! (pkg/persistence/object_store_layout.go). `<resource>` is `plural.group`
//! (just `plural` for the core group). A backup exists once its
//! `velero-backup.json` does: that file is renamed into place after
//! everything else, first with the phase Finalizing and then rewritten by
//! the finalizer with the final phase, so the other cluster's sync (which
//! skips non-final backups) never sees a half-written backup.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

use super::filter::group_resource;
use super::results::{gzip, log_text, Report};

const METADATA_FILE: &str = "velero-backup.json";

/// One backed-up object and the resource it belongs to.
pub(super) struct Item {
    /// `plural` or `plural.group`, as in the bucket.
    pub resource: String,
    pub object: DynamicObject,
}

/// The bucket directory.
pub(super) struct Bucket<'a>(pub &'a Path);

impl Bucket<'_> {
    fn backup_dir(&self, backup: &str) -> anyhow::Result<PathBuf> {
        Ok(self.0.join("backups").join(path_component(backup)?))
    }

    /// Whether a complete backup named `backup` is in the bucket.
    pub fn has_backup(&self, backup: &str) -> bool {
        self.backup_dir(backup)
            .is_ok_and(|dir| dir.join(METADATA_FILE).is_file())
    }

    /// Stores one object of `resource` (an [`ApiResource`]) in `backup`.
    pub fn write_item(
        &self,
        backup: &str,
        resource: &ApiResource,
        object: &DynamicObject,
    ) -> anyhow::Result<()> {
        let name = object
            .metadata
            .name
            .as_deref()
            .context("an object without a name")?;
        let mut path = self
            .backup_dir(backup)?
            .join("resources")
            .join(resource_dir(resource));
        path = match object.metadata.namespace.as_deref() {
            Some(namespace) => path.join("namespaces").join(path_component(namespace)?),
            None => path.join("cluster"),
        };
        path = path.join(format!("{}.json", path_component(name)?));
        write_json(&path, object)
    }

    /// Stores the Backup object itself, which completes the backup.
    pub fn write_metadata(&self, backup: &str, object: &DynamicObject) -> anyhow::Result<()> {
        write_json(&self.backup_dir(backup)?.join(METADATA_FILE), object)
    }

    /// The Backup object stored with `backup`.
    pub fn read_metadata(&self, backup: &str) -> anyhow::Result<DynamicObject> {
        read_json(&self.backup_dir(backup)?.join(METADATA_FILE))
    }

    /// The names of the complete backups in the bucket.
    pub fn backups(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.0.join("backups");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if self.has_backup(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every object stored in `backup`.
    pub fn read_items(&self, backup: &str) -> anyhow::Result<Vec<Item>> {
        let resources = self.backup_dir(backup)?.join("resources");
        let mut items = Vec::new();
        if !resources.exists() {
            return Ok(items);
        }
        for resource in sorted_entries(&resources)? {
            let name = resource
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files = Vec::new();
            let cluster = resource.join("cluster");
            if cluster.is_dir() {
                files.extend(sorted_entries(&cluster)?);
            }
            let namespaces = resource.join("namespaces");
            if namespaces.is_dir() {
                for namespace in sorted_entries(&namespaces)? {
                    files.extend(sorted_entries(&namespace)?);
                }
            }
            for file in files
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "json"))
            {
                items.push(Item {
                    resource: name.clone(),
                    object: read_json(&file)?,
                });
            }
        }
        Ok(items)
    }

    /// Stores the warnings and errors of a backup or restore, its resource
    /// list and its log,
    /// gzipped, where Velero keeps them (`velero ... describe --details`
    /// and `velero ... logs` read them).
    pub fn write_results(&self, target: Target, name: &str, report: &Report) -> anyhow::Result<()> {
        let (results_kind, list_kind, log_kind) = match target {
            Target::Backup => ("BackupResults", "BackupResourceList", "BackupLog"),
            Target::Restore => ("RestoreResults", "RestoreResourceList", "RestoreLog"),
        };
        let results = report.results();
        let json = serde_json::to_vec(&results)?;
        write_bytes(&self.0.join(key(results_kind, name)?), &gzip(&json)?)?;
        let json = serde_json::to_vec(&report.resources)?;
        write_bytes(&self.0.join(key(list_kind, name)?), &gzip(&json)?)?;
        let text = log_text(&report.log, &results);
        write_bytes(&self.0.join(key(log_kind, name)?), &gzip(text.as_bytes())?)
    }

    /// Removes a backup and everything stored with it, as
    /// `BackupStore.DeleteBackup` does.
    pub fn delete_backup(&self, backup: &str) -> anyhow::Result<()> {
        remove_dir(&self.backup_dir(backup)?)
    }

    /// Removes a restore's results and log (`BackupStore.DeleteRestore`).
    pub fn delete_restore(&self, restore: &str) -> anyhow::Result<()> {
        remove_dir(&self.0.join("restores").join(path_component(restore)?))
    }
}

/// Removes `dir` and what it holds; a missing one is already removed.
fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Whose results and log a file holds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Backup,
    Restore,
}

/// The bucket key (path relative to the bucket) of a DownloadRequest's
/// target kind for the backup or restore `name` (an error for a kind the
/// emulator does not know).
pub(super) fn key(kind: &str, name: &str) -> anyhow::Result<String> {
    let name = path_component(name)?;
    Ok(match kind {
        "BackupContents" => format!("backups/{name}/{name}.tar.gz"),
        "BackupLog" => format!("backups/{name}/{name}-logs.gz"),
        "BackupResults" => format!("backups/{name}/{name}-results.gz"),
        "BackupResourceList" => format!("backups/{name}/{name}-resource-list.json.gz"),
        "RestoreLog" => format!("restores/{name}/restore-{name}-logs.gz"),
        "RestoreResults" => format!("restores/{name}/restore-{name}-results.gz"),
        "RestoreResourceList" => format!("restores/{name}/restore-{name}-resource-list.json.gz"),
        other => anyhow::bail!("unsupported download target kind {other:?}"),
    })
}

/// The bucket directory of `resource`'s items.
pub(super) fn resource_dir(resource: &ApiResource) -> String {
    group_resource(&resource.group, &resource.plural)
}

/// `name` as one path component, refusing anything that would leave the
/// directory it is joined to.
fn path_component(name: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']),
        "{name:?} cannot be stored in the bucket (not a valid object name)"
    );
    Ok(name)
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// Writes `value` to `path` through a temporary file and a rename, so that
/// a reader sees the old content or the new, never a part.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    write_bytes(path, &serde_json::to_vec_pretty(value)?)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a bucket path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} into place", temporary.display()))
}

fn read_json(path: &Path) -> anyhow::Result<DynamicObject> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a Kubernetes object", path.display()))
}
