//! The controller's Prometheus metrics (`/metrics`), with the
//! `prometheus-client` crate: the controller's own health (reconciles,
//! failures, leadership, migrations running and waiting for a slot) and,
//! per Migration, what its status says (current step, duration, per-PVC
//! and per-image counters).
//!
//! Migration series are rebuilt from the statuses last seen at every
//! scrape, so a deleted Migration's series disappear with it and a
//! restarted controller reports what the statuses hold, not what it
//! happened to count since it started.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationLabels {
    migration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    migration: String,
    step: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PvcLabels {
    migration: String,
    namespace: String,
    pvc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    migration: String,
    namespace: String,
    image: String,
}

type PvcGauge = Family<PvcLabels, Gauge>;
type ImageGauge = Family<ImageLabels, Gauge>;

/// Every metric the controller serves.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    leader: Gauge,
    running: Gauge,
    waiting: Gauge,
    /// Each Migration's status as last seen, by name.
    statuses: Mutex<BTreeMap<String, Value>>,
    step: Family<StepLabels, Gauge>,
    duration: Family<MigrationLabels, Gauge<f64, AtomicU64>>,
    /// PVC counters, each with the status field it shows.
    pvcs: Vec<(&'static str, PvcGauge)>,
    images: Vec<(&'static str, ImageGauge)>,
}

/// Per-PVC series: (metric name, help, field of the PVC's status entry).
const PVC_SERIES: &[(&str, &str, &str)] = &[
    (
        "mover_pvc_transferred_bytes",
        "Bytes of the PVC's files dealt with (sent, reused or already current)",
        "bytes_done",
    ),
    (
        "mover_pvc_sent_bytes",
        "File bytes sent literally, after delta",
        "bytes_sent",
    ),
    (
        "mover_pvc_wire_bytes",
        "Bytes on the mover's TLS connection, both directions",
        "wire_bytes",
    ),
    (
        "mover_pvc_files_sent",
        "Files whose data went over the wire",
        "files_sent",
    ),
    (
        "mover_pvc_files_examined",
        "Entries the sender's walk found",
        "files_examined",
    ),
    (
        "mover_pvc_attempts",
        "Sender runs for the PVC (1 unless retried)",
        "attempts",
    ),
];

/// Per-image series: (metric name, help, field of the image's status entry).
const IMAGE_SERIES: &[(&str, &str, &str)] = &[
    ("mover_image_blobs", "Unique blobs of the image", "blobs"),
    (
        "mover_image_blobs_uploaded",
        "Blobs uploaded to the destination registry",
        "uploaded",
    ),
    (
        "mover_image_bytes",
        "Bytes of the image's unique blobs",
        "bytes",
    ),
    (
        "mover_image_uploaded_bytes",
        "Bytes uploaded to the destination registry",
        "bytes_uploaded",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register(
            "mover_controller_reconciles",
            "Reconciles, by resource kind",
            reconciles.clone(),
        );
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "mover_controller_reconcile_errors",
            "Reconciles that failed and were requeued, by resource kind",
            failures.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "mover_controller_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "mover_controller_migrations_running",
            "Migrations this replica is driving",
            running.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "mover_controller_migrations_waiting",
            "Migrations queued for a free slot (--max-migrations)",
            waiting.clone(),
        );
        let step = Family::<StepLabels, Gauge>::default();
        registry.register(
            "mover_migration_step",
            "1 for each Migration's current step, with the Migration's phase",
            step.clone(),
        );
        let duration = Family::<MigrationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "mover_migration_duration_seconds",
            "Seconds from the Migration's start to its end, or to now while it runs",
            duration.clone(),
        );
        let pvcs = register(&mut registry, PVC_SERIES);
        let images = register(&mut registry, IMAGE_SERIES);
        Self {
            registry,
            reconciles,
            failures,
            leader,
            running,
            waiting,
            statuses: Mutex::default(),
            step,
            duration,
            pvcs,
            images,
        }
    }
}

