//! The life of Backups and Restores on the emulated Velero as real Velero
//! lives it: phases through Finalizing, status written with the object
//! (no `/status` subresource) without zero counters, bucket metadata final
//! only once finalized, Velero's namespace and BSL names configurable,
//! default and unusable BSLs, the BSL sync (period, lastSyncedTime,
//! unfinished backups, orphans), and deleting backups.

mod controller_support;
mod velero_support;

use std::time::Duration;

use controller_support::{eventually, from_json};
use futures_util::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use kube_emulator::{ClusterPair, VeleroOptions};
use serde_json::{json, Value};
use velero_support::{
    backed_up, completed, finished, gone, in_phase, merge_into, namespace, request, set_status,
    shop_backed_up, shop_with_settings, start_pair, start_pair_with, synced, velero, velero_in,
};

/// Every phase `name` of `api` goes through until a final one, as a watch
/// sees them; returns once the watch has listed (so no change is missed).
async fn phases(api: Api<DynamicObject>, name: &str) -> tokio::task::JoinHandle<Vec<String>> {
    let name = name.to_string();
    let (listed, ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = std::pin::pin!(watcher(api, config));
        let mut listed = Some(listed);
        let mut seen: Vec<String> = Vec::new();
        while let Some(Ok(event)) = events.next().await {
            let object = match event {
                watcher::Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                    continue;
                }
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => object,
                _ => continue,
            };
            let phase = object
                .data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if seen.last() != Some(&phase) {
                seen.push(phase.clone());
            }
            if matches!(
                phase.as_str(),
                "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation"
            ) {
                break;
            }
        }
        seen
    });
    ready.await.expect("the watch lists");
    task
}

/// Whether `seen` holds InProgress, Finalizing and Completed in order.
fn through_finalizing(seen: &[String]) -> bool {
    let positions: Vec<Option<usize>> = ["InProgress", "Finalizing", "Completed"]
        .iter()
        .map(|p| seen.iter().position(|s| s == p))
        .collect();
    positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
}

/// The phase of the backup's metadata in the bucket.
fn stored_phase(pair: &ClusterPair, backup: &str) -> Value {
    let path = pair
        .shared
        .velero_bucket
        .join(format!("backups/{backup}/velero-backup.json"));
    let stored: Value =
        serde_json::from_slice(&std::fs::read(path).expect("metadata")).expect("JSON");
    stored["status"]["phase"].clone()
}

