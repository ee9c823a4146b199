//! The resource types the server serves: the built-in ones and those that
//! CustomResourceDefinitions add, with what discovery says about them.

use serde_json::{json, Value};

use crate::policy::Flavour;

/// How a resource's object names are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most resources.
    Subdomain,
    /// DNS-1123 label: namespaces (and services).
    Label,
    /// Anything usable as a path segment: RBAC objects (`system:foo`).
    PathSegment,
}

/// What a resource supports beyond plain CRUD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stored, full verb set.
    Stored,
    /// Only `create`, answered without storing (access reviews,
    /// SelfSubjectReview).
    Review,
}

/// The store key of a resource: the same objects are served at every
/// version of the resource, and `events.k8s.io` Events are stored as core
/// Events (`conversion`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeKey {
    pub group: String,
    pub plural: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource: writes to the main resource leave
    /// `.status` alone and writes to `/status` change nothing else.
    pub status: bool,
    /// Has a `/scale` subresource reading and writing `.spec.replicas`.
    pub scale: bool,
    /// Has a `/log` subresource (pods).
    pub log: bool,
    pub behaviour: Kind,
    pub names: NameRule,
}

pub const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    pub fn key(&self) -> TypeKey {
        let (group, plural) = super::conversion::stored_as(&self.group, &self.plural);
        TypeKey {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `apiVersion` of objects served at `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `pods`, `deployments.apps`: how error messages name the resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    pub fn is_namespace(&self) -> bool {
        self.is("", "namespaces")
    }

    pub fn is_crd(&self) -> bool {
        self.is("apiextensions.k8s.io", "customresourcedefinitions")
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        match self.behaviour {
            Kind::Stored => ALL_VERBS.to_vec(),
            Kind::Review => vec!["create"],
        }
    }

    /// The entries of this resource (and its subresources) in an
    /// APIResourceList.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut entries = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        let sub = |name: &str, kind: &str, group: Option<&str>, verbs: &[&str]| {
            let mut entry = json!({
                "name": format!("{}/{name}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some(group) = group {
                entry["group"] = json!(group);
                entry["version"] = json!("v1");
            }
            entry
        };
        if self.status {
            entries.push(sub("status", &self.kind, None, &["get", "patch", "update"]));
        }
        if self.scale {
            entries.push(sub(
                "scale",
                "Scale",
                Some("autoscaling"),
                &["get", "patch", "update"],
            ));
        }
        if self.log {
            entries.push(sub("log", "Pod", None, &["get"]));
        }
        if self.is("", "serviceaccounts") {
            entries.push(sub(
                "token",
                "TokenRequest",
                Some("authentication.k8s.io"),
                &["create"],
            ));
        }
        entries
    }
}

/// A built-in resource: `(group, version, plural, kind, namespaced,
/// short names, subresources)`.
struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
}

const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced,
        short,
        status,
    }
}

