//! Preflight: everything that can be checked before anything is created,
//! with every problem listed at once.
//!
//! The result, an [`Inventory`], is also what `orchestrator plan` prints:
//! the PVCs that would be copied and where they would go.

mod dry_run;
mod rights;

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, PodSecurityContext, Toleration,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::Api;

use crate::clusters::Cluster;
use crate::manifests::{self, ReceiverSetup, VolumeMode};
use crate::names::{BLOCK_VOLUMES_ANNOTATION, MIGRATED_BY_LABEL, SYNC_KIND_ANNOTATION};
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

    /// Whether it is copied as a file tree or as a device.
    pub fn mode(&self) -> VolumeMode {
        VolumeMode::of(&self.source)
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
        existing_destination.as_ref().unwrap_or(&namespace),
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
    })
}

/// How the receiver of `dest_ns` will run: as root keeping owners where
/// the destination admits it (on OpenShift, where the user may grant its
/// service account the `anyuid` SCC), else as the application's user.
async fn receiver_setup(
    destination: &Cluster,
    destination_namespace: &Namespace,
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
    let mut identity = placements
        .iter()
        .filter_map(|p| p.security.clone())
        .find(|id| id.run_as_user.is_some_and(|uid| uid != 0));
    if admission.openshift {
        if let Some(id) = identity.as_mut() {
            openshift_ranges(destination_namespace).confine(id);
        }
    }
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

/// The uids and groups an OpenShift namespace's pods may run as under
/// `restricted-v2` (its `openshift.io/sa.scc.uid-range` and
/// `supplemental-groups`, `FIRST/SIZE`): a destination namespace keeps the
/// source's (the run carries them over) or has its own.
struct Ranges {
    uids: Option<(i64, i64)>,
    groups: Option<(i64, i64)>,
}

fn openshift_ranges(namespace: &Namespace) -> Ranges {
    let range = |key: &str| {
        let text = namespace.metadata.annotations.as_ref()?.get(key)?;
        let first_range = text.split(',').next()?;
        let (first, size) = first_range.split_once('/')?;
        Some((first.trim().parse().ok()?, size.trim().parse().ok()?))
    };
    Ranges {
        uids: range("openshift.io/sa.scc.uid-range"),
        groups: range("openshift.io/sa.scc.supplemental-groups"),
    }
}

impl Ranges {
    /// Keeps only what `restricted-v2` admits: a uid or group outside the
    /// namespace's range (or with no range known yet) is left for the SCC
    /// to assign, the first of the range, which is also what the
    /// application's own pods will get there.
    fn confine(&self, id: &mut PodSecurityContext) {
        let inside = |range: Option<(i64, i64)>, value: i64| {
            range.is_some_and(|(first, size)| value >= first && value < first + size)
        };
        if !id.run_as_user.is_some_and(|uid| inside(self.uids, uid)) {
            id.run_as_user = None;
            id.run_as_group = None;
        }
        if !id.fs_group.is_some_and(|gid| inside(self.groups, gid)) {
            id.fs_group = None;
        }
        if let Some(groups) = id.supplemental_groups.as_mut() {
            groups.retain(|gid| inside(self.groups, *gid));
        }
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
    let where_ = destination.describe();
    let no_block = |class: &StorageClass| block_problem(pvc, class, &where_);
    match plan.map_storage_class(source_class) {
        Some(class) if class.is_empty() => problems.push(format!(
            "PVC {ns}/{name} uses a static PV (storageClassName \"\"): nothing would provision \
             its twin in {}; map it to a class with storageClassMapping {{\"\": <class>}} or \
             --storage-class =<class> (available: {})",
            destination.describe(),
            available()
        )),
        Some(class) => {
            let found = classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(&class));
            if let Some(problem) = found.and_then(no_block) {
                problems.push(problem);
            }
            if found.is_none() {
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
            let default = classes.iter().find(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
            });
            if let Some(problem) = default.and_then(no_block) {
                problems.push(problem);
            }
            if default.is_none() {
                problems.push(format!(
                    "PVC {ns}/{name} names no storage class and {} has no default one (available: {})",
                    destination.describe(),
                    available()
                ));
            }
        }
    }
}

/// The problem with mapping `pvc` to `class` of the destination (`where_`)
/// when `pvc` is a Block volume the class cannot provision.
fn block_problem(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    where_: &str,
) -> Option<String> {
    if VolumeMode::of(pvc) != VolumeMode::Block {
        return None;
    }
    let reason = cannot_provision_block(class)?;
    let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
    let name = pvc.metadata.name.as_deref().unwrap_or_default();
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    let source_class = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default();
    Some(format!(
        "PVC {ns}/{name} is a Block volume (volumeMode: Block), but storage class \
         {class_name:?} in {where_} cannot provision Block volumes ({reason}); map it to a \
         class that can with storageClassMapping or --storage-class {source_class}=<class>"
    ))
}

/// Provisioners of file-only storage (NFS, SMB, CephFS, EFS, Azure Files,
/// Filestore, GlusterFS): their CSI drivers make no Block volumes, and a
/// Block PVC of their class would stay Pending.
const FILE_ONLY_PROVISIONERS: &[&str] = &[
    "nfs.csi.k8s.io",
    "smb.csi.k8s.io",
    "cephfs.csi.ceph.com",
    "efs.csi.aws.com",
    "file.csi.azure.com",
    "filestore.csi.storage.gke.io",
    "kubernetes.io/azure-file",
    "kubernetes.io/cephfs",
    "kubernetes.io/glusterfs",
    "cluster.local/nfs-subdir-external-provisioner",
];

/// Why `class` cannot provision a Block volume, if preflight knows it
/// cannot: a file-only provisioner (OpenShift Data Foundation's CephFS is
/// `<namespace>.cephfs.csi.ceph.com`), or the class annotated
/// [`BLOCK_VOLUMES_ANNOTATION`]` = "false"`.
fn cannot_provision_block(class: &StorageClass) -> Option<String> {
    let provisioner = class.provisioner.as_str();
    if FILE_ONLY_PROVISIONERS.contains(&provisioner)
        || provisioner.ends_with(".cephfs.csi.ceph.com")
    {
        return Some(format!("its provisioner {provisioner} is file-only"));
    }
    let annotated = class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BLOCK_VOLUMES_ANNOTATION))
        .is_some_and(|v| v == "false");
    annotated.then(|| format!("it is annotated {BLOCK_VOLUMES_ANNOTATION}=false"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn class(name: &str, provisioner: &str, annotations: &[(&str, &str)]) -> StorageClass {
        StorageClass {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            ..StorageClass::default()
        }
    }

    fn claim(mode: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "disk", "namespace": "vm" },
            "spec": { "volumeMode": mode, "storageClassName": "gp3" },
        }))
        .unwrap()
    }

    #[test]
    fn block_pvcs_need_a_class_that_provisions_block_volumes() {
        let nfs = class("shared", "nfs.csi.k8s.io", &[]);
        let odf = class("ocs", "openshift-storage.cephfs.csi.ceph.com", &[]);
        let marked = class(
            "odd",
            "example.com/odd",
            &[(BLOCK_VOLUMES_ANNOTATION, "false")],
        );
        let ebs = class("gp3", "ebs.csi.aws.com", &[]);
        let block = claim(Some("Block"));
        assert_eq!(
            block_problem(&block, &nfs, "cluster \"dst\"").as_deref(),
            Some(
                "PVC vm/disk is a Block volume (volumeMode: Block), but storage class \"shared\" \
                 in cluster \"dst\" cannot provision Block volumes (its provisioner \
                 nfs.csi.k8s.io is file-only); map it to a class that can with \
                 storageClassMapping or --storage-class gp3=<class>"
            )
        );
        assert!(block_problem(&block, &odf, "dst").is_some());
        assert!(block_problem(&block, &marked, "dst")
            .is_some_and(|p| p.contains("annotated mover.io/block-volumes=false")));
        assert_eq!(block_problem(&block, &ebs, "dst"), None);
        for files in [claim(None), claim(Some("Filesystem"))] {
            assert_eq!(block_problem(&files, &nfs, "dst"), None);
        }
    }

    #[test]
    fn openshift_receivers_keep_only_identities_inside_the_namespace_ranges() {
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (
                        "openshift.io/sa.scc.uid-range".to_string(),
                        "1000650000/10000".to_string(),
                    ),
                    (
                        "openshift.io/sa.scc.supplemental-groups".to_string(),
                        "1000650000/10000".to_string(),
                    ),
                ])),
                ..Default::default()
            },
            ..Namespace::default()
        };
        let ranges = openshift_ranges(&namespace);
        let mut inside = PodSecurityContext {
            run_as_user: Some(1000650003),
            fs_group: Some(1000650000),
            supplemental_groups: Some(vec![1000650001, 5]),
            ..PodSecurityContext::default()
        };
        ranges.confine(&mut inside);
        assert_eq!(inside.run_as_user, Some(1000650003));
        assert_eq!(inside.fs_group, Some(1000650000));
        assert_eq!(inside.supplemental_groups, Some(vec![1000650001]));

        let mut outside = PodSecurityContext {
            run_as_user: Some(1001),
            run_as_group: Some(1001),
            fs_group: Some(2000),
            ..PodSecurityContext::default()
        };
        ranges.confine(&mut outside);
        assert_eq!((outside.run_as_user, outside.fs_group), (None, None));
        // A namespace OpenShift has not given ranges yet: the SCC assigns.
        let mut unknown = PodSecurityContext {
            run_as_user: Some(1000650003),
            ..PodSecurityContext::default()
        };
        openshift_ranges(&Namespace::default()).confine(&mut unknown);
        assert_eq!(unknown.run_as_user, None);
    }
}
