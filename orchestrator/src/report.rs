//! What a migration did, per PVC: the live state the display shows and the
//! final report (`--output json`, or a table).

use std::fmt::Write as _;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::migration::{MigrationStatus, Phase, RunKind, StepPhase, StepStatus};

/// Where a PVC's copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PvcState {
    Waiting,
    Starting,
    Copying,
    Retrying,
    Done,
    Failed,
    /// Already copied by an earlier final run.
    Skipped,
}

impl PvcState {
    pub fn as_str(self) -> &'static str {
        match self {
            PvcState::Waiting => "waiting",
            PvcState::Starting => "starting",
            PvcState::Copying => "copying",
            PvcState::Retrying => "retrying",
            PvcState::Done => "done",
            PvcState::Failed => "failed",
            PvcState::Skipped => "skipped",
        }
    }
}

/// The counters a mover reports in its JSON events.
pub use mover::progress::Snapshot as Counters;

/// One PVC's copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PvcReport {
    pub namespace: String,
    pub name: String,
    pub destination_namespace: String,
    pub state: PvcState,
    pub attempts: u32,
    /// A Block PVC, copied as a device: its progress is in bytes and
    /// segments (`segments_*`), not files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block: bool,
    #[serde(flatten)]
    pub counters: Counters,
    pub files_deleted: u64,
    /// Seconds from the first sender's start to the end of the last one.
    pub duration_secs: f64,
    /// Bytes per second of the last attempt, and its estimate of the
    /// seconds left (live only).
    #[serde(skip, default)]
    pub rate: f64,
    #[serde(skip, default)]
    pub eta_secs: Option<f64>,
    /// A finished copy that the mover flagged (files that changed while
    /// being read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Why the copy failed, in the mover's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PvcReport {
    pub fn new(namespace: &str, name: &str, destination_namespace: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            destination_namespace: destination_namespace.into(),
            state: PvcState::Waiting,
            attempts: 0,
            block: false,
            counters: Counters::default(),
            files_deleted: 0,
            duration_secs: 0.0,
            rate: 0.0,
            eta_secs: None,
            warning: None,
            error: None,
        }
    }

    /// `ns/name`, or `ns/name -> dest-ns` when the namespace is renamed.
    pub fn label(&self) -> String {
        if self.namespace == self.destination_namespace {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!(
                "{}/{} -> {}",
                self.namespace, self.name, self.destination_namespace
            )
        }
    }

    /// The one-line live view of this PVC: bytes done of bytes examined,
    /// and files examined (segments sent of segments compared for a Block
    /// PVC).
    pub fn line(&self) -> String {
        let c = &self.counters;
        let items = if self.block {
            format!("{:>8} of {} segments", c.segments_sent, c.segments_examined)
        } else {
            format!("{:>8} files", c.files_examined)
        };
        let mut line = format!(
            "{:<40} {:<8} {:>10}/{:<10} {items} {:>10}/s",
            self.label(),
            self.state.as_str(),
            human_bytes(c.bytes_done),
            human_bytes(c.bytes_examined),
            human_bytes(self.rate as u64)
        );
        if let Some(eta) = self.eta_secs.filter(|_| self.state == PvcState::Copying) {
            let _ = write!(line, " ETA {}", human_duration(eta));
        }
        if self.attempts > 1 {
            let _ = write!(line, " attempt {}", self.attempts);
        }
        if let Some(error) = &self.error {
            let _ = write!(line, " : {error}");
        }
        line
    }
}

/// The whole migration's report: one run of a plan, as its Migration
/// resource's status holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plan's name.
    pub migration: String,
    /// The run: the Migration resource's name.
    pub run: String,
    pub kind: RunKind,
    pub stage: bool,
    pub succeeded: bool,
    pub phase: Phase,
    /// Every step of the itinerary with its phase, times and message.
    pub steps: Vec<StepStatus>,
    pub pvcs: Vec<PvcReport>,
    /// Every history item of every ImageStream tag, when images move.
    pub images: Vec<Value>,
    /// What steps recorded: the backup and restore (with Velero's
    /// warnings and errors), quiesced workloads, hooks and their logs,
    /// the verification.
    pub records: BTreeMap<String, Value>,
    /// Problems outside any one PVC (a receiver that never started, ...).
    pub errors: Vec<String>,
    /// Transfer objects that cleanup could not remove.
    pub leftovers: Vec<String>,
    /// What the user should know about the end state.
    pub notes: Vec<String>,
}