const NS: bool = true;
const CLUSTER: bool = false;
const STATUS: bool = true;
const PLAIN: bool = false;

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    b("", "v1", "namespaces", "Namespace", CLUSTER, &["ns"], STATUS),
    b("", "v1", "pods", "Pod", NS, &["po"], STATUS),
    b("", "v1", "services", "Service", NS, &["svc"], STATUS),
    b("", "v1", "endpoints", "Endpoints", NS, &["ep"], PLAIN),
    b("", "v1", "secrets", "Secret", NS, &[], PLAIN),
    b("", "v1", "configmaps", "ConfigMap", NS, &["cm"], PLAIN),
    b("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", NS, &["pvc"], STATUS),
    b("", "v1", "persistentvolumes", "PersistentVolume", CLUSTER, &["pv"], STATUS),
    b("", "v1", "nodes", "Node", CLUSTER, &["no"], STATUS),
    b("", "v1", "serviceaccounts", "ServiceAccount", NS, &["sa"], PLAIN),
    b("", "v1", "events", "Event", NS, &["ev"], PLAIN),
    b("", "v1", "limitranges", "LimitRange", NS, &["limits"], PLAIN),
    b("", "v1", "resourcequotas", "ResourceQuota", NS, &["quota"], STATUS),
    b("", "v1", "replicationcontrollers", "ReplicationController", NS, &["rc"], STATUS),
    b("apps", "v1", "deployments", "Deployment", NS, &["deploy"], STATUS),
    b("apps", "v1", "statefulsets", "StatefulSet", NS, &["sts"], STATUS),
    b("apps", "v1", "replicasets", "ReplicaSet", NS, &["rs"], STATUS),
    b("apps", "v1", "daemonsets", "DaemonSet", NS, &["ds"], STATUS),
    b("batch", "v1", "jobs", "Job", NS, &[], STATUS),
    b("batch", "v1", "cronjobs", "CronJob", NS, &["cj"], STATUS),
    b("events.k8s.io", "v1", "events", "Event", NS, &["ev"], PLAIN),
    b("coordination.k8s.io", "v1", "leases", "Lease", NS, &[], PLAIN),
    b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", NS, &["pdb"], STATUS),
    b("storage.k8s.io", "v1", "storageclasses", "StorageClass", CLUSTER, &["sc"], PLAIN),
    b("rbac.authorization.k8s.io", "v1", "roles", "Role", NS, &[], PLAIN),
    b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", NS, &[], PLAIN),
    b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", CLUSTER, &[], PLAIN),
    b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, &[], PLAIN),
    b("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", CLUSTER, &[], PLAIN),
    b("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", CLUSTER, &[], PLAIN),
    b("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", CLUSTER, &[], PLAIN),
    b("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", NS, &[], PLAIN),
    b("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", CLUSTER, &[], PLAIN),
    b("networking.k8s.io", "v1", "ingresses", "Ingress", NS, &["ing"], STATUS),
    b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", NS, &["netpol"], PLAIN),
    b("route.openshift.io", "v1", "routes", "Route", NS, &[], STATUS),
    b("image.openshift.io", "v1", "imagestreams", "ImageStream", NS, &["is"], STATUS),
    b("apps.openshift.io", "v1", "deploymentconfigs", "DeploymentConfig", NS, &["dc"], STATUS),
    b("velero.io", "v1", "backups", "Backup", NS, &[], PLAIN),
    b("velero.io", "v1", "restores", "Restore", NS, &[], PLAIN),
    b("velero.io", "v1", "backupstoragelocations", "BackupStorageLocation", NS, &["bsl"], STATUS),
    b("velero.io", "v1", "volumesnapshotlocations", "VolumeSnapshotLocation", NS, &["vsl"], STATUS),
    b("velero.io", "v1", "schedules", "Schedule", NS, &[], STATUS),
    b("velero.io", "v1", "deletebackuprequests", "DeleteBackupRequest", NS, &[], STATUS),
    b("velero.io", "v1", "downloadrequests", "DownloadRequest", NS, &[], STATUS),
    b("velero.io", "v1", "podvolumebackups", "PodVolumeBackup", NS, &[], STATUS),
    b("velero.io", "v1", "podvolumerestores", "PodVolumeRestore", NS, &[], STATUS),
    b("velero.io", "v1", "backuprepositories", "BackupRepository", NS, &[], STATUS),
    b("velero.io", "v1", "serverstatusrequests", "ServerStatusRequest", NS, &["ssr"], STATUS),
    b("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, &["crd", "crds"], STATUS),
];

/// What only OpenShift serves: SecurityContextConstraints, which its
/// admission chain reads (`admission::scc`), and the cluster's ingress
/// configuration, whose `cluster` object names the apps domain Route hosts
/// are made in.
#[rustfmt::skip]
const OPENSHIFT_BUILTINS: &[Builtin] = &[
    b("security.openshift.io", "v1", "securitycontextconstraints", "SecurityContextConstraints", CLUSTER, &["scc"], PLAIN),
    b("config.openshift.io", "v1", "ingresses", "Ingress", CLUSTER, &[], STATUS),
];

/// Resources that `kubectl get all` lists.
const CATEGORY_ALL: &[&str] = &[
    "pods",
    "services",
    "deployments",
    "statefulsets",
    "replicasets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
    "deploymentconfigs",
];

/// Resources with a `/scale` subresource, by group.
const SCALABLE: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "replicasets"),
    ("", "replicationcontrollers"),
    ("apps.openshift.io", "deploymentconfigs"),
];

