//! Preflight: everything that can be checked before anything is created,
//! with every problem listed at once.
//!
//! The result, an [`Inventory`], is also what `orchestrator plan` prints:
//! the PVCs that would be copied and where they would go.

mod dry_run;
mod rights;

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Toleration};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::Api;

use crate::clusters::Cluster;
use crate::manifests::{self, ReceiverSetup};
use crate::names::{MIGRATED_BY_LABEL, SYNC_KIND_ANNOTATION};
use crate::plan::{EndpointType, NamespaceMapping, Plan, PvcSelection};
use crate::security::{Admission, Level, ReceiverMode, ANYUID_ROLE, ANYUID_SCC};
use rights::{RBAC, SCC_GROUP};

/// What the migration will work on, as found in the clusters.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub namespaces: Vec<NamespaceInventory>,
}

/// One source namespace: the PVCs to copy and the pods that use them.
#[derive(Debug, Clone)]
pub struct NamespaceInventory {
    pub mapping: NamespaceMapping,
    pub source: Namespace,
    /// The selected source PVCs, each with what is known of its
    /// destination twin.
    pub pvcs: Vec<PvcInventory>,
    /// The source namespace's pods (to place senders beside them).
    pub pods: Vec<Pod>,
    /// Whether the destination namespace already exists.
    pub destination_exists: bool,
    /// What admits pods in the source namespace (the senders').
    pub source_admission: Admission,
    /// How the destination namespace's receiver runs.
    pub receiver: ReceiverSetup,
    /// PVCs of the namespace left out, each with why.
    pub skipped: Vec<(String, String)>,
}

