//! The StatefulSet controller: pods `<sts>-0` to `<sts>-N-1` with stable
//! names, hostnames (`spec.hostname`, and `spec.subdomain` = serviceName)
//! and claims: each volumeClaimTemplate gives ordinal i the PVC
//! `<template>-<sts>-<i>`, created if missing, mounted in place of the
//! template's volume of that name, and kept on scale-down and deletion
//! (the default Retain retention policy). With OrderedReady (the default)
//! a pod is made only once every lower ordinal is Running and Ready, and
//! scale-down removes the highest ordinal first, one at a time, while the
//! others are healthy; Parallel does both at once. A template change
//! (revision `<sts>-<hash>`, the pods' `controller-revision-hash` label)
//! is rolled out from the highest ordinal down to the partition.
//! ControllerRevision objects are not kept (the emulator does not serve
//! them): the revisions live only in the status and the pods' labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use serde_json::json;

use super::owners;
use super::pods::{self, NewPod};
use super::reconcile::{self, Failure};
use crate::context::ClusterContext;

const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const REVISION_LABEL: &str = "controller-revision-hash";

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let stream = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(
        |sts, ctx| async move { reconcile(sts, ctx).await.map_err(Failure) },
        reconcile::retry,
        ctx,
    );
    reconcile::drive("statefulset", stream).await
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let spec = &sts.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let update_revision = format!("{name}-{}", reconcile::template_hash(&spec.template));
    let current_revision = sts
        .status
        .as_ref()
        .and_then(|status| status.current_revision.clone())
        .unwrap_or_else(|| update_revision.clone());
    let client = ctx.client.clone();
    let claimed = owners::claim(
        |ns| Api::<Pod>::namespaced(client.clone(), ns),
        &owners::controller_ref(sts.as_ref()),
        false,
        &spec.selector,
        pods::list(&ctx, &namespace).await?,
    )
    .await?;
    let by_ordinal: HashMap<i32, Pod> = claimed
        .into_iter()
        .filter_map(|pod| Some((ordinal_of(&name, &pod.name_any())?, pod)))
        .collect();
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let healthy = |pod: Option<&Pod>| {
        pod.is_some_and(|pod| {
            pods::is_running_and_ready(pod) && pod.metadata.deletion_timestamp.is_none()
        })
    };

    // Create and replace pods of ordinals below `replicas`.
    for ordinal in 0..replicas {
        match by_ordinal.get(&ordinal) {
            None => {
                ensure_claims(&ctx, &sts, ordinal).await?;
                let pod = pod_for(&sts, ordinal, &update_revision);
                match pods::create(&ctx, &pod).await {
                    Ok(_) => {
                        reconcile::event(
                            &ctx,
                            sts.as_ref(),
                            "Normal",
                            "SuccessfulCreate",
                            format!(
                                "create Pod {} in StatefulSet {name} successful",
                                pod.name_any()
                            ),
                        )
                        .await;
                    }
                    Err(error) => {
                        reconcile::event(
                            &ctx,
                            sts.as_ref(),
                            "Warning",
                            "FailedCreate",
                            format!(
                                "create Pod {} in StatefulSet {name} failed error: {error:#}",
                                pod.name_any()
                            ),
                        )
                        .await;
                        return Err(error);
                    }
                }
                if !parallel {
                    break;
                }
            }
            Some(pod) if pods::is_finished(pod) => {
                pods::delete(&ctx, pod).await?;
                if !parallel {
                    break;
                }
            }
            Some(pod) if !parallel && !healthy(Some(pod)) => break,
            Some(_) => {}
        }
    }

    // Scale down from the highest ordinal.
    let mut condemned: Vec<&Pod> = by_ordinal
        .iter()
        .filter(|(ordinal, _)| **ordinal >= replicas)
        .map(|(_, pod)| pod)
        .collect();
    condemned.sort_by_key(|pod| std::cmp::Reverse(ordinal_of(&name, &pod.name_any())));
    let all_healthy = (0..replicas).all(|ordinal| healthy(by_ordinal.get(&ordinal)));
    if parallel {
        for pod in &condemned {
            if pod.metadata.deletion_timestamp.is_none() {
                pods::delete(&ctx, pod).await?;
            }
        }
    } else if let Some(highest) = condemned.first() {
        let others_healthy = condemned[1..].iter().all(|pod| healthy(Some(pod)));
        if highest.metadata.deletion_timestamp.is_none()
            && all_healthy
            && (others_healthy
                || condemned.len() == 1
                || pods::is_running_and_ready(highest)
                || !pods::is_ready(highest))
        {
            pods::delete(&ctx, highest).await?;
            reconcile::event(
                &ctx,
                sts.as_ref(),
                "Normal",
                "SuccessfulDelete",
                format!(
                    "delete Pod {} in StatefulSet {name} successful",
                    highest.name_any()
                ),
            )
            .await;
        }
    }

    // Roll a changed template out, highest ordinal first, one at a time.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|strategy| strategy.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|strategy| strategy.rolling_update.as_ref())
        .and_then(|rolling| rolling.partition)
        .unwrap_or(0);
    let revision = |pod: &Pod| {
        pod.labels()
            .get(REVISION_LABEL)
            .cloned()
            .unwrap_or_default()
    };
    if rolling && all_healthy && condemned.is_empty() {
        let stale = (partition..replicas)
            .rev()
            .filter_map(|ordinal| by_ordinal.get(&ordinal))
            .find(|pod| revision(pod) != update_revision);
        if let Some(pod) = stale {
            pods::delete(&ctx, pod).await?;
        }
    }

    // Status.
    let live: Vec<&Pod> = by_ordinal
        .values()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |filter: &dyn Fn(&Pod) -> bool| {
        i32::try_from(live.iter().filter(|pod| filter(pod)).count()).unwrap_or(0)
    };
    let now = ctx.shared.clock.now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let ready = count(&pods::is_running_and_ready);
    let updated = count(&|pod| revision(pod) == update_revision);
    let mut current = count(&|pod| revision(pod) == current_revision);
    let mut current_revision = current_revision;
    if updated == replicas
        && ready == replicas
        && i32::try_from(live.len()).unwrap_or(0) == replicas
    {
        current_revision = update_revision.clone();
        current = updated;
    }
    let status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": i32::try_from(live.len()).unwrap_or(0),
        "readyReplicas": ready,
        "availableReplicas": count(&|pod| pods::is_available(pod, min_ready, now)),
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": 0,
    });
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, sts.as_ref(), status).await?;
    Ok(Action::requeue(reconcile::RESYNC))
}

