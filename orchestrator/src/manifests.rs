//! The Kubernetes objects a volume migration creates, built as plain values
//! so that they can be checked without a cluster.
//!
//! Security choices, in one place:
//! - The receiver runs as root (uid 0) so that it can give every file its
//!   source owner, as rsync-based movers do; it gets only the capabilities
//!   that needs, no privilege escalation, and a read-only root filesystem.
//! - A sender runs with the identity of the pods that already use its PVC
//!   (runAsUser/runAsGroup, fsGroup, supplementalGroups, SELinux options),
//!   so it reads exactly what the application can read; it mounts the PVC
//!   read-only and has no capabilities.
//! - Block PVCs are attached with `volumeDevices` (never mounted), which no
//!   Pod Security level restricts and which needs no privilege: the runtime
//!   gives the device to the container's user (containerd's and CRI-O's
//!   `device_ownership_from_security_context`), so a non-root mover opens
//!   it like any file it owns; a mover that would run as its image's user
//!   is given that uid by number, since an unnamed user gets root's device.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    Secret, SecretKeySelector, SecretVolumeSource, Service, ServiceAccount, ServicePort,
    ServiceSpec, Toleration, Volume, VolumeDevice, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::names::{self, *};
use crate::plan::{EndpointType, Plan};
use crate::security::{Admission, ReceiverMode, SenderMode, ANYUID_ROLE, ANYUID_SCC};

/// The OpenShift Route type, which k8s-openapi does not have.
pub fn route_resource() -> ApiResource {
    ApiResource {
        group: "route.openshift.io".into(),
        version: "v1".into(),
        api_version: "route.openshift.io/v1".into(),
        kind: "Route".into(),
        plural: "routes".into(),
    }
}

