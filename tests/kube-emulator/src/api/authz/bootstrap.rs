//! The RBAC policy a cluster starts with, as the real API server's
//! bootstrap policy creates it: `cluster-admin` for `system:masters`;
//! `admin`, `edit` and `view` aggregated from `system:aggregate-to-*`
//! (so a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`
//! extends `view`, as CRD authors do); discovery, self reviews and public
//! information for everyone; and the emulator's own components as
//! `system:kube-controller-manager`.

use serde_json::{json, Value};

use super::super::admission::Write;
use super::super::objects::State;
use super::resolve::GROUP;
use crate::policy::{Flavour, Policy};

/// The user the cluster's own components (kubelet, PVC binder, router,
/// workload controllers) authenticate as.
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// The verbs of `system:kube-controller-manager` on every resource:
/// explicit, never `*`, so that it holds no `use` (SCCs), `bind`,
/// `escalate` or `impersonate` and pods its controllers create get no SCC
/// through it.
const CONTROLLER_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "delete", "deletecollection", "patch", "update"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    })
}

/// An aggregated ClusterRole (`admin`, `edit`, `view`): its rules come
/// from the ClusterRoles labelled `aggregate-to-<name>`; `rules` are
/// theirs at bootstrap, as the aggregation controller would write them.
fn aggregated(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    let mut role = cluster_role(name, labels, rules);
    role["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}},
    ]});
    role
}

fn aggregate_to(name: &str) -> Value {
    json!({format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"})
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "apiGroup": GROUP, "name": name}))
        .collect();
    json!({
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn cluster_roles(policy: &Policy) -> Vec<Value> {
    let view = vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
            ],
            &READ,
        ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            &READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            &READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            &READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            &READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
    ];
    let edit = vec![
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            &READ,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            &WRITE,
        ),
        rule(
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
            &["create"],
        ),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            &WRITE,
        ),
        rule(&["batch"], &["cronjobs", "jobs"], &WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], &WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            &WRITE,
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[&READ[..], &WRITE[..]].concat(),
        ),
    ];
    let admin = vec![
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
        rule(
            &[GROUP],
            &["rolebindings", "roles"],
            &[&READ[..], &WRITE[..]].concat(),
        ),
    ];
    let (mut all_view, mut all_edit) = (view.clone(), edit.clone());
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            json!({}),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:aggregate-to-admin",
            aggregate_to("admin"),
            admin.clone(),
        ),
        cluster_role("system:aggregate-to-edit", aggregate_to("edit"), edit),
        cluster_role("system:aggregate-to-view", aggregate_to("view"), view),
        cluster_role(
            "system:discovery",
            json!({}),
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        cluster_role(
            CONTROLLER_MANAGER,
            json!({}),
            vec![
                rule(&["*"], &["*"], &CONTROLLER_VERBS),
                urls(&["*"], &["get"]),
            ],
        ),
    ];
    if policy.flavour == Flavour::OpenShift {
        // OpenShift aggregates its own APIs into the same roles.
        let openshift = [
            ("route.openshift.io", &["routes", "routes/status"][..]),
            (
                "image.openshift.io",
                &["imagestreams", "imagestreams/status", "imagestreamtags"][..],
            ),
            (
                "apps.openshift.io",
                &[
                    "deploymentconfigs",
                    "deploymentconfigs/scale",
                    "deploymentconfigs/status",
                ][..],
            ),
        ];
        let view: Vec<Value> = openshift
            .iter()
            .map(|(g, r)| rule(&[g], r, &READ))
            .collect();
        let edit: Vec<Value> = openshift
            .iter()
            .map(|(g, r)| rule(&[g], &r[..1], &WRITE))
            .collect();
        all_view.extend(view.iter().cloned());
        all_edit.extend(edit.iter().cloned());
        roles.push(cluster_role(
            "system:openshift:aggregate-to-view",
            aggregate_to("view"),
            view,
        ));
        roles.push(cluster_role(
            "system:openshift:aggregate-to-edit",
            aggregate_to("edit"),
            edit,
        ));
    }
    all_edit.extend(all_view.iter().cloned());
    let all_admin = [admin, all_edit.clone()].concat();
    roles.push(aggregated("admin", json!({}), all_admin));
    roles.push(aggregated("edit", aggregate_to("admin"), all_edit));
    roles.push(aggregated("view", aggregate_to("edit"), all_view));
    roles
}

fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", super::MASTERS)],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            CONTROLLER_MANAGER,
            CONTROLLER_MANAGER,
            &[("User", CONTROLLER_MANAGER)],
        ),
    ]
}

/// Creates the bootstrap policy in a fresh cluster.
pub fn bootstrap(state: &mut State, policy: &Policy) {
    let roles = (cluster_roles(policy), "clusterroles");
    let bindings = (cluster_role_bindings(), "clusterrolebindings");
    for (objects, plural) in [roles, bindings] {
        let rt = state
            .catalog
            .find(GROUP, "v1", plural)
            .cloned()
            .expect("RBAC is built in");
        for object in objects {
            state
                .create(&rt, "v1", "", object, &mut Write::system())
                .expect("the bootstrap policy is valid");
        }
    }
}
