//! The ReplicaSet controller: keeps `spec.replicas` pods from the
//! template (through `replicas`), named `<rs>-<5 characters>` and
//! controlled by the ReplicaSet, and reports replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas and
//! observedGeneration. The pods carry the template's labels, so the
//! `pod-template-hash` a Deployment puts there comes along.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};

use super::owners;
use super::reconcile::{self, Failure};
use super::replicas::{self, Wanted};
use crate::context::ClusterContext;

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let stream = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(
        |rs, ctx| async move { reconcile(rs, ctx).await.map_err(Failure) },
        reconcile::retry,
        ctx,
    );
    reconcile::drive("replicaset", stream).await
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<ClusterContext>) -> anyhow::Result<Action> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let spec = rs.spec.clone();
    let Some(template) = spec.template.as_ref() else {
        anyhow::bail!("ReplicaSet {name} has no spec.template");
    };
    let wanted = Wanted {
        namespace: &namespace,
        name: &name,
        owner: owners::controller_ref(rs.as_ref()),
        deleting: rs.metadata.deletion_timestamp.is_some(),
        replicas: spec.replicas.unwrap_or(1),
        selector: &spec.selector,
        template,
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (counts, later) = replicas::sync(&ctx, &wanted).await?;
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, rs.as_ref(), counts.status(rs.metadata.generation)).await?;
    Ok(Action::requeue(later.unwrap_or(reconcile::RESYNC)))
}
