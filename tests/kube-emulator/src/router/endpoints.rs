//! Which pods back a Service, as the endpoints controller and kube-proxy
//! see it: pods in the Service's namespace matching its selector that are
//! Running with an IP, Ready if they report readiness, and not being
//! deleted; each reached on the Service port's `targetPort` (a number, or
//! the name of a container port).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::ResourceExt;

use super::{is_not_found, lock, Router};

/// The pods `service` selects, ready or not. A Service without a selector
/// has its endpoints managed by someone else, so it selects none.
fn selected_pods(router: &Router, service: &Service) -> Vec<Arc<Pod>> {
    let selector = match service.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(selector) if !selector.is_empty() => selector,
        _ => return Vec::new(),
    };
    let namespace = service.namespace();
    let mut pods = router.pods.state_filter(|pod| {
        pod.namespace() == namespace
            && selector
                .iter()
                .all(|(key, value)| pod.labels().get(key) == Some(value))
    });
    pods.sort_by_key(|pod| pod.name_any());
    pods
}

/// The IP traffic may go to, if `pod` is ready for it.
fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")
        .is_none_or(|condition| condition.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// The port on `pod` that `port` of a Service forwards to.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(number)) => u16::try_from(*number).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|container| container.ports.iter().flatten())
            .find(|container_port| container_port.name.as_deref() == Some(name.as_str()))
            .and_then(|container_port| u16::try_from(container_port.container_port).ok()),
    }
}

/// Where connections to `port` of `service` may go, in a stable order.
pub(crate) fn addresses(router: &Router, service: &Service, port: &ServicePort) -> Vec<SocketAddr> {
    selected_pods(router, service)
        .iter()
        .filter_map(|pod| Some(SocketAddr::new(ready_ip(pod)?, target_port(port, pod)?)))
        .collect()
}

/// The Service a Route sends traffic to and the port of it the Route
/// names by `targetPort`: a name matches a Service port's name (or its
/// named target port), a number its target port (or its port). Without a
/// `targetPort`, the Service's first port.
pub(crate) fn route_port<'a>(
    service: &'a Service,
    target: Option<&IntOrString>,
) -> Option<&'a ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    let Some(target) = target else {
        return ports.first();
    };
    ports.iter().find(|port| match target {
        IntOrString::String(name) => {
            port.name.as_deref() == Some(name.as_str())
                || port.target_port.as_ref() == Some(&IntOrString::String(name.clone()))
        }
        IntOrString::Int(number) => match &port.target_port {
            Some(IntOrString::Int(target_port)) => target_port == number || port.port == *number,
            _ => port.port == *number,
        },
    })
}

/// Keeps one Endpoints object per selector-bearing Service in step with
/// its pods, as the endpoints controller does, so that clients reading
/// Endpoints see what the proxies use.
#[derive(Default)]
pub(crate) struct EndpointsWriter {
    /// (namespace, name) -> the subsets last written.
    written: Mutex<HashMap<(String, String), Vec<EndpointSubset>>>,
}

impl EndpointsWriter {
    /// Writes the Endpoints that changed and deletes those of Services
    /// that are gone. Returns whether every write succeeded.
    pub async fn reconcile(&self, router: &Router) -> bool {
        let mut desired = HashMap::new();
        for service in router.services.state() {
            if service
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_none_or(BTreeMap::is_empty)
            {
                continue;
            }
            let key = (service.namespace().unwrap_or_default(), service.name_any());
            desired.insert(key, subsets(router, &service));
        }
        let previous = lock(&self.written).clone();
        let mut complete = true;
        for (key, subsets) in &desired {
            if previous.get(key) == Some(subsets) {
                continue;
            }
            match put(router, key, subsets).await {
                Ok(()) => {
                    lock(&self.written).insert(key.clone(), subsets.clone());
                }
                Err(error) => {
                    tracing::warn!("router: writing endpoints {}/{}: {error}", key.0, key.1);
                    complete = false;
                }
            }
        }
        for key in previous.keys().filter(|key| !desired.contains_key(*key)) {
            let api = Api::<Endpoints>::namespaced(router.ctx.client.clone(), &key.0);
            match api.delete(&key.1, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => {
                    tracing::warn!("router: deleting endpoints {}/{}: {error}", key.0, key.1);
                    complete = false;
                    continue;
                }
            }
            lock(&self.written).remove(key);
        }
        complete
    }
}

/// The Endpoints subsets of `service`: pods grouped by the ports they
/// resolve the Service's ports to (named target ports may differ per
/// pod), ready and not-ready addresses apart.
fn subsets(router: &Router, service: &Service) -> Vec<EndpointSubset> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<Vec<ResolvedPort>, EndpointSubset> = BTreeMap::new();
    for pod in selected_pods(router, service) {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let Some(resolved) = ports
            .iter()
            .map(|port| {
                Some((
                    port.name.clone(),
                    target_port(port, &pod)?,
                    port.protocol.clone(),
                ))
            })
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let subset = groups
            .entry(resolved.clone())
            .or_insert_with(|| EndpointSubset {
                ports: Some(
                    resolved
                        .iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: name.clone(),
                            port: i32::from(*port),
                            protocol: protocol.clone(),
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
                ..EndpointSubset::default()
            });
        let address = EndpointAddress {
            ip,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: pod.namespace(),
                uid: pod.uid(),
                ..ObjectReference::default()
            }),
            ..EndpointAddress::default()
        };
        let list = if ready_ip(&pod).is_some() {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        list.get_or_insert_with(Vec::new).push(address);
    }
    groups.into_values().collect()
}

/// A Service port as one pod resolves it: name, pod port, protocol.
type ResolvedPort = (Option<String>, u16, Option<String>);

/// Creates or replaces the Endpoints `key` with `subsets`.
async fn put(
    router: &Router,
    key: &(String, String),
    subsets: &[EndpointSubset],
) -> Result<(), kube::Error> {
    let api = Api::<Endpoints>::namespaced(router.ctx.client.clone(), &key.0);
    let params = PostParams::default();
    match api.get_opt(&key.1).await? {
        Some(mut existing) => {
            existing.subsets = Some(subsets.to_vec());
            api.replace(&key.1, &params, &existing).await?;
        }
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    ..ObjectMeta::default()
                },
                subsets: Some(subsets.to_vec()),
            };
            api.create(&params, &endpoints).await?;
        }
    }
    Ok(())
}