fn transfer_labels(migration: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TRANSFER_LABEL.to_string(), migration.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ])
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// The destination namespace, keeping the source's labels and annotations
/// (minus the name label the API server sets).
///
/// OpenShift's `openshift.io/sa.scc.uid-range`, `supplemental-groups` and
/// `mcs` annotations are kept on purpose: OpenShift assigns a namespace's
/// pods their uid, groups and SELinux level from them and keeps annotations
/// a new namespace already has, so the migrated application runs as the
/// uid that owns its files, as it did on the source.
pub fn destination_namespace(source: &Namespace, name: &str, migration: &str) -> Namespace {
    let keep = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "kubernetes.io/metadata.name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut labels = keep(&source.metadata.labels);
    labels.insert(MIGRATED_BY_LABEL.into(), migration.into());
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(keep(&source.metadata.annotations)).filter(|a| !a.is_empty()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// How a PVC holds its data: a filesystem the mover copies as a file tree,
/// or a raw device it copies byte for byte (`volumeMode: Block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}

impl VolumeMode {
    pub fn of(pvc: &PersistentVolumeClaim) -> Self {
        match pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) {
            Some("Block") => Self::Block,
            _ => Self::Filesystem,
        }
    }
}

/// The destination PVC for a source PVC: same name and size (a Block
/// one too: its device must hold at least the source's bytes), mapped
/// storage class and access modes, the source's labels plus the
/// migration's.
pub fn destination_pvc(
    source: &PersistentVolumeClaim,
    namespace: &str,
    plan: &Plan,
) -> PersistentVolumeClaim {
    let name = source.metadata.name.clone().unwrap_or_default();
    let source_ns = source.metadata.namespace.clone().unwrap_or_default();
    let spec = source.spec.clone().unwrap_or_default();
    // Prefer what the source volume really has over what was requested:
    // a volume expanded after creation holds more than its request.
    let size = source
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| spec.resources.as_ref()?.requests.as_ref()?.get("storage"))
        .cloned();
    let mut labels = source.metadata.labels.clone().unwrap_or_default();
    labels.insert(MIGRATED_BY_LABEL.into(), plan.name.clone());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                SOURCE_ANNOTATION.to_string(),
                format!("{source_ns}/{name}"),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(plan.map_access_modes(&spec.access_modes.unwrap_or_default())),
            storage_class_name: plan.map_storage_class(spec.storage_class_name.as_deref()),
            volume_mode: spec.volume_mode,
            resources: Some(VolumeResourceRequirements {
                requests: size.map(|s| BTreeMap::from([("storage".to_string(), s)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// A Secret holding a CA certificate and one certificate with its key, in
/// the layout of `kubernetes.io/tls` Secrets plus `ca.crt`.
pub fn tls_secret(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    ca_cert: &str,
    pem: &mover::certs::Pem,
) -> Secret {
    Secret {
        metadata: meta(name, namespace, labels),
        type_: Some("kubernetes.io/tls".into()),
        string_data: Some(BTreeMap::from([
            ("ca.crt".to_string(), ca_cert.to_string()),
            ("tls.crt".to_string(), pem.cert.clone()),
            ("tls.key".to_string(), pem.key.clone()),
        ])),
        ..Secret::default()
    }
}

/// The receiver's TLS Secret.
pub fn receiver_secret(
    namespace: &str,
    migration: &str,
    ca_cert: &str,
    pem: &mover::certs::Pem,
) -> Secret {
    tls_secret(
        RECEIVER,
        namespace,
        transfer_labels(migration, ROLE_RECEIVER),
        ca_cert,
        pem,
    )
}

/// A sender's TLS Secret (its certificate names only its own volume), and
/// the plan's proxy URL under [`PROXY_KEY`]: it may carry credentials, which
/// belong in a Secret, not in the pod's arguments for anyone who may read
/// pods to see.
pub fn sender_secret(
    namespace: &str,
    pvc: &str,
    plan: &Plan,
    ca_cert: &str,
    pem: &mover::certs::Pem,
) -> Secret {
    let mut secret = tls_secret(
        &names::sender(pvc),
        namespace,
        sender_labels(&plan.name, pvc),
        ca_cert,
        pem,
    );
    if let (Some(proxy), Some(data)) = (&plan.proxy, secret.string_data.as_mut()) {
        data.insert(PROXY_KEY.to_string(), proxy.url().to_string());
    }
    secret
}

/// The key of a sender's Secret that holds the proxy URL, given to the
/// mover as `MOVER_PROXY`.
const PROXY_KEY: &str = "proxy";

fn sender_labels(migration: &str, pvc: &str) -> BTreeMap<String, String> {
    let mut labels = transfer_labels(migration, ROLE_SENDER);
    labels.insert(PVC_LABEL.into(), label_safe(pvc));
    labels
}

fn tls_volume(secret: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                // Readable by whichever uid the mover runs as: a sender
                // runs as the application's user, often without an
                // fsGroup (which would let a 0440 mode work but makes the
                // kubelet re-own the volume's files). Only this pod's
                // containers see the mount.
                default_mode: Some(0o444),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

fn tls_args() -> Vec<String> {
    [
        "--cert",
        &format!("{TLS_DIR}/tls.crt"),
        "--key",
        &format!("{TLS_DIR}/tls.key"),
        "--ca",
        &format!("{TLS_DIR}/ca.crt"),
    ]
    .map(String::from)
    .to_vec()
}

fn pvc_volume(index: usize, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: format!("pvc-{index}"),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

/// How a namespace's receiver runs and is scheduled (chosen at preflight).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverSetup {
    pub mode: ReceiverMode,
    pub admission: Admission,
    /// The application pods' tolerations, so that the receiver can run
    /// on the nodes the application will.
    pub tolerations: Vec<Toleration>,
}

impl ReceiverSetup {
    /// The service account the receiver runs as: its own when it needs
    /// the `anyuid` SCC, else the namespace's default.
    pub fn service_account(&self) -> Option<&'static str> {
        (self.mode == ReceiverMode::Owners && self.admission.openshift).then_some(RECEIVER)
    }
}

/// The receiver's own service account (OpenShift, keeping owners).
pub fn receiver_service_account(namespace: &str, migration: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(
            RECEIVER,
            namespace,
            transfer_labels(migration, ROLE_RECEIVER),
        ),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Lets the receiver's service account use the `anyuid` SCC.
pub fn receiver_scc_binding(namespace: &str, migration: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(
            &format!("{RECEIVER}-{ANYUID_SCC}"),
            namespace,
            transfer_labels(migration, ROLE_RECEIVER),
        ),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: ANYUID_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: RECEIVER.into(),
            namespace: Some(namespace.to_string()),
            ..Subject::default()
        }]),
    }
}

/// A device belongs to its container's user only when the pod names the
/// user (the runtime gives it `runAsUser`, root when unset): a mover that
/// would run as its image's user is told that user by number, so that it
/// owns its devices. On OpenShift the SCC always names the user.
fn own_devices(context: &mut PodSecurityContext, admission: Admission) {
    if context.run_as_user.is_none() && !admission.openshift {
        context.run_as_user = Some(MOVER_IMAGE_UID);
    }
}

/// What every transfer pod has: no service account token (movers never
/// call the API), the plan's resources and priority, the application's
/// tolerations.
fn transfer_spec(plan: &Plan, tolerations: &[Toleration], container: Container) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        priority_class_name: plan.transfer_pods.priority_class_name.clone(),
        tolerations: (!tolerations.is_empty()).then(|| tolerations.to_vec()),
        containers: vec![Container {
            name: "mover".into(),
            image: Some(plan.mover_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            resources: Some(plan.transfer_pods.resources()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..container
        }],
        ..PodSpec::default()
    }
}

/// `mover receive --max-connections` when not given.
const RECEIVER_DEFAULT_CONNECTIONS: usize = 64;

/// The receiver pod of a destination namespace, serving each of `pvcs`
/// as the volume of the same name: a Filesystem PVC mounted as a
/// directory, a Block one mapped as a device (which the mover detects).
pub fn receiver_pod(
    namespace: &str,
    plan: &Plan,
    pvcs: &[(String, VolumeMode)],
    setup: &ReceiverSetup,
) -> Pod {
    let (tls_vol, tls_mount) = tls_volume(RECEIVER);
    let mut volumes = vec![tls_vol];
    let mut mounts = vec![tls_mount];
    let mut devices = Vec::new();
    // The destination PVCs are nobody's until the migration ends, so a
    // resync rewrites only what changed in a large file (`--inplace`),
    // instead of a whole new copy of it.
    let mut args: Vec<String> = vec![
        "receive".into(),
        "--listen".into(),
        format!("0.0.0.0:{RECEIVER_PORT}"),
        "--inplace".into(),
    ];
    // A stage run keeps the segment hashes of the large files it wrote in
    // the volume's work area, so the next run reads only what changed; the
    // final run uses them and removes them, so the application starts on
    // exactly the source's names.
    if plan.stage {
        args.push("--keep-hash-cache".into());
    }
    if !setup.mode.creates_devices(setup.admission) {
        args.push("--no-devices".into());
    }
    // Every sender at once may come here, each with its data connections
    // (`streams`), and a retried one before its old connections are gone.
    let lanes = if plan.streams > 1 { plan.streams } else { 0 };
    let connections = 2 * plan.concurrency * (1 + lanes as usize);
    if connections > RECEIVER_DEFAULT_CONNECTIONS {
        args.extend(["--max-connections".into(), connections.to_string()]);
    }
    args.extend(tls_args());
    for (i, (pvc, mode)) in pvcs.iter().enumerate() {
        let volume = pvc_volume(i, pvc, false);
        let path = match mode {
            VolumeMode::Filesystem => {
                let path = format!("{RECEIVER_VOLUMES_DIR}/{pvc}");
                mounts.push(VolumeMount {
                    name: volume.name.clone(),
                    mount_path: path.clone(),
                    ..VolumeMount::default()
                });
                path
            }
            VolumeMode::Block => {
                let path = format!("{RECEIVER_DEVICES_DIR}/{pvc}");
                devices.push(VolumeDevice {
                    name: volume.name.clone(),
                    device_path: path.clone(),
                });
                path
            }
        };
        volumes.push(volume);
        args.push("--volume".into());
        args.push(format!("{pvc}={path}"));
    }
    let maps_devices = !devices.is_empty();
    let container = Container {
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("mover".into()),
            container_port: RECEIVER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(mounts),
        volume_devices: maps_devices.then_some(devices),
        security_context: Some(setup.mode.container_context(setup.admission)),
        ..Container::default()
    };
    Pod {
        metadata: meta(
            RECEIVER,
            namespace,
            transfer_labels(&plan.name, ROLE_RECEIVER),
        ),
        spec: Some(PodSpec {
            restart_policy: Some("Always".into()),
            service_account_name: setup.service_account().map(String::from),
            security_context: Some({
                let mut context = setup.mode.pod_context(setup.admission);
                if maps_devices {
                    own_devices(&mut context, setup.admission);
                }
                context
            }),
            volumes: Some(volumes),
            ..transfer_spec(plan, &setup.tolerations, container)
        }),
        status: None,
    }
}

/// The receiver's Service: port 443 to the receiver's port, of the type
/// the endpoint needs.
pub fn receiver_service(namespace: &str, migration: &str, endpoint: EndpointType) -> Service {
    let type_ = match endpoint {
        EndpointType::Route | EndpointType::Ingress => "ClusterIP",
        EndpointType::Loadbalancer => "LoadBalancer",
        EndpointType::Nodeport => "NodePort",
    };
    Service {
        metadata: meta(
            RECEIVER,
            namespace,
            transfer_labels(migration, ROLE_RECEIVER),
        ),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(transfer_labels(migration, ROLE_RECEIVER)),
            ports: Some(vec![ServicePort {
                name: Some("mover".into()),
                port: 443,
                target_port: Some(IntOrString::String("mover".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The passthrough Route to the receiver's Service; the router picks its
/// host, which the orchestrator reads back from the Route's status.
pub fn receiver_route(namespace: &str, migration: &str, host: Option<&str>) -> DynamicObject {
    let mut spec = json!({
        "to": {"kind": "Service", "name": RECEIVER, "weight": 100},
        "port": {"targetPort": "mover"},
        "tls": {"termination": "passthrough", "insecureEdgeTerminationPolicy": "None"},
        "wildcardPolicy": "None",
    });
    if let Some(host) = host {
        spec["host"] = json!(host);
    }
    let mut route = DynamicObject::new(RECEIVER, &route_resource())
        .within(namespace)
        .data(json!({ "spec": spec }));
    route.metadata.labels = Some(transfer_labels(migration, ROLE_RECEIVER));
    route
}

/// An Ingress with SSL passthrough (ingress-nginx) to the receiver's
/// Service on `host`.
pub fn receiver_ingress(namespace: &str, migration: &str, host: &str) -> Ingress {
    let mut metadata = meta(
        RECEIVER,
        namespace,
        transfer_labels(migration, ROLE_RECEIVER),
    );
    metadata.annotations = Some(BTreeMap::from([(
        "nginx.ingress.kubernetes.io/ssl-passthrough".to_string(),
        "true".to_string(),
    )]));
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            rules: Some(vec![IngressRule {
                host: Some(host.to_string()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: RECEIVER.into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(443),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

/// Where and as whom a sender runs: taken from the pods that already use
/// its PVC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Set when the PVC is ReadWriteOnce and mounted on this node.
    pub node: Option<String>,
    /// The effective identity of the container mounting the PVC.
    pub security: Option<PodSecurityContext>,
    /// That pod's service account: on OpenShift it holds the SCCs that
    /// admit the application's identity.
    pub service_account: Option<String>,
    /// That pod's tolerations, so that the sender can run on its node.
    pub tolerations: Vec<Toleration>,
    /// What admits pods in the source namespace.
    pub admission: Admission,
}

impl Placement {
    pub fn sender_mode(&self) -> SenderMode {
        SenderMode::choose(self.security.as_ref(), self.admission)
    }
}

/// What a sender needs to know to reach its receiver.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT` to connect to.
    pub connect: String,
    /// TLS server name: the Route or Ingress host.
    pub server_name: String,
}

/// The sender pod copying `pvc` of `namespace` to the receiver at `target`:
/// a Filesystem PVC mounted read-only, a Block one mapped as a device
/// (read-only too) and sent with `--block`.
pub fn sender_pod(
    namespace: &str,
    pvc: &str,
    mode: VolumeMode,
    plan: &Plan,
    placement: &Placement,
    target: &Target,
) -> Pod {
    let (tls_vol, tls_mount) = tls_volume(&names::sender(pvc));
    let source = pvc_volume(0, pvc, true);
    let mut args: Vec<String> = vec!["send".into()];
    let mut mounts = vec![tls_mount];
    let mut devices = None;
    match mode {
        VolumeMode::Filesystem => {
            args.push(SENDER_SOURCE_DIR.into());
            mounts.push(VolumeMount {
                name: source.name.clone(),
                mount_path: SENDER_SOURCE_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        VolumeMode::Block => {
            args.extend(["--block".into(), SENDER_SOURCE_DEVICE.into()]);
            devices = Some(vec![VolumeDevice {
                name: source.name.clone(),
                device_path: SENDER_SOURCE_DEVICE.into(),
            }]);
        }
    }
    args.extend(
        [
            "--connect",
            &target.connect,
            "--server-name",
            &target.server_name,
            "--volume",
            pvc,
            "--progress",
            "json",
            // Rides out short network trouble inside one pod; a pod that still
            // fails is retried by the orchestrator.
            "--retries",
            "3",
        ]
        .map(String::from),
    );
    if let Some(rate) = plan.bandwidth_limit {
        args.extend(["--bwlimit".to_string(), rate.to_string()]);
    }
    if plan.streams > 1 {
        args.extend(["--streams".to_string(), plan.streams.to_string()]);
    }
    args.extend(tls_args());
    let env = plan.proxy.as_ref().map(|_| {
        vec![EnvVar {
            name: "MOVER_PROXY".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names::sender(pvc),
                    key: PROXY_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]
    });
    let mode = placement.sender_mode();
    let maps_device = devices.is_some();
    let container = Container {
        args: Some(args),
        env,
        volume_mounts: Some(mounts),
        volume_devices: devices,
        security_context: Some(mode.container_context(placement.admission)),
        ..Container::default()
    };
    Pod {
        metadata: meta(
            &names::sender(pvc),
            namespace,
            sender_labels(&plan.name, pvc),
        ),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            node_name: placement.node.clone(),
            service_account_name: placement.service_account.clone(),
            security_context: Some({
                let mut context = mode.pod_context(placement.admission);
                if maps_device {
                    own_devices(&mut context, placement.admission);
                }
                context
            }),
            volumes: Some(vec![tls_vol, source]),
            ..transfer_spec(plan, &placement.tolerations, container)
        }),
        status: None,
    }
}

/// Where a PVC's sender must run and as whom, from the pods of its
/// namespace that mount it. Only a ReadWriteOnce(-Pod) volume pins the
/// node: a shared volume can be mounted anywhere.
///
/// The identity is the effective one of the container that mounts the
/// volume: its own `runAsUser`, `runAsGroup` and SELinux options win over
/// the pod's (as the kubelet applies them), while `fsGroup` and
/// `supplementalGroups` exist only at pod level. A sender with the pod's
/// identity alone could not read an application's private (0600) files
/// when only the container names the user, as restricted workloads often
/// do.
pub fn placement(pvc: &PersistentVolumeClaim, pods: &[Pod], admission: Admission) -> Placement {
    let name = pvc.metadata.name.as_deref().unwrap_or_default();
    let mounting = |pod: &Pod| -> Option<String> {
        pod.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
            })
            .map(|v| v.name.clone())
    };
    let users: Vec<(&Pod, String)> = pods
        .iter()
        .filter_map(|pod| mounting(pod).map(|volume| (pod, volume)))
        .collect();
    let exclusive = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|modes| {
            modes
                .iter()
                .all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
        });
    let chosen = users
        .iter()
        .find(|(pod, _)| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .or(users.first());
    let node = exclusive
        .then_some(chosen)
        .flatten()
        .and_then(|(pod, _)| pod.spec.as_ref()?.node_name.clone());
    let security = chosen.and_then(|(pod, volume)| effective_identity(pod, volume));
    let spec = chosen.and_then(|(pod, _)| pod.spec.as_ref());
    Placement {
        node,
        security,
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|sa| sa != "default"),
        tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
        admission,
    }
}

/// The identity the first container mounting (or mapping) `volume` runs
/// with: the pod's security context with the container's own fields over
/// it.
fn effective_identity(pod: &Pod, volume: &str) -> Option<PodSecurityContext> {
    let spec = pod.spec.as_ref()?;
    let container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| {
            c.volume_mounts.iter().flatten().any(|m| m.name == volume)
                || c.volume_devices.iter().flatten().any(|d| d.name == volume)
        });
    let own = container.and_then(|c| c.security_context.as_ref());
    let pod_level = spec.security_context.clone();
    if own.is_none() {
        return pod_level;
    }
    let mut identity = pod_level.unwrap_or_default();
    if let Some(own) = own {
        identity.run_as_user = own.run_as_user.or(identity.run_as_user);
        identity.run_as_group = own.run_as_group.or(identity.run_as_group);
        identity.run_as_non_root = own.run_as_non_root.or(identity.run_as_non_root);
        identity.se_linux_options = own.se_linux_options.clone().or(identity.se_linux_options);
    }
    Some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{resolve, PlanFile, PlanFlags};
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimStatus, PodStatus, SELinuxOptions, SecurityContext,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn plan() -> Plan {
        let file: PlanFile = serde_yaml::from_str(
            "name: m1\nnamespaces: ['app:app2']\nstorageClassMapping: {gp2: standard}\n\
             accessModeMapping: {ReadWriteMany: ReadWriteOnce}\nmoverImage: mover:test\n",
        )
        .unwrap();
        resolve(file, &PlanFlags::default(), "test").unwrap()
    }

    fn pvc(name: &str, modes: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("app".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "db".to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: Some("gp2".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("1Gi".into()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                capacity: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("2Gi".into()),
                )])),
                ..PersistentVolumeClaimStatus::default()
            }),
        }
    }

    fn user_pod(claim: &str, node: &str, phase: &str, uid: i64) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(uid),
                    fs_group: Some(2000),
                    supplemental_groups: Some(vec![3000]),
                    se_linux_options: Some(SELinuxOptions {
                        level: Some("s0:c1,c2".into()),
                        ..SELinuxOptions::default()
                    }),
                    sysctls: Some(vec![]),
                    ..PodSecurityContext::default()
                }),
                volumes: Some(vec![pvc_volume(0, claim, false)]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn destination_pvc_maps_class_modes_and_keeps_capacity() {
        let out = destination_pvc(&pvc("data", &["ReadWriteMany"]), "app2", &plan());
        let spec = out.spec.unwrap();
        assert_eq!(out.metadata.namespace.as_deref(), Some("app2"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.access_modes.unwrap(),
            vec!["ReadWriteOnce".to_string()]
        );
        let requests = spec.resources.unwrap().requests.unwrap();
        assert_eq!(requests["storage"], Quantity("2Gi".into()));
        let labels = out.metadata.labels.unwrap();
        assert_eq!(labels["app"], "db");
        assert_eq!(labels[MIGRATED_BY_LABEL], "m1");
        assert!(
            !labels.contains_key(TRANSFER_LABEL),
            "cleanup must never match a PVC"
        );
        assert_eq!(
            out.metadata.annotations.unwrap()[SOURCE_ANNOTATION],
            "app/data"
        );
    }

    #[test]
    fn destination_namespace_keeps_annotations_and_uid_ranges() {
        let source = Namespace {
            metadata: ObjectMeta {
                name: Some("app".into()),
                annotations: Some(BTreeMap::from([
                    ("team".to_string(), "blue".to_string()),
                    (
                        "openshift.io/sa.scc.uid-range".to_string(),
                        "1000/10".to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let out = destination_namespace(&source, "app2", "m1");
        let annotations = out.metadata.annotations.unwrap();
        assert_eq!(annotations.get("team").map(String::as_str), Some("blue"));
        assert_eq!(annotations["openshift.io/sa.scc.uid-range"], "1000/10");
        assert_eq!(out.metadata.labels.unwrap()[MIGRATED_BY_LABEL], "m1");
    }

    #[test]
    fn receiver_pod_mounts_every_pvc_and_serves_it_by_name() {
        let setup = ReceiverSetup {
            mode: ReceiverMode::Owners,
            admission: Admission::default(),
            tolerations: vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }],
        };
        let pvcs = [
            ("a".to_string(), VolumeMode::Filesystem),
            ("b.c".to_string(), VolumeMode::Filesystem),
        ];
        let pod = receiver_pod("app2", &plan(), &pvcs, &setup);
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[TRANSFER_LABEL], "m1");
        assert_eq!(labels[ROLE_LABEL], ROLE_RECEIVER);
        let spec = pod.spec.unwrap();
        let container = &spec.containers[0];
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("receive --listen 0.0.0.0:8443 --inplace"),
            "{args}"
        );
        assert!(!args.contains("--keep-hash-cache"), "a final run: {args}");
        assert!(!args.contains("--max-connections"), "{args}");
        let wide = Plan {
            streams: 8,
            concurrency: 6,
            ..plan()
        };
        let args_of = |plan: &Plan| {
            receiver_pod("app2", plan, &pvcs, &setup)
                .spec
                .unwrap()
                .containers[0]
                .args
                .clone()
                .unwrap()
                .join(" ")
        };
        let wide_args = args_of(&wide);
        assert!(
            wide_args.contains("--max-connections 108"),
            "6 senders of 9 connections, twice: {wide_args}"
        );
        let stage = Plan {
            stage: true,
            ..plan()
        };
        let stage_args = args_of(&stage);
        assert!(
            stage_args.starts_with("receive --listen 0.0.0.0:8443 --inplace --keep-hash-cache"),
            "a stage run: {stage_args}"
        );
        assert!(
            args.contains("--volume a=/volumes/a --volume b.c=/volumes/b.c"),
            "{args}"
        );
        assert!(args.contains("--ca /tls/ca.crt"), "{args}");
        let mounts = container.volume_mounts.clone().unwrap();
        let claims: Vec<_> = spec
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| Some((v.name, v.persistent_volume_claim?.claim_name)))
            .collect();
        assert_eq!(
            claims,
            vec![("pvc-0".into(), "a".into()), ("pvc-1".into(), "b.c".into())]
        );
        assert!(mounts
            .iter()
            .any(|m| m.name == "pvc-1" && m.mount_path == "/volumes/b.c" && m.read_only.is_none()));
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(0));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.tolerations, Some(setup.tolerations.clone()));
        assert_eq!(
            spec.service_account_name, None,
            "only OpenShift needs its own"
        );
        let resources = container.resources.clone().unwrap();
        assert_eq!(resources.requests.unwrap()["cpu"].0, "100m");
        assert_eq!(resources.limits.unwrap()["memory"].0, "2Gi");
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(security
            .capabilities
            .unwrap()
            .add
            .unwrap()
            .contains(&"CHOWN".to_string()));
    }

    #[test]
    fn service_selects_the_receiver_and_route_passes_tls_through() {
        let service = receiver_service("app2", "m1", EndpointType::Route);
        let spec = service.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), transfer_labels("m1", ROLE_RECEIVER));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(
            (port.port, port.target_port.clone()),
            (443, Some(IntOrString::String("mover".into())))
        );
        for (endpoint, type_) in [
            (EndpointType::Loadbalancer, "LoadBalancer"),
            (EndpointType::Nodeport, "NodePort"),
        ] {
            let spec = receiver_service("app2", "m1", endpoint).spec.unwrap();
            assert_eq!(spec.type_.as_deref(), Some(type_));
        }
        let route = receiver_route("app2", "m1", None);
        assert!(
            route.data["spec"].get("host").is_none(),
            "the router names it"
        );
        let named = receiver_route("app2", "m1", Some("r.apps.example.com"));
        assert_eq!(named.data["spec"]["host"], "r.apps.example.com");
        assert_eq!(route.data["spec"]["tls"]["termination"], "passthrough");
        assert_eq!(route.data["spec"]["to"]["name"], RECEIVER);
        assert_eq!(route.metadata.namespace.as_deref(), Some("app2"));
        assert_eq!(route.metadata.labels.unwrap()[TRANSFER_LABEL], "m1");
        let ingress = receiver_ingress("app2", "m1", "mover.example.com");
        assert_eq!(
            ingress.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/ssl-passthrough"],
            "true"
        );
    }

    #[test]
    fn sender_runs_where_and_as_the_application_does() {
        let pods = vec![
            user_pod("other", "node-9", "Running", 5),
            user_pod("data", "node-1", "Pending", 7),
            user_pod("data", "node-2", "Running", 1001),
        ];
        let admission = Admission::default();
        let rwo = placement(&pvc("data", &["ReadWriteOnce"]), &pods, admission);
        assert_eq!(rwo.node.as_deref(), Some("node-2"));
        let rwx = placement(&pvc("data", &["ReadWriteMany"]), &pods, admission);
        assert_eq!(rwx.node, None, "a shared volume does not pin the sender");
        assert_eq!(rwx.security.as_ref().unwrap().run_as_user, Some(1001));
        let unused = placement(&pvc("lonely", &["ReadWriteOnce"]), &pods, admission);
        assert_eq!(unused, Placement::default());

        // A restricted workload names its user on the container only: the
        // sender takes the container's user and the pod's fsGroup.
        let mut restricted = user_pod("data", "node-3", "Running", 5);
        let spec = restricted.spec.as_mut().unwrap();
        spec.security_context.as_mut().unwrap().fs_group = Some(2000);
        spec.containers = vec![
            k8s_openapi::api::core::v1::Container {
                name: "sidecar".into(),
                security_context: Some(SecurityContext {
                    run_as_user: Some(9),
                    ..SecurityContext::default()
                }),
                ..Default::default()
            },
            k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                volume_mounts: Some(vec![k8s_openapi::api::core::v1::VolumeMount {
                    name: spec.volumes.as_ref().unwrap()[0].name.clone(),
                    mount_path: "/data".into(),
                    ..Default::default()
                }]),
                security_context: Some(SecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(1000),
                    ..SecurityContext::default()
                }),
                ..Default::default()
            },
        ];
        let identity = placement(&pvc("data", &["ReadWriteOnce"]), &[restricted], admission)
            .security
            .unwrap();
        assert_eq!(
            (
                identity.run_as_user,
                identity.run_as_group,
                identity.fs_group
            ),
            (Some(1000), Some(1000), Some(2000))
        );

        let target = Target {
            connect: "mover-receiver-app2.apps.example.com:443".into(),
            server_name: "mover-receiver-app2.apps.example.com".into(),
        };
        let pod = sender_pod(
            "app",
            "data",
            VolumeMode::Filesystem,
            &plan(),
            &rwo,
            &target,
        );
        assert_eq!(pod.metadata.name.as_deref(), Some("mover-sender-data"));
        assert_eq!(pod.metadata.labels.clone().unwrap()[PVC_LABEL], "data");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-2"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let security = spec.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(1001));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.fs_group, Some(2000));
        assert_eq!(security.supplemental_groups, Some(vec![3000]));
        assert_eq!(
            security.se_linux_options.unwrap().level.as_deref(),
            Some("s0:c1,c2")
        );
        assert_eq!(security.sysctls, None, "only identity fields are copied");
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("mover:test"));
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with(
                "send /source --connect mover-receiver-app2.apps.example.com:443 \
                 --server-name mover-receiver-app2.apps.example.com --volume data --progress json"
            ),
            "{args}"
        );
        assert!(!args.contains("--bwlimit"), "{args}");
        assert!(!args.contains("--streams"), "{args}");
        let limited = Plan {
            bandwidth_limit: Some(50 << 20),
            streams: 4,
            ..plan()
        };
        let pod = sender_pod(
            "app",
            "data",
            VolumeMode::Filesystem,
            &limited,
            &rwo,
            &target,
        );
        let args = pod.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(
            args.windows(2).any(|w| w == ["--bwlimit", "52428800"]),
            "{args:?}"
        );
        assert!(args.windows(2).any(|w| w == ["--streams", "4"]), "{args:?}");
        let source_mount = container
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_path == SENDER_SOURCE_DIR)
            .unwrap();
        assert_eq!(source_mount.read_only, Some(true));
        let claim = spec.volumes.unwrap()[1]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("data", Some(true))
        );
    }

    #[test]
    fn block_pvcs_are_mapped_as_devices_by_both_ends() {
        let mut disk = pvc("disk", &["ReadWriteOnce"]);
        disk.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert_eq!(VolumeMode::of(&disk), VolumeMode::Block);
        assert_eq!(
            VolumeMode::of(&pvc("data", &["ReadWriteOnce"])),
            VolumeMode::Filesystem
        );
        let twin = destination_pvc(&disk, "app2", &plan()).spec.unwrap();
        assert_eq!(twin.volume_mode.as_deref(), Some("Block"));
        assert_eq!(
            twin.resources.unwrap().requests.unwrap()["storage"],
            Quantity("2Gi".into()),
            "at least the source's bytes"
        );

        let setup = ReceiverSetup {
            mode: ReceiverMode::Owners,
            admission: Admission::default(),
            tolerations: vec![],
        };
        let pvcs = [
            ("data".to_string(), VolumeMode::Filesystem),
            ("disk".to_string(), VolumeMode::Block),
        ];
        let spec = receiver_pod("app2", &plan(), &pvcs, &setup).spec.unwrap();
        let container = &spec.containers[0];
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.contains("--volume data=/volumes/data --volume disk=/dev/volumes/disk"),
            "{args}"
        );
        assert_eq!(
            container.volume_devices.clone().unwrap(),
            vec![VolumeDevice {
                name: "pvc-1".into(),
                device_path: "/dev/volumes/disk".into()
            }]
        );
        assert!(
            !container
                .volume_mounts
                .clone()
                .unwrap()
                .iter()
                .any(|m| m.name == "pvc-1"),
            "a Block PVC is never mounted"
        );

        // The application maps its disk; the sender reads it as its
        // container's user, through a device of its own.
        let mut app = user_pod("disk", "node-1", "Running", 1001);
        let spec = app.spec.as_mut().unwrap();
        spec.containers = vec![Container {
            name: "vm".into(),
            volume_devices: Some(vec![VolumeDevice {
                name: "pvc-0".into(),
                device_path: "/dev/vda".into(),
            }]),
            security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
                run_as_user: Some(107),
                ..Default::default()
            }),
            ..Container::default()
        }];
        let placement = placement(&disk, &[app], Admission::default());
        assert_eq!(placement.security.as_ref().unwrap().run_as_user, Some(107));
        let target = Target {
            connect: "r.example:443".into(),
            server_name: "r.example".into(),
        };
        let spec = sender_pod(
            "app",
            "disk",
            VolumeMode::Block,
            &plan(),
            &placement,
            &target,
        )
        .spec
        .unwrap();
        let container = &spec.containers[0];
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("send --block /dev/source --connect r.example:443"),
            "{args}"
        );
        assert!(args.contains("--volume disk"), "{args}");
        assert_eq!(
            container.volume_devices.clone().unwrap(),
            vec![VolumeDevice {
                name: "pvc-0".into(),
                device_path: "/dev/source".into()
            }]
        );
        assert_eq!(
            container.volume_mounts.clone().unwrap().len(),
            1,
            "TLS only"
        );
        let claim = spec.volumes.unwrap()[1]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.read_only, Some(true));
        let security = spec.security_context.unwrap();
        assert_eq!(
            (security.run_as_user, security.run_as_non_root),
            (Some(107), Some(true))
        );

        // Nobody uses the disk and root is not admitted: the sender runs as
        // the image's user, named, so that its device is its own.
        let restricted = Admission {
            level: crate::security::Level::Restricted,
            openshift: false,
        };
        let unknown = Placement {
            admission: restricted,
            ..Placement::default()
        };
        let block = sender_pod("app", "disk", VolumeMode::Block, &plan(), &unknown, &target);
        let files = sender_pod(
            "app",
            "data",
            VolumeMode::Filesystem,
            &plan(),
            &unknown,
            &target,
        );
        let user = |pod: Pod| pod.spec.unwrap().security_context.unwrap().run_as_user;
        assert_eq!(user(block), Some(MOVER_IMAGE_UID));
        assert_eq!(user(files), None, "the image's user, unnamed");
        let openshift = Placement {
            admission: Admission {
                openshift: true,
                ..restricted
            },
            ..Placement::default()
        };
        let block = sender_pod(
            "app",
            "disk",
            VolumeMode::Block,
            &plan(),
            &openshift,
            &target,
        );
        assert_eq!(user(block), None, "the SCC names the user");
        let setup = ReceiverSetup {
            mode: ReceiverMode::AsApplication(None),
            admission: restricted,
            tolerations: vec![],
        };
        let receiver = receiver_pod("app2", &plan(), &pvcs, &setup);
        assert_eq!(user(receiver), Some(MOVER_IMAGE_UID));
    }
}