fn builtin(def: &Builtin) -> ResourceType {
    let behaviour = if matches!(def.group, "authorization.k8s.io" | "authentication.k8s.io") {
        Kind::Review
    } else {
        Kind::Stored
    };
    let names = match def.plural {
        "namespaces" | "services" => NameRule::Label,
        _ if def.group == "rbac.authorization.k8s.io" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    };
    ResourceType {
        group: def.group.to_string(),
        versions: vec![def.version.to_string()],
        plural: def.plural.to_string(),
        singular: def.kind.to_lowercase(),
        kind: def.kind.to_string(),
        namespaced: def.namespaced,
        short_names: def.short.iter().map(|s| s.to_string()).collect(),
        categories: if CATEGORY_ALL.contains(&def.plural) {
            vec!["all".to_string()]
        } else {
            Vec::new()
        },
        status: def.status,
        scale: SCALABLE.contains(&(def.group, def.plural)),
        log: def.group.is_empty() && def.plural == "pods",
        behaviour,
        names,
    }
}

/// Every served resource type: the built-ins and those of the stored CRDs.
#[derive(Debug, Clone)]
pub struct Catalog {
    builtins: Vec<ResourceType>,
    custom: Vec<ResourceType>,
}

impl Catalog {
    /// The built-in resources of a cluster of `flavour`.
    pub fn for_flavour(flavour: Flavour) -> Self {
        let openshift = match flavour {
            Flavour::OpenShift => OPENSHIFT_BUILTINS,
            Flavour::Kubernetes => &[],
        };
        Self {
            builtins: BUILTINS.iter().chain(openshift).map(builtin).collect(),
            custom: Vec::new(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtins.iter().chain(self.custom.iter())
    }

    /// The resource served at `group/version/plural`, if any.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.all()
            .find(|rt| rt.group == group && rt.plural == plural && rt.serves(version))
    }

    pub fn by_key(&self, key: &TypeKey) -> Option<&ResourceType> {
        self.all()
            .find(|rt| rt.group == key.group && rt.plural == key.plural)
    }

    /// The built-in resource type `plural` of `group`.
    pub fn builtin(group: &str, plural: &str) -> ResourceType {
        BUILTINS
            .iter()
            .chain(OPENSHIFT_BUILTINS)
            .find(|def| def.group == group && def.plural == plural)
            .map(builtin)
            .unwrap_or_else(|| panic!("{plural}.{group} is not a built-in resource"))
    }

    pub fn namespace_type() -> ResourceType {
        Self::builtin("", "namespaces")
    }

    /// Replaces the CRD-defined types with those `crds` define.
    pub fn set_custom(&mut self, crds: impl Iterator<Item = ResourceType>) {
        let builtins = &self.builtins;
        self.custom = crds
            .filter(|rt| !builtins.iter().any(|b| b.key() == rt.key()))
            .collect();
    }

    /// API groups in discovery order, each with its versions (preferred
    /// first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for rt in self.all().filter(|rt| !rt.group.is_empty()) {
            let index = match groups.iter().position(|(g, _)| *g == rt.group) {
                Some(index) => index,
                None => {
                    groups.push((rt.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for version in &rt.versions {
                if !groups[index].1.contains(version) {
                    groups[index].1.push(version.clone());
                }
            }
        }
        groups
    }

    pub fn group_version_types<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceType> + 'a {
        self.all()
            .filter(move |rt| rt.group == group && rt.serves(version))
    }
}

/// The resource type a CustomResourceDefinition object defines, or why it
/// defines none.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let text = |v: &Value, what: &str| -> Result<String, String> {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{what}: Required value"))
    };
    let group = text(&spec["group"], "spec.group")?;
    let names = &spec["names"];
    let plural = text(&names["plural"], "spec.names.plural")?;
    let kind = text(&names["kind"], "spec.names.kind")?;
    let singular = names["singular"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let scope = spec["scope"].as_str().unwrap_or("");
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => return Err(format!("spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\"")),
    };
    let all_versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let mut versions = Vec::new();
    let (mut status, mut scale) = (false, false);
    for v in all_versions {
        let name = text(&v["name"], "spec.versions[].name")?;
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        status |= v["subresources"]["status"].is_object();
        scale |= v["subresources"]["scale"].is_object();
        if v["storage"].as_bool() == Some(true) {
            versions.insert(0, name);
        } else {
            versions.push(name);
        }
    }
    if crd["metadata"]["name"].as_str() != Some(&format!("{plural}.{group}")) {
        return Err(format!(
            "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group ({plural}.{group})"
        ));
    }
    Ok(ResourceType {
        group,
        versions,
        plural,
        singular,
        kind,
        namespaced,
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        status,
        scale,
        log: false,
        behaviour: Kind::Stored,
        names: NameRule::Subdomain,
    })
}
