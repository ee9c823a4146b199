//! `orchestrator install`: what runs the controller in a host cluster,
//! generated here so that it cannot drift from the code (the CRDs come
//! from the Rust types, the rights from what the controller calls), and
//! checked in as `deploy/controller.yaml`.
//!
//! Least privilege: the controller's own rights are a Role in its
//! namespace: read and update its resources, read the cluster Secrets,
//! hold the leader Lease, write Events. Migrating from or
//! to the host cluster itself (`isHostCluster`) needs what a migrating
//! user needs there, `deploy/rbac/user.yaml`'s roles, which are bound to
//! the controller's ServiceAccount too.
//!
//! The web console ([`crate::console`]) is served on the container port
//! `console` and the Service's port of that name; the ClusterRole
//! [`CONSOLE_USER_ROLE`] is what a console user needs in the controller's
//! namespace. How it is exposed is the cluster's choice: an OpenShift
//! Route (`deploy/console-route.yaml`) or an Ingress
//! (`deploy/console-ingress.yaml`), both generated here too.

use serde_json::{json, Value};

use crate::migration::NAMESPACE;

/// The name of the controller's ServiceAccount, roles and Deployment.
pub const NAME: &str = "mover-controller";
/// Where the controller serves /metrics, /healthz and /readyz.
const PORT: u16 = 8080;
/// Where every replica serves the web console.
const CONSOLE_PORT: u16 = 9090;
/// What a console user is granted in the controller's namespace (bound
/// per user or group: `kubectl -n mover-system create rolebinding ...
/// --clusterrole=mover-console-user`): see and follow the resources,
/// create plans, start and cancel runs.
pub const CONSOLE_USER_ROLE: &str = "mover-console-user";
/// The migrating user's roles (`orchestrator migrate`), bound to the
/// controller for the host cluster's own migrations.
const USER_ROLES: &str = include_str!("../../../deploy/rbac/user.yaml");

/// What to install.
pub struct Install {
    /// The orchestrator image the Deployment runs.
    pub image: String,
    pub replicas: u32,
    /// Velero's namespace on the host cluster, where the controller
    /// creates Backups and Restores for the host's own migrations.
    pub velero_namespace: String,
}

impl Default for Install {
    fn default() -> Self {
        Self {
            image: concat!("orchestrator:", env!("CARGO_PKG_VERSION")).into(),
            replicas: 2,
            velero_namespace: "velero".into(),
        }
    }
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mover"})
}

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "labels": labels()});
    if let Some(namespace) = namespace {
        meta["namespace"] = json!(namespace);
    }
    meta
}

impl Install {
    /// Every object, in the order they must be applied (namespace and
    /// CRDs first, the Deployment last).
    pub fn objects(&self) -> Vec<Value> {
        let mut objects = vec![json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    "app.kubernetes.io/part-of": "mover",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
        })];
        objects.extend(
            super::crds()
                .into_iter()
                .map(|crd| serde_json::to_value(crd).expect("a CRD serialises")),
        );
        objects.extend(user_roles());
        objects.push(console_user_role());
        objects.extend(self.rbac());
        objects.push(self.deployment());
        objects.push(service());
        objects
    }

    /// The objects as YAML documents, as `orchestrator install --print`
    /// prints them.
    pub fn yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::new();
        for object in self.objects() {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&object)?);
        }
        Ok(out)
    }

    fn rbac(&self) -> Vec<Value> {
        let own = ["migrationclusters", "migrationplans", "migrations"];
        let statuses: Vec<String> = own.iter().map(|r| format!("{r}/status")).collect();
        let subject = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]);
        let binding = |kind: &str,
                       name: &str,
                       namespace: Option<&str>,
                       role_kind: &str,
                       role: &str| {
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": meta(name, namespace),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                "subjects": subject,
            })
        };
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": meta(NAME, Some(NAMESPACE)),
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(NAME, Some(NAMESPACE)),
                "rules": [
                    // Its resources and their statuses.
                    {"apiGroups": ["mover.io"], "resources": own,
                     "verbs": ["get", "list", "watch", "patch", "update"]},
                    {"apiGroups": ["mover.io"], "resources": statuses,
                     "verbs": ["get", "patch", "update"]},
                    // The registered clusters' credentials.
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                    // Leader election.
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                     "verbs": ["get", "create", "update"]},
                    // Events on Migrations.
                    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
                ],
            }),
            binding("RoleBinding", NAME, Some(NAMESPACE), "Role", NAME),
            // The host cluster's own migrations, as deploy/rbac/user.yaml says.
            binding(
                "ClusterRoleBinding",
                &format!("{NAME}-migrator"),
                None,
                "ClusterRole",
                "mover-migrator",
            ),
            binding(
                "ClusterRoleBinding",
                &format!("{NAME}-migrator-cluster"),
                None,
                "ClusterRole",
                "mover-migrator-cluster",
            ),
            binding(
                "RoleBinding",
                &format!("{NAME}-migrator-state"),
                Some(NAMESPACE),
                "ClusterRole",
                "mover-migrator-state",
            ),
            binding(
                "RoleBinding",
                &format!("{NAME}-migrator-velero"),
                Some(&self.velero_namespace),
                "ClusterRole",
                "mover-migrator-velero",
            ),
        ]
    }

    fn deployment(&self) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(NAME, Some(NAMESPACE)),
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": labels()},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [{
                            "name": "controller",
                            "image": self.image,
                            "args": ["controller", "--namespace", NAMESPACE,
                                     "--listen", format!("0.0.0.0:{PORT}"),
                                     "--console-listen", format!("0.0.0.0:{CONSOLE_PORT}")],
                            "env": [{"name": "POD_NAME",
                                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "ports": [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"},
                                      {"name": "console", "containerPort": CONSOLE_PORT, "protocol": "TCP"}],
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                              "periodSeconds": 10},
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"},
                                               "periodSeconds": 5},
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"memory": "512Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": true,
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                            },
                        }],
                    },
                },
            },
        })
    }
}