/// The ordinal of a pod named `<sts>-<ordinal>`.
fn ordinal_of(sts: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(sts)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

fn claim_name(template: &PersistentVolumeClaim, sts: &str, ordinal: i32) -> String {
    format!("{}-{sts}-{ordinal}", template.name_any())
}

/// Creates the claims of `ordinal` that do not exist yet.
async fn ensure_claims(
    ctx: &ClusterContext,
    sts: &StatefulSet,
    ordinal: i32,
) -> anyhow::Result<()> {
    let namespace = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for template in sts.spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(template, &sts.name_any(), ordinal);
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        let mut labels = template.labels().clone();
        labels.extend(sts.spec.selector.match_labels.clone().unwrap_or_default());
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                reconcile::event(
                    ctx,
                    sts,
                    "Normal",
                    "SuccessfulCreate",
                    format!(
                        "create Claim {name} Pod {}-{ordinal} in StatefulSet {} success",
                        sts.name_any(),
                        sts.name_any()
                    ),
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                reconcile::event(ctx, sts, "Warning", "FailedCreate",
                    format!("create Claim {name} for Pod {}-{ordinal} in StatefulSet {} failed error: {error}", sts.name_any(), sts.name_any())).await;
                return Err(error.into());
            }
        }
    }
    Ok(())
}

/// The pod of `ordinal`: the template with its identity and claims.
fn pod_for(sts: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", sts.name_any());
    let mut template: PodTemplateSpec = sts.spec.template.clone();
    let spec = template.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name.clone());
    spec.subdomain.clone_from(&sts.spec.service_name);
    for claim in sts.spec.volume_claim_templates.iter().flatten() {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|volume| volume.name != claim.name_any());
        volumes.push(Volume {
            name: claim.name_any(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(claim, &sts.name_any(), ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    NewPod {
        template: &template,
        namespace: &sts.namespace().unwrap_or_default(),
        owner: owners::controller_ref(sts),
        name: Some(name.clone()),
        generate_prefix: String::new(),
        extra_labels: BTreeMap::from([
            (POD_NAME_LABEL.to_string(), name),
            (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
            (REVISION_LABEL.to_string(), revision.to_string()),
        ]),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::ordinal_of;

    #[test]
    fn ordinals_are_the_name_suffix() {
        assert_eq!(ordinal_of("db", "db-0"), Some(0));
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        assert_eq!(ordinal_of("db", "db-01"), None);
        assert_eq!(ordinal_of("db", "dbx-1"), None);
        assert_eq!(ordinal_of("db", "db-web-1"), None);
    }
}
