//! Per-resource warnings and errors of a backup or restore, in the shape of
//! Velero's `results.Result` (pkg/util/results/result.go): messages of
//! Velero itself, of cluster-scoped objects and per namespace, each list
//! left out when empty. The bucket keeps them as gzipped JSON
//! `{"errors": Result, "warnings": Result}` (`<b>-results.gz`,
//! `restore-<r>-results.gz`), which `velero backup|restore describe
//! --details` reads through a DownloadRequest.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

/// One `results.Result`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Messages {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub velero: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Messages {
    /// Adds a message about an object of `namespace` (cluster-scoped when
    /// `None`), as `Result.Add` does.
    pub fn add(&mut self, namespace: Option<&str>, message: String) {
        match namespace {
            Some(namespace) if !namespace.is_empty() => self
                .namespaces
                .entry(namespace.to_string())
                .or_default()
                .push(message),
            _ => self.cluster.push(message),
        }
    }

    pub fn count(&self) -> usize {
        self.velero.len()
            + self.cluster.len()
            + self.namespaces.values().map(Vec::len).sum::<usize>()
    }

    /// Every message, for logging.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.velero
            .iter()
            .chain(&self.cluster)
            .chain(self.namespaces.values().flatten())
    }
}

/// The items of a backup (`<b>-resource-list.json.gz`, from
/// pkg/backup/request.go `BackupResourceList`) or of a restore with what
/// became of each (`restore-<r>-resource-list.json.gz`,
/// pkg/restore/request.go `RestoredResourceList`): `apiVersion/Kind` ->
/// sorted `namespace/name` entries, a restore's suffixed `(created)`,
/// `(updated)`, `(skipped)` or `(failed)`. `velero backup|restore describe
/// --details` lists them.
#[derive(Debug, Default, Serialize)]
pub(super) struct ResourceList(BTreeMap<String, Vec<String>>);

impl ResourceList {
    pub fn add(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        action: Option<&str>,
    ) {
        let mut entry = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        };
        if let Some(action) = action {
            entry = format!("{entry}({action})");
        }
        let entries = self.0.entry(format!("{api_version}/{kind}")).or_default();
        let at = entries.binary_search(&entry).unwrap_or_else(|at| at);
        entries.insert(at, entry);
    }
}

/// The warnings and errors of one backup or restore, as the results file
/// holds them.
#[derive(Debug, Serialize)]
pub(super) struct Results<'a> {
    pub errors: &'a Messages,
    pub warnings: &'a Messages,
}

/// What a backup or restore reports: how many items it selected and
/// backed up or restored (`status.progress`), its warnings and errors,
/// its resource list and its log.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub total: usize,
    pub done: usize,
    pub errors: Messages,
    pub warnings: Messages,
    pub resources: ResourceList,
    pub log: Vec<String>,
}

impl Report {
    /// The results file's content.
    pub fn results(&self) -> Results<'_> {
        Results {
            errors: &self.errors,
            warnings: &self.warnings,
        }
    }
}

/// `bytes` gzip-compressed, as Velero uploads results and logs.
pub(super) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// A short log in logrus's text format, one line per message, as the
/// bucket's `-logs.gz` files hold Velero's log.
pub(super) fn log_text(info: &[String], results: &Results<'_>) -> String {
    let line = |level: &str, message: &str| {
        format!(
            "time=\"{}\" level={level} msg={}\n",
            k8s_openapi::jiff::Timestamp::now(),
            serde_json::to_string(message).unwrap_or_default()
        )
    };
    let mut text = String::new();
    for message in info {
        text += &line("info", message);
    }
    for message in results.warnings.all() {
        text += &line("warning", message);
    }
    for message in results.errors.all() {
        text += &line("error", message);
    }
    text
}
