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
//! restores/<restore>/restore-<restore>-results.json
//! ```
//!
//! `<resource>` is `plural.group` (just `plural` for the core group). A
//! backup exists once its `velero-backup.json` does: that file is renamed
//! into place after everything else, so the other cluster's sync never sees
//! a half-written backup.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

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

    /// Stores the per-object warnings and errors of a restore, where
    /// Velero keeps them (`velero restore describe --details` reads them).
    pub fn write_restore_results(
        &self,
        restore: &str,
        results: &impl Serialize,
    ) -> anyhow::Result<()> {
        let path = self
            .0
            .join("restores")
            .join(path_component(restore)?)
            .join(format!("restore-{restore}-results.json"));
        write_json(&path, results)
    }
}

/// `plural.group`, or `plural` for the core group: how Velero names
/// resources in a backup and in include/exclude lists.
pub(super) fn resource_dir(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
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
    let dir = path.parent().context("a bucket path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(value)?;
    let temporary = path.with_extension("json.partial");
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
