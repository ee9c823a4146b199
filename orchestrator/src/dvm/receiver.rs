//! The destination side of one namespace: the receiver's Service, its
//! endpoint (Route, Ingress, LoadBalancer or NodePort), its certificate,
//! and the receiver pod itself.
//!
//! The order matters: the endpoint's address is known only once the
//! cluster has admitted it, and the receiver's certificate must name that
//! address, so the pod comes last.

use anyhow::{anyhow, bail, Context as _};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DynamicObject, ListParams};
use kube::Api;
use mover::certs::{Authority, Validity};

use crate::clusters::Cluster;
use crate::kubeops::{apply, delete_and_wait, poll};
use crate::manifests::{self, ReceiverSetup, Target, VolumeMode};
use crate::names::{receiver_host_label, router_cannot_name_receiver, RECEIVER};
use crate::plan::{EndpointType, Plan};
use crate::security::{ANYUID_ROLE, ANYUID_SCC};

/// Starts the receiver for `pvcs` in destination namespace `ns` and
/// returns how senders reach it.
pub async fn start(
    plan: &Plan,
    destination: &Cluster,
    ns: &str,
    pvcs: &[(String, VolumeMode)],
    setup: &ReceiverSetup,
    ca: &Authority,
    validity: &Validity,
) -> anyhow::Result<Target> {
    let client = destination.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    apply(
        &services,
        &manifests::receiver_service(ns, &plan.name, plan.endpoint),
    )
    .await
    .with_context(|| format!("creating Service {ns}/{RECEIVER}"))?;
    let (target, sans) = endpoint(plan, destination, ns).await?;

    let server = ca
        .server(&sans, *validity)
        .with_context(|| format!("issuing the receiver certificate for {}", sans.join(", ")))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    apply(
        &secrets,
        &manifests::receiver_secret(ns, &plan.name, ca.cert_pem(), &server),
    )
    .await
    .with_context(|| format!("creating Secret {ns}/{RECEIVER}"))?;

    if setup.service_account().is_some() {
        grant_anyuid(plan, destination, ns).await?;
    }

    // A receiver left by an interrupted run has the old certificate.
    let pods: Api<Pod> = Api::namespaced(client, ns);
    delete_and_wait(&pods, RECEIVER, plan.endpoint_timeout).await?;
    pods.create(
        &Default::default(),
        &manifests::receiver_pod(ns, plan, pvcs, setup),
    )
    .await
    .with_context(|| format!("creating pod {ns}/{RECEIVER}"))?;
    let started = poll(&pods, RECEIVER, plan.endpoint_timeout, "to start", |pod| {
        pod.map(receiver_started)
            .unwrap_or(Some(Err("the pod disappeared".to_string())))
    })
    .await
    .with_context(|| format!("receiver pod {ns}/{RECEIVER} in {}", destination.describe()))?;
    started.map_err(|why| {
        anyhow!(
            "receiver pod {ns}/{RECEIVER} in {} did not start: {why}",
            destination.describe()
        )
    })?;
    Ok(target)
}

/// Gives the receiver its own service account, allowed to use the
/// `anyuid` SCC: root is what keeps every file's owner (preflight checked
/// the user may grant it; cleanup removes both).
async fn grant_anyuid(plan: &Plan, destination: &Cluster, ns: &str) -> anyhow::Result<()> {
    let client = destination.client.clone();
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &manifests::receiver_service_account(ns, &plan.name),
    )
    .await
    .with_context(|| format!("creating ServiceAccount {ns}/{RECEIVER}"))?;
    apply(
        &Api::<RoleBinding>::namespaced(client, ns),
        &manifests::receiver_scc_binding(ns, &plan.name),
    )
    .await
    .with_context(|| {
        format!("granting ServiceAccount {ns}/{RECEIVER} the SCC {ANYUID_SCC} ({ANYUID_ROLE})")
    })?;
    Ok(())
}

