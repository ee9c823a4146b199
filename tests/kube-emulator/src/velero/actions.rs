//! Velero's restore item actions (pkg/restore/actions) and metadata reset
//! (pkg/restore/restore.go `resetMetadataAndStatus`): what of a backed-up
//! object only made sense in the source cluster and goes before it is
//! created in the destination.

use std::collections::{BTreeMap, HashSet};

use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};

/// Velero's `resetMetadataAndStatus`: server-set metadata, owner
/// references and status go.
pub(super) fn reset(object: &DynamicObject) -> DynamicObject {
    let mut object = object.clone();
    let metadata = &mut object.metadata;
    metadata.uid = None;
    metadata.resource_version = None;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    metadata.generation = None;
    metadata.generate_name = None;
    metadata.self_link = None;
    metadata.owner_references = None;
    if let Some(fields) = object.data.as_object_mut() {
        fields.remove("status");
    }
    object
}

/// The restore item actions of pkg/restore/actions: what only made sense
/// in the source cluster.
pub(super) fn clean_up(
    resource: &str,
    object: &mut DynamicObject,
    restored_volumes: &HashSet<String>,
    mapping: &BTreeMap<String, String>,
) {
    // managedFields belong to the source's API server.
    object.metadata.managed_fields = None;
    match resource {
        // pod_action.go: scheduling is the destination's business, and the
        // service account token is mounted anew.
        "pods" => {
            remove(&mut object.data, "/spec", "nodeName");
            remove(&mut object.data, "/spec", "priority");
            let account = object
                .data
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            let token = |name: &Value| {
                name.as_str()
                    .is_some_and(|n| n.starts_with(&format!("{account}-token-")))
            };
            if let Some(volumes) = object
                .data
                .pointer_mut("/spec/volumes")
                .and_then(Value::as_array_mut)
            {
                volumes.retain(|volume| !token(&volume["name"]));
            }
            for containers in ["containers", "initContainers"] {
                for container in object
                    .data
                    .pointer_mut(&format!("/spec/{containers}"))
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(mounts) = container
                        .get_mut("volumeMounts")
                        .and_then(Value::as_array_mut)
                    {
                        mounts.retain(|mount| !token(&mount["name"]));
                    }
                }
            }
        }
        // service_action.go: cluster IPs are allocated by the destination;
        // node ports too unless preserveNodePorts.
        "services" => {
            if object
                .data
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                != Some("None")
            {
                remove(&mut object.data, "/spec", "clusterIP");
                remove(&mut object.data, "/spec", "clusterIPs");
            }
            let preserve = object.data.pointer("/spec/preserveNodePorts") == Some(&json!(true));
            if !preserve {
                remove(&mut object.data, "/spec", "healthCheckNodePort");
                for port in object
                    .data
                    .pointer_mut("/spec/ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(port) = port.as_object_mut() {
                        port.remove("nodePort");
                    }
                }
            }
        }
        // job_action.go: the controller-uid labels name the source's Job.
        "jobs.batch" => {
            for path in [
                "/spec/selector/matchLabels",
                "/spec/template/metadata/labels",
            ] {
                if let Some(labels) = object.data.pointer_mut(path).and_then(Value::as_object_mut) {
                    labels.remove("controller-uid");
                    labels.remove("batch.kubernetes.io/controller-uid");
                }
            }
        }
        // rolebinding_action.go, clusterrolebinding_action.go: subjects
        // follow the namespace mapping.
        "rolebindings.rbac.authorization.k8s.io"
        | "clusterrolebindings.rbac.authorization.k8s.io" => {
            for subject in object
                .data
                .get_mut("subjects")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let mapped = subject
                    .get("namespace")
                    .and_then(Value::as_str)
                    .and_then(|ns| mapping.get(ns));
                if let Some(mapped) = mapped {
                    subject["namespace"] = json!(mapped);
                }
            }
        }
        // A claim is bound anew unless its volume comes along.
        "persistentvolumeclaims" => {
            for annotation in [
                "pv.kubernetes.io/bind-completed",
                "pv.kubernetes.io/bound-by-controller",
                "volume.kubernetes.io/selected-node",
            ] {
                object.annotations_mut().remove(annotation);
            }
            let volume = object
                .data
                .pointer("/spec/volumeName")
                .and_then(Value::as_str);
            if volume.is_some_and(|v| !restored_volumes.contains(v)) {
                remove(&mut object.data, "/spec", "volumeName");
            }
        }
        _ => {}
    }
}

fn remove(data: &mut Value, parent: &str, field: &str) {
    if let Some(fields) = data.pointer_mut(parent).and_then(Value::as_object_mut) {
        fields.remove(field);
    }
}
