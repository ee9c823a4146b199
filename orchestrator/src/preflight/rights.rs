//! The exact rights a migration uses, asked of each cluster with
//! SelfSubjectAccessReviews before anything is created, so that a user
//! without one learns every missing right at once, not the first one
//! hours into a copy.
//!
//! The table follows what the code does: objects made by server-side
//! apply need `patch` (and `get` to read them back), cleanup lists what it
//! deletes by label, waits read objects with `get`, and quiesce lists and
//! patches each kind of workload. `deploy/rbac/user.yaml`
//! grants exactly these rights; keep the two together.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;

use crate::clusters::Cluster;
use crate::migration;
use crate::names::router_cannot_name_receiver;
use crate::plan::{EndpointType, Plan};
use crate::workloads::quiesce::RULES;

pub const RBAC: &str = "rbac.authorization.k8s.io";
pub const SCC_GROUP: &str = "security.openshift.io";
const VELERO: &str = "velero.io";

/// Where a right is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Each of the plan's namespaces on that side.
    Namespaces,
    /// The cluster (cluster-scoped resources).
    Cluster,
    /// Velero's namespace.
    Velero,
    /// The namespace Migrations live in (destination).
    State,
}

/// One right: a verb on a group's resource (`pods/log` for a
/// subresource) in a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Right {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    scope: Scope,
}

const fn right(verb: &'static str, group: &'static str, resource: &'static str) -> Right {
    Right {
        verb,
        group,
        resource,
        scope: Scope::Namespaces,
    }
}

const fn at(
    scope: Scope,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
) -> Right {
    Right {
        verb,
        group,
        resource,
        scope,
    }
}

/// Senders, their certificates, and cleanup, on the source.
const SOURCE: &[Right] = &[
    at(Scope::Cluster, "get", "", "namespaces"),
    right("list", "", "persistentvolumeclaims"),
    right("get", "", "persistentvolumeclaims"),
    right("list", "", "pods"),
    right("get", "", "pods"),
    right("create", "", "pods"),
    right("delete", "", "pods"),
    right("get", "", "pods/log"),
    right("get", "", "secrets"),
    right("patch", "", "secrets"),
    right("list", "", "secrets"),
    right("delete", "", "secrets"),
];

/// Namespaces, PVCs, the receiver and its Service, and cleanup, on the
/// destination; the run's state in its Migration resource.
const DESTINATION: &[Right] = &[
    at(Scope::Cluster, "get", "", "namespaces"),
    at(Scope::Cluster, "create", "", "namespaces"),
    right("get", "", "persistentvolumeclaims"),
    right("patch", "", "persistentvolumeclaims"),
    right("list", "", "pods"),
    right("get", "", "pods"),
    right("create", "", "pods"),
    right("delete", "", "pods"),
    right("get", "", "secrets"),
    right("patch", "", "secrets"),
    right("list", "", "secrets"),
    right("delete", "", "secrets"),
    right("get", "", "services"),
    right("patch", "", "services"),
    right("list", "", "services"),
    right("delete", "", "services"),
    at(Scope::State, "get", "mover.io", "migrations"),
    at(Scope::State, "list", "mover.io", "migrations"),
    at(Scope::State, "create", "mover.io", "migrations"),
    at(Scope::State, "patch", "mover.io", "migrations"),
    at(Scope::State, "patch", "mover.io", "migrations/status"),
];

/// The receiver's endpoint. A Route the router could not name (a long
/// namespace) gets a host the orchestrator makes in the cluster's apps
/// domain, read from `ingresses.config.openshift.io/cluster` unless the
/// plan names one.
fn endpoint(plan: &Plan) -> Vec<Right> {
    let (group, resource) = match plan.endpoint {
        EndpointType::Route => ("route.openshift.io", "routes"),
        EndpointType::Ingress => ("networking.k8s.io", "ingresses"),
        EndpointType::Loadbalancer | EndpointType::Nodeport => return Vec::new(),
    };
    let mut rights: Vec<Right> = ["get", "patch", "list", "delete"]
        .into_iter()
        .map(|verb| right(verb, group, resource))
        .collect();
    let names_hosts = plan
        .namespaces
        .iter()
        .any(|m| router_cannot_name_receiver(&m.destination));
    if plan.endpoint == EndpointType::Route && plan.ingress_domain.is_none() && names_hosts {
        rights.push(at(
            Scope::Cluster,
            "get",
            "config.openshift.io",
            "ingresses",
        ));
    }
    rights
}

