//! What a registered cluster holds that a plan may name: its namespaces,
//! and their PVCs with size, storage class, access modes and the node a
//! ReadWriteOnce volume is pinned to.
//!
//! The user's token is good for the host cluster only. So the user must
//! first be allowed to read the MigrationCluster (a GET with their token),
//! and the lists are then made with the controller's stored credential for
//! that cluster, as MTC's console does. Anyone who may read a
//! MigrationCluster therefore sees the names, sizes and classes of every
//! namespace's PVCs on it; nothing else (no contents, no Secrets) is read.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt as _;
use serde::{Deserialize, Serialize};

use super::auth::User;
use super::error::ApiError;
use super::Console;
use crate::controller::cluster::{self, MigrationCluster};
use crate::plan::check_dns_label;

/// A PVC as the plan form and the plan page show it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcInfo {
    pub namespace: String,
    pub name: String,
    /// The capacity it was bound with, else the size it requests.
    pub size: Option<String>,
    pub storage_class: Option<String>,
    pub access_modes: Vec<String>,
    pub volume_mode: Option<String>,
    /// Where a pod that mounts it runs: for a ReadWriteOnce volume, the
    /// node it is attached to (and a transfer pod must run on).
    pub node: Option<String>,
}

/// A client of registered cluster `name`, as the controller: after
/// checking that the user may read the MigrationCluster.
pub async fn registered(
    console: &Console,
    user: &User,
    name: &str,
) -> Result<kube::Client, ApiError> {
    let namespace = console.namespace();
    let cluster = Api::<MigrationCluster>::namespaced(user.client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| ApiError::kube(&format!("reading MigrationCluster {name}"), e))?;
    cluster::connect(&cluster.spec, namespace, &console.inner.host)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("connecting to cluster {name}: {e}"),
            )
        })
}

/// The names of cluster `name`'s namespaces, sorted.
pub async fn namespace_names(client: kube::Client, name: &str) -> Result<Vec<String>, ApiError> {
    let list = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError::kube(&format!("listing the namespaces of cluster {name}"), e))?;
    let mut names: Vec<String> = list.items.iter().map(|ns| ns.name_any()).collect();
    names.sort();
    Ok(names)
}

/// The PVCs of `namespaces` on a cluster, in namespace then name order.
pub async fn pvcs_of(
    client: &kube::Client,
    namespaces: &[String],
) -> Result<Vec<PvcInfo>, ApiError> {
    let mut all = Vec::new();
    for namespace in namespaces {
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| ApiError::kube(&format!("listing PVCs of namespace {namespace}"), e))?;
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| ApiError::kube(&format!("listing pods of namespace {namespace}"), e))?;
        let nodes = nodes_by_claim(&pods.items);
        let mut infos: Vec<PvcInfo> = claims
            .items
            .iter()
            .map(|claim| describe(claim, &nodes))
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(infos);
    }
    Ok(all)
}

/// The node of each claim a scheduled, unfinished pod mounts.
fn nodes_by_claim(pods: &[Pod]) -> BTreeMap<String, String> {
    let mut nodes = BTreeMap::new();
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        let Some(spec) = pod.spec.as_ref().filter(|_| !finished) else {
            continue;
        };
        let Some(node) = &spec.node_name else {
            continue;
        };
        for volume in spec.volumes.iter().flatten() {
            if let Some(claim) = &volume.persistent_volume_claim {
                nodes.insert(claim.claim_name.clone(), node.clone());
            }
        }
    }
    nodes
}

fn describe(claim: &PersistentVolumeClaim, nodes: &BTreeMap<String, String>) -> PvcInfo {
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let name = claim.name_any();
    PvcInfo {
        namespace: claim.namespace().unwrap_or_default(),
        node: nodes.get(&name).cloned(),
        name,
        size: capacity.or(requested).map(|q| q.0.clone()),
        storage_class: spec.storage_class_name,
        access_modes: spec.access_modes.unwrap_or_default(),
        volume_mode: spec.volume_mode,
    }
}

/// `GET /api/clusters/NAME/namespaces`.
pub async fn namespaces(
    State(console): State<Console>,
    user: User,
    Path(name): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    let client = registered(&console, &user, &name).await?;
    Ok(Json(namespace_names(client, &name).await?))
}

#[derive(Deserialize)]
pub struct PvcQuery {
    /// Comma-separated.
    namespaces: String,
}

/// `GET /api/clusters/NAME/pvcs?namespaces=a,b`.
pub async fn pvcs(
    State(console): State<Console>,
    user: User,
    Path(name): Path<String>,
    Query(query): Query<PvcQuery>,
) -> Result<Json<Vec<PvcInfo>>, ApiError> {
    let namespaces: Vec<String> = query
        .namespaces
        .split(',')
        .filter(|ns| !ns.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = namespaces.iter().find(|ns| check_dns_label(ns).is_err()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{bad:?} is not a namespace name"),
        ));
    }
    let client = registered(&console, &user, &name).await?;
    Ok(Json(pvcs_of(&client, &namespaces).await?))
}
