//! Route admission: which Route serves which host, as the OpenShift router
//! decides it and reports it in `status.ingress`.
//!
//! Admission is decided over all Routes at once because hosts are claimed
//! first come, first served: of two Routes naming the same host, the older
//! one is admitted and the other is rejected with `HostAlreadyClaimed`
//! until the older one goes away.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{is_not_found, lock, route_resource, Router};
use crate::context::ClusterContext;

/// A Route with this annotation set to `"false"` is left alone by the
/// router: never admitted, no status, no DNS entry, no traffic. It is how
/// a test makes an endpoint unreachable.
pub const ADMIT_ANNOTATION: &str = "emulator.kube-migrate/admit";

/// The reason of a rejection for a host that is not a valid DNS name.
const INVALID_HOST: &str = "InvalidHost";

/// `status.ingress[].routerName` of this router (OpenShift's default
/// IngressController).
const ROUTER_NAME: &str = "default";

/// The fields of a Route's spec the router acts on.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteSpec {
    #[serde(default)]
    pub host: Option<String>,
    pub to: Option<RouteTarget>,
    pub port: Option<RoutePort>,
    pub tls: Option<RouteTls>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RouteTarget {
    pub kind: Option<String>,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutePort {
    pub target_port: Option<IntOrString>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RouteTls {
    pub termination: Option<String>,
}

/// Reads the spec of `route`, naming the route when it is malformed.
pub(crate) fn route_spec(route: &DynamicObject) -> Result<RouteSpec, String> {
    match route.data.get("spec") {
        None | Some(Value::Null) => Ok(RouteSpec::default()),
        Some(spec) => serde_json::from_value(spec.clone()).map_err(|e| {
            format!(
                "route {}/{} has an invalid spec: {e}",
                route.namespace().unwrap_or_default(),
                route.name_any()
            )
        }),
    }
}

/// What the last pass decided, for the proxy and for the DNS table.
pub(crate) struct Admission {
    /// Admitted host -> the Route serving it.
    admitted: Mutex<HashMap<String, Arc<DynamicObject>>>,
    /// The entries this router put in the shared DNS table (the table is
    /// shared with the other cluster's router, whose entries stay).
    dns_hosts: Mutex<HashSet<String>>,
    /// `router-default.<apps domain>`, reported in every ingress entry and
    /// resolvable like the real router's canonical name.
    canonical_hostname: String,
    router_ip: IpAddr,
}

impl Admission {
    pub fn new(ctx: &ClusterContext) -> Self {
        let canonical_hostname = format!("router-{ROUTER_NAME}.{}", ctx.apps_domain);
        lock(&ctx.shared.dns).insert(canonical_hostname.clone(), ctx.router_ip);
        Self {
            admitted: Mutex::default(),
            dns_hosts: Mutex::default(),
            canonical_hostname,
            router_ip: ctx.router_ip,
        }
    }

    /// The admitted Route serving `host`.
    pub fn route_for(&self, host: &str) -> Option<Arc<DynamicObject>> {
        lock(&self.admitted).get(host).cloned()
    }

    /// Makes `decisions` the router's state: the admitted table and this
    /// router's entries in the shared DNS table.
    fn install(&self, decisions: &[Decision], dns: &Mutex<HashMap<String, IpAddr>>) {
        let admitted: HashMap<String, Arc<DynamicObject>> = decisions
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Admitted))
            .map(|d| (d.host.clone(), d.route.clone()))
            .collect();
        let hosts: HashSet<String> = admitted.keys().cloned().collect();
        {
            let mut dns = lock(dns);
            let mut owned = lock(&self.dns_hosts);
            for gone in owned.difference(&hosts) {
                if dns.get(gone) == Some(&self.router_ip) {
                    dns.remove(gone);
                }
            }
            for host in &hosts {
                dns.insert(host.clone(), self.router_ip);
            }
            *owned = hosts;
        }
        *lock(&self.admitted) = admitted;
    }
}