impl NamespaceInventory {
    /// The names of the selected PVCs.
    pub fn pvc_names(&self) -> Vec<String> {
        self.pvcs.iter().map(|p| p.name().to_string()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct PvcInventory {
    pub source: PersistentVolumeClaim,
    /// The destination PVC, when an earlier run of this migration made it.
    pub destination: Option<PersistentVolumeClaim>,
}

impl PvcInventory {
    pub fn name(&self) -> &str {
        self.source.metadata.name.as_deref().unwrap_or_default()
    }

    /// True when an earlier final run of this migration already copied it.
    pub fn finished(&self) -> bool {
        self.destination
            .as_ref()
            .and_then(|d| d.metadata.annotations.as_ref())
            .and_then(|a| a.get(SYNC_KIND_ANNOTATION))
            .is_some_and(|kind| kind == "final")
    }
}

/// Every problem preflight found.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "preflight found {} problem(s); nothing was changed:",
            self.0.len()
        )?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Checks both clusters against the plan without changing anything.
pub async fn check(
    plan: &Plan,
    source: &Cluster,
    destination: &Cluster,
) -> Result<Inventory, Problems> {
    let mut problems = Vec::new();
    let mut reachable = true;
    for cluster in [source, destination] {
        if let Err(e) = cluster.client.apiserver_version().await {
            problems.push(format!(
                "{} is not reachable: {e} (check the kubeconfig's server address and credentials)",
                cluster.describe()
            ));
            reachable = false;
        }
    }
    if !reachable {
        return Err(Problems(problems));
    }
    rights::check(plan, source, destination, &mut problems).await;
    let openshift = Sides {
        source: serves_sccs(source).await,
        destination: serves_sccs(destination).await,
    };

    let classes = match Api::<StorageClass>::all(destination.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            problems.push(format!(
                "{}: cannot list storage classes: {e}",
                destination.describe()
            ));
            Vec::new()
        }
    };
    if plan.endpoint == EndpointType::Route {
        check_route_api(destination, &mut problems).await;
    }
    if let Some(images) = &plan.images {
        problems.extend(crate::dim::preflight(images).await);
    }

    let mut namespaces = Vec::new();
    for mapping in &plan.namespaces {
        if let Some(found) = check_namespace(
            plan,
            mapping,
            (source, destination),
            openshift,
            &classes,
            &mut problems,
        )
        .await
        {
            namespaces.push(found);
        }
    }
    let inventory = Inventory { namespaces };
    if problems.is_empty() {
        dry_run::check(plan, &inventory, source, destination, &mut problems).await;
    }
    if problems.is_empty() {
        Ok(inventory)
    } else {
        Err(Problems(problems))
    }
}

/// A fact about each side.
#[derive(Clone, Copy)]
struct Sides {
    source: bool,
    destination: bool,
}

/// Whether `cluster` runs OpenShift's SCC admission (it serves SCCs).
async fn serves_sccs(cluster: &Cluster) -> bool {
    kube::discovery::group(&cluster.client, "security.openshift.io")
        .await
        .is_ok_and(|group| {
            group
                .recommended_resources()
                .iter()
                .any(|(resource, _)| resource.plural == "securitycontextconstraints")
        })
}

async fn check_namespace(
    plan: &Plan,
    mapping: &NamespaceMapping,
    (source, destination): (&Cluster, &Cluster),
    openshift: Sides,
    classes: &[StorageClass],
    problems: &mut Vec<String>,
) -> Option<NamespaceInventory> {
    let ns = &mapping.source;
    let namespace = match Api::<Namespace>::all(source.client.clone())
        .get_opt(ns)
        .await
    {
        Ok(Some(namespace)) => namespace,
        Ok(None) => {
            problems.push(format!(
                "namespace {ns:?} does not exist in {}",
                source.describe()
            ));
            return None;
        }
        Err(e) => {
            problems.push(format!(
                "{}: reading namespace {ns:?}: {e}",
                source.describe()
            ));
            return None;
        }
    };
    let listed = |what: &str, e: kube::Error| {
        format!(
            "{}: listing {what} in namespace {ns:?}: {e}",
            source.describe()
        )
    };
    let pvcs = match Api::<PersistentVolumeClaim>::namespaced(source.client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            problems.push(listed("PVCs", e));
            return None;
        }
    };
    let pods = match Api::<Pod>::namespaced(source.client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            problems.push(listed("pods", e));
            return None;
        }
    };
    let selected: Vec<PersistentVolumeClaim> = match &plan.pvcs {
        PvcSelection::All => pvcs,
        PvcSelection::Named(names) => {
            let wanted: BTreeSet<&str> = names
                .iter()
                .filter(|(pvc_ns, _)| pvc_ns == ns)
                .map(|(_, name)| name.as_str())
                .collect();
            for name in &wanted {
                if !pvcs
                    .iter()
                    .any(|p| p.metadata.name.as_deref() == Some(name))
                {
                    problems.push(format!(
                        "PVC {ns}/{name} does not exist in {}",
                        source.describe()
                    ));
                }
            }
            pvcs.into_iter()
                .filter(|p| wanted.contains(p.metadata.name.as_deref().unwrap_or_default()))
                .collect()
        }
    };

    let (selected, skipped) = leave_out_block_volumes(selected);

    let dest_ns = &mapping.destination;
    let existing_destination = match Api::<Namespace>::all(destination.client.clone())
        .get_opt(dest_ns)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            problems.push(format!(
                "{}: reading namespace {dest_ns:?}: {e}",
                destination.describe()
            ));
            None
        }
    };
    let destination_exists = existing_destination.is_some();
    let dest_pvcs = Api::<PersistentVolumeClaim>::namespaced(destination.client.clone(), dest_ns);
    let mut inventory = Vec::new();
    for pvc in selected {
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase != Some("Bound") {
            problems.push(format!(
                "PVC {ns}/{name} is {} in {}, not Bound: there is no data to copy",
                phase.unwrap_or("without a phase"),
                source.describe()
            ));
        }
        check_storage_class(plan, &pvc, classes, destination, problems);
        let existing = if destination_exists {
            match dest_pvcs.get_opt(&name).await {
                Ok(found) => found,
                Err(e) => {
                    problems.push(format!(
                        "{}: reading PVC {dest_ns}/{name}: {e}",
                        destination.describe()
                    ));
                    None
                }
            }
        } else {
            None
        };
        if let Some(existing) = &existing {
            let ours = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MIGRATED_BY_LABEL))
                .is_some_and(|m| *m == plan.name);
            if !ours {
                problems.push(format!(
                    "PVC {dest_ns}/{name} already exists in {} and was not made by migration \
                     {:?}: refusing to overwrite its data (delete it, or map the namespace elsewhere)",
                    destination.describe(),
                    plan.name
                ));
            }
        }
        inventory.push(PvcInventory {
            source: pvc,
            destination: existing,
        });
    }
    let source_admission = Admission {
        level: Level::of(&namespace),
        openshift: openshift.source,
    };
    // The destination namespace gets the source's labels when it is made.
    let destination_admission = Admission {
        level: Level::of(existing_destination.as_ref().unwrap_or(&namespace)),
        openshift: openshift.destination,
    };
    let receiver = receiver_setup(
        destination,
        dest_ns,
        destination_admission,
        &inventory,
        &pods,
        source_admission,
    )
    .await;
    Some(NamespaceInventory {
        mapping: mapping.clone(),
        source: namespace,
        pvcs: inventory,
        pods,
        destination_exists,
        source_admission,
        receiver,
        skipped,
    })
}

