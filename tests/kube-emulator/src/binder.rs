//! The PVC/PV binder: a dynamic provisioner plus the PV controller's
//! binding and reclaiming, in two kube-runtime controllers.
//!
//! - Claims: a Pending PVC whose storage class exists (or, without a class,
//!   when a default StorageClass exists) gets a fresh hostPath PV under
//!   `<state_dir>/volumes/<pv>`, and both become Bound. A claim whose class
//!   does not exist stays Pending with a Warning Event saying so, and is
//!   looked at again whenever a StorageClass appears or changes.
//! - Volumes: a PV whose claim is gone is reclaimed by its policy: `Delete`
//!   removes the PV and its directory, `Retain` marks it Released.
//!
//! Claims of a `volumeBindingMode: WaitForFirstConsumer` class stay
//! Pending (with a `WaitForFirstConsumer` Event) until the scheduler names
//! the node of their first pod in the `volume.kubernetes.io/selected-node`
//! annotation; their PV is then made with a node affinity to that node.
//! With the cluster's `storage` policy off they bind at once, as Immediate
//! ones do.
//!
//! A `volumeMode: Block` claim gets the same directory holding one sparse
//! file of the requested size, [`BLOCK_IMAGE`]: the disk the kubelet
//! attaches to a loop device for the pods that use the claim through
//! `volumeDevices`. A class annotated [`NO_BLOCK_ANNOTATION`]` = "false"`
//! stands for a driver without block support (NFS, CephFS, EFS, ...): its
//! Block claims stay Pending with the external provisioner's
//! `ProvisioningFailed` Event, as they do on a real cluster.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};

use crate::context::ClusterContext;
use crate::events;
use crate::kubelet::HOSTNAME_LABEL;

/// The StorageClass the binder creates at startup, marked default.
pub const DEFAULT_STORAGE_CLASS: &str = "standard";
/// The provisioner named by the default class and on the PVs made.
pub const PROVISIONER: &str = "kube-emulator.io/hostpath";
/// The annotation the scheduler puts on a claim of a WaitForFirstConsumer
/// class once it has picked the node of a pod using it: the volume is
/// provisioned for that node.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// The emulator's knob on a StorageClass: `"false"` makes its provisioner
/// one without block support, which provisions no `volumeMode: Block`
/// claim.
pub const NO_BLOCK_ANNOTATION: &str = "emulator.kube-migrate/block";
/// The file in a Block PV's directory that holds the volume's bytes.
pub const BLOCK_IMAGE: &str = "disk.img";
const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";

/// Failed reconciliations are retried after this long.
const RETRY: Duration = Duration::from_secs(2);

struct Binder {
    cluster: Arc<ClusterContext>,
    /// Claims already told (by an Event) that they wait for a consumer.
    told_to_wait: Mutex<HashSet<String>>,
}

/// A reconciliation that failed (and is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Failure(anyhow::Error);

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self(error)
    }
}

impl From<kube::Error> for Failure {
    fn from(error: kube::Error) -> Self {
        Self(error.into())
    }
}

/// Runs the binder until the task is aborted.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    create_default_class(&client).await?;
    let binder = Arc::new(Binder {
        cluster: ctx,
        told_to_wait: Mutex::default(),
    });

    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let known_claims = claims.store();
    let claims = claims
        // A new or changed StorageClass may be the one a Pending claim waits for.
        .watches(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
            move |_| {
                known_claims
                    .state()
                    .into_iter()
                    .filter(|claim| !is_bound(claim))
                    .map(|claim| ObjectRef::from_obj(&*claim))
                    .collect::<Vec<_>>()
            },
        )
        .run(bind_claim, retry, binder.clone())
        .for_each(|_| async {});

    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    // A claim's deletion releases its volume.
    .watches(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
        |claim| {
            claim
                .spec
                .and_then(|spec| spec.volume_name)
                .map(|name| ObjectRef::new(&name))
        },
    )
    .run(reclaim_volume, retry, binder)
    .for_each(|_| async {});

    tokio::join!(claims, volumes);
    anyhow::bail!("the binder's controllers stopped")
}

async fn create_default_class(client: &kube::Client) -> anyhow::Result<()> {
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(DEFAULT_STORAGE_CLASS.to_string()),
            annotations: Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.to_string(),
        reclaim_policy: Some("Delete".to_string()),
        volume_binding_mode: Some("Immediate".to_string()),
        ..StorageClass::default()
    };
    match Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        result => result
            .map(drop)
            .context("creating the default StorageClass"),
    }
}

fn is_bound(claim: &PersistentVolumeClaim) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        == Some("Bound")
}

fn retry<K>(_: Arc<K>, error: &Failure, binder: Arc<Binder>) -> Action {
    tracing::warn!("pvc binder {}: {error}", binder.cluster.name);
    Action::requeue(RETRY)
}

