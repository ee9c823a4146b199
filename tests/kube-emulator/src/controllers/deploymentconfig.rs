//! OpenShift's DeploymentConfig controller (and the part of its deployer
//! pod that scales): each version of the pod template becomes the
//! ReplicationController `<dc>-<latestVersion>` with the annotations
//! OpenShift puts there (`openshift.io/deployment-config.name`,
//! `openshift.io/deployment-config.latest-version`,
//! `openshift.io/deployment.phase`) and the `deployment`/`deploymentconfig`
//! labels in its selector and template. A template change bumps
//! `status.latestVersion` when a ConfigChange trigger is set (the default
//! when `spec.triggers` is absent) and the DC is not paused. The Rolling
//! strategy scales the new RC to `spec.replicas` and the old ones to 0 once
//! it is available (all at once, where the real deployer pod steps by
//! maxSurge/maxUnavailable); Recreate scales the old ones down first. The
//! latest RC follows later changes of `spec.replicas` (scaling a DC to 0 is
//! how a migration quiesces it).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource as _, ResourceExt as _};
use serde::Deserialize;
use serde_json::{json, Value};

use super::owners;
use super::reconcile::{self, Failure};
use crate::context::ClusterContext;

const DC_NAME: &str = "openshift.io/deployment-config.name";
const LATEST_VERSION: &str = "openshift.io/deployment-config.latest-version";
const PHASE: &str = "openshift.io/deployment.phase";
const DEPLOYMENT_NAME: &str = "openshift.io/deployment.name";
const DEPLOYMENT_LABEL: &str = "deployment";
const DC_LABEL: &str = "deploymentconfig";

/// The DeploymentConfig resource, `apps.openshift.io/v1`.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.openshift.io", "v1", "DeploymentConfig"),
        "deploymentconfigs",
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    replicas: Option<i32>,
    selector: Option<BTreeMap<String, String>>,
    template: Option<PodTemplateSpec>,
    paused: Option<bool>,
    triggers: Option<Vec<Value>>,
    strategy: Option<Value>,
    min_ready_seconds: Option<i32>,
}

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let resource = resource();
    let stream = Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        watcher::Config::default(),
        resource,
    )
    .owns(
        Api::<ReplicationController>::all(client),
        watcher::Config::default(),
    )
    .run(
        |dc, ctx| async move { reconcile(dc, ctx).await.map_err(Failure) },
        |dc, error, ctx| reconcile::retry(dc, error, ctx),
        ctx,
    );
    reconcile::drive("deploymentconfig", stream).await
}

