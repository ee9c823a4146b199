//! The columns and cells of the built-in kinds, as Kubernetes' printers
//! (`pkg/printers/internalversion/printers.go`) and openshift-apiserver's
//! Route printer lay them out: same column names, order, types and
//! priorities, same cell texts (`<none>`, `3/3`, `80/TCP,443:30443/TCP`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{age, ago, int, list, name, or_none, pod, since, text, Column, AGE, NAME};
use crate::api::resources::ResourceType;

/// How one kind's rows are laid out.
pub(super) struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value) -> Vec<Value>,
    /// The row's conditions (only finished pods have one).
    pub conditions: fn(&Value) -> Option<Value>,
}

/// The printer of `rt`, if it is a kind with one.
pub(super) fn printer(rt: &ResourceType) -> Option<&'static Printer> {
    let printer = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => &POD,
        ("", "nodes") => &NODE,
        ("", "namespaces") => &NAMESPACE,
        ("", "services") => &SERVICE,
        ("", "endpoints") => &ENDPOINTS,
        ("", "persistentvolumeclaims") => &PERSISTENT_VOLUME_CLAIM,
        ("", "persistentvolumes") => &PERSISTENT_VOLUME,
        // events.k8s.io Events are printed from their core form (`table`).
        ("", "events") | ("events.k8s.io", "events") => &EVENT,
        ("", "configmaps") => &CONFIG_MAP,
        ("", "secrets") => &SECRET,
        ("", "serviceaccounts") => &SERVICE_ACCOUNT,
        ("", "replicationcontrollers") => &REPLICATION_CONTROLLER,
        ("apps", "deployments") => &DEPLOYMENT,
        ("apps", "replicasets") => &REPLICA_SET,
        ("apps", "statefulsets") => &STATEFUL_SET,
        ("apps", "daemonsets") => &DAEMON_SET,
        ("batch", "jobs") => &JOB,
        ("batch", "cronjobs") => &CRON_JOB,
        ("storage.k8s.io", "storageclasses") => &STORAGE_CLASS,
        ("route.openshift.io", "routes") => &ROUTE,
        _ => return None,
    };
    Some(printer)
}

const fn plain(columns: &'static [Column], cells: fn(&Value) -> Vec<Value>) -> Printer {
    Printer {
        columns,
        cells,
        conditions: |_| None,
    }
}

const CONTAINERS: Column = Column::new(
    "Containers",
    "string",
    "Names of each container in the template.",
)
.wide();
const IMAGES: Column = Column::new(
    "Images",
    "string",
    "Images referenced by each container in the template.",
)
.wide();
const SELECTOR: Column = Column::new(
    "Selector",
    "string",
    "Label selector of the pods it manages.",
)
.wide();

static POD: Printer = Printer {
    columns: pod::COLUMNS,
    cells: pod::cells,
    conditions: pod::conditions,
};

static NODE: Printer = plain(
    &[
        NAME,
        Column::new("Status", "string", "The status of the node"),
        Column::new("Roles", "string", "The roles of the node"),
        AGE,
        Column::new("Version", "string", "Kubelet Version reported by the node."),
        Column::new(
            "Internal-IP",
            "string",
            "List of addresses reachable to the node.",
        )
        .wide(),
        Column::new(
            "External-IP",
            "string",
            "List of addresses reachable to the node.",
        )
        .wide(),
        Column::new("OS-Image", "string", "OS Image reported by the node.").wide(),
        Column::new(
            "Kernel-Version",
            "string",
            "Kernel Version reported by the node.",
        )
        .wide(),
        Column::new(
            "Container-Runtime",
            "string",
            "ContainerRuntime Version reported by the node.",
        )
        .wide(),
    ],
    |node| {
        let ready = list(node, "/status/conditions")
            .iter()
            .find(|c| text(c, "/type") == "Ready")
            .map(|c| {
                if text(c, "/status") == "True" {
                    "Ready"
                } else {
                    "NotReady"
                }
            });
        let mut status = vec![ready.unwrap_or("Unknown")];
        if node["spec"]["unschedulable"] == true {
            status.push("SchedulingDisabled");
        }
        let mut roles: Vec<&str> = node["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(
                |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                    Some(role) if !role.is_empty() => Some(role),
                    _ if key == "kubernetes.io/role" => value.as_str().filter(|v| !v.is_empty()),
                    _ => None,
                },
            )
            .collect();
        roles.sort_unstable();
        roles.dedup();
        let address = |kind: &str| {
            list(node, "/status/addresses")
                .iter()
                .find(|a| text(a, "/type") == kind)
                .map_or("<none>", |a| text(a, "/address"))
                .to_string()
        };
        let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
            "" => "<unknown>".to_string(),
            value => value.to_string(),
        };
        vec![
            json!(name(node)),
            json!(status.join(",")),
            json!(or_none(&roles.join(","))),
            json!(age(node)),
            json!(text(node, "/status/nodeInfo/kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(info("osImage")),
            json!(info("kernelVersion")),
            json!(info("containerRuntimeVersion")),
        ]
    },
);

