//! LoadBalancer and NodePort Services: what a cloud load balancer and
//! kube-proxy give them, on the cluster's router address.
//!
//! A LoadBalancer Service gets a listener on `router_ip:<port>` for each of
//! its TCP ports and, once all are bound, `status.loadBalancer.ingress`
//! naming `router_ip`. A NodePort Service gets a listener on
//! `router_ip:<nodePort>` (the router address is the nodes' InternalIP;
//! the API server allocates the node ports).
//! A port that cannot be bound (taken by an older Service, by the Routes
//! listener, or by another process) is logged and the Service gets no
//! ingress address. Connections are forwarded to the Service's endpoints
//! as they are when the connection arrives.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;
use tokio::net::TcpStream;

use super::endpoints::addresses;
use super::{is_not_found, lock, proxy, Router};

/// One Service port's claim on a port of the router address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Claim {
    namespace: String,
    service: String,
    /// The Service port (`spec.ports[].port`) the connections go to.
    service_port: i32,
}

/// The listeners the router holds for Services.
#[derive(Default)]
pub(crate) struct Listeners {
    state: Mutex<ListenerState>,
}

#[derive(Default)]
struct ListenerState {
    /// Router-address port -> the listener serving it.
    bound: HashMap<u16, Bound>,
    /// Ports that could not be bound for a claim, logged once each.
    reported: HashSet<(u16, Claim)>,
}

struct Bound {
    claim: Claim,
    /// Dropping it closes the listener (established connections go on).
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Allocates missing NodePorts, binds and releases listeners, and writes
/// LoadBalancer status. Returns whether every write succeeded.
pub(crate) async fn reconcile(router: &Arc<Router>) -> bool {
    let mut services = router.services.state();
    // Older Services win port conflicts.
    services.sort_by_key(|s| {
        let created = s.metadata.creation_timestamp.clone();
        (created.is_none(), created, s.namespace(), s.name_any())
    });
    let mut complete = true;

    let mut wanted: HashMap<u16, Claim> = HashMap::new();
    let mut unserved: HashSet<(String, String)> = HashSet::new();
    for service in &services {
        for (port, claim) in exposed_ports(service) {
            match wanted.get(&port) {
                Some(owner) if *owner != claim => {
                    report(
                        router,
                        port,
                        &claim,
                        &format!("taken by service {}/{}", owner.namespace, owner.service),
                    );
                    unserved.insert((claim.namespace, claim.service));
                }
                _ => {
                    wanted.insert(port, claim);
                }
            }
        }
    }
    bind_wanted(router, &wanted, &mut unserved);

    for service in services
        .iter()
        .filter(|s| service_type(s) == Some("LoadBalancer"))
    {
        let key = (service.namespace().unwrap_or_default(), service.name_any());
        let served = !unserved.contains(&key) && !exposed_ports(service).is_empty();
        if let Err(error) = write_load_balancer_status(router, service, served).await {
            tracing::warn!(
                "router: writing the status of service {}/{}: {error}",
                key.0,
                key.1
            );
            complete = false;
        }
    }
    complete
}

fn service_type(service: &Service) -> Option<&str> {
    service.spec.as_ref()?.type_.as_deref()
}

/// The router-address ports `service` needs, with the claim for each.
fn exposed_ports(service: &Service) -> Vec<(u16, Claim)> {
    let kind = service_type(service);
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|port| {
            let listen = match kind {
                Some("LoadBalancer") => port.port,
                Some("NodePort") => port.node_port?,
                _ => return None,
            };
            let claim = Claim {
                namespace: service.namespace().unwrap_or_default(),
                service: service.name_any(),
                service_port: port.port,
            };
            Some((u16::try_from(listen).ok()?, claim))
        })
        .collect()
}

/// Logs, once, that `claim` cannot have `port`.
fn report(router: &Router, port: u16, claim: &Claim, why: &str) {
    let mut state = lock(&router.listeners.state);
    if state.reported.insert((port, claim.clone())) {
        tracing::warn!(
            "router: service {}/{} cannot listen on {}:{port}: {why}; it gets no address",
            claim.namespace,
            claim.service,
            router.ctx.router_ip
        );
    }
}

/// Makes the bound listeners exactly `wanted`, adding to `unserved` the
/// Services whose ports could not be bound.
fn bind_wanted(
    router: &Arc<Router>,
    wanted: &HashMap<u16, Claim>,
    unserved: &mut HashSet<(String, String)>,
) {
    let mut failures = Vec::new();
    {
        let mut state = lock(&router.listeners.state);
        state
            .bound
            .retain(|port, bound| wanted.get(port) == Some(&bound.claim));
        for (&port, claim) in wanted {
            if state.bound.contains_key(&port) {
                continue;
            }
            match listen(router, port, claim) {
                Ok(task) => {
                    state.bound.insert(
                        port,
                        Bound {
                            claim: claim.clone(),
                            _task: task,
                        },
                    );
                }
                Err(error) => failures.push((port, claim.clone(), format!("{error:#}"))),
            }
        }
    }
    for (port, claim, why) in failures {
        report(router, port, &claim, &why);
        unserved.insert((claim.namespace, claim.service));
    }
}

/// Binds `router_ip:port` and forwards its connections for `claim`. The
/// task holds the router weakly so that it never keeps a stopped router
/// alive.
fn listen(router: &Arc<Router>, port: u16, claim: &Claim) -> anyhow::Result<AbortOnDrop> {
    let address = SocketAddr::new(router.ctx.router_ip, port);
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let what = format!("service {}/{} on {address}", claim.namespace, claim.service);
    let router = Arc::downgrade(router);
    let claim = claim.clone();
    Ok(AbortOnDrop(tokio::spawn(proxy::accept_loop(
        listener,
        what,
        move |client| forward(client, router.clone(), claim.clone()),
    ))))
}

/// One connection to a Service port: relayed to one of its endpoints.
async fn forward(client: TcpStream, router: Weak<Router>, claim: Claim) -> anyhow::Result<()> {
    let backends = {
        let router = router.upgrade().context("the router is stopping")?;
        let service = router
            .services
            .get(&ObjectRef::<Service>::new(&claim.service).within(&claim.namespace))
            .context("the service is gone")?;
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        let port: &ServicePort = ports
            .into_iter()
            .flatten()
            .find(|port| port.port == claim.service_port)
            .with_context(|| format!("the service no longer has port {}", claim.service_port))?;
        addresses(&router, &service, port)
    };
    let backend = proxy::connect_any(&backends).await?;
    proxy::pipe(client, backend, &[]).await
}

/// Sets (when `served`) or clears the LoadBalancer ingress address,
/// writing only if it changes.
async fn write_load_balancer_status(
    router: &Router,
    service: &Service,
    served: bool,
) -> Result<(), kube::Error> {
    let desired = served.then(|| json!([{ "ip": router.ctx.router_ip.to_string() }]));
    let current = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .filter(|ingress| !ingress.is_empty())
        .map(serde_json::to_value)
        .transpose()
        .map_err(kube::Error::SerdeError)?;
    if current == desired {
        return Ok(());
    }
    let api = Api::<Service>::namespaced(
        router.ctx.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let patch = json!({ "status": { "loadBalancer": { "ingress": desired } } });
    match api
        .patch_status(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(error) if is_not_found(&error) => Ok(()),
        other => other.map(|_| ()),
    }
}