#[tokio::test]
async fn backups_and_restores_pass_through_finalizing_with_status_written_on_the_object() {
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    shop_with_settings(source).await;

    let backups = velero(source, "Backup");
    let watched = phases(backups.clone(), "phased").await;
    let status = completed(
        &backups,
        "Backup",
        "phased",
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
    assert!(
        status.get("errors").is_none() && status.get("warnings").is_none(),
        "zero counters are omitted: {status}"
    );
    assert_eq!(status["version"], 1);
    assert_eq!(status["formatVersion"], "1.1.0");
    assert!(
        status["expiration"].is_string() && status["completionTimestamp"].is_string(),
        "{status}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .expect("watch ends")
        .expect("watch task");
    assert!(through_finalizing(&seen), "{seen:?}");
    assert_eq!(
        stored_phase(&pair, "phased"),
        "Completed",
        "the finalizer rewrites the metadata"
    );

    // No /status subresource: Velero's CRDs have none.
    let error = backups
        .patch_status(
            "phased",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": { "phase": "Failed" } })),
        )
        .await
        .expect_err("Backups have no /status");
    assert!(
        matches!(&error, kube::Error::Api(status) if status.code == 404),
        "{error}"
    );

    synced(&velero(destination, "Backup"), "phased").await;
    let restores = velero(destination, "Restore");
    let watched = phases(restores.clone(), "phased").await;
    let status = completed(
        &restores,
        "Restore",
        "phased",
        json!({ "backupName": "phased", "namespaceMapping": { "shop": "copy" } }),
    )
    .await;
    assert!(
        status.get("errors").is_none() && status.get("warnings").is_none(),
        "{status}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .expect("watch ends")
        .expect("watch task");
    assert!(through_finalizing(&seen), "{seen:?}");
}

#[tokio::test]
async fn velero_in_openshift_adp_uses_the_default_location_and_refuses_read_only_and_unavailable_ones(
) {
    let options = VeleroOptions {
        namespace: "openshift-adp".into(),
        storage_location: "dpa-1".into(),
        ..VeleroOptions::default()
    };
    let (_dir, pair) = start_pair_with(&options).await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    namespace(source, "shop").await;
    let backups = velero_in(source, "openshift-adp", "Backup");
    completed(
        &backups,
        "Backup",
        "adp",
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
    let backup = backups.get("adp").await.expect("backup");
    assert_eq!(
        backup.data.pointer("/spec/storageLocation"),
        Some(&json!("dpa-1"))
    );
    assert_eq!(
        backup
            .labels()
            .get("velero.io/storage-location")
            .map(String::as_str),
        Some("dpa-1")
    );
    let copy = synced(&velero_in(destination, "openshift-adp", "Backup"), "adp").await;
    assert_eq!(
        copy.labels()
            .get("velero.io/storage-location")
            .map(String::as_str),
        Some("dpa-1")
    );

    let locations = velero_in(source, "openshift-adp", "BackupStorageLocation");
    for (name, mode, phase) in [
        ("ro", "ReadOnly", "Available"),
        ("down", "ReadWrite", "Unavailable"),
    ] {
        locations
            .create(&PostParams::default(), &from_json(json!({
                "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                "metadata": { "name": name, "namespace": "openshift-adp" },
                "spec": { "provider": "aws", "accessMode": mode, "objectStorage": { "bucket": "b" } },
            })))
            .await
            .expect("creating a BSL");
        set_status(&locations, name, json!({ "phase": phase })).await;
    }
    for (backup, location, message) in [
        ("to-ro", "ro", "backup can't be created because backup storage location ro is currently in read-only mode"),
        ("to-down", "down", "backup can't be created because BackupStorageLocation down is in Unavailable status."),
    ] {
        request(&backups, "Backup", backup, json!({ "storageLocation": location })).await;
        let status = finished(&backups, backup).await;
        assert_eq!(status["phase"], "FailedValidation", "{status}");
        assert_eq!(status["validationErrors"], json!([message]), "{status}");
        assert!(status.get("failureReason").is_none(), "{status}");
    }
    // The default is the BSL with spec.default, not the server's name.
    merge_into(&locations, "dpa-1", json!({ "spec": { "default": false } })).await;
    merge_into(&locations, "ro", json!({ "spec": { "default": true } })).await;
    request(&backups, "Backup", "to-default", json!({})).await;
    let status = finished(&backups, "to-default").await;
    assert_eq!(
        status["validationErrors"],
        json!(["backup can't be created because backup storage location ro is currently in read-only mode"]),
        "{status}"
    );
}

/// Waits until the BSL `name` has synced after `after`, and returns when.
async fn synced_after(locations: &Api<DynamicObject>, name: &str, after: Timestamp) -> Timestamp {
    eventually(&format!("{name} syncs after {after}"), || async {
        let location = locations.get(name).await.map_err(|e| e.to_string())?;
        let last = location
            .data
            .pointer("/status/lastSyncedTime")
            .and_then(Value::as_str)
            .unwrap_or("");
        match last.parse::<Timestamp>() {
            Ok(last) if last > after => Ok(last),
            _ => Err(last.to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn the_sync_skips_unfinished_backups_deletes_orphans_restores_deleted_objects_and_honours_the_period(
) {
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    let bucket = pair.shared.velero_bucket.clone();
    shop_backed_up(&pair, "first").await;
    backed_up(
        source,
        destination,
        "second",
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
    let destination_backups = velero(destination, "Backup");
    let destination_locations = velero(destination, "BackupStorageLocation");

    // A backup still Finalizing in the bucket is not synced.
    let metadata = bucket.join("backups/first/velero-backup.json");
    let mut half: Value =
        serde_json::from_slice(&std::fs::read(&metadata).expect("metadata")).expect("JSON");
    half["metadata"]["name"] = json!("half");
    half["status"]["phase"] = json!("Finalizing");
    std::fs::create_dir_all(bucket.join("backups/half")).expect("mkdir");
    std::fs::write(
        bucket.join("backups/half/velero-backup.json"),
        half.to_string(),
    )
    .expect("writing");
    let written = Timestamp::now();
    // lastSyncedTime has seconds: two syncs after the write.
    let after = synced_after(&destination_locations, "default", written).await;
    synced_after(&destination_locations, "default", after).await;
    assert!(destination_backups
        .get_opt("half")
        .await
        .expect("reading")
        .is_none());

    // A Backup object deleted alone comes back while the bucket has it.
    destination_backups
        .delete("second", &Default::default())
        .await
        .expect("deleting");
    synced(&destination_backups, "second").await;

    // A Completed Backup the bucket no longer has is an orphan, in both
    // clusters.
    std::fs::remove_dir_all(bucket.join("backups/second")).expect("removing from the bucket");
    gone(&destination_backups, "second").await;
    gone(&velero(source, "Backup"), "second").await;

    // spec.backupSyncPeriod: an hour between syncs.
    let hourly = json!({ "spec": { "backupSyncPeriod": "1h0m0s" } });
    for client in [source, destination] {
        velero(client, "BackupStorageLocation")
            .patch("default", &PatchParams::default(), &Patch::Merge(&hourly))
            .await
            .expect("setting the period");
    }
    std::fs::remove_dir_all(bucket.join("backups/half")).expect("removing");
    let source_backups = velero(source, "Backup");
    // Let the last due syncs (at most a period of 1 s ago) pass.
    let start = Timestamp::now();
    let source_locations = velero(source, "BackupStorageLocation");
    let last = source_locations.get("default").await.expect("bsl");
    let last = last
        .data
        .pointer("/status/lastSyncedTime")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    completed(
        &source_backups,
        "Backup",
        "hourly",
        json!({ "includedNamespaces": ["shop"] }),
    )
    .await;
    // The destination's own Velero keeps running: a backup of its own
    // completes while the BSL does not sync.
    completed(
        &destination_backups,
        "Backup",
        "local",
        json!({ "includedNamespaces": ["default"] }),
    )
    .await;
    let location = destination_locations.get("default").await.expect("bsl");
    let now_last = location
        .data
        .pointer("/status/lastSyncedTime")
        .and_then(Value::as_str)
        .unwrap_or("");
    let now_last: Timestamp = now_last.parse().expect("a time");
    assert!(
        now_last <= start.checked_add(Duration::from_secs(2)).expect("time"),
        "the destination synced again: {now_last} (source last {last})"
    );
    assert!(destination_backups
        .get_opt("hourly")
        .await
        .expect("reading")
        .is_none());
    // A Backup named like one already in the bucket fails.
    request(&destination_backups, "Backup", "hourly", json!({})).await;
    let status = finished(&destination_backups, "hourly").await;
    assert_eq!(status["phase"], "Failed", "{status}");
    assert_eq!(
        status["failureReason"],
        "backup already exists in object storage"
    );
}

#[tokio::test]
async fn a_delete_backup_request_removes_the_backup_its_files_and_its_restores_and_restores_take_their_files(
) {
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    shop_backed_up(&pair, "doomed").await;
    let source_restores = velero(source, "Restore");
    request(
        &source_restores,
        "Restore",
        "of-doomed",
        json!({ "backupName": "doomed", "namespaceMapping": { "shop": "again" } }),
    )
    .await;
    finished(&source_restores, "of-doomed").await;
    let bucket = &pair.shared.velero_bucket;
    let restore = source_restores.get("of-doomed").await.expect("restore");
    assert!(
        restore
            .finalizers()
            .contains(&"restores.velero.io/external-resources-finalizer".to_string()),
        "{:?}",
        restore.metadata
    );
    assert!(bucket
        .join("restores/of-doomed/restore-of-doomed-results.gz")
        .is_file());
    // A Restore deleted alone takes its files along (its finalizer).
    completed(
        &source_restores,
        "Restore",
        "short-lived",
        json!({ "backupName": "doomed", "namespaceMapping": { "shop": "brief" } }),
    )
    .await;
    assert!(bucket.join("restores/short-lived").is_dir());
    source_restores
        .delete("short-lived", &Default::default())
        .await
        .expect("deleting the restore");
    gone(&source_restores, "short-lived").await;
    assert!(!bucket.join("restores/short-lived").exists());

    let requests = velero(source, "DeleteBackupRequest");
    request(
        &requests,
        "DeleteBackupRequest",
        "missing",
        json!({ "backupName": "never-made" }),
    )
    .await;
    let status = in_phase(&requests, "missing", "Processed").await;
    assert_eq!(status.data["status"]["errors"], json!(["backup not found"]));

    request(
        &requests,
        "DeleteBackupRequest",
        "delete-doomed",
        json!({ "backupName": "doomed" }),
    )
    .await;
    gone(&velero(source, "Backup"), "doomed").await;
    gone(&source_restores, "of-doomed").await;
    assert!(!bucket.join("restores/of-doomed").exists());
    // Processed without errors, the request goes with the backup.
    gone(&requests, "delete-doomed").await;
    assert!(!pair.shared.velero_bucket.join("backups/doomed").exists());
    // The destination's copy is an orphan now; its sync does not bring the
    // backup back anywhere.
    gone(&velero(destination, "Backup"), "doomed").await;
    let after = synced_after(
        &velero(source, "BackupStorageLocation"),
        "default",
        Timestamp::now(),
    )
    .await;
    synced_after(&velero(source, "BackupStorageLocation"), "default", after).await;
    assert!(velero(source, "Backup")
        .get_opt("doomed")
        .await
        .expect("reading")
        .is_none());
}