/// Provisions and binds a PV for a Pending claim.
async fn bind_claim(
    claim: Arc<PersistentVolumeClaim>,
    binder: Arc<Binder>,
) -> Result<Action, Failure> {
    if claim.metadata.deletion_timestamp.is_some() || is_bound(&claim) {
        return Ok(Action::await_change());
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let client = binder.cluster.client.clone();
    let pv_name = format!("pvc-{}", claim.uid().context("the claim has no uid")?);
    if spec
        .volume_name
        .as_deref()
        .is_some_and(|name| name != pv_name)
    {
        binder
            .warn(
                &claim,
                "FailedBinding",
                "binding a claim to a volume it names (spec.volumeName) is not supported by the emulator",
            )
            .await;
        return Ok(Action::await_change());
    }
    let class = match spec.storage_class_name.as_deref() {
        Some("") => {
            binder
                .warn(
                    &claim,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                )
                .await;
            return Ok(Action::await_change());
        }
        Some(name) => match Api::<StorageClass>::all(client.clone())
            .get_opt(name)
            .await?
        {
            Some(class) => class,
            None => {
                let message = format!("storageclass.storage.k8s.io \"{name}\" not found");
                binder.warn(&claim, "ProvisioningFailed", &message).await;
                return Ok(Action::await_change());
            }
        },
        None => match default_class(&client).await? {
            Some(class) => class,
            None => {
                binder
                    .warn(&claim, "FailedBinding", "no persistent volumes available for this claim and no storage class is set")
                    .await;
                return Ok(Action::await_change());
            }
        },
    };

    if is_block(&spec) && !provisions_block(&class) {
        let message = format!(
            "{} does not support block volume provisioning",
            class.provisioner
        );
        binder.warn(&claim, "ProvisioningFailed", &message).await;
        return Ok(Action::await_change());
    }

    let waits_for_consumer = binder.cluster.policy.storage
        && class.volume_binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER);
    let selected_node = claim.annotations().get(SELECTED_NODE_ANNOTATION);
    let node = match (waits_for_consumer, selected_node) {
        (false, _) => None,
        (true, Some(node)) => Some(node.as_str()),
        (true, None) => {
            binder.wait_for_consumer(&claim).await;
            return Ok(Action::await_change());
        }
    };
    let volume = binder.provision(&claim, &class, &pv_name, node).await?;
    let namespace = claim.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &namespace);
    let bind = serde_json::json!({
        "metadata": { "annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": class.provisioner,
        } },
        "spec": { "volumeName": pv_name, "storageClassName": class.name_any() },
    });
    claims
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&bind),
        )
        .await?;
    let volume_spec = volume.spec.unwrap_or_default();
    let status = serde_json::json!({ "status": {
        "phase": "Bound",
        "accessModes": volume_spec.access_modes,
        "capacity": volume_spec.capacity,
    } });
    claims
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    binder
        .event(
            &claim,
            events::Type::Normal,
            "ProvisioningSucceeded",
            &format!(
                "Successfully provisioned volume {pv_name} using {}",
                class.provisioner
            ),
        )
        .await;
    Ok(Action::await_change())
}

fn is_block(spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec) -> bool {
    spec.volume_mode.as_deref() == Some("Block")
}

/// Whether the class's provisioner makes Block volumes (see
/// [`NO_BLOCK_ANNOTATION`]).
fn provisions_block(class: &StorageClass) -> bool {
    class
        .annotations()
        .get(NO_BLOCK_ANNOTATION)
        .map(String::as_str)
        != Some("false")
}

/// The bytes a claim asks for (`resources.requests.storage`).
fn requested_bytes(
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
) -> anyhow::Result<u64> {
    let request = spec
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .context("a Block claim must request storage (its size)")?;
    let quantity = crate::quantity::Quantity::parse(&request.0)
        .map_err(|error| anyhow::anyhow!("storage request {:?}: {error}", request.0))?;
    u64::try_from(quantity.value()).context("a negative storage request")
}

async fn default_class(client: &kube::Client) -> kube::Result<Option<StorageClass>> {
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(classes.items.into_iter().find(|class| {
        class
            .annotations()
            .get(DEFAULT_CLASS_ANNOTATION)
            .map(String::as_str)
            == Some("true")
    }))
}

