//! What the real API server's defaulting and allocation add to new
//! objects, where the orchestrator or the emulated controllers rely on it:
//! namespace and pod phases, Service cluster IPs and node ports, pod and
//! PVC defaults, CRD conditions.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::resources::{ResourceType, TypeKey};
use super::store::Store;

/// The Service network, 10.96.0.0/16; 10.96.0.1 is the `kubernetes`
/// Service.
const SERVICE_NET: u32 = u32::from_be_bytes([10, 96, 0, 0]);
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
const NODE_PORTS: std::ops::RangeInclusive<u64> = 30000..=32767;

/// Defaults for a new object (its `.status` already cleared when the
/// resource has a status subresource).
pub fn on_create(store: &Store, rt: &ResourceType, object: &mut Value) -> ApiResult<()> {
    if rt.is_namespace() {
        object["status"] = json!({"phase": "Active"});
        namespace_label(object);
    } else if rt.is("", "pods") {
        object["status"] = json!({"phase": "Pending"});
        pod_spec(&mut object["spec"]);
    } else if rt.is("", "secrets") {
        secret(object);
    } else if rt.is("", "persistentvolumeclaims") {
        pvc(store, object);
    } else if rt.is("", "persistentvolumes") {
        object["status"] = json!({"phase": "Pending"});
    } else if rt.is("", "services") {
        service(store, rt, None, object)?;
    } else if rt.group == "apps"
        && matches!(
            rt.plural.as_str(),
            "deployments" | "statefulsets" | "replicasets"
        )
        || rt.is("", "replicationcontrollers")
        || rt.is("apps.openshift.io", "deploymentconfigs")
    {
        if object["spec"]["replicas"].is_null() && object["spec"].is_object() {
            object["spec"]["replicas"] = json!(1);
        }
        update_strategy(rt, object);
    } else if rt.is("apps", "daemonsets") {
        update_strategy(rt, object);
    } else if rt.is_crd() {
        crd_established(object);
    }
    Ok(())
}

/// Defaults an update must keep: the allocated cluster IP and node ports of
/// a Service.
pub fn on_update(
    store: &Store,
    rt: &ResourceType,
    old: &Value,
    object: &mut Value,
) -> ApiResult<()> {
    if rt.is("", "services") {
        service(store, rt, Some(old), object)?;
    } else if rt.is_namespace() {
        namespace_label(object);
    } else if rt.is("", "secrets") {
        secret(object);
    } else if rt.is("", "pods") {
        pod_spec(&mut object["spec"]);
        pod_spec_unchanged(rt, old, object)?;
    } else {
        update_strategy(rt, object);
    }
    Ok(())
}

/// The rollout settings the API server fills in for workloads (kubectl's
/// `rollout status` refuses a StatefulSet or DaemonSet without an update
/// strategy type).
fn update_strategy(rt: &ResourceType, object: &mut Value) {
    if rt.group != "apps" || !object["spec"].is_object() {
        return;
    }
    let spec = &mut object["spec"];
    match rt.plural.as_str() {
        "deployments" => {
            set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
        }
        "statefulsets" => {
            set_default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                set_default(
                    &mut spec["updateStrategy"],
                    "rollingUpdate",
                    json!({"partition": 0}),
                );
            }
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
        }
        "daemonsets" => {
            set_default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                set_default(
                    &mut spec["updateStrategy"],
                    "rollingUpdate",
                    json!({"maxUnavailable": 1, "maxSurge": 0}),
                );
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
        }
        _ => {}
    }
}

/// Every namespace carries its name as a label (for namespace selectors).
fn namespace_label(object: &mut Value) {
    let name = object["metadata"]["name"].clone();
    if !object["metadata"]["labels"].is_object() {
        object["metadata"]["labels"] = json!({});
    }
    object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
}

