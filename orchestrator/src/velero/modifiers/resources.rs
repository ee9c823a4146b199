//! The resources whose objects may need rewriting, and reading them from
//! the source.

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::Api;
use serde_json::Value;

use crate::clusters::Cluster;
use crate::kubeops::status_code;

/// A resource whose objects may need rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// JSON pointer to the pod spec, for workloads.
    pub pod_spec: Option<&'static str>,
}

impl Resource {
    /// Velero's name: `plural` for the core group, else `plural.group`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version,
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

const TEMPLATE: &str = "/spec/template/spec";

const fn workload(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    pod_spec: &'static str,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        pod_spec: Some(pod_spec),
    }
}

pub const DEPLOYMENTS: Resource = workload("apps", "Deployment", "deployments", TEMPLATE);
pub const STATEFUL_SETS: Resource = workload("apps", "StatefulSet", "statefulsets", TEMPLATE);
pub const DAEMON_SETS: Resource = workload("apps", "DaemonSet", "daemonsets", TEMPLATE);
pub const REPLICA_SETS: Resource = workload("apps", "ReplicaSet", "replicasets", TEMPLATE);
pub const JOBS: Resource = workload("batch", "Job", "jobs", TEMPLATE);
pub const CRON_JOBS: Resource = workload(
    "batch",
    "CronJob",
    "cronjobs",
    "/spec/jobTemplate/spec/template/spec",
);
pub const DEPLOYMENT_CONFIGS: Resource = workload(
    "apps.openshift.io",
    "DeploymentConfig",
    "deploymentconfigs",
    TEMPLATE,
);
pub const REPLICATION_CONTROLLERS: Resource = workload(
    "",
    "ReplicationController",
    "replicationcontrollers",
    TEMPLATE,
);
pub const PODS: Resource = workload("", "Pod", "pods", "/spec");
pub const ROUTES: Resource = Resource {
    group: "route.openshift.io",
    version: "v1",
    kind: "Route",
    plural: "routes",
    pod_spec: None,
};

/// Every resource [`super::rules`] looks at.
pub const RESOURCES: &[Resource] = &[
    DEPLOYMENTS,
    STATEFUL_SETS,
    DAEMON_SETS,
    REPLICA_SETS,
    JOBS,
    CRON_JOBS,
    DEPLOYMENT_CONFIGS,
    REPLICATION_CONTROLLERS,
    PODS,
    ROUTES,
];

/// One object of a source namespace, as read from the API.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub resource: Resource,
    pub object: Value,
}

/// The objects of `namespaces` on the source that [`super::rules`] looks at,
/// except those of resources the backup leaves out (no rule could apply
/// to them). A resource the cluster does not serve (Routes and
/// DeploymentConfigs off OpenShift) has no objects.
pub async fn source_objects(
    source: &Cluster,
    namespaces: &[String],
) -> anyhow::Result<Vec<SourceObject>> {
    let excluded = crate::velero::backup::EXCLUDED_RESOURCES;
    let mut out = Vec::new();
    for resource in RESOURCES {
        if excluded.contains(&resource.group_resource().as_str()) {
            continue;
        }
        for namespace in namespaces {
            let api: Api<DynamicObject> =
                Api::namespaced_with(source.client.clone(), namespace, &resource.api_resource());
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) if status_code(&e) == Some(404) => break,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}: listing {} in namespace {namespace}",
                            source.describe(),
                            resource.group_resource()
                        )
                    })
                }
            };
            for item in list.items {
                let object = serde_json::to_value(&item)
                    .with_context(|| format!("{}: reading {}", source.describe(), resource.kind))?;
                out.push(SourceObject {
                    resource: *resource,
                    object,
                });
            }
        }
    }
    Ok(out)
}