/// How long the Deployment may take to have a ready replica.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// Applies `install`'s objects to `host` (server-side apply, so running it
/// again updates them) and waits until a controller replica is ready.
/// Velero's namespace not existing yet only skips that one binding, with a
/// note: the host's own final migrations need Velero.
pub async fn apply(host: &kube::Client, install: &Install) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use kube::api::{Api, DynamicObject, Patch, PatchParams};

    let params = PatchParams::apply("mover-install").force();
    for object in install.objects() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let (group, version) = match object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .split_once('/')
        {
            Some((group, version)) => (group.to_string(), version.to_string()),
            None => (
                String::new(),
                object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &kind);
        let (resource, _) = kube::discovery::pinned_kind(host, &gvk)
            .await
            .with_context(|| format!("finding {kind} in the host cluster's API"))?;
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(host.clone(), namespace, &resource),
            None => Api::all_with(host.clone(), &resource),
        };
        match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(_) => eprintln!("applied {kind} {name}"),
            Err(e)
                if crate::kubeops::status_code(&e) == Some(404)
                    && namespace.as_deref() == Some(install.velero_namespace.as_str()) =>
            {
                eprintln!(
                    "skipped {kind} {name}: namespace {:?} does not exist (install Velero, then \
                     run `orchestrator install` again, for final migrations of the host cluster's \
                     own namespaces)",
                    install.velero_namespace
                );
            }
            Err(e) => return Err(e).with_context(|| format!("applying {kind} {name}")),
        }
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(host.clone(), NAMESPACE);
    crate::kubeops::poll(
        &deployments,
        NAME,
        READY_TIMEOUT,
        "to have a ready replica",
        |d: Option<&k8s_openapi::api::apps::v1::Deployment>| {
            let ready = d?.status.as_ref()?.ready_replicas.unwrap_or(0);
            (ready > 0).then_some(())
        },
    )
    .await
    .with_context(|| format!("Deployment {NAMESPACE}/{NAME}"))?;
    eprintln!("the controller is ready");
    Ok(())
}

/// The Service a ServiceMonitor selects (by its labels) to scrape the
/// replicas' `metrics` port, and that a Route or Ingress sends console
/// users to (any replica: the console keeps no state).
fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(NAME, Some(NAMESPACE)),
        "spec": {
            "selector": {"app.kubernetes.io/name": NAME},
            "ports": [
                {"name": "metrics", "port": PORT, "targetPort": "metrics", "protocol": "TCP"},
                {"name": "console", "port": CONSOLE_PORT, "targetPort": "console", "protocol": "TCP"},
            ],
        },
    })
}

/// [`CONSOLE_USER_ROLE`]: the console acts with its user's token, so
/// these are the rights its pages need. Reading a MigrationCluster also
/// shows its cluster's namespaces and PVCs (listed with the controller's
/// credential for it); Secrets are not included.
fn console_user_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta(CONSOLE_USER_ROLE, None),
        "rules": [
            {"apiGroups": ["mover.io"], "resources": ["migrationclusters"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["mover.io"], "resources": ["migrationplans", "migrations"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
        ],
    })
}