impl Binder {
    /// The claim's PV, Bound to it: created with its directory, or found
    /// from an earlier attempt that did not finish.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
        name: &str,
        node: Option<&str>,
    ) -> Result<PersistentVolume, Failure> {
        let volumes: Api<PersistentVolume> = Api::all(self.cluster.client.clone());
        let dir = self.volumes_dir().join(name);
        let volume = match volumes.get_opt(name).await? {
            Some(volume) => volume,
            None => {
                create_world_writable(&dir).await?;
                let spec = claim.spec.clone().unwrap_or_default();
                if is_block(&spec) {
                    create_sparse_image(&dir.join(BLOCK_IMAGE), requested_bytes(&spec)?).await?;
                }
                let volume = PersistentVolume {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        annotations: Some(
                            [(
                                PROVISIONED_BY_ANNOTATION.to_string(),
                                class.provisioner.clone(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PersistentVolumeSpec {
                        access_modes: spec.access_modes,
                        capacity: spec.resources.and_then(|resources| resources.requests),
                        claim_ref: Some(ObjectReference {
                            api_version: Some("v1".to_string()),
                            kind: Some("PersistentVolumeClaim".to_string()),
                            namespace: claim.namespace(),
                            name: Some(claim.name_any()),
                            uid: claim.uid(),
                            resource_version: claim.resource_version(),
                            ..ObjectReference::default()
                        }),
                        host_path: Some(HostPathVolumeSource {
                            path: dir.to_string_lossy().into_owned(),
                            type_: Some("DirectoryOrCreate".to_string()),
                        }),
                        persistent_volume_reclaim_policy: Some(
                            class
                                .reclaim_policy
                                .clone()
                                .unwrap_or_else(|| "Delete".to_string()),
                        ),
                        storage_class_name: Some(class.name_any()),
                        volume_mode: spec.volume_mode,
                        mount_options: class.mount_options.clone(),
                        node_affinity: node.map(only_on_node),
                        ..PersistentVolumeSpec::default()
                    }),
                    ..PersistentVolume::default()
                };
                volumes.create(&PostParams::default(), &volume).await?
            }
        };
        let status = serde_json::json!({ "status": { "phase": "Bound" } });
        volumes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(volume)
    }

    /// Leaves a claim of a WaitForFirstConsumer class Pending until the
    /// scheduler picks a node for a pod using it (and says which in the
    /// claim's selected-node annotation), saying so once in an Event as
    /// the real PV controller does.
    async fn wait_for_consumer(&self, claim: &PersistentVolumeClaim) {
        let first_time = self
            .told_to_wait
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(claim.uid().unwrap_or_default());
        if first_time {
            let message = "waiting for first consumer to be created before binding";
            self.event(claim, events::Type::Normal, "WaitForFirstConsumer", message)
                .await;
        }
    }

    /// Where this cluster's PV directories live.
    fn volumes_dir(&self) -> PathBuf {
        self.cluster.state_dir.join("volumes")
    }

    async fn warn(&self, claim: &PersistentVolumeClaim, reason: &str, message: &str) {
        self.event(claim, events::Type::Warning, reason, message)
            .await;
    }

    /// Records an Event about a claim, as the real PV controller does.
    async fn event(
        &self,
        claim: &PersistentVolumeClaim,
        type_: events::Type,
        reason: &str,
        message: &str,
    ) {
        let reporter = events::Reporter::new("persistentvolume-controller");
        events::record(
            &self.cluster.client,
            reporter,
            claim,
            type_,
            reason,
            message,
        )
        .await;
    }
}

/// Releases a PV whose claim is gone, by its reclaim policy.
async fn reclaim_volume(
    volume: Arc<PersistentVolume>,
    binder: Arc<Binder>,
) -> Result<Action, Failure> {
    let spec = volume.spec.clone().unwrap_or_default();
    let Some(claim_ref) = spec.claim_ref else {
        return Ok(Action::await_change());
    };
    let phase = volume
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    if volume.metadata.deletion_timestamp.is_some() || phase == Some("Released") {
        return Ok(Action::await_change());
    }
    let client = binder.cluster.client.clone();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        claim_ref.namespace.as_deref().unwrap_or("default"),
    );
    let claim_name = claim_ref.name.clone().unwrap_or_default();
    if let Some(claim) = claims.get_opt(&claim_name).await? {
        if claim.uid() == claim_ref.uid {
            return Ok(Action::await_change());
        }
    }
    let volumes: Api<PersistentVolume> = Api::all(client);
    let name = volume.name_any();
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain") {
        let status = serde_json::json!({ "status": {
            "phase": "Released",
            "message": format!("claim {}/{claim_name} was deleted; the volume is retained", claim_ref.namespace.unwrap_or_default()),
        } });
        volumes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        return Ok(Action::await_change());
    }
    // Only directories this binder made are ever deleted.
    let ours = spec
        .host_path
        .map(|host| PathBuf::from(host.path))
        .filter(|path| path.parent() == Some(binder.volumes_dir().as_path()));
    if let Some(dir) = ours {
        remove_dir(&dir).await?;
    }
    match volumes.delete(&name, &Default::default()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        result => {
            result?;
        }
    }
    Ok(Action::await_change())
}

/// A volume's node affinity to one node, as local volume provisioners set
/// it: pods using the volume can only run there.
fn only_on_node(node: &str) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: HOSTNAME_LABEL.to_string(),
                    operator: "In".to_string(),
                    values: Some(vec![node.to_string()]),
                }]),
                match_fields: None,
            }],
        }),
    }
}

/// A PV directory anyone may write, as hostPath provisioners make them, so
/// pods running as any user can use the volume (fsGroup narrows it).
async fn create_world_writable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .await
        .with_context(|| format!("making {} writable", dir.display()))
}

/// A Block volume's disk: a sparse file of `size` bytes (kept as it is
/// when an earlier attempt made it).
async fn create_sparse_image(path: &Path, size: u64) -> anyhow::Result<()> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    if file.metadata().await?.len() < size {
        file.set_len(size)
            .await
            .with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
    }
    Ok(())
}

async fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}