/// Backups, Restores and the requests the Velero client makes, and its
/// resource modifier ConfigMap, in Velero's namespace.
const VELERO_RIGHTS: &[Right] = &[
    at(Scope::Velero, "create", VELERO, "backups"),
    at(Scope::Velero, "get", VELERO, "backups"),
    at(Scope::Velero, "create", VELERO, "restores"),
    at(Scope::Velero, "get", VELERO, "restores"),
    at(Scope::Velero, "list", VELERO, "backupstoragelocations"),
    at(Scope::Velero, "create", VELERO, "serverstatusrequests"),
    at(Scope::Velero, "create", VELERO, "downloadrequests"),
    at(Scope::Velero, "create", VELERO, "deletebackuprequests"),
    at(Scope::Velero, "patch", "", "configmaps"),
];

/// A final run's Velero stages and quiesce.
fn application(plan: &Plan, source_kinds: &[(&str, &str)]) -> (Vec<Right>, Vec<Right>) {
    let mut source = Vec::new();
    let mut destination = Vec::new();
    if plan.stage {
        return (source, destination);
    }
    if plan.quiesce {
        for rule in RULES {
            if source_kinds.contains(&(rule.group, rule.plural)) {
                source.push(right("list", rule.group, rule.plural));
                source.push(right("patch", rule.group, rule.plural));
            }
        }
    }
    if plan.resources {
        for side in [&mut source, &mut destination] {
            side.extend(VELERO_RIGHTS);
        }
    }
    (source, destination)
}

/// Checks every right the plan needs on both clusters; each refusal
/// becomes one problem naming the verb, resource and namespace.
pub async fn check(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
    problems: &mut Vec<String>,
) {
    let kinds = served_workloads(source).await;
    let (source_app, destination_app) = application(plan, &kinds);
    let sides = [
        (source, [SOURCE.to_vec(), source_app].concat(), true),
        (
            destination,
            [DESTINATION.to_vec(), endpoint(plan), destination_app].concat(),
            false,
        ),
    ];
    for (cluster, rights, is_source) in sides {
        let mut asked = Vec::new();
        for right in rights {
            let namespaces: Vec<&str> = match right.scope {
                Scope::Cluster => vec![""],
                Scope::Velero => vec![plan.velero.namespace.as_str()],
                Scope::State => vec![migration::NAMESPACE],
                Scope::Namespaces => plan
                    .namespaces
                    .iter()
                    .map(|m| {
                        if is_source {
                            m.source.as_str()
                        } else {
                            m.destination.as_str()
                        }
                    })
                    .collect(),
            };
            for ns in namespaces {
                if asked.contains(&(right, ns)) {
                    continue;
                }
                asked.push((right, ns));
                if let Err(reason) =
                    allowed(cluster, ns, right.verb, right.group, right.resource, "").await
                {
                    let place = if ns.is_empty() {
                        "at the cluster scope".to_string()
                    } else {
                        format!("in namespace {ns:?}")
                    };
                    let group = if right.group.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", right.group)
                    };
                    problems.push(format!(
                        "{}: not allowed to {} {}{group} {place}: {reason}",
                        cluster.describe(),
                        right.verb,
                        right.resource,
                    ));
                }
            }
        }
    }
}

/// The workload kinds (group, plural) the source serves, of those quiesce
/// stops: DeploymentConfigs only on OpenShift.
async fn served_workloads(source: &Cluster) -> Vec<(&'static str, &'static str)> {
    let mut kinds = Vec::new();
    for rule in RULES {
        let served = if rule.group.is_empty() {
            true
        } else {
            kube::discovery::group(&source.client, rule.group)
                .await
                .is_ok_and(|g| {
                    g.recommended_resources()
                        .iter()
                        .any(|(r, _)| r.plural == rule.plural)
                })
        };
        if served {
            kinds.push((rule.group, rule.plural));
        }
    }
    kinds
}

/// Asks `cluster` whether the user may `verb` `resource` (`pods/log` for a
/// subresource) of `group` in `ns` ("" for the cluster scope), optionally
/// the object `name`. `Err` carries the reason RBAC gave.
pub async fn allowed(
    cluster: &Cluster,
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: &str,
) -> Result<(), String> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                verb: Some(verb.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                name: (!name.is_empty()).then(|| name.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(cluster.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("the access review failed: {e}"))?;
    match answer.status {
        Some(status) if status.allowed => Ok(()),
        Some(status) => Err(status
            .reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "denied".into())),
        None => Err("the access review returned no status".into()),
    }
}