/// The console's OpenShift Route (`deploy/console-route.yaml`): TLS ends
/// at the router with the cluster's certificate, plain HTTP is redirected,
/// and the router says `X-Forwarded-Proto: https`, so the session cookie
/// is marked Secure.
pub fn console_route() -> Value {
    json!({
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": meta("mover-console", Some(NAMESPACE)),
        "spec": {
            "to": {"kind": "Service", "name": NAME, "weight": 100},
            "port": {"targetPort": "console"},
            "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
            "wildcardPolicy": "None",
        },
    })
}

/// The console's Ingress (`deploy/console-ingress.yaml`), for clusters
/// without Routes: set the host and the TLS Secret to the cluster's.
pub fn console_ingress() -> Value {
    let host = "mover-console.example.com";
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta("mover-console", Some(NAMESPACE)),
        "spec": {
            "tls": [{"hosts": [host], "secretName": "mover-console-tls"}],
            "rules": [{
                "host": host,
                "http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": NAME, "port": {"name": "console"}}},
                }]},
            }],
        },
    })
}

/// One object as the YAML document checked in under `deploy/`, after a
/// comment that says what to change.
pub fn manifest_yaml(comment: &str, object: &Value) -> Result<String, serde_yaml::Error> {
    let mut out: String = comment.lines().map(|line| format!("# {line}\n")).collect();
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(object)?);
    Ok(out)
}

/// `deploy/console-route.yaml`.
pub fn console_route_yaml() -> Result<String, serde_yaml::Error> {
    manifest_yaml(
        "The web console on OpenShift: `oc apply -f deploy/console-route.yaml`, then open\n\
         `https://$(oc -n mover-system get route mover-console -o jsonpath='{.spec.host}')`.\n\
         Generated by orchestrator/src/controller/install.rs (console_route).",
        &console_route(),
    )
}

/// `deploy/console-ingress.yaml`.
pub fn console_ingress_yaml() -> Result<String, serde_yaml::Error> {
    manifest_yaml(
        "The web console through an Ingress: set the host and the TLS Secret (a certificate\n\
         for that host in namespace mover-system), then `kubectl apply -f` this file.\n\
         Generated by orchestrator/src/controller/install.rs (console_ingress).",
        &console_ingress(),
    )
}

/// `deploy/rbac/user.yaml`'s ClusterRoles.
fn user_roles() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(USER_ROLES)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).ok()?;
            value.is_object().then_some(value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Install;

    #[test]
    fn the_checked_in_installation_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap();
        assert!(
            checked_in == Install::default().yaml().unwrap(),
            "deploy/controller.yaml is stale: regenerate it with \
             `cargo run -p orchestrator -- install --print > deploy/controller.yaml`"
        );
    }

    #[test]
    fn the_checked_in_console_manifests_are_current() {
        for (file, generated) in [
            ("console-route.yaml", super::console_route_yaml()),
            ("console-ingress.yaml", super::console_ingress_yaml()),
        ] {
            let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
            let checked_in = std::fs::read_to_string(&path).unwrap();
            assert!(
                checked_in == generated.unwrap(),
                "deploy/{file} is stale: regenerate it with \
                 `cargo run -p orchestrator -- install --print-console route > deploy/console-route.yaml` \
                 (and `ingress > deploy/console-ingress.yaml`)"
            );
        }
    }

    #[test]
    fn the_console_is_served_on_the_deployments_and_services_port() {
        let objects = Install::default().objects();
        let find = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
        let container = &find("Deployment")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let listen = args[args.iter().position(|a| *a == "--console-listen").unwrap() + 1];
        let port = &container["ports"][1];
        assert_eq!(port["name"], "console");
        assert_eq!(listen, format!("0.0.0.0:{}", port["containerPort"]));
        let service_ports = find("Service")["spec"]["ports"].as_array().unwrap();
        assert!(service_ports
            .iter()
            .any(|p| p["name"] == "console" && p["targetPort"] == "console"));
        assert_eq!(
            super::console_route()["spec"]["port"]["targetPort"],
            "console"
        );
        assert_eq!(
            super::console_ingress()["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
                ["port"]["name"],
            "console"
        );
    }

    #[test]
    fn the_installation_binds_every_role_it_names() {
        let objects = Install::default().objects();
        let roles: Vec<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        for binding in objects.iter().filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("RoleBinding"))
        }) {
            let role = binding["roleRef"]["name"].as_str().unwrap();
            assert!(roles.contains(&role), "{role} is bound but not installed");
        }
    }
}
