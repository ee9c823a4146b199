//! Reading pods and pod templates as the admission plugins see them: the
//! pod's metadata and spec (a workload's template), and its containers in
//! the order the real plugins visit them.

use serde_json::Value;

use super::super::resources::ResourceType;

/// The container lists of a pod spec, in visiting order: init containers,
/// containers, ephemeral containers.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Every container of a pod spec, in visiting order.
pub fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    CONTAINER_LISTS
        .iter()
        .flat_map(move |list| spec[*list].as_array().into_iter().flatten())
}

pub fn name(container: &Value) -> &str {
    container["name"].as_str().unwrap_or_default()
}

/// The metadata and spec of the pods `object` makes: a pod's own, or the
/// template of a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// ReplicationController, DeploymentConfig, Job, CronJob).
pub fn template<'a>(rt: &ResourceType, object: &'a Value) -> Option<(&'a Value, &'a Value)> {
    if rt.is("", "pods") {
        return Some((&object["metadata"], &object["spec"]));
    }
    let template = match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("", "replicationcontrollers")
        | ("apps.openshift.io", "deploymentconfigs")
        | ("batch", "jobs") => &object["spec"]["template"],
        ("batch", "cronjobs") => &object["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    template
        .is_object()
        .then(|| (&template["metadata"], &template["spec"]))
}

/// `"a", "b"`: names quoted and listed as the Pod Security messages list
/// them.
pub fn join_quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|item| format!("\"{}\"", item.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` or `containers "a", "b"`.
pub fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quoted(names)
    )
}