/// Block-mode PVCs (raw devices) cannot be copied as file trees yet: they
/// are left out with a reason instead of failing their namespace.
fn leave_out_block_volumes(
    pvcs: Vec<PersistentVolumeClaim>,
) -> (Vec<PersistentVolumeClaim>, Vec<(String, String)>) {
    let (block, files): (Vec<_>, Vec<_>) = pvcs
        .into_iter()
        .partition(|pvc| pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block"));
    let skipped = block
        .into_iter()
        .map(|pvc| {
            (
                pvc.metadata.name.unwrap_or_default(),
                "volumeMode Block: block volumes are not copied yet (copy the device by hand)"
                    .to_string(),
            )
        })
        .collect();
    (files, skipped)
}

/// How the receiver of `dest_ns` will run: as root keeping owners where
/// the destination admits it (on OpenShift, where the user may grant its
/// service account the `anyuid` SCC), else as the application's user.
async fn receiver_setup(
    destination: &Cluster,
    dest_ns: &str,
    admission: Admission,
    pvcs: &[PvcInventory],
    pods: &[Pod],
    source_admission: Admission,
) -> ReceiverSetup {
    let placements: Vec<_> = pvcs
        .iter()
        .map(|pvc| manifests::placement(&pvc.source, pods, source_admission))
        .collect();
    let identity = placements
        .iter()
        .filter_map(|p| p.security.clone())
        .find(|id| id.run_as_user.is_some_and(|uid| uid != 0));
    let mut tolerations: Vec<Toleration> = Vec::new();
    for toleration in placements.iter().flat_map(|p| p.tolerations.iter()) {
        if !tolerations.contains(toleration) {
            tolerations.push(toleration.clone());
        }
    }
    let owners = match admission.level {
        Level::Restricted => false,
        _ if admission.openshift => may_grant_anyuid(destination, dest_ns).await,
        _ => true,
    };
    ReceiverSetup {
        mode: if owners {
            ReceiverMode::Owners
        } else {
            ReceiverMode::AsApplication(identity.map(Box::new))
        },
        admission,
        tolerations,
    }
}

/// Whether the user may give the receiver's own service account the
/// `anyuid` SCC: create it and a RoleBinding, and either use the SCC
/// themselves or bind its ClusterRole (RBAC refuses a binding that
/// grants more than its author holds).
async fn may_grant_anyuid(destination: &Cluster, ns: &str) -> bool {
    let check =
        |verb, group, resource, name| rights::allowed(destination, ns, verb, group, resource, name);
    check("create", "", "serviceaccounts", "").await.is_ok()
        && check("create", RBAC, "rolebindings", "").await.is_ok()
        && (check("use", SCC_GROUP, "securitycontextconstraints", ANYUID_SCC)
            .await
            .is_ok()
            || check("bind", RBAC, "clusterroles", ANYUID_ROLE)
                .await
                .is_ok())
}

fn check_storage_class(
    plan: &Plan,
    pvc: &PersistentVolumeClaim,
    classes: &[StorageClass],
    destination: &Cluster,
    problems: &mut Vec<String>,
) {
    let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
    let name = pvc.metadata.name.as_deref().unwrap_or_default();
    let source_class = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    let available = || {
        let names: Vec<&str> = classes
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match plan.map_storage_class(source_class) {
        Some(class) if class.is_empty() => problems.push(format!(
            "PVC {ns}/{name} uses a static PV (storageClassName \"\"): nothing would provision \
             its twin in {}; map it to a class with storageClassMapping {{\"\": <class>}} or \
             --storage-class =<class> (available: {})",
            destination.describe(),
            available()
        )),
        Some(class) => {
            if !classes
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(&class))
            {
                let hint = if plan
                    .storage_class_mapping
                    .contains_key(source_class.unwrap_or_default())
                {
                    String::new()
                } else {
                    format!("; map it with storageClassMapping or --storage-class {class}=<class>")
                };
                problems.push(format!(
                    "PVC {ns}/{name}: storage class {class:?} does not exist in {} (available: {}){hint}",
                    destination.describe(),
                    available()
                ));
            }
        }
        None => {
            let has_default = classes.iter().any(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
            });
            if !has_default {
                problems.push(format!(
                    "PVC {ns}/{name} names no storage class and {} has no default one (available: {})",
                    destination.describe(),
                    available()
                ));
            }
        }
    }
}

async fn check_route_api(destination: &Cluster, problems: &mut Vec<String>) {
    match kube::discovery::group(&destination.client, "route.openshift.io").await {
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "{} does not serve route.openshift.io Routes ({e}); choose another endpoint \
             (--endpoint ingress|loadbalancer|nodeport)",
            destination.describe()
        )),
    }
}