/// The router's verdict on one Route.
#[derive(Debug)]
pub(crate) struct Decision {
    route: Arc<DynamicObject>,
    /// The host the Route gets (its own, or the generated default).
    host: String,
    outcome: Outcome,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Admitted,
    Rejected {
        reason: &'static str,
        message: String,
    },
    /// Annotated to be left alone.
    Ignored,
}

/// Decides every Route's admission. Routes are considered oldest first
/// (ties broken by namespace and name, so the verdict is stable), each
/// claiming its host if no older Route has.
pub(crate) fn decide(routes: &[Arc<DynamicObject>], apps_domain: &str) -> Vec<Decision> {
    let mut routes: Vec<&Arc<DynamicObject>> = routes.iter().collect();
    routes.sort_by_key(|r| {
        let created = r.metadata.creation_timestamp.clone();
        (created.is_none(), created, r.namespace(), r.name_any())
    });
    let mut claimed: HashMap<String, String> = HashMap::new();
    routes
        .into_iter()
        .map(|route| {
            let name = route.name_any();
            let namespace = route.namespace().unwrap_or_default();
            let spec = route_spec(route);
            let host = match spec.as_ref().ok().and_then(|s| s.host.clone()) {
                Some(host) if !host.is_empty() => host.to_ascii_lowercase(),
                _ => format!("{name}-{namespace}.{apps_domain}"),
            };
            let outcome = if route
                .annotations()
                .get(ADMIT_ANNOTATION)
                .map(String::as_str)
                == Some("false")
            {
                Outcome::Ignored
            } else {
                match spec {
                    Err(message) => Outcome::Rejected {
                        reason: "ExtendedValidationFailed",
                        message,
                    },
                    Ok(spec) => match (host_problems(&host), backend_problem(&spec)) {
                        (Some(message), _) => Outcome::Rejected {
                            reason: INVALID_HOST,
                            message,
                        },
                        (None, Some(message)) => Outcome::Rejected {
                            reason: "ExtendedValidationFailed",
                            message,
                        },
                        (None, None) => match claimed.get(&host) {
                            Some(owner) => Outcome::Rejected {
                                reason: "HostAlreadyClaimed",
                                message: format!(
                                    "route {owner} already exposes {host} and is older"
                                ),
                            },
                            None => {
                                claimed.insert(host.clone(), format!("{name}.{namespace}"));
                                Outcome::Admitted
                            }
                        },
                    },
                }
            };
            Decision {
                route: route.clone(),
                host,
                outcome,
            }
        })
        .collect()
}

/// Why `host` cannot be served, if it cannot: the router checks the host
/// as the API server does, which matters for the hosts it generates.
fn host_problems(host: &str) -> Option<String> {
    let problems = super::host::problems(host, true);
    (!problems.is_empty()).then(|| super::host::rejection(&problems))
}

/// Why the router cannot serve `spec`'s backend, if it cannot.
fn backend_problem(spec: &RouteSpec) -> Option<String> {
    match &spec.to {
        None => Some("spec.to is missing: a Route must name a Service".into()),
        Some(to) if to.name.is_empty() => Some("spec.to.name is empty".into()),
        Some(RouteTarget {
            kind: Some(kind), ..
        }) if kind != "Service" => Some(format!(
            "spec.to.kind is {kind:?}; this router serves only Services"
        )),
        Some(_) => None,
    }
}

/// Decides admission for all Routes, writes what changed to the API and
/// installs the result. Returns whether every write succeeded.
pub(crate) async fn reconcile(router: &Router) -> bool {
    let routes = router.routes.state();
    let decisions = decide(&routes, &router.ctx.apps_domain);
    router.admission.install(&decisions, &router.ctx.shared.dns);
    let mut complete = true;
    for decision in &decisions {
        if let Err(error) = write_decision(router, decision).await {
            tracing::warn!(
                "router: updating route {}/{}: {error}",
                decision.route.namespace().unwrap_or_default(),
                decision.route.name_any()
            );
            complete = false;
        }
    }
    complete
}

