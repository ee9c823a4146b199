//! Per-resource warnings and errors of a Backup or Restore, read the way
//! `velero backup|restore describe --details` reads them: a
//! DownloadRequest (`spec.target.kind` BackupResults or RestoreResults)
//! that Velero answers with a pre-signed `status.downloadURL`, and a GET
//! of that URL, which serves the gzipped JSON results file
//! (`{"errors": {...}, "warnings": {...}}`, each split into `velero`,
//! `cluster` and `namespaces`; pkg/util/results).
//!
//! One pass: [`fetch`] creates the request if missing and returns
//! [`Fetch::NotYet`] until Velero has processed it. The file is gzip
//! (flate2 decodes it; a plain JSON body is accepted too).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{object, Kind, VeleroConfig};
use crate::clusters::Cluster;
use crate::kubeops::create_if_missing;
use crate::names::velero_name;

/// Whose results to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Backup,
    Restore,
}

impl Target {
    /// Velero's `DownloadTargetKind`.
    pub fn kind(self) -> &'static str {
        match self {
            Target::Backup => "BackupResults",
            Target::Restore => "RestoreResults",
        }
    }
}

/// Velero's `results.Result`: messages about Velero itself, about
/// cluster-scoped objects, and per namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messages {
    #[serde(default)]
    pub velero: Vec<String>,
    #[serde(default)]
    pub cluster: Vec<String>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, Vec<String>>,
}

/// A results file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub errors: Messages,
    #[serde(default)]
    pub warnings: Messages,
}

/// How bad a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One message, for the report: where it belongs and, when Velero's text
/// names it, the resource (`routes.route.openshift.io/shop/web`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub severity: Severity,
    /// `velero`, `cluster`, or the (source) namespace.
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub text: String,
}

impl Results {
    /// Every message, errors first, each with its scope and resource.
    pub fn messages(&self) -> Vec<Message> {
        let mut out = Vec::new();
        for (severity, messages) in [
            (Severity::Error, &self.errors),
            (Severity::Warning, &self.warnings),
        ] {
            let scoped = messages
                .velero
                .iter()
                .map(|m| ("velero", m))
                .chain(messages.cluster.iter().map(|m| ("cluster", m)))
                .chain(
                    messages
                        .namespaces
                        .iter()
                        .flat_map(|(ns, list)| list.iter().map(move |m| (ns.as_str(), m))),
                );
            out.extend(scoped.map(|(scope, text)| Message {
                severity,
                scope: scope.to_string(),
                resource: resource_in(text),
                text: text.clone(),
            }));
        }
        out
    }
}

/// The resource a Velero message names, as `group-resource/namespace/name`
/// or `group-resource/name` (Velero's restore errors say "error restoring
/// RESOURCE-ID: ..."): the first word with a slash, stripped of
/// punctuation.
pub fn resource_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| matches!(c, ':' | ',' | '"' | '(' | ')' | '.')))
        .find(|word| {
            word.contains('/')
                && !word.contains("://")
                && word.split('/').all(|part| !part.is_empty())
        })
        .map(String::from)
}

/// Decodes a results file: gzip (as Velero stores it) or plain JSON.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Results> {
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .context("the results file is not valid gzip")?;
        out
    } else {
        bytes.to_vec()
    };
    serde_json::from_slice(&json).context("the results file is not Velero's results JSON")
}

/// Where reading results stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Velero has not processed the DownloadRequest yet.
    NotYet,
    Ready(Results),
}

/// The DownloadRequest's name for the results of `name`.
pub fn request_name(target: Target, name: &str) -> String {
    velero_name(name, &target.kind().to_ascii_lowercase())
}

