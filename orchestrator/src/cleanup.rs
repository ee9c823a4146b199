//! Removal of every transfer object a migration created (DESIGN.md stage
//! 7): pods, hook Jobs, Secrets, Services, Routes, Ingresses, and the receiver's
//! ServiceAccount and RoleBinding carrying the
//! migration's [`TRANSFER_LABEL`], on both sides. Destination namespaces
//! and PVCs never carry that label, so they and their data stay.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::clusters::Cluster;
use crate::kubeops::status_code;
use crate::manifests::route_resource;
use crate::names::TRANSFER_LABEL;
use crate::plan::Plan;

/// How long to wait for deleted pods to be gone.
const POD_GRACE: Duration = Duration::from_secs(60);

/// Deletes the migration's transfer objects in the plan's namespaces of
/// both clusters. Returns what could not be removed, as
/// `"<side>: <kind> <ns>/<name>: <why>"`.
pub async fn run(plan: &Plan, source: &Cluster, destination: &Cluster) -> Vec<String> {
    let selector = selector(plan);
    let mut leftovers = Vec::new();
    // Transfer objects live in the plan's namespaces; hook Jobs in the
    // namespaces their hooks name.
    let mut places = plan_namespaces(plan);
    for hook in &plan.hooks {
        places.insert((hook.cluster.as_str(), &hook.namespace));
    }
    for (side, ns) in places {
        let cluster = if side == "source" {
            source
        } else {
            destination
        };
        let client = &cluster.client;
        let mut left = Vec::new();
        left.extend(delete_all(Api::<Job>::namespaced(client.clone(), ns), "job", &selector).await);
        left.extend(delete_all(Api::<Pod>::namespaced(client.clone(), ns), "pod", &selector).await);
        left.extend(
            delete_all(
                Api::<Secret>::namespaced(client.clone(), ns),
                "secret",
                &selector,
            )
            .await,
        );
        left.extend(
            delete_all(
                Api::<Service>::namespaced(client.clone(), ns),
                "service",
                &selector,
            )
            .await,
        );
        left.extend(
            delete_all(
                Api::<Ingress>::namespaced(client.clone(), ns),
                "ingress",
                &selector,
            )
            .await,
        );
        let routes = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &route_resource());
        left.extend(delete_all(routes, "route", &selector).await);
        left.extend(wait_pods_gone(Api::<Pod>::namespaced(client.clone(), ns), &selector).await);
        // The receiver's own identity (OpenShift), once no pod uses it.
        let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns);
        left.extend(delete_all(bindings, "rolebinding", &selector).await);
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
        left.extend(delete_all(accounts, "serviceaccount", &selector).await);
        leftovers.extend(left.into_iter().map(|l| format!("{}: {l}", cluster.side)));
    }
    leftovers
}

/// Deletes the migration's senders and receivers and waits until they are
/// gone, so that their volumes are detached. A ReadWriteOnce volume is
/// attached to one node at a time: a restored application scheduled to
/// another node than its receiver would otherwise wait in
/// ContainerCreating (Multi-Attach) until the final cleanup, which only
/// comes after the application is verified. Returns what is left, as
/// [`run`] does.
pub async fn release_volumes(plan: &Plan, source: &Cluster, destination: &Cluster) -> Vec<String> {
    let selector = selector(plan);
    let mut leftovers = Vec::new();
    for (side, ns) in plan_namespaces(plan) {
        let cluster = if side == "source" {
            source
        } else {
            destination
        };
        let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
        let mut left = delete_all(pods.clone(), "pod", &selector).await;
        left.extend(wait_pods_gone(pods, &selector).await);
        leftovers.extend(left.into_iter().map(|l| format!("{}: {l}", cluster.side)));
    }
    leftovers
}

/// The label selector of the migration's transfer objects.
fn selector(plan: &Plan) -> String {
    format!("{TRANSFER_LABEL}={}", plan.name)
}

/// The plan's namespaces, as `(side, namespace)`.
fn plan_namespaces(plan: &Plan) -> BTreeSet<(&str, &str)> {
    let mut places = BTreeSet::new();
    for mapping in &plan.namespaces {
        places.insert(("source", mapping.source.as_str()));
        places.insert(("destination", mapping.destination.as_str()));
    }
    places
}

/// Deletes every object of `api` matching `selector`. A kind the cluster
/// does not serve (no Routes on plain Kubernetes) or a namespace that does
/// not exist means there is nothing to delete.
async fn delete_all<K>(api: Api<K>, kind: &str, selector: &str) -> Vec<String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => list,
        Err(e) if status_code(&e) == Some(404) => return Vec::new(),
        Err(e) => return vec![format!("{kind}s matching {selector}: cannot list: {e}")],
    };
    let mut left = Vec::new();
    for object in list.items {
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let ns = meta.namespace.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => left.push(format!("{kind} {ns}/{name}: {e}")),
        }
    }
    left
}

async fn wait_pods_gone(pods: Api<Pod>, selector: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + POD_GRACE;
    loop {
        let remaining = match pods.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list.items,
            Err(e) if status_code(&e) == Some(404) => return Vec::new(),
            Err(e) => return vec![format!("pods matching {selector}: cannot list: {e}")],
        };
        if remaining.is_empty() {
            return Vec::new();
        }
        if tokio::time::Instant::now() >= deadline {
            return remaining
                .iter()
                .map(|p| {
                    format!(
                        "pod {}/{}: still terminating after {}s",
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default(),
                        POD_GRACE.as_secs()
                    )
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
