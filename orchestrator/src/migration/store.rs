//! Migrations in the cluster: installing the CRD, finding the run of a
//! plan that is still in flight, creating a new run, saving its status.
//!
//! Every save is a merge patch of the whole status to the `/status`
//! subresource, so a save never touches the spec and a resumed run reads
//! exactly what the last save wrote.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{json, Value};

use super::{crd, resource, MigrationSpec, MigrationStatus, NAMESPACE, PLAN_LABEL, PLURAL};
use crate::clusters::Cluster;
use crate::kubeops::{create_if_missing, status_code};

/// How long a freshly created CRD may take to be served.
const CRD_ESTABLISHED: Duration = Duration::from_secs(60);

/// One Migration as read from the cluster.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    /// The object's uid, which its Events name.
    pub uid: Option<String>,
    pub spec: MigrationSpec,
    pub status: MigrationStatus,
}

/// The Migrations of one cluster.
#[derive(Clone)]
pub struct Store {
    api: Api<DynamicObject>,
    cluster: String,
    /// Publishes the Migrations' Events (events.k8s.io/v1).
    recorder: Recorder,
}

impl Store {
    /// Installs what Migrations need (the CRD and the namespace they live
    /// in) if missing, and waits until the API serves them.
    pub async fn install(cluster: &Cluster) -> anyhow::Result<Self> {
        let crds = Api::<DynamicObject>::all_with(
            cluster.client.clone(),
            &ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            )),
        );
        let definition: DynamicObject =
            serde_json::from_value(crd()).context("the Migration CRD")?;
        create_if_missing(&crds, &definition)
            .await
            .with_context(|| format!("{}: installing the Migration CRD", cluster.describe()))?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        create_if_missing(&Api::<Namespace>::all(cluster.client.clone()), &namespace)
            .await
            .with_context(|| {
                format!(
                    "{}: creating namespace {NAMESPACE:?} for Migrations",
                    cluster.describe()
                )
            })?;
        let store = Self::open(cluster);
        let deadline = tokio::time::Instant::now() + CRD_ESTABLISHED;
        loop {
            match store.api.list(&ListParams::default().limit(1)).await {
                Ok(_) => return Ok(store),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("waiting for the Migration CRD to be served: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}: the Migration CRD was created but {PLURAL}.mover.io is not served",
                            cluster.describe()
                        )
                    })
                }
            }
        }
    }

    /// The Migrations of `cluster`, without installing anything.
    pub fn open(cluster: &Cluster) -> Self {
        let reporter = Reporter {
            controller: "mover.io/orchestrator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            api: Api::namespaced_with(cluster.client.clone(), NAMESPACE, &resource()),
            cluster: cluster.describe(),
            recorder: Recorder::new(cluster.client.clone(), reporter),
        }
    }

    /// Publishes an Event about Migration `name` whose uid is `uid` (what
    /// `kubectl describe` shows), for `action` (a step's name, or
    /// `Migrate`). Events of the same reason and action are one Event
    /// whose count grows (kube-runtime's series), so each step gets its
    /// own. An Event that cannot be written (no right to create Events
    /// in the Migrations' namespace) is logged, never fatal: the status
    /// holds the same facts.
    pub async fn event(
        &self,
        (name, uid): (&str, Option<&str>),
        warning: bool,
        (action, reason): (&str, &str),
        note: String,
    ) {
        let reference = ObjectReference {
            api_version: Some(resource().api_version),
            kind: Some(super::KIND.into()),
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            uid: uid.map(str::to_string),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            // The API server refuses notes over 1 kB.
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::debug!("{}: Event {reason} for Migration {name}: {e}", self.cluster);
        }
    }

    /// Migration `name`, if it exists (and the CRD is installed).
    pub async fn get(&self, name: &str) -> anyhow::Result<Option<Migration>> {
        match self.api.get_opt(name).await {
            Ok(found) => found.map(decode).transpose(),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: reading Migration {name}", self.cluster)),
        }
    }

    /// Every Migration, oldest first; none when the CRD is not installed.
    pub async fn list(&self, plan: Option<&str>) -> anyhow::Result<Vec<Migration>> {
        let params = match plan {
            Some(plan) => ListParams::default().labels(&format!("{PLAN_LABEL}={plan}")),
            None => ListParams::default(),
        };
        let list = match self.api.list(&params).await {
            Ok(list) => list.items,
            Err(e) if status_code(&e) == Some(404) => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: listing Migrations", self.cluster))
            }
        };
        let mut found = Vec::new();
        for object in list {
            let created = object.metadata.creation_timestamp.clone();
            found.push((created, decode(object)?));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        Ok(found.into_iter().map(|(_, m)| m).collect())
    }

    /// The run of plan `plan` that has not finished, if any.
    pub async fn in_flight(&self, plan: &str) -> anyhow::Result<Option<Migration>> {
        Ok(self
            .list(Some(plan))
            .await?
            .into_iter()
            .rev()
            .find(|m| !m.status.is_finished()))
    }

    /// Creates a new run, named `<plan>-<kind>-<n>` with `n` one more
    /// than the plan's runs so far, with an empty status.
    pub async fn create(&self, spec: MigrationSpec) -> anyhow::Result<Migration> {
        let runs = self.list(Some(&spec.plan_name)).await?.len();
        for n in runs + 1.. {
            let name = format!("{}-{}-{n}", spec.plan_name, spec.kind.as_str());
            let object = json!({
                "apiVersion": resource().api_version,
                "kind": super::KIND,
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {PLAN_LABEL: spec.plan_name},
                },
                "spec": spec,
            });
            let object: DynamicObject = serde_json::from_value(object)?;
            match self.api.create(&PostParams::default(), &object).await {
                Ok(created) => {
                    let migration = decode(created)?;
                    self.save(&migration.name, &MigrationStatus::default())
                        .await?;
                    return Ok(migration);
                }
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: creating Migration {name}", self.cluster))
                }
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// Saves `status` as Migration `name`'s whole status.
    pub async fn save(&self, name: &str, status: &MigrationStatus) -> anyhow::Result<()> {
        let patch = json!({"status": status});
        self.api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("{}: saving the status of Migration {name}", self.cluster))?;
        Ok(())
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// A Migration object as the engine reads it.
pub fn decode(object: DynamicObject) -> anyhow::Result<Migration> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let uid = object.metadata.uid.clone();
    let spec = serde_json::from_value(object.data["spec"].clone())
        .with_context(|| format!("Migration {name}: its spec"))?;
    let status = match &object.data["status"] {
        Value::Null => MigrationStatus::default(),
        status => serde_json::from_value(status.clone())
            .with_context(|| format!("Migration {name}: its status"))?,
    };
    Ok(Migration {
        name,
        uid,
        spec,
        status,
    })
}