/// Registers one gauge family per series, each with the status field it
/// shows.
fn register<L>(
    registry: &mut Registry,
    series: &[(&str, &str, &'static str)],
) -> Vec<(&'static str, Family<L, Gauge>)>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    series
        .iter()
        .map(|(name, help, field)| {
            let family = Family::<L, Gauge>::default();
            registry.register(*name, *help, family.clone());
            (*field, family)
        })
        .collect()
}

impl Metrics {
    /// Counts a reconcile of a `kind` resource, and whether it failed.
    pub fn reconciled(&self, kind: &str, failed: bool) {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        if failed {
            self.failures.get_or_create(&labels).inc();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Migrations this replica drives.
    pub fn running(&self) -> &Gauge {
        &self.running
    }

    /// Migrations waiting for a free slot.
    pub fn waiting(&self) -> &Gauge {
        &self.waiting
    }

    /// Records Migration `name`'s status as it now stands.
    pub fn observe(&self, name: &str, status: &Value) {
        self.lock().insert(name.to_string(), status.clone());
    }

    /// Drops a deleted Migration's series.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Rebuilds the per-Migration series from the statuses last seen.
    fn refresh(&self) {
        self.step.clear();
        self.duration.clear();
        self.pvcs.iter().for_each(|(_, family)| family.clear());
        self.images.iter().for_each(|(_, family)| family.clear());
        let now = k8s_openapi::jiff::Timestamp::now();
        for (migration, status) in self.lock().iter() {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            self.step
                .get_or_create(&StepLabels {
                    migration: migration.clone(),
                    step: text(&status["step"]),
                    phase: text(&status["phase"]),
                })
                .set(1);
            let time = |v: &Value| v.as_str().and_then(|t| t.parse().ok());
            if let Some(started) = time(&status["started"]) {
                let end = time(&status["finished"]).unwrap_or(now);
                let seconds = end.duration_since(started).as_secs_f64();
                self.duration
                    .get_or_create(&MigrationLabels {
                        migration: migration.clone(),
                    })
                    .set(seconds.max(0.0));
            }
            for pvc in status["pvcs"].as_array().into_iter().flatten() {
                let labels = PvcLabels {
                    migration: migration.clone(),
                    namespace: text(&pvc["namespace"]),
                    pvc: text(&pvc["name"]),
                };
                for (field, family) in &self.pvcs {
                    let value = pvc[*field].as_u64().unwrap_or(0);
                    family.get_or_create(&labels).set(value as i64);
                }
            }
            for image in status["images"].as_array().into_iter().flatten() {
                let labels = ImageLabels {
                    migration: migration.clone(),
                    namespace: text(&image["namespace"]),
                    image: format!("{}:{}", text(&image["image_stream"]), text(&image["tag"])),
                };
                for (field, family) in &self.images {
                    let value = image[*field].as_u64().unwrap_or(0);
                    family.get_or_create(&labels).set(value as i64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Metrics;

    #[test]
    fn a_migrations_status_becomes_its_series_and_leaves_with_it() {
        let metrics = Metrics::default();
        metrics.reconciled("Migration", false);
        metrics.reconciled("Migration", true);
        metrics.observe(
            "shop-final-1",
            &json!({
                "phase": "Running", "step": "CopyVolumes",
                "started": "2026-12-07T10:00:00Z",
                "pvcs": [{"namespace": "shop", "name": "data", "bytes_done": 4096,
                          "wire_bytes": 5000, "files_sent": 3, "attempts": 2}],
                "images": [{"namespace": "shop", "image_stream": "web", "tag": "v1",
                            "blobs": 4, "uploaded": 1, "bytes": 100, "bytes_uploaded": 10}],
            }),
        );
        let text = metrics.encode().unwrap();
        for line in [
            "mover_controller_reconciles_total{kind=\"Migration\"} 2",
            "mover_controller_reconcile_errors_total{kind=\"Migration\"} 1",
            "mover_migration_step{migration=\"shop-final-1\",step=\"CopyVolumes\",phase=\"Running\"} 1",
            "mover_pvc_transferred_bytes{migration=\"shop-final-1\",namespace=\"shop\",pvc=\"data\"} 4096",
            "mover_pvc_attempts{migration=\"shop-final-1\",namespace=\"shop\",pvc=\"data\"} 2",
            "mover_image_blobs_uploaded{migration=\"shop-final-1\",namespace=\"shop\",image=\"web:v1\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("mover_migration_duration_seconds{migration=\"shop-final-1\"}"));
        metrics.forget("shop-final-1");
        let text = metrics.encode().unwrap();
        assert!(!text.contains("shop-final-1"), "{text}");
    }
}