impl Report {
    /// The report of run `run` of plan `plan` as `status` records it;
    /// `live` are the PVC reports of this process (the status's own when
    /// this process copied nothing, as in a run resumed after its copy
    /// step).
    pub fn from_status(
        plan: &str,
        run: &str,
        kind: RunKind,
        status: &MigrationStatus,
        live: Vec<PvcReport>,
    ) -> Self {
        let pvcs = if live.is_empty() {
            status
                .pvcs
                .iter()
                .filter_map(|p| serde_json::from_value(p.clone()).ok())
                .collect()
        } else {
            live
        };
        let leftovers: Vec<String> = status
            .records
            .get("leftovers")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let images_ok = status
            .images
            .iter()
            .all(|i| i["state"].as_str() != Some("failed"));
        let pvcs_ok = pvcs.iter().all(|p: &PvcReport| p.state != PvcState::Failed);
        let mut notes = Vec::new();
        let quiesced = status
            .step("Quiesce")
            .is_some_and(|s| s.phase == StepPhase::Done);
        if quiesced && status.phase == Phase::Succeeded {
            notes.push(
                "the source application stays stopped (scaled to zero, as MTC leaves it); \
                 `orchestrator rollback` restarts it there"
                    .to_string(),
            );
        }
        Self {
            migration: plan.to_string(),
            run: run.to_string(),
            kind,
            stage: kind == RunKind::Stage,
            succeeded: status.phase == Phase::Succeeded
                && pvcs_ok
                && images_ok
                && status.errors.is_empty()
                && leftovers.is_empty(),
            phase: status.phase,
            steps: status.steps.clone(),
            pvcs,
            images: status.images.clone(),
            records: status
                .records
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "flags" | "leftovers"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            errors: status.errors.clone(),
            leftovers,
            notes,
        }
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            if step.phase == StepPhase::Pending {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<20} {:<8} {}",
                step.name,
                format!("{:?}", step.phase).to_lowercase(),
                step.message.as_deref().unwrap_or("")
            );
        }
        if !self.pvcs.is_empty() {
            let _ = writeln!(
                out,
                "{:<40} {:<8} {:>8} {:>10} {:>10} {:>9} {:>8}",
                "PVC", "STATE", "FILES", "BYTES", "WIRE", "SECONDS", "ATTEMPTS"
            );
        }
        for pvc in &self.pvcs {
            let c = &pvc.counters;
            let _ = writeln!(
                out,
                "{:<40} {:<8} {:>8} {:>10} {:>10} {:>9.1} {:>8}",
                pvc.label(),
                pvc.state.as_str(),
                c.files_examined,
                human_bytes(c.bytes_examined),
                human_bytes(c.wire_bytes),
                pvc.duration_secs,
                pvc.attempts
            );
        }
        for pvc in &self.pvcs {
            if let Some(error) = &pvc.error {
                let _ = writeln!(out, "{}: {error}", pvc.label());
            }
            if let Some(warning) = &pvc.warning {
                let _ = writeln!(out, "{}: warning: {warning}", pvc.label());
            }
        }
        for image in &self.images {
            let text = |key: &str| image[key].as_str().unwrap_or_default().to_string();
            let error = image["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "image {}/{}:{} {} {}{error}",
                text("namespace"),
                text("image_stream"),
                text("tag"),
                text("state"),
                text("reference"),
            );
        }
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        for leftover in &self.leftovers {
            let _ = writeln!(out, "not cleaned up: {leftover}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_lists_counters_flat_and_omits_empty_fields() {
        let mut pvc = PvcReport::new("app", "data", "app2");
        pvc.state = PvcState::Done;
        pvc.counters.bytes_examined = 1 << 30;
        pvc.counters.wire_bytes = 12345;
        pvc.duration_secs = 3.5;
        let value = serde_json::to_value(&pvc).unwrap();
        assert_eq!(value["state"], "done");
        assert_eq!(value["bytes_examined"], 1u64 << 30);
        assert_eq!(value["wire_bytes"], 12345);
        assert_eq!(value["destination_namespace"], "app2");
        assert!(value.get("error").is_none() && value.get("rate").is_none());
        assert_eq!(pvc.label(), "app/data -> app2");
        assert!(pvc.line().contains("1.0 GiB"), "{}", pvc.line());
        assert!(value.get("block").is_none(), "said only of Block PVCs");
    }

    #[test]
    fn block_pvcs_report_bytes_and_segments() {
        let mut disk = PvcReport::new("vm", "disk", "vm");
        disk.block = true;
        disk.state = PvcState::Copying;
        disk.counters.bytes_examined = 4 << 30;
        disk.counters.bytes_done = 1 << 30;
        disk.counters.segments_examined = 4096;
        disk.counters.segments_sent = 12;
        let line = disk.line();
        assert!(line.contains("1.0 GiB/4.0 GiB"), "{line}");
        assert!(line.contains("12 of 4096 segments"), "{line}");
        assert!(!line.contains("files"), "{line}");
        let value = serde_json::to_value(&disk).unwrap();
        assert_eq!(value["block"], true);
        assert_eq!(value["segments_sent"], 12);
        let back: PvcReport = serde_json::from_value(value).unwrap();
        assert!(back.block);
    }

    #[test]
    fn table_names_failures_and_leftovers() {
        let mut failed = PvcReport::new("app", "logs", "app");
        failed.state = PvcState::Failed;
        failed.error = Some("permission denied: secret.txt".into());
        let status = MigrationStatus {
            phase: Phase::Failed,
            errors: vec!["receiver in app did not start".into()],
            records: BTreeMap::from([(
                "leftovers".to_string(),
                serde_json::json!(["pod app/mover-receiver"]),
            )]),
            ..MigrationStatus::default()
        };
        let report = Report::from_status("m", "m-final-1", RunKind::Final, &status, vec![failed]);
        assert_eq!(report.migration, "m");
        assert!(!report.succeeded);
        let table = report.table();
        assert!(
            table.contains("app/logs: permission denied: secret.txt"),
            "{table}"
        );
        assert!(
            table.contains("error: receiver in app did not start"),
            "{table}"
        );
        assert!(
            table.contains("not cleaned up: pod app/mover-receiver"),
            "{table}"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(125.0), "2m05s");
    }
}
