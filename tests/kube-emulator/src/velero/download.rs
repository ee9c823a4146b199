//! DownloadRequests, as pkg/controller/download_request_controller.go
//! answers them, and the object store's signed URLs they hand out.
//!
//! `velero backup|restore describe --details` and `velero backup|restore
//! logs` create a DownloadRequest (`spec.target.kind`: BackupResults,
//! RestoreResults, BackupLog, RestoreLog, ...; `spec.target.name`), wait
//! for `status.phase: Processed` and GET `status.downloadURL`, a
//! pre-signed object-store URL valid for ten minutes
//! (`persistence.DownloadURLTTL`), then gunzip the body
//! (pkg/cmd/util/downloadrequest). Here the URL points at a small HTTP
//! server on 127.0.0.1 serving the bucket directory: the path is the
//! object's key, the query an expiry and a signature over both, so a
//! tampered or expired URL is refused (403) as S3 refuses it; a signed key
//! the bucket lacks is 404, which the CLI reports as "file not found".
//!
//! A request whose Restore, Backup or BSL does not exist is left
//! unprocessed (Velero logs it and never sets Processed), so the CLI times
//! out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;

use super::bucket::key;
use super::{location, patch_status, time, Velero};

/// How long a download URL is valid (Velero's `DownloadURLTTL`).
const URL_TTL: Duration = Duration::from_secs(10 * 60);

/// The bucket's HTTP server: its address and the key URLs are signed with.
pub(super) struct Server {
    base_url: String,
    secret: Arc<String>,
}

#[derive(Clone)]
struct Served {
    bucket: Arc<PathBuf>,
    secret: Arc<String>,
}

#[derive(Deserialize)]
struct Signature {
    #[serde(rename = "X-Expires", default)]
    expires: i64,
    #[serde(rename = "X-Signature", default)]
    signature: String,
}

impl Server {
    /// Binds the server; the future serves until dropped.
    pub async fn start(
        bucket: PathBuf,
    ) -> anyhow::Result<(Self, impl std::future::Future<Output = anyhow::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the bucket's download server")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let secret = Arc::new(format!(
            "{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        ));
        let served = Served {
            bucket: Arc::new(bucket),
            secret: secret.clone(),
        };
        let app = axum::Router::new()
            .route("/{*key}", axum::routing::get(serve))
            .with_state(served);
        let serve = async move {
            axum::serve(listener, app)
                .await
                .context("serving the bucket's downloads")
        };
        Ok((Self { base_url, secret }, serve))
    }

    /// A URL for `key` valid until `expires` (Unix seconds).
    fn url(&self, key: &str, expires: i64) -> String {
        format!(
            "{}/{key}?X-Expires={expires}&X-Signature={}",
            self.base_url,
            sign(&self.secret, key, expires)
        )
    }
}

fn sign(secret: &str, key: &str, expires: i64) -> String {
    let digest = sha2::Sha256::digest(format!("{secret}\n{key}\n{expires}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(
    State(served): State<Served>,
    Path(key): Path<String>,
    Query(query): Query<Signature>,
) -> axum::response::Response {
    if sign(&served.secret, &key, query.expires) != query.signature {
        return (StatusCode::FORBIDDEN, "signature does not match").into_response();
    }
    if Timestamp::now().as_second() > query.expires {
        return (StatusCode::FORBIDDEN, "request has expired").into_response();
    }
    // The key was signed by this server, so it is one of `bucket::key`'s
    // paths; no `..` can be in it.
    match tokio::fs::read(served.bucket.join(&key)).await {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

/// Answers one new DownloadRequest.
pub(super) async fn process(v: &Velero, request: DynamicObject) {
    let name = request.name_any();
    let target = |field: &str| {
        request
            .data
            .pointer(&format!("/spec/target/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (kind, target_name) = (target("kind"), target("name"));
    let mut backup = target_name.clone();
    if kind.starts_with("Restore") {
        match v.restores().get_opt(&target_name).await {
            Ok(Some(restore)) => {
                backup = restore
                    .data
                    .pointer("/spec/backupName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            }
            _ => {
                tracing::warn!("velero: download request {name}: no restore {target_name}");
                return;
            }
        }
    }
    let location = match v.backups().get_opt(&backup).await {
        Ok(Some(backup)) => backup
            .data
            .pointer("/spec/storageLocation")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => {
            tracing::warn!("velero: download request {name}: no backup {backup}");
            return;
        }
    };
    if !matches!(location::get(v, &location).await, Ok(Some(_))) {
        tracing::warn!("velero: download request {name}: BSL for DownloadRequest cannot be found");
        return;
    }
    let expiration = Timestamp::now()
        .checked_add(URL_TTL)
        .unwrap_or(Timestamp::MAX);
    let key = match key(&kind, &target_name) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!("velero: download request {name}: {error:#}");
            return;
        }
    };
    let status = json!({
        "phase": "Processed",
        "downloadURL": v.downloads.url(&key, expiration.as_second()),
        "expiration": time(expiration),
    });
    let api = v.api("DownloadRequest", "downloadrequests");
    if let Err(error) = patch_status(&api, &name, status).await {
        tracing::warn!("velero: answering download request {name}: {error}");
    }
}
