//! Server-side dry runs (`dryRun=All`) of the objects a migration will
//! create, on both sides: each cluster's own admission chain (Pod
//! Security, SCCs, ResourceQuotas, LimitRanges, webhooks) judges the real
//! objects before anything exists, and every refusal is listed with the
//! cluster's own words.
//!
//! What cannot be judged before the run is left out: objects in a
//! destination namespace that does not exist yet (its creation is judged
//! instead), and a receiver that runs as its own service account, which
//! exists only once the run grants it its SCC.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use kube::api::PostParams;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Inventory, NamespaceInventory};
use crate::clusters::Cluster;
use crate::kubeops::{status_code, FIELD_MANAGER};
use crate::manifests::{self, Target};
use crate::plan::Plan;

/// Where dry-run senders "connect": nothing is dialled in a dry run.
const NOWHERE: &str = "preflight.invalid";

/// Dry-runs every object of `inventory` on its side; refusals go to
/// `problems`.
pub async fn check(
    plan: &Plan,
    inventory: &Inventory,
    source: &Cluster,
    destination: &Cluster,
    problems: &mut Vec<String>,
) {
    for ns in &inventory.namespaces {
        let copied: Vec<&super::PvcInventory> = ns
            .pvcs
            .iter()
            .filter(|p| plan.stage || !p.finished())
            .collect();
        if copied.is_empty() {
            continue;
        }
        destination_side(plan, ns, &copied, destination, problems).await;
        let target = Target {
            connect: format!("{NOWHERE}:443"),
            server_name: NOWHERE.into(),
        };
        let pods = Api::<Pod>::namespaced(source.client.clone(), &ns.mapping.source);
        for pvc in copied {
            let placement = manifests::placement(&pvc.source, &ns.pods, ns.source_admission);
            let sender = manifests::sender_pod(
                &ns.mapping.source,
                pvc.name(),
                pvc.mode(),
                plan,
                &placement,
                &target,
            );
            refused(&pods, &sender, source, problems).await;
        }
    }
}

async fn destination_side(
    plan: &Plan,
    ns: &NamespaceInventory,
    copied: &[&super::PvcInventory],
    destination: &Cluster,
    problems: &mut Vec<String>,
) {
    let dest = &ns.mapping.destination;
    let client = destination.client.clone();
    if !ns.destination_exists {
        let namespace = manifests::destination_namespace(&ns.source, dest, &plan.name);
        refused(
            &Api::<Namespace>::all(client),
            &namespace,
            destination,
            problems,
        )
        .await;
        return;
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), dest);
    for pvc in copied.iter().filter(|p| p.destination.is_none()) {
        let claim = manifests::destination_pvc(&pvc.source, dest, plan);
        refused(&claims, &claim, destination, problems).await;
    }
    let services = Api::<Service>::namespaced(client.clone(), dest);
    let service = manifests::receiver_service(dest, &plan.name, plan.endpoint);
    refused(&services, &service, destination, problems).await;
    if ns.receiver.service_account().is_none() {
        let names: Vec<_> = copied
            .iter()
            .map(|p| (p.name().to_string(), p.mode()))
            .collect();
        let receiver = manifests::receiver_pod(dest, plan, &names, &ns.receiver);
        refused(
            &Api::<Pod>::namespaced(client, dest),
            &receiver,
            destination,
            problems,
        )
        .await;
    }
}

/// Dry-runs the creation of `object`; a refusal other than "already
/// exists" (the run replaces or keeps it) becomes a problem.
async fn refused<K>(api: &Api<K>, object: &K, cluster: &Cluster, problems: &mut Vec<String>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.create(&params, object).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => {
            let meta = object.meta();
            let name = match &meta.namespace {
                Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
                None => meta.name.clone().unwrap_or_default(),
            };
            let message = match &e {
                kube::Error::Api(status) => status.message.clone(),
                other => other.to_string(),
            };
            problems.push(format!(
                "{}: would refuse {} {name}: {message}",
                cluster.describe(),
                K::kind(&()),
            ));
        }
    }
}