/// The domain Routes get hosts in: the plan's `ingressDomain`, else the
/// cluster's own (OpenShift's `ingresses.config.openshift.io/cluster`).
async fn apps_domain(plan: &Plan, destination: &Cluster) -> anyhow::Result<String> {
    if let Some(domain) = &plan.ingress_domain {
        return Ok(domain.clone());
    }
    let config = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "config.openshift.io",
        "v1",
        "Ingress",
    ));
    let ingresses: Api<DynamicObject> = Api::all_with(destination.client.clone(), &config);
    let cluster = ingresses.get("cluster").await.ok();
    cluster
        .and_then(|c| c.data["spec"]["domain"].as_str().map(String::from))
        .ok_or_else(|| {
            anyhow!(
                "{} does not say its apps domain (ingresses.config.openshift.io/cluster) and \
                 the plan names none: set ingressDomain so that receivers of long namespace \
                 names get valid Route hosts",
                destination.describe()
            )
        })
}

/// `Some(Ok)` once the receiver runs, `Some(Err)` when it cannot (bad
/// image, crashed, unschedulable volume), `None` while it is on its way.
fn receiver_started(pod: &Pod) -> Option<Result<(), String>> {
    let status = pod.status.as_ref()?;
    if let Some(problem) = super::sender::container_problem(pod) {
        return Some(Err(problem));
    }
    match status.phase.as_deref() {
        Some("Running") => Some(Ok(())),
        Some("Failed") | Some("Succeeded") => Some(Err(format!(
            "it ended ({})",
            super::sender::termination(pod)
                .map(|t| t.1)
                .unwrap_or_else(|| "no reason given".into())
        ))),
        _ => None,
    }
}

/// Creates the endpoint of the plan's type and waits for its address:
/// the sender's target and the names the server certificate must carry.
async fn endpoint(
    plan: &Plan,
    destination: &Cluster,
    ns: &str,
) -> anyhow::Result<(Target, Vec<String>)> {
    let client = destination.client.clone();
    let service_dns = vec![
        format!("{RECEIVER}.{ns}.svc"),
        format!("{RECEIVER}.{ns}.svc.cluster.local"),
    ];
    let named = |host: String, port: u16| {
        let mut sans = vec![host.clone()];
        sans.extend(service_dns.clone());
        (
            Target {
                connect: format!("{host}:{port}"),
                server_name: host,
            },
            sans,
        )
    };
    match plan.endpoint {
        EndpointType::Route => {
            // The router would generate `mover-receiver-<ns>.<domain>`; when a
            // long namespace makes that an invalid host, name one ourselves.
            let host = if router_cannot_name_receiver(ns) {
                let domain = apps_domain(plan, destination).await?;
                Some(format!("{}.{domain}", receiver_host_label(ns)))
            } else {
                None
            };
            let routes: Api<DynamicObject> =
                Api::namespaced_with(client, ns, &manifests::route_resource());
            apply(
                &routes,
                &manifests::receiver_route(ns, &plan.name, host.as_deref()),
            )
            .await
            .with_context(|| format!("creating Route {ns}/{RECEIVER}"))?;
            let admitted = poll(
                &routes,
                RECEIVER,
                plan.endpoint_timeout,
                "to be admitted",
                |route| route.and_then(route_admission),
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "Route {ns}/{RECEIVER} in {}: {e}. Check that the cluster's router admits \
                     passthrough Routes (`oc -n {ns} get route {RECEIVER} -o yaml`, look at \
                     status.ingress) and that route.openshift.io is served",
                    destination.describe()
                )
            })?;
            let host = admitted.map_err(|why| {
                anyhow!(
                    "Route {ns}/{RECEIVER} in {} was rejected by the router: {why}",
                    destination.describe()
                )
            })?;
            Ok(named(host, 443))
        }
        EndpointType::Ingress => {
            let domain = plan
                .ingress_domain
                .as_deref()
                .ok_or_else(|| anyhow!("endpoint ingress needs ingressDomain"))?;
            let host = format!("{}.{domain}", receiver_host_label(ns));
            let ingresses: Api<Ingress> = Api::namespaced(client, ns);
            apply(
                &ingresses,
                &manifests::receiver_ingress(ns, &plan.name, &host),
            )
            .await
            .with_context(|| format!("creating Ingress {ns}/{RECEIVER}"))?;
            Ok(named(host, 443))
        }
        EndpointType::Loadbalancer => {
            let services: Api<Service> = Api::namespaced(client, ns);
            let address = poll(
                &services,
                RECEIVER,
                plan.endpoint_timeout,
                "to get a load balancer address",
                |svc| {
                    let ingress = svc?
                        .status
                        .as_ref()?
                        .load_balancer
                        .as_ref()?
                        .ingress
                        .as_ref()?
                        .first()?
                        .clone();
                    ingress.ip.or(ingress.hostname)
                },
            )
            .await
            .with_context(|| {
                format!(
                    "Service {ns}/{RECEIVER} (LoadBalancer) in {}: does the cluster provision \
                     load balancers?",
                    destination.describe()
                )
            })?;
            Ok(named(address, 443))
        }
        EndpointType::Nodeport => {
            let services: Api<Service> = Api::namespaced(client.clone(), ns);
            let node_port = poll(
                &services,
                RECEIVER,
                plan.endpoint_timeout,
                "to get a node port",
                |svc| svc?.spec.as_ref()?.ports.as_ref()?.first()?.node_port,
            )
            .await?;
            let port = u16::try_from(node_port).map_err(|_| {
                anyhow!("Service {ns}/{RECEIVER}: node port {node_port} out of range")
            })?;
            let addresses = node_addresses(&client).await?;
            let first = addresses.first().cloned().ok_or_else(|| {
                anyhow!(
                    "{} reports no node addresses for a NodePort endpoint",
                    destination.describe()
                )
            })?;
            Ok((
                Target {
                    connect: format!("{first}:{port}"),
                    server_name: first,
                },
                addresses,
            ))
        }
    }
}