static NAMESPACE: Printer = plain(
    &[
        NAME,
        Column::new("Status", "string", "The status of the namespace"),
        AGE,
    ],
    |namespace| {
        vec![
            json!(name(namespace)),
            json!(text(namespace, "/status/phase")),
            json!(age(namespace)),
        ]
    },
);

static DEPLOYMENT: Printer = plain(
    &[
        NAME,
        Column::new("Ready", "string", "Number of the pod with ready state"),
        Column::new("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        Column::new("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |deployment| {
        let (containers, images) = containers(deployment, "/spec/template");
        vec![
            json!(name(deployment)),
            json!(format!(
                "{}/{}",
                int(deployment, "/status/readyReplicas"),
                int(deployment, "/spec/replicas")
            )),
            json!(int(deployment, "/status/updatedReplicas")),
            json!(int(deployment, "/status/availableReplicas")),
            json!(age(deployment)),
            json!(containers),
            json!(images),
            json!(selector_text(&deployment["spec"]["selector"])),
        ]
    },
);

static REPLICA_SET: Printer = plain(
    &[
        NAME,
        Column::new(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        Column::new(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        Column::new(
            "Ready",
            "integer",
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |set| replicas_row(set, format_label_selector(&set["spec"]["selector"])),
);

static REPLICATION_CONTROLLER: Printer = plain(
    &[
        NAME,
        Column::new(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        Column::new(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        Column::new(
            "Ready",
            "integer",
            "The number of ready replicas for this replication controller.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |controller| replicas_row(controller, format_labels(&controller["spec"]["selector"])),
);

/// A ReplicaSet's or ReplicationController's row.
fn replicas_row(set: &Value, selector: String) -> Vec<Value> {
    let (containers, images) = containers(set, "/spec/template");
    vec![
        json!(name(set)),
        json!(int(set, "/spec/replicas")),
        json!(int(set, "/status/replicas")),
        json!(int(set, "/status/readyReplicas")),
        json!(age(set)),
        json!(containers),
        json!(images),
        json!(selector),
    ]
}

static STATEFUL_SET: Printer = plain(
    &[
        NAME,
        Column::new("Ready", "string", "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    |set| {
        let (containers, images) = containers(set, "/spec/template");
        vec![
            json!(name(set)),
            json!(format!(
                "{}/{}",
                int(set, "/status/readyReplicas"),
                int(set, "/spec/replicas")
            )),
            json!(age(set)),
            json!(containers),
            json!(images),
        ]
    },
);

static DAEMON_SET: Printer = plain(
    &[
        NAME,
        Column::new("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
        Column::new("Current", "integer", "The number of nodes that are running at least one daemon pod and are supposed to run the daemon pod."),
        Column::new("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
        Column::new("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod."),
        Column::new("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
        Column::new("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |set| {
        let (containers, images) = containers(set, "/spec/template");
        vec![
            json!(name(set)),
            json!(int(set, "/status/desiredNumberScheduled")),
            json!(int(set, "/status/currentNumberScheduled")),
            json!(int(set, "/status/numberReady")),
            json!(int(set, "/status/updatedNumberScheduled")),
            json!(int(set, "/status/numberAvailable")),
            json!(format_labels(&set["spec"]["template"]["spec"]["nodeSelector"])),
            json!(age(set)),
            json!(containers),
            json!(images),
            json!(format_label_selector(&set["spec"]["selector"])),
        ]
    },
);

static JOB: Printer = plain(
    &[
        NAME,
        Column::new("Status", "string", "Status of the job."),
        Column::new(
            "Completions",
            "string",
            "The number of pods which reached phase Succeeded.",
        ),
        Column::new("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |job| {
        let succeeded = int(job, "/status/succeeded");
        let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(completions) => format!("{succeeded}/{completions}"),
            None => match int(job, "/spec/parallelism") {
                parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let time = |field: &str| {
            text(job, &format!("/status/{field}"))
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
        };
        let duration = match (time("startTime"), time("completionTime")) {
            (None, _) => String::new(),
            (Some(start), None) => ago(start),
            (Some(start), Some(end)) => super::human_duration(end.as_second() - start.as_second()),
        };
        let holds = |kind: &str| {
            list(job, "/status/conditions")
                .iter()
                .find(|c| text(c, "/type") == kind)
                .is_some_and(|c| text(c, "/status") == "True")
        };
        let status = if holds("Complete") {
            "Complete"
        } else if holds("Failed") {
            "Failed"
        } else if job.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else if holds("Suspended") {
            "Suspended"
        } else if holds("FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        let (containers, images) = containers(job, "/spec/template");
        vec![
            json!(name(job)),
            json!(status),
            json!(completions),
            json!(duration),
            json!(age(job)),
            json!(containers),
            json!(images),
            json!(format_label_selector(&job["spec"]["selector"])),
        ]
    },
);

static CRON_JOB: Printer = plain(
    &[
        NAME,
        Column::new("Schedule", "string", "The schedule in Cron format."),
        Column::new(
            "Timezone",
            "string",
            "The time zone name for the given schedule.",
        ),
        Column::new(
            "Suspend",
            "boolean",
            "Whether the controller suspends subsequent executions.",
        ),
        Column::new(
            "Active",
            "integer",
            "A list of pointers to currently running jobs.",
        ),
        Column::new(
            "Last Schedule",
            "string",
            "Information when was the last time the job was successfully scheduled.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    |cron_job| {
        let suspend = match cron_job["spec"]["suspend"].as_bool() {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let last_schedule = since(text(cron_job, "/status/lastScheduleTime"));
        let (containers, images) = containers(cron_job, "/spec/jobTemplate/spec/template");
        vec![
            json!(name(cron_job)),
            json!(text(cron_job, "/spec/schedule")),
            json!(or_none(text(cron_job, "/spec/timeZone"))),
            json!(suspend),
            json!(list(cron_job, "/status/active").len()),
            json!(last_schedule.unwrap_or_else(|| "<none>".to_string())),
            json!(age(cron_job)),
            json!(containers),
            json!(images),
            json!(format_label_selector(
                &cron_job["spec"]["jobTemplate"]["spec"]["selector"]
            )),
        ]
    },
);

static SERVICE: Printer = plain(
    &[
        NAME,
        Column::new("Type", "string", "type determines how the Service is exposed."),
        Column::new("Cluster-IP", "string", "clusterIP is the IP address of the service."),
        Column::new("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        Column::new("Port(s)", "string", "The list of ports that are exposed by this service."),
        AGE,
        Column::new("Selector", "string", "Route service traffic to pods with label keys and values matching this selector.").wide(),
    ],
    |service| {
        let cluster_ip = list(service, "/spec/clusterIPs")
            .first()
            .and_then(Value::as_str)
            .unwrap_or_else(|| text(service, "/spec/clusterIP"));
        let ports: Vec<String> = list(service, "/spec/ports")
            .iter()
            .map(|port| {
                let protocol = match text(port, "/protocol") {
                    "" => "TCP",
                    protocol => protocol,
                };
                match int(port, "/nodePort") {
                    0 => format!("{}/{protocol}", int(port, "/port")),
                    node_port => format!("{}:{node_port}/{protocol}", int(port, "/port")),
                }
            })
            .collect();
        vec![
            json!(name(service)),
            json!(text(service, "/spec/type")),
            json!(or_none(cluster_ip)),
            json!(external_ip(service)),
            json!(or_none(&ports.join(","))),
            json!(age(service)),
            json!(format_labels(&service["spec"]["selector"])),
        ]
    },
);

/// The EXTERNAL-IP cell of a Service, by its type.
fn external_ip(service: &Value) -> String {
    let external: Vec<&str> = list(service, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match text(service, "/spec/type") {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut balancers: Vec<&str> = list(service, "/status/loadBalancer/ingress")
                .iter()
                .map(|ingress| match text(ingress, "/ip") {
                    "" => text(ingress, "/hostname"),
                    ip => ip,
                })
                .filter(|address| !address.is_empty())
                .collect();
            balancers.sort_unstable();
            balancers.dedup();
            match (balancers.is_empty(), external.is_empty()) {
                (true, true) => "<pending>".to_string(),
                _ => [balancers, external].concat().join(","),
            }
        }
        "ExternalName" => text(service, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

static ENDPOINTS: Printer = plain(
    &[
        NAME,
        Column::new(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets.",
        ),
        AGE,
    ],
    |endpoints| {
        vec![
            json!(name(endpoints)),
            json!(format_endpoints(endpoints)),
            json!(age(endpoints)),
        ]
    },
);

/// At most three `ip:port` of an Endpoints object, then `+ N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    const SHOWN: usize = 3;
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut all = Vec::new();
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            all.extend(addresses.iter().map(|a| text(a, "/ip").to_string()));
        }
        for port in ports {
            all.extend(addresses.iter().map(|address| {
                let ip = text(address, "/ip");
                let port = int(port, "/port");
                if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                }
            }));
        }
    }
    let shown = all
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    match all.len() {
        n if n > SHOWN => format!("{shown} + {} more...", n - SHOWN),
        _ => shown,
    }
}

static PERSISTENT_VOLUME_CLAIM: Printer = plain(
    &[
        NAME,
        Column::new(
            "Status",
            "string",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        Column::new(
            "Volume",
            "string",
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
        ),
        Column::new(
            "Capacity",
            "string",
            "capacity represents the actual resources of the underlying volume.",
        ),
        Column::new(
            "Access Modes",
            "string",
            "accessModes contains the actual access modes the volume backing the PVC has.",
        ),
        Column::new("StorageClass", "string", "StorageClass of the pvc"),
        Column::new(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        AGE,
        Column::new(
            "VolumeMode",
            "string",
            "volumeMode defines what type of volume is required by the claim.",
        )
        .wide(),
    ],
    |claim| {
        let bound = !text(claim, "/spec/volumeName").is_empty();
        let (capacity, modes) = if bound {
            (
                text(claim, "/status/capacity/storage").to_string(),
                access_modes(list(claim, "/status/accessModes")),
            )
        } else {
            (String::new(), String::new())
        };
        vec![
            json!(name(claim)),
            json!(storage_phase(claim)),
            json!(text(claim, "/spec/volumeName")),
            json!(capacity),
            json!(modes),
            json!(storage_class(claim)),
            json!(unset_if_empty(text(
                claim,
                "/spec/volumeAttributesClassName"
            ))),
            json!(age(claim)),
            json!(unset_if_empty(text(claim, "/spec/volumeMode"))),
        ]
    },
);

static PERSISTENT_VOLUME: Printer = plain(
    &[
        NAME,
        Column::new("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
        Column::new("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
        Column::new("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
        Column::new("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
        Column::new("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
        Column::new("StorageClass", "string", "StorageClass of the pv"),
        Column::new("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
        Column::new("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
        AGE,
        Column::new("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.").wide(),
    ],
    |volume| {
        let claim = match volume.pointer("/spec/claimRef") {
            Some(claim) => format!("{}/{}", text(claim, "/namespace"), text(claim, "/name")),
            None => String::new(),
        };
        vec![
            json!(name(volume)),
            json!(text(volume, "/spec/capacity/storage")),
            json!(access_modes(list(volume, "/spec/accessModes"))),
            json!(text(volume, "/spec/persistentVolumeReclaimPolicy")),
            json!(storage_phase(volume)),
            json!(claim),
            json!(storage_class(volume)),
            json!(unset_if_empty(text(volume, "/spec/volumeAttributesClassName"))),
            json!(text(volume, "/status/reason")),
            json!(age(volume)),
            json!(unset_if_empty(text(volume, "/spec/volumeMode"))),
        ]
    },
);

/// A PV's or PVC's phase, `Terminating` once deleted.
fn storage_phase(object: &Value) -> &str {
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        text(object, "/status/phase")
    }
}

/// A PV's or PVC's class: the beta annotation first, as Kubernetes reads it.
fn storage_class(object: &Value) -> &str {
    match text(
        object,
        "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
    ) {
        "" => text(object, "/spec/storageClassName"),
        annotated => annotated,
    }
}

/// `RWO,ROX,RWX,RWOP`: the access modes held, in that order.
fn access_modes(modes: &[Value]) -> String {
    let held = |mode: &str| modes.iter().any(|m| m == mode);
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| held(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn unset_if_empty(value: &str) -> String {
    if value.is_empty() {
        "<unset>".to_string()
    } else {
        value.to_string()
    }
}

static STORAGE_CLASS: Printer = plain(
    &[
        NAME,
        Column::new("Provisioner", "string", "provisioner indicates the type of the provisioner."),
        Column::new("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
        Column::new("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
        Column::new("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        AGE,
    ],
    |class| {
        let annotated_default = ["storageclass.kubernetes.io~1is-default-class", "storageclass.beta.kubernetes.io~1is-default-class"]
            .iter()
            .any(|key| text(class, &format!("/metadata/annotations/{key}")) == "true");
        let shown_name = if annotated_default {
            format!("{} (default)", name(class))
        } else {
            name(class).to_string()
        };
        let or = |pointer: &str, default: &'static str| match text(class, pointer) {
            "" => default,
            value => value,
        };
        vec![
            json!(shown_name),
            json!(text(class, "/provisioner")),
            json!(or("/reclaimPolicy", "Delete")),
            json!(or("/volumeBindingMode", "Immediate")),
            json!(class["allowVolumeExpansion"].as_bool().unwrap_or(false)),
            json!(age(class)),
        ]
    },
);

static EVENT: Printer = plain(
    &[
        Column::new("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
        Column::new("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
        Column::new("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        Column::new("Object", "string", "The object that this event is about."),
        Column::new("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.").wide(),
        Column::new("Source", "string", "The component reporting this event.").wide(),
        Column::new("Message", "string", "A human-readable description of the status of this operation."),
        Column::new("First Seen", "string", "The time at which the event was first recorded.").wide(),
        Column::new("Count", "string", "The number of times this event has occurred.").wide(),
        Column { format: "name", ..Column::new("Name", "string", "Name must be unique within a namespace.").wide() },
    ],
    |event| {
        let first = since(text(event, "/firstTimestamp"))
            .or_else(|| since(text(event, "/eventTime")))
            .unwrap_or_else(|| "<unknown>".to_string());
        let mut last = since(text(event, "/lastTimestamp")).unwrap_or_else(|| first.clone());
        let mut count = int(event, "/count");
        if let Some(series) = event.get("series").filter(|s| s.is_object()) {
            last = since(text(series, "/lastObservedTime")).unwrap_or_else(|| "<unknown>".to_string());
            count = int(series, "/count");
        } else if count == 0 {
            count = 1;
        }
        let kind = text(event, "/involvedObject/kind").to_lowercase();
        let object = match text(event, "/involvedObject/name") {
            "" => kind,
            involved => format!("{kind}/{involved}"),
        };
        let first_of = |a: &str, b: &str| if text(event, a).is_empty() { text(event, b) } else { text(event, a) }.to_string();
        let component = first_of("/source/component", "/reportingComponent");
        let source = match first_of("/source/host", "/reportingInstance") {
            instance if instance.is_empty() => component,
            instance => format!("{component}, {instance}"),
        };
        vec![
            json!(last),
            json!(text(event, "/type")),
            json!(text(event, "/reason")),
            json!(object),
            json!(text(event, "/involvedObject/fieldPath")),
            json!(source),
            json!(text(event, "/message").trim()),
            json!(first),
            json!(count),
            json!(name(event)),
        ]
    },
);

static CONFIG_MAP: Printer = plain(
    &[
        NAME,
        Column::new("Data", "string", "Data contains the configuration data."),
        AGE,
    ],
    |map| {
        let entries = |field: &str| map[field].as_object().map_or(0, |m| m.len());
        vec![
            json!(name(map)),
            json!(entries("data") + entries("binaryData")),
            json!(age(map)),
        ]
    },
);

static SECRET: Printer = plain(
    &[
        NAME,
        Column::new(
            "Type",
            "string",
            "Used to facilitate programmatic handling of secret data.",
        ),
        Column::new("Data", "string", "Data contains the secret data."),
        AGE,
    ],
    |secret| {
        vec![
            json!(name(secret)),
            json!(text(secret, "/type")),
            json!(secret["data"].as_object().map_or(0, |m| m.len())),
            json!(age(secret)),
        ]
    },
);

static SERVICE_ACCOUNT: Printer = plain(
    &[
        NAME,
        Column::new("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        AGE,
    ],
    |account| {
        vec![
            json!(name(account)),
            json!(list(account, "/secrets").len()),
            json!(age(account)),
        ]
    },
);

static ROUTE: Printer = plain(
    &[
        NAME,
        Column::new(
            "Host/Port",
            "string",
            "host is an alias/DNS that points to the service.",
        ),
        Column::new(
            "Path",
            "string",
            "path that the router watches for, to route traffic for to the service.",
        ),
        Column::new(
            "Services",
            "string",
            "Primary and alternate route backends.",
        ),
        Column::new(
            "Port",
            "string",
            "If specified, the port to be used by the router.",
        ),
        Column::new("Termination", "string", "Indicates termination type."),
        Column::new(
            "Wildcard",
            "string",
            "Wildcard policy if any for the route.",
        ),
    ],
    |route| {
        vec![
            json!(name(route)),
            json!(route_host(route)),
            json!(text(route, "/spec/path")),
            json!(route_backends(route)),
            json!(match route.pointer("/spec/port/targetPort") {
                Some(Value::String(port)) => port.clone(),
                Some(Value::Number(port)) => port.to_string(),
                _ => "<all>".to_string(),
            }),
            json!(match (
                text(route, "/spec/tls/termination"),
                text(route, "/spec/tls/insecureEdgeTerminationPolicy")
            ) {
                ("", "") => String::new(),
                (termination, "") => termination.to_string(),
                ("", insecure) => format!("default/{insecure}"),
                (termination, insecure) => format!("{termination}/{insecure}"),
            }),
            json!(text(route, "/spec/wildcardPolicy")),
        ]
    },
);

/// The HOST/PORT cell: the admitted host, or why no router admitted it.
fn route_host(route: &Value) -> String {
    let spec_host = text(route, "/spec/host");
    let Some(ingresses) = route.pointer("/status/ingress").and_then(Value::as_array) else {
        return spec_host.to_string();
    };
    let mut host = spec_host.to_string();
    let (mut matched, mut admitted, mut rejected, mut reason) = (false, 0, 0, "");
    for ingress in ingresses {
        let admission = list(ingress, "/conditions")
            .iter()
            .find(|c| text(c, "/type") == "Admitted");
        match admission.map(|c| text(c, "/status")) {
            Some("True") => {
                admitted += 1;
                if !matched {
                    matched = text(ingress, "/host") == spec_host;
                    host = text(ingress, "/host").to_string();
                }
            }
            Some("False") => {
                rejected += 1;
                reason = admission.map_or("", |c| text(c, "/reason"));
            }
            _ => {}
        }
    }
    match (admitted, rejected) {
        (0, r) if r > 0 => reason.to_string(),
        (_, r) if r > 0 => format!("{host} ... {r} rejected"),
        (0, _) => "Pending".to_string(),
        (a, _) if a > 1 => format!("{host} ... {} more", a - 1),
        _ => host,
    }
}

/// The SERVICES cell: the backends, with their share when weighted.
fn route_backends(route: &Value) -> String {
    let backends: Vec<&Value> = std::iter::once(&route["spec"]["to"])
        .chain(list(route, "/spec/alternateBackends"))
        .collect();
    let total: i64 = backends.iter().filter_map(|b| b["weight"].as_i64()).sum();
    backends
        .iter()
        .map(|backend| {
            let name = text(backend, "/name");
            match backend["weight"].as_i64() {
                None => name.to_string(),
                Some(_) if backends.len() == 1 && total != 0 => name.to_string(),
                Some(_) if total == 0 => format!("{name}(0%)"),
                Some(weight) => format!("{name}({}%)", weight * 100 / total),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The names and images of a pod template's containers, comma-separated.
fn containers(object: &Value, template: &str) -> (String, String) {
    let containers = list(object, &format!("{template}/spec/containers"));
    let joined = |field: &str| {
        containers
            .iter()
            .map(|c| text(c, field))
            .collect::<Vec<_>>()
            .join(",")
    };
    (joined("/name"), joined("/image"))
}

/// `k=v,k2=v2` of a label map, sorted by key; `<none>` when empty.
fn format_labels(labels: &Value) -> String {
    let sorted: BTreeMap<&String, &str> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key, value.as_str().unwrap_or("")))
        .collect();
    let joined: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    or_none(&joined.join(","))
}

/// A label selector as kubectl writes it, `<none>` when it selects by
/// nothing.
fn format_label_selector(selector: &Value) -> String {
    or_none(&selector_text(selector))
}

/// A label selector's requirements sorted by key: `app=web,tier in
/// (a,b),!legacy`.
fn selector_text(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            (
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or("")),
            )
        })
        .collect();
    for expression in list(selector, "/matchExpressions") {
        let key = text(expression, "/key");
        let mut values: Vec<&str> = list(expression, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let values = values.join(",");
        let requirement = match text(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({values})"),
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, requirement)| requirement)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_written_sorted_by_key() {
        let selector = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        });
        assert_eq!(
            format_label_selector(&selector),
            "app=shop,env in (dev,prod),!legacy,tier=web"
        );
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(format_labels(&json!({"b": "2", "a": "1"})), "a=1,b=2");
    }

    #[test]
    fn endpoints_show_three_addresses_and_count_the_rest() {
        let endpoints = json!({"subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "ports": [{"port": 80}, {"port": 443}],
        }]});
        assert_eq!(
            format_endpoints(&endpoints),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
    }

    #[test]
    fn route_hosts_show_admission() {
        let route =
            |ingress: Value| json!({"spec": {"host": "h.test"}, "status": {"ingress": ingress}});
        let admitted =
            json!([{"host": "h.test", "conditions": [{"type": "Admitted", "status": "True"}]}]);
        let rejected = json!([{"host": "h.test", "conditions": [{"type": "Admitted", "status": "False", "reason": "HostAlreadyClaimed"}]}]);
        assert_eq!(route_host(&route(admitted)), "h.test");
        assert_eq!(route_host(&route(rejected)), "HostAlreadyClaimed");
        assert_eq!(route_host(&route(json!([]))), "Pending");
        assert_eq!(route_host(&json!({"spec": {"host": "h.test"}})), "h.test");
    }
}
