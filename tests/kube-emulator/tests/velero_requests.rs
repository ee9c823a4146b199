//! What the velero CLI reads through request objects, on the emulated
//! Velero: DownloadRequests for results and logs (a signed URL served over
//! HTTP, gzipped content as Velero stores it) and ServerStatusRequests
//! (`velero version`).

mod controller_support;
mod velero_support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube_emulator::VeleroOptions;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use velero_support::{
    backed_up, completed, finished, in_phase, merge_into, request, shop_with_settings, start_pair,
    start_pair_with, velero,
};

/// GETs `url` (`http://127.0.0.1:PORT/...`) and returns the status code
/// and body, as the CLI's HTTP client would.
async fn get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connecting");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sending");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("reading");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (code, response[split + 4..].to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip content");
    out
}

/// Creates a DownloadRequest for `kind` `name` and returns its URL once
/// Processed.
async fn download_url(client: &kube::Client, request_name: &str, kind: &str, name: &str) -> String {
    let requests = velero(client, "DownloadRequest");
    request(
        &requests,
        "DownloadRequest",
        request_name,
        json!({ "target": { "kind": kind, "name": name } }),
    )
    .await;
    let processed = in_phase(&requests, request_name, "Processed").await;
    assert!(
        processed.data["status"]["expiration"].is_string(),
        "{:?}",
        processed.data
    );
    processed.data["status"]["downloadURL"]
        .as_str()
        .expect("a download URL")
        .to_string()
}

#[tokio::test]
async fn download_requests_serve_results_and_logs_through_signed_urls() {
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    shop_with_settings(source).await;

    // A missing included namespace: PartiallyFailed, its error in the results.
    let backups = velero(source, "Backup");
    request(
        &backups,
        "Backup",
        "partial",
        json!({ "includedNamespaces": ["shop", "ghost"] }),
    )
    .await;
    let status = finished(&backups, "partial").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["errors"], 1, "{status}");
    let url = download_url(source, "partial-results", "BackupResults", "partial").await;
    let (code, body) = get(&url).await;
    assert_eq!(code, 200);
    let results: Value = serde_json::from_slice(&gunzip(&body)).expect("JSON results");
    assert_eq!(
        results,
        json!({ "errors": { "velero": ["fail to get the namespace ghost specified in backup.Spec.IncludedNamespaces"] }, "warnings": {} })
    );
    assert!(pair
        .shared
        .velero_bucket
        .join("backups/partial/partial-results.gz")
        .is_file());

    // Per-resource warnings of a restore over existing objects.
    backed_up(
        source,
        destination,
        "full",
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
    let restores = velero(destination, "Restore");
    request(
        &restores,
        "Restore",
        "first",
        json!({ "backupName": "full" }),
    )
    .await;
    finished(&restores, "first").await;
    let configmaps = Api::<ConfigMap>::namespaced(destination.clone(), "shop");
    merge_into(
        &configmaps,
        "settings",
        json!({ "data": { "a": "changed" } }),
    )
    .await;
    let status = completed(
        &restores,
        "Restore",
        "second",
        json!({ "backupName": "full", "existingResourcePolicy": "none" }),
    )
    .await;
    assert_eq!(status["warnings"], 1, "{status}");
    let url = download_url(destination, "second-results", "RestoreResults", "second").await;
    let (code, body) = get(&url).await;
    assert_eq!(code, 200);
    let results: Value = serde_json::from_slice(&gunzip(&body)).expect("JSON results");
    assert_eq!(
        results["warnings"]["namespaces"]["shop"],
        json!(["could not restore, ConfigMap \"settings\" already exists. Warning: the in-cluster version is different than the backed-up version"]),
        "{results}"
    );
    assert_eq!(results["errors"], json!({}));
    assert!(pair
        .shared
        .velero_bucket
        .join("restores/second/restore-second-results.gz")
        .is_file());

    let url = download_url(destination, "second-log", "RestoreLog", "second").await;
    let (code, body) = get(&url).await;
    assert_eq!(code, 200);
    let log = String::from_utf8(gunzip(&body)).expect("a text log");
    assert!(
        log.contains("level=warning") && log.contains("settings"),
        "{log}"
    );

    // The URL is signed: changing its expiry or key is refused.
    let tampered = url.replace("X-Expires=", "X-Expires=1");
    assert_eq!(get(&tampered).await.0, 403);
    let other = url.replace("restore-second-logs.gz", "restore-first-logs.gz");
    assert_eq!(get(&other).await.0, 403);
    // What became of each item, as `describe --details` lists it.
    let url = download_url(destination, "second-list", "RestoreResourceList", "second").await;
    let (code, body) = get(&url).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&gunzip(&body)).expect("JSON list");
    assert_eq!(
        list["v1/ConfigMap"],
        json!(["shop/settings(failed)"]),
        "{list}"
    );
    assert_eq!(list["v1/Namespace"], json!(["shop(skipped)"]), "{list}");
    let url = download_url(destination, "first-list", "RestoreResourceList", "first").await;
    let list: Value = serde_json::from_slice(&gunzip(&get(&url).await.1)).expect("JSON list");
    assert_eq!(
        list["v1/ConfigMap"],
        json!(["shop/settings(created)"]),
        "{list}"
    );
    let url = download_url(source, "full-list", "BackupResourceList", "full").await;
    let list: Value = serde_json::from_slice(&gunzip(&get(&url).await.1)).expect("JSON list");
    assert_eq!(list["v1/ConfigMap"], json!(["shop/settings"]), "{list}");
    assert_eq!(list["v1/Namespace"], json!(["shop"]), "{list}");
    // A signed key the bucket lacks (the emulator keeps no tarball) is
    // not found.
    let url = download_url(source, "contents", "BackupContents", "full").await;
    assert_eq!(get(&url).await.0, 404);
}

#[tokio::test]
async fn server_status_requests_report_the_configured_version_and_plugins() {
    let old = VeleroOptions {
        server_version: "v1.11.1".into(),
        ..VeleroOptions::default()
    };
    let (_dir, pair) = start_pair_with(&old).await;
    let requests = velero(&pair.source.client, "ServerStatusRequest");
    request(&requests, "ServerStatusRequest", "velero-cli-1", json!({})).await;
    let processed = in_phase(&requests, "velero-cli-1", "Processed").await;
    let status = &processed.data["status"];
    assert_eq!(status["serverVersion"], "v1.11.1");
    assert!(status["processedTimestamp"].is_string(), "{status}");
    let plugins = status["plugins"].as_array().cloned().unwrap_or_default();
    assert!(
        plugins
            .iter()
            .any(|p| p
                == &json!({ "name": "velero.io/change-image-name", "kind": "RestoreItemAction" })),
        "{status}"
    );

    let (_dir, pair) = start_pair().await;
    let requests = velero(&pair.destination.client, "ServerStatusRequest");
    request(&requests, "ServerStatusRequest", "velero-cli-2", json!({})).await;
    let processed = in_phase(&requests, "velero-cli-2", "Processed").await;
    assert_eq!(
        processed.data["status"]["serverVersion"],
        kube_emulator::velero::SERVER_VERSION
    );
}