/// Writes `decision` to the Route: the defaulted `spec.host` (which the
/// OpenShift API server fills in when a Route names none, marking it with
/// the annotation `openshift.io/host.generated: "true"` so that tools
/// moving the Route to another cluster know to drop it) and this router's
/// `status.ingress` entry, each only if it changed.
async fn write_decision(router: &Router, decision: &Decision) -> Result<(), kube::Error> {
    let route = &decision.route;
    let api = Api::<DynamicObject>::namespaced_with(
        router.ctx.client.clone(),
        &route.namespace().unwrap_or_default(),
        &route_resource(),
    );
    let name = route.name_any();
    let params = PatchParams::default();
    let result = async {
        let current_host = route.data.pointer("/spec/host").and_then(Value::as_str);
        // A generated host that is not a valid host name stays out of
        // spec.host (the API would refuse it); the rejection says why.
        let invalid =
            matches!(decision.outcome, Outcome::Rejected { reason, .. } if reason == INVALID_HOST);
        if current_host.is_none_or(str::is_empty) && !invalid {
            let patch = json!({
                "metadata": { "annotations": { "openshift.io/host.generated": "true" } },
                "spec": { "host": decision.host },
            });
            api.patch(&name, &params, &Patch::Merge(&patch)).await?;
        }
        let current = current_ingress(route);
        let desired = ingress_entry(decision, &router.admission.canonical_hostname, current);
        if desired.as_ref().map(without_times) != current.map(without_times) {
            let patch = json!({ "status": { "ingress": desired.map(|entry| vec![entry]) } });
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }
    .await;
    match result {
        Err(error) if is_not_found(&error) => Ok(()),
        other => other,
    }
}

/// This router's entry in `status.ingress`, if there is one.
fn current_ingress(route: &DynamicObject) -> Option<&Value> {
    route
        .data
        .pointer("/status/ingress")
        .and_then(Value::as_array)?
        .iter()
        .find(|entry| entry.get("routerName").and_then(Value::as_str) == Some(ROUTER_NAME))
}

/// The `status.ingress` entry `decision` calls for (none for an ignored
/// Route). The condition keeps its `lastTransitionTime` while it holds.
fn ingress_entry(
    decision: &Decision,
    canonical_hostname: &str,
    current: Option<&Value>,
) -> Option<Value> {
    let mut condition = match &decision.outcome {
        Outcome::Ignored => return None,
        Outcome::Admitted => json!({ "type": "Admitted", "status": "True" }),
        Outcome::Rejected { reason, message } => {
            json!({ "type": "Admitted", "status": "False", "reason": reason, "message": message })
        }
    };
    let previous = current
        .and_then(|entry| entry.pointer("/conditions/0"))
        .filter(|previous| without_time(previous) == condition);
    let since = match previous.and_then(|p| p.get("lastTransitionTime")) {
        Some(time) => time.clone(),
        None => serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null),
    };
    condition["lastTransitionTime"] = since;
    Some(json!({
        "host": decision.host,
        "routerName": ROUTER_NAME,
        "routerCanonicalHostname": canonical_hostname,
        "wildcardPolicy": "None",
        "conditions": [condition],
    }))
}

/// An ingress entry with its conditions' times removed, for comparison.
fn without_times(entry: &Value) -> Value {
    let mut entry = entry.clone();
    if let Some(conditions) = entry.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            *condition = without_time(condition);
        }
    }
    entry
}

