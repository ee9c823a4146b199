//! BackupStorageLocations as Velero's controllers check them: which one a
//! Backup uses, and whether it can be written or read.
//!
//! Every BSL of the emulator is the one shared bucket; what a test can
//! change is a BSL's name, `spec.default`, `spec.accessMode`,
//! `spec.backupSyncPeriod` and `status.phase`, which is what Velero
//! decides on.

use std::time::Duration;

use kube::api::{DynamicObject, ListParams};
use kube::ResourceExt;
use serde_json::Value;

use super::Velero;

/// A BSL as Velero reads it.
pub(super) struct Location {
    pub name: String,
    pub read_only: bool,
    pub available: bool,
    /// `spec.backupSyncPeriod`, when set.
    pub sync_period: Option<Duration>,
}

impl Location {
    fn of(object: &DynamicObject) -> Self {
        let spec = object.data.get("spec");
        let field = |name: &str| spec.and_then(|s| s.get(name)).and_then(Value::as_str);
        Self {
            name: object.name_any(),
            read_only: field("accessMode") == Some("ReadOnly"),
            // veleroutil.BSLIsAvailable: phase Available.
            available: object.data.pointer("/status/phase").and_then(Value::as_str)
                == Some("Available"),
            sync_period: field("backupSyncPeriod").and_then(go_duration),
        }
    }
}

/// The BSL named `name`, `None` when there is none.
pub(super) async fn get(v: &Velero, name: &str) -> Result<Option<Location>, kube::Error> {
    Ok(v.locations()
        .get_opt(name)
        .await?
        .as_ref()
        .map(Location::of))
}

/// The BSL a new Backup uses, or Velero's validation errors
/// (backup_controller.go `prepareBackupRequest`): an empty
/// `storageLocation` means the BSL with `spec.default`, else the server
/// default; a ReadOnly or Unavailable BSL refuses backups.
pub(super) async fn for_backup(v: &Velero, requested: Option<&str>) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    let server_specified = requested.is_none_or(str::is_empty);
    let name = match requested {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => match v.locations().list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .find(|l| l.data.pointer("/spec/default") == Some(&Value::Bool(true)))
                .map(|l| l.name_any())
                .unwrap_or_else(|| v.options.storage_location.clone()),
            Err(_) => v.options.storage_location.clone(),
        },
    };
    match get(v, &name).await {
        Ok(Some(location)) => {
            if location.read_only {
                errors.push(format!("backup can't be created because backup storage location {name} is currently in read-only mode"));
            }
            if !location.available {
                errors.push(format!("backup can't be created because BackupStorageLocation {name} is in Unavailable status."));
            }
        }
        Ok(None) => {
            let not_found = format!("backupstoragelocations.velero.io \"{name}\" not found");
            errors.push(if server_specified {
                format!("an existing backup storage location was not specified at backup creation time and the server default {name} does not exist. Please address this issue (see `velero backup-location -h` for options) and create a new backup. Error: {not_found}")
            } else {
                format!("an existing backup storage location was not specified at backup creation time and the default {name} was not found. Please address this issue (see `velero backup-location -h` for options) and create a new backup. Error: {not_found}")
            });
        }
        Err(error) => errors.push(format!("error getting backup storage location: {error}")),
    }
    (name, errors)
}

/// A Go `time.Duration` string (`1m0s`, `60s`, `1h30m`, `500ms`), as
/// `metav1.Duration` holds one.
pub(super) fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_metav1_duration_does() {
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("-1m"), None);
        assert_eq!(go_duration(&format!("{}h", "9".repeat(400))), None);
    }
}