/// Reads the results of Backup or Restore `name` in one pass, once it has
/// reached a final phase (Velero uploads the file while finalizing):
/// creates the DownloadRequest if missing; once Velero has processed it, downloads and
/// decodes the file. A request whose URL no longer works (pre-signed URLs
/// expire) is deleted, so the next call asks again.
pub async fn fetch(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    migration: &str,
    target: Target,
    name: &str,
) -> anyhow::Result<Fetch> {
    let request = request_name(target, name);
    let api = Kind::DownloadRequest.api(cluster, cfg);
    let wanted = object(
        Kind::DownloadRequest,
        cfg,
        migration,
        &request,
        json!({"target": {"kind": target.kind(), "name": name}}),
    )?;
    let found = create_if_missing(&api, &wanted).await.with_context(|| {
        format!(
            "{}: creating or reading DownloadRequest {}/{request}",
            cluster.describe(),
            cfg.namespace
        )
    })?;
    let Some(url) = download_url(&found.data) else {
        return Ok(Fetch::NotYet);
    };
    match download(&url).await {
        Ok(bytes) => decode(&bytes)
            .with_context(|| {
                format!(
                    "{}: {} of {name} from {url}",
                    cluster.describe(),
                    target.kind()
                )
            })
            .map(Fetch::Ready),
        Err(e) => {
            super::cleanup::delete(cluster, cfg, Kind::DownloadRequest, &request).await?;
            Err(e.context(format!(
                "{}: downloading the {} of {name} (DownloadRequest {request} deleted, to be asked again)",
                cluster.describe(),
                target.kind()
            )))
        }
    }
}

/// `status.downloadURL` once the request is Processed.
pub fn download_url(request: &Value) -> Option<String> {
    let status = request.get("status")?;
    if status.get("phase").and_then(Value::as_str) != Some("Processed") {
        return None;
    }
    status
        .get("downloadURL")
        .and_then(Value::as_str)
        .filter(|url| !url.is_empty())
        .map(String::from)
}

/// GETs a pre-signed URL (HTTPS with the system's roots, as the velero
/// CLI does by default, or plain HTTP).
async fn download(url: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_platform_verifier()
        .context("loading the system's trusted certificates")?
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .tls_backend_preconfigured(tls)
        .build()
        .context("building an HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("GET {url}: HTTP {status}");
    }
    Ok(response
        .bytes()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sample() -> Value {
        json!({
            "errors": {
                "namespaces": {"shop": ["error restoring routes.route.openshift.io/shop/web: admission webhook denied"]},
                "velero": ["restore ran out of time"],
            },
            "warnings": {
                "cluster": ["could not restore, CustomResourceDefinition \"x\" already exists."],
                "namespaces": {"shop": ["could not restore, ConfigMap \"settings\" already exists. Warning: the in-cluster version is different than the backed-up version"]},
            },
        })
    }

    #[test]
    fn gzip_results_decode_into_messages_per_resource() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(sample().to_string().as_bytes()).unwrap();
        let results = decode(&gz.finish().unwrap()).unwrap();
        assert_eq!(results, decode(sample().to_string().as_bytes()).unwrap());
        let messages = results.messages();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0].severity, Severity::Error);
        assert_eq!(messages[0].scope, "velero");
        assert_eq!(messages[0].resource, None);
        assert_eq!(messages[1].scope, "shop");
        assert_eq!(
            messages[1].resource.as_deref(),
            Some("routes.route.openshift.io/shop/web")
        );
        assert_eq!(messages[2].severity, Severity::Warning);
        assert_eq!(messages[2].scope, "cluster");
        assert_eq!(messages[3].scope, "shop");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let error = decode(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
        assert!(format!("{error:#}").contains("gzip"), "{error:#}");
        assert!(decode(b"[1]").is_err());
    }

    #[test]
    fn the_url_is_read_only_once_processed() {
        assert_eq!(download_url(&json!({"status": {"phase": "New"}})), None);
        assert_eq!(
            download_url(&json!({"status": {"phase": "Processed", "downloadURL": "http://x/y"}})),
            Some("http://x/y".into())
        );
        assert_eq!(download_url(&json!({"spec": {}})), None);
        assert_eq!(
            request_name(Target::Restore, "m-restore"),
            "m-restore-restoreresults"
        );
    }
}