/// `stringData` is write-only: it is folded into `data`, base64-encoded.
fn secret(object: &mut Value) {
    set_default(object, "type", json!("Opaque"));
    let Some(Value::Object(plain)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in plain {
        let bytes = value.as_str().unwrap_or_default().as_bytes().to_vec();
        object["data"][key] =
            serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
    }
}

/// A pod's spec is immutable but for images, deadlines, tolerations and
/// — once, as the scheduler does — its node.
fn pod_spec_unchanged(rt: &ResourceType, old: &Value, new: &Value) -> ApiResult<()> {
    let mutable_removed = |spec: &Value| {
        let mut spec = spec.clone();
        for list in ["containers", "initContainers"] {
            for container in spec[list].as_array_mut().into_iter().flatten() {
                if let Some(container) = container.as_object_mut() {
                    container.remove("image");
                }
            }
        }
        if let Some(spec) = spec.as_object_mut() {
            for field in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                spec.remove(field);
            }
            if old["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                spec.remove("nodeName");
            }
        }
        spec
    };
    if mutable_removed(&old["spec"]) != mutable_removed(&new["spec"]) {
        return Err(ApiError::invalid(
            rt,
            new["metadata"]["name"].as_str().unwrap_or_default(),
            "spec",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` or an unset `spec.nodeName`",
        ));
    }
    Ok(())
}

fn set_default(object: &mut Value, field: &str, value: Value) {
    if object.is_object() && object[field].is_null() {
        object[field] = value;
    }
}

fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "serviceAccountName", json!("default"));
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec[list].as_array_mut() else {
            continue;
        };
        for container in containers {
            let latest = container["image"].as_str().is_some_and(|image| {
                !image.rsplit('/').next().unwrap_or("").contains(':') || image.ends_with(":latest")
            });
            set_default(
                container,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            set_default(container, "terminationMessagePolicy", json!("File"));
            requests_from_limits(container);
            if let Some(ports) = container["ports"].as_array_mut() {
                for port in ports {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// A container's requests default to its limits for what it limits but
/// does not request.
fn requests_from_limits(container: &mut Value) {
    let Some(limits) = container["resources"]["limits"].as_object().cloned() else {
        return;
    };
    if !container["resources"]["requests"].is_object() {
        container["resources"]["requests"] = json!({});
    }
    for (resource, limit) in limits {
        set_default(&mut container["resources"]["requests"], &resource, limit);
    }
}

/// PVCs start Pending, Filesystem, and get the default StorageClass when
/// they name none (the DefaultStorageClass admission plugin).
fn pvc(store: &Store, object: &mut Value) {
    object["status"] = json!({"phase": "Pending"});
    let spec = &mut object["spec"];
    set_default(spec, "volumeMode", json!("Filesystem"));
    if spec.is_object() && spec["storageClassName"].is_null() {
        let classes = TypeKey {
            group: "storage.k8s.io".into(),
            plural: "storageclasses".into(),
        };
        let default = store.list(&classes, None).find(|class| {
            class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
        });
        if let Some(name) = default.and_then(|class| class["metadata"]["name"].as_str()) {
            spec["storageClassName"] = json!(name);
        }
    }
}

/// Cluster IP (kept from `old`, else allocated) and node ports (kept,
/// else allocated for NodePort and LoadBalancer Services).
fn service(
    store: &Store,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
) -> ApiResult<()> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let invalid = |field: &str, why: &str| ApiError::invalid(rt, &name, field, why);
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let this_uid = object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let others = || {
        store
            .list(&rt.key(), None)
            .filter(|s| s["metadata"]["uid"].as_str() != Some(&this_uid))
    };
    let spec = &mut object["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if !matches!(
        kind.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(invalid("spec.type", &format!("Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
    }
    let old_ip = old
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .map(str::to_string);
    let asked_ip = spec["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let ip = match (old_ip, asked_ip) {
        (Some(old), Some(asked)) if old != asked => {
            return Err(invalid(
                "spec.clusterIP",
                &format!("Invalid value: {asked:?}: field is immutable"),
            ))
        }
        (Some(old), _) => old,
        (None, Some(asked)) => asked,
        (None, None) if kind == "ExternalName" => String::new(),
        (None, None) => {
            let used: HashSet<String> = others()
                .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
                .collect();
            (10..u16::MAX as u32)
                .map(|n| Ipv4Addr::from(SERVICE_NET + n).to_string())
                .find(|ip| !used.contains(ip))
                .ok_or_else(|| {
                    ApiError::internal("the Service IP range 10.96.0.0/16 is exhausted")
                })?
        }
    };
    if !ip.is_empty() {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let mut used: HashSet<u64> = others()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64())
        .collect();
    let wants_node_ports = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    if let Some(ports) = spec["ports"].as_array_mut() {
        for (index, port) in ports.iter_mut().enumerate() {
            let Some(number) = port["port"].as_u64() else {
                return Err(invalid(
                    &format!("spec.ports[{index}].port"),
                    "Required value",
                ));
            };
            set_default(port, "protocol", json!("TCP"));
            set_default(port, "targetPort", json!(number));
            if !wants_node_ports {
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
                continue;
            }
            if let Some(asked) = port["nodePort"].as_u64() {
                if !NODE_PORTS.contains(&asked) {
                    return Err(invalid(&format!("spec.ports[{index}].nodePort"), &format!("Invalid value: {asked}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
                }
                if used.contains(&asked) {
                    return Err(invalid(
                        &format!("spec.ports[{index}].nodePort"),
                        &format!("Invalid value: {asked}: provided port is already allocated"),
                    ));
                }
            } else {
                let kept = old_ports
                    .iter()
                    .find(|p| p["port"] == port["port"])
                    .and_then(|p| p["nodePort"].as_u64());
                let allocated = kept.or_else(|| NODE_PORTS.clone().find(|p| !used.contains(p)));
                let allocated = allocated
                    .ok_or_else(|| ApiError::internal("no node port left in 30000-32767"))?;
                port["nodePort"] = json!(allocated);
            }
            if let Some(p) = port["nodePort"].as_u64() {
                used.insert(p);
            }
        }
    }
    if old.is_none() && !object["status"].is_object() {
        object["status"] = json!({"loadBalancer": {}});
    }
    Ok(())
}

/// The apiextensions controller accepts a valid CRD's names at once.
fn crd_established(object: &mut Value) {
    let now = super::meta::now();
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": ""});
    object["status"] = json!({
        "acceptedNames": object["spec"]["names"].clone(),
        "storedVersions": object["spec"]["versions"].as_array().into_iter().flatten()
            .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
    });
}