async fn reconcile(dc: Arc<DynamicObject>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    if dc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = dc.namespace().unwrap_or_default();
    let name = dc.name_any();
    let spec: Spec = serde_json::from_value(dc.data["spec"].clone())
        .map_err(|error| anyhow::anyhow!("DeploymentConfig {name}: spec: {error}"))?;
    let Some(template) = spec.template.clone() else {
        anyhow::bail!("DeploymentConfig {name} has no spec.template");
    };
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let owner = dc.controller_owner_ref(&resource()).unwrap_or_default();
    let rcs_api: Api<ReplicationController> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut rcs: Vec<ReplicationController> = rcs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rc| owners::controller_uid(rc) == Some(owner.uid.as_str()))
        .collect();
    rcs.sort_by_key(version_of);
    let mut version = dc.data["status"]["latestVersion"].as_i64().unwrap_or(0);
    let config_change = spec.triggers.as_ref().is_none_or(|triggers| {
        triggers
            .iter()
            .any(|trigger| trigger["type"] == "ConfigChange")
    });
    let latest = rcs
        .iter()
        .find(|rc| rc.name_any() == format!("{name}-{version}"))
        .cloned();
    let dc_api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource());
    let outdated = latest.as_ref().is_none_or(|rc| {
        rc.spec
            .as_ref()
            .and_then(|spec| spec.template.as_ref())
            .is_none_or(|made| {
                !reconcile::same_template(
                    made,
                    &template,
                    &[
                        DEPLOYMENT_LABEL,
                        DC_LABEL,
                        LATEST_VERSION,
                        DC_NAME,
                        DEPLOYMENT_NAME,
                    ],
                )
            })
    });
    if spec.paused != Some(true) && config_change && outdated {
        if latest.is_some() || version == 0 {
            // The version is recorded before its RC is made, so that a
            // crash in between does not make two.
            version += 1;
            let patch = json!({"status": {"latestVersion": version}});
            dc_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let recreate = spec
            .strategy
            .as_ref()
            .is_some_and(|s| s["type"] == "Recreate");
        let rc = new_rc(
            &dc,
            &spec,
            &template,
            owner,
            version,
            if recreate { 0 } else { replicas },
        );
        match rcs_api.create(&PostParams::default(), &rc).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        return Ok(Action::requeue(reconcile::RETRY));
    }
    let Some(latest) = latest else {
        write_dc_status(&dc_api, &dc, version, replicas, &rcs, None).await?;
        return Ok(Action::requeue(reconcile::RESYNC));
    };
    let old: Vec<&ReplicationController> =
        rcs.iter().filter(|rc| rc.uid() != latest.uid()).collect();
    let recreate = spec
        .strategy
        .as_ref()
        .is_some_and(|s| s["type"] == "Recreate");
    let available = |rc: &ReplicationController| {
        rc.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    };
    let old_running = old
        .iter()
        .any(|rc| rc.status.as_ref().map_or(0, |s| s.replicas) > 0);
    if recreate {
        for rc in &old {
            scale(&rcs_api, rc, 0).await?;
        }
        if !old_running {
            scale(&rcs_api, &latest, replicas).await?;
        }
    } else {
        scale(&rcs_api, &latest, replicas).await?;
        if available(&latest) >= replicas {
            for rc in &old {
                scale(&rcs_api, rc, 0).await?;
            }
        }
    }
    let complete = available(&latest) >= replicas
        && latest.status.as_ref().map_or(0, |s| s.replicas) == replicas
        && !old_running;
    let phase = if complete { "Complete" } else { "Running" };
    if latest.annotations().get(PHASE).map(String::as_str) != Some(phase) {
        let patch = json!({"metadata": {"annotations": {PHASE: phase}}});
        rcs_api
            .patch(
                &latest.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    write_dc_status(
        &dc_api,
        &dc,
        version,
        replicas,
        &rcs,
        Some((&latest, complete)),
    )
    .await?;
    Ok(Action::requeue(reconcile::RESYNC))
}

fn version_of(rc: &ReplicationController) -> i64 {
    rc.annotations()
        .get(LATEST_VERSION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The RC of `version`.
fn new_rc(
    dc: &DynamicObject,
    spec: &Spec,
    template: &PodTemplateSpec,
    owner: OwnerReference,
    version: i64,
    replicas: i32,
) -> ReplicationController {
    let name = dc.name_any();
    let rc_name = format!("{name}-{version}");
    let identity = BTreeMap::from([
        (DEPLOYMENT_LABEL.to_string(), rc_name.clone()),
        (DC_LABEL.to_string(), name.clone()),
    ]);
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.extend(identity.clone());
    meta.labels = Some(labels.clone());
    let mut annotations = meta.annotations.clone().unwrap_or_default();
    annotations.extend([
        (LATEST_VERSION.to_string(), version.to_string()),
        (DC_NAME.to_string(), name.clone()),
        (DEPLOYMENT_NAME.to_string(), rc_name.clone()),
    ]);
    meta.annotations = Some(annotations);
    let mut selector = spec
        .selector
        .clone()
        .filter(|selector| !selector.is_empty())
        .unwrap_or_else(|| {
            template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default()
        });
    selector.extend(identity);
    let mut rc_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    rc_labels.insert(DC_NAME.to_string(), name.clone());
    ReplicationController {
        metadata: ObjectMeta {
            name: Some(rc_name),
            namespace: dc.namespace(),
            labels: Some(rc_labels),
            annotations: Some(BTreeMap::from([
                (DC_NAME.to_string(), name),
                (LATEST_VERSION.to_string(), version.to_string()),
                (PHASE.to_string(), "New".to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicationControllerSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector: Some(selector),
            template: Some(template),
        }),
        status: None,
    }
}

async fn scale(
    api: &Api<ReplicationController>,
    rc: &ReplicationController,
    replicas: i32,
) -> anyhow::Result<()> {
    if rc.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(
        &rc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn write_dc_status(
    api: &Api<DynamicObject>,
    dc: &DynamicObject,
    version: i64,
    replicas: i32,
    rcs: &[ReplicationController],
    latest: Option<(&ReplicationController, bool)>,
) -> anyhow::Result<()> {
    let sum = |field: fn(&ReplicationController) -> i32| rcs.iter().map(field).sum::<i32>();
    let total = sum(|rc| rc.status.as_ref().map_or(0, |s| s.replicas));
    let available = sum(|rc| {
        rc.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    });
    let ready = sum(|rc| {
        rc.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let updated = latest.map_or(0, |(rc, _)| rc.status.as_ref().map_or(0, |s| s.replicas));
    let now = jiff_now();
    let mut conditions = vec![json!({
        "type": "Available",
        "status": if available >= replicas { "True" } else { "False" },
        "reason": if available >= replicas { "" } else { "MinimumReplicasUnavailable" },
        "message": if available >= replicas { "Deployment config has minimum availability." } else { "Deployment config does not have minimum availability." },
        "lastUpdateTime": now, "lastTransitionTime": now,
    })];
    if let Some((rc, complete)) = latest {
        let (reason, message) = if complete {
            (
                "NewReplicationControllerAvailable",
                format!(
                    "replication controller {:?} successfully rolled out",
                    rc.name_any()
                ),
            )
        } else {
            (
                "ReplicationControllerUpdated",
                format!("replication controller {:?} is progressing", rc.name_any()),
            )
        };
        conditions.push(
            json!({"type": "Progressing", "status": "True", "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}),
        );
    }
    // Conditions already there keep their times.
    let previous = dc.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for condition in &mut conditions {
        if let Some(old) = previous.iter().find(|old| {
            old["type"] == condition["type"]
                && old["status"] == condition["status"]
                && old["reason"] == condition["reason"]
        }) {
            condition["lastUpdateTime"] = old["lastUpdateTime"].clone();
            condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
    let status = json!({
        "latestVersion": version,
        "observedGeneration": dc.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "readyReplicas": ready,
        "unavailableReplicas": (total - available).max(0),
        "conditions": conditions,
    });
    reconcile::write_status(api, dc, status).await
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
