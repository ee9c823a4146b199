//! The ReplicationController controller: a ReplicaSet with an equality
//! selector (defaulting to the template's labels, as the API server
//! defaults it), through the same core in `replicas`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};

use super::owners;
use super::pods::equality_selector;
use super::reconcile::{self, Failure};
use super::replicas::{self, Wanted};
use crate::context::ClusterContext;

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let stream = Controller::new(
        Api::<ReplicationController>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(
        |rc, ctx| async move { reconcile(rc, ctx).await.map_err(Failure) },
        reconcile::retry,
        ctx,
    );
    reconcile::drive("replicationcontroller", stream).await
}

async fn reconcile(
    rc: Arc<ReplicationController>,
    ctx: Arc<ClusterContext>,
) -> anyhow::Result<Action> {
    let namespace = rc.namespace().unwrap_or_default();
    let name = rc.name_any();
    let spec = rc.spec.clone().unwrap_or_default();
    let Some(template) = spec.template.as_ref() else {
        anyhow::bail!("ReplicationController {name} has no spec.template");
    };
    let selector = spec
        .selector
        .clone()
        .filter(|selector| !selector.is_empty())
        .or_else(|| {
            template
                .metadata
                .as_ref()
                .and_then(|meta| meta.labels.clone())
        })
        .unwrap_or_default();
    let selector = equality_selector(selector);
    let wanted = Wanted {
        namespace: &namespace,
        name: &name,
        owner: owners::controller_ref(rc.as_ref()),
        deleting: rc.metadata.deletion_timestamp.is_some(),
        replicas: spec.replicas.unwrap_or(1),
        selector: &selector,
        template,
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (counts, later) = replicas::sync(&ctx, &wanted).await?;
    let api: Api<ReplicationController> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile::write_status(&api, rc.as_ref(), counts.status(rc.metadata.generation)).await?;
    Ok(Action::requeue(later.unwrap_or(reconcile::RESYNC)))
}