fn without_time(condition: &Value) -> Value {
    let mut condition = condition.clone();
    if let Some(fields) = condition.as_object_mut() {
        fields.remove("lastTransitionTime");
    }
    condition
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(namespace: &str, name: &str, created: &str, spec: Value) -> Arc<DynamicObject> {
        let object = json!({
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": { "name": name, "namespace": namespace, "creationTimestamp": created },
            "spec": spec,
        });
        Arc::new(serde_json::from_value(object).expect("a Route"))
    }

    fn outcome_of<'a>(decisions: &'a [Decision], name: &str) -> (&'a str, &'a Outcome) {
        let decision = decisions
            .iter()
            .find(|d| d.route.name_any() == name)
            .expect("a decision for every route");
        (&decision.host, &decision.outcome)
    }

    #[test]
    fn the_older_route_keeps_a_contested_host_whatever_the_listing_order() {
        let older = route(
            "b",
            "older",
            "2024-01-01T00:00:00Z",
            json!({ "host": "x.test", "to": { "kind": "Service", "name": "s" } }),
        );
        let newer = route(
            "a",
            "newer",
            "2024-01-02T00:00:00Z",
            json!({ "host": "x.test", "to": { "kind": "Service", "name": "s" } }),
        );
        for order in [
            vec![older.clone(), newer.clone()],
            vec![newer.clone(), older.clone()],
        ] {
            let decisions = decide(&order, "apps.test");
            assert_eq!(
                outcome_of(&decisions, "older"),
                ("x.test", &Outcome::Admitted)
            );
            let (host, outcome) = outcome_of(&decisions, "newer");
            assert_eq!(host, "x.test");
            assert!(
                matches!(outcome, Outcome::Rejected { reason: "HostAlreadyClaimed", message } if message.contains("older.b")),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn hosts_default_to_name_namespace_and_the_apps_domain() {
        let decisions = decide(
            &[route(
                "ns",
                "r",
                "2024-01-01T00:00:00Z",
                json!({ "to": { "name": "s" } }),
            )],
            "apps.test",
        );
        assert_eq!(
            outcome_of(&decisions, "r"),
            ("r-ns.apps.test", &Outcome::Admitted)
        );
    }

    #[test]
    fn a_generated_host_with_a_label_over_63_characters_is_rejected_as_invalid() {
        let name = "n".repeat(61);
        let decisions = decide(
            &[route(
                "ns",
                &name,
                "2024-01-01T00:00:00Z",
                json!({ "to": { "name": "s" } }),
            )],
            "apps.test",
        );
        let (host, outcome) = outcome_of(&decisions, &name);
        assert_eq!(host, format!("{name}-ns.apps.test"));
        assert!(
            matches!(outcome, Outcome::Rejected { reason: "InvalidHost", message }
                if message.ends_with("must be no more than 63 characters")),
            "{outcome:?}"
        );
    }

    #[test]
    fn routes_to_anything_but_a_service_are_rejected_and_ignored_routes_claim_nothing() {
        let ignored = {
            let mut r = (*route(
                "ns",
                "ignored",
                "2024-01-01T00:00:00Z",
                json!({ "host": "h.test", "to": { "name": "s" } }),
            ))
            .clone();
            r.annotations_mut()
                .insert(ADMIT_ANNOTATION.into(), "false".into());
            Arc::new(r)
        };
        let to_pod = route(
            "ns",
            "to-pod",
            "2024-01-02T00:00:00Z",
            json!({ "host": "p.test", "to": { "kind": "Pod", "name": "s" } }),
        );
        let no_target = route(
            "ns",
            "no-target",
            "2024-01-02T00:00:00Z",
            json!({ "host": "n.test" }),
        );
        let later = route(
            "ns",
            "later",
            "2024-01-03T00:00:00Z",
            json!({ "host": "h.test", "to": { "name": "s" } }),
        );
        let decisions = decide(&[ignored, to_pod, no_target, later], "apps.test");
        assert_eq!(outcome_of(&decisions, "ignored").1, &Outcome::Ignored);
        assert!(
            matches!(outcome_of(&decisions, "to-pod").1, Outcome::Rejected { reason: "ExtendedValidationFailed", message } if message.contains("Pod"))
        );
        assert!(matches!(
            outcome_of(&decisions, "no-target").1,
            Outcome::Rejected { .. }
        ));
        assert_eq!(outcome_of(&decisions, "later").1, &Outcome::Admitted);
    }

    #[test]
    fn a_malformed_spec_is_rejected_with_the_route_named() {
        let decisions = decide(
            &[route(
                "ns",
                "bad",
                "2024-01-01T00:00:00Z",
                json!({ "to": "not an object" }),
            )],
            "apps.test",
        );
        assert!(
            matches!(outcome_of(&decisions, "bad").1, Outcome::Rejected { message, .. } if message.contains("ns/bad")),
            "{decisions:?}"
        );
    }
}