/// The host of an admitted Route, or why the router refused it.
fn route_admission(route: &DynamicObject) -> Option<Result<String, String>> {
    let ingresses = route.data.get("status")?.get("ingress")?.as_array()?;
    for ingress in ingresses {
        let conditions = ingress.get("conditions").and_then(|c| c.as_array());
        for condition in conditions.into_iter().flatten() {
            if condition.get("type").and_then(|t| t.as_str()) != Some("Admitted") {
                continue;
            }
            match condition.get("status").and_then(|s| s.as_str()) {
                Some("True") => {
                    let host = ingress
                        .get("host")
                        .and_then(|h| h.as_str())
                        .or_else(|| route.data.get("spec")?.get("host")?.as_str())?;
                    return Some(Ok(host.to_string()));
                }
                Some("False") => {
                    let field = |name: &str| {
                        condition
                            .get(name)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    return Some(Err(format!("{} {}", field("reason"), field("message"))
                        .trim()
                        .to_string()));
                }
                _ => {}
            }
        }
    }
    None
}

/// The nodes' addresses, external ones first.
async fn node_addresses(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes for a NodePort endpoint")?;
    let mut external = Vec::new();
    let mut internal = Vec::new();
    for node in nodes.items {
        for address in node.status.and_then(|s| s.addresses).unwrap_or_default() {
            match address.type_.as_str() {
                "ExternalIP" => external.push(address.address),
                "InternalIP" => internal.push(address.address),
                _ => {}
            }
        }
    }
    external.extend(internal);
    external.dedup();
    if external.is_empty() {
        bail!("no node has an ExternalIP or InternalIP address");
    }
    Ok(external)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(status: serde_json::Value) -> DynamicObject {
        DynamicObject::new(RECEIVER, &manifests::route_resource()).data(json!({
            "spec": {"host": "spec-host.example.com"},
            "status": status,
        }))
    }

    #[test]
    fn route_admission_reads_host_or_rejection() {
        assert_eq!(route_admission(&route(json!({}))), None);
        let admitted = route(json!({"ingress": [{
            "host": "r.apps.example.com",
            "conditions": [{"type": "Admitted", "status": "True"}]
        }]}));
        assert_eq!(
            route_admission(&admitted),
            Some(Ok("r.apps.example.com".into()))
        );
        let rejected = route(json!({"ingress": [{
            "conditions": [{"type": "Admitted", "status": "False",
                            "reason": "HostAlreadyClaimed", "message": "taken by ns/other"}]
        }]}));
        assert_eq!(
            route_admission(&rejected),
            Some(Err("HostAlreadyClaimed taken by ns/other".into()))
        );
    }
}
