//! Volumes as real clusters treat them: WaitForFirstConsumer claims bound
//! only when their first pod is scheduled, with a node affinity that
//! keeps later pods on that node; ReadWriteOnce volumes attached to one
//! node at a time (Multi-Attach), ReadWriteOncePod ones used by one pod;
//! Block volumes refused through volumeMounts and given to containers as
//! loop devices through volumeDevices. The scheduler's messages
//! and the Events of the PV controller, the attach/detach controller and
//! the kubelet are the real ones.
//!
//! One cluster with Docker serves every check, one after the other; the
//! binder's side is also checked on clusters without Docker (cheap), with
//! the `storage` policy on and off.

mod cluster_support;

use anyhow::Context as _;
use cluster_support::{node_name, phase, placed, sleeper, source, waiting_reason, TestCluster};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube_emulator::binder::{BLOCK_IMAGE, NO_BLOCK_ANNOTATION};
use kube_emulator::testing::{wait_for, WAIT_LIMIT};
use kube_emulator::ClusterOptions;
use serde_json::json;

const WFFC_CLASS: &str = "local-wffc";

#[tokio::test]
async fn volumes_are_bound_attached_and_mounted_as_kubernetes_does() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("stor").await?;
    wait_for_first_consumer(&test).await?;
    unbound_and_missing_claims(&test).await?;
    read_write_once_attaches_to_one_node(&test).await?;
    read_write_once_pod_serves_one_pod(&test).await?;
    block_volumes_need_volume_devices(&test).await?;
    Ok(())
}

#[tokio::test]
async fn without_the_storage_policy_wait_for_first_consumer_binds_at_once() -> anyhow::Result<()> {
    let mut options = ClusterOptions::new("stor-off", false);
    options.policy.storage = false;
    let test = TestCluster::start(options).await?;
    create_wffc_class(&test).await?;
    claim(&test, "eager", Some(WFFC_CLASS), &["ReadWriteOnce"]).await?;
    let bound = wait_for(
        &test.api::<PersistentVolumeClaim>(),
        "eager",
        "the claim to bind",
        |claim| claim_phase(claim) == "Bound",
    )
    .await?;
    let volume = volume_of(&test, &bound).await?;
    assert!(volume.spec.unwrap_or_default().node_affinity.is_none());
    Ok(())
}

async fn create_wffc_class(test: &TestCluster) -> anyhow::Result<()> {
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": WFFC_CLASS },
        "provisioner": kube_emulator::binder::PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }))?;
    test.cluster_api::<StorageClass>()
        .create(&PostParams::default(), &class)
        .await?;
    Ok(())
}

async fn claim(
    test: &TestCluster,
    name: &str,
    class: Option<&str>,
    modes: &[&str],
) -> anyhow::Result<PersistentVolumeClaim> {
    let mut claim = json!({
        "metadata": { "name": name },
        "spec": { "accessModes": modes, "resources": { "requests": { "storage": "1Mi" } } },
    });
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    test.create(claim).await
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

async fn volume_of(
    test: &TestCluster,
    claim: &PersistentVolumeClaim,
) -> anyhow::Result<PersistentVolume> {
    let name = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        .context("the claim names no volume")?;
    Ok(test.cluster_api::<PersistentVolume>().get(name).await?)
}

/// A pod mounting `claims` (volume `name-vol` at `/name`), with
/// `placement` (nodeSelector, nodeName) merged into its spec.
fn using(claims: &[&str], placement: serde_json::Value) -> serde_json::Value {
    let mounts: Vec<_> = claims
        .iter()
        .map(|claim| json!({ "name": format!("{claim}-vol"), "mountPath": format!("/{claim}") }))
        .collect();
    let volumes: Vec<_> = claims
        .iter()
        .map(|claim| json!({ "name": format!("{claim}-vol"), "persistentVolumeClaim": { "claimName": claim } }))
        .collect();
    let mut container = sleeper();
    container["volumeMounts"] = json!(mounts);
    placed(
        json!({ "containers": [container], "volumes": volumes }),
        placement,
    )
}

/// A WaitForFirstConsumer claim stays Pending until its first pod is
/// scheduled, then is provisioned on that pod's node; later pods follow
/// it there. Immediate claims still bind at once.
async fn wait_for_first_consumer(test: &TestCluster) -> anyhow::Result<()> {
    create_wffc_class(test).await?;
    claim(test, "late", Some(WFFC_CLASS), &["ReadWriteOnce"]).await?;
    let event = test.event("late", "WaitForFirstConsumer").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.as_deref()
        ),
        (
            Some("Normal"),
            "persistentvolume-controller",
            Some("waiting for first consumer to be created before binding")
        )
    );
    let claims = test.api::<PersistentVolumeClaim>();
    let waiting = claims.get("late").await?;
    assert_eq!(claim_phase(&waiting), "Pending");
    assert!(waiting.spec.and_then(|spec| spec.volume_name).is_none());

    test.pod("first", using(&["late"], test.on_node(2))).await?;
    let first = test.running("first").await?;
    assert_eq!(node_name(&first), test.node(2));
    let bound = claims.get("late").await?;
    assert_eq!(claim_phase(&bound), "Bound");
    assert_eq!(
        bound
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get("volume.kubernetes.io/selected-node")),
        Some(&test.node(2))
    );
    let volume = volume_of(test, &bound).await?;
    let affinity = serde_json::to_value(volume.spec.unwrap_or_default().node_affinity)?;
    assert_eq!(
        affinity,
        json!({ "required": { "nodeSelectorTerms": [{ "matchExpressions": [
            { "key": "kubernetes.io/hostname", "operator": "In", "values": [test.node(2)] },
        ] }] } })
    );

    // Later pods go where the volume is, and share it there.
    for name in ["follower-1", "follower-2"] {
        test.pod(name, using(&["late"], json!({}))).await?;
        assert_eq!(node_name(&test.running(name).await?), test.node(2));
    }
    test.pod("elsewhere", using(&["late"], test.on_node(1)))
        .await?;
    assert_eq!(
        test.unschedulable("elsewhere").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 \
             node(s) had volume node affinity conflict. preemption: 0/2 nodes are available: 2 \
             Preemption is not helpful for scheduling.."
        )
    );
    test.patch_node(
        2,
        json!({ "taints": [{ "key": "full", "value": "yes", "effect": "NoSchedule" }] }),
    )
    .await?;
    test.pod("blocked", using(&["late"], json!({}))).await?;
    assert_eq!(
        test.unschedulable("blocked").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) had untolerated taint {full: yes}, 1 node(s) \
             had volume node affinity conflict. preemption: 0/2 nodes are available: 2 \
             Preemption is not helpful for scheduling.."
        )
    );
    test.patch_node(2, json!({ "taints": null })).await?;
    assert_eq!(node_name(&test.running("blocked").await?), test.node(2));

    // The default class is Immediate: its claims bind without a pod, and
    // their volumes may be used on any node.
    claim(test, "early", None, &["ReadWriteOnce"]).await?;
    let early = wait_for(&claims, "early", "the claim to bind", |claim| {
        claim_phase(claim) == "Bound"
    })
    .await?;
    assert!(volume_of(test, &early)
        .await?
        .spec
        .unwrap_or_default()
        .node_affinity
        .is_none());
    test.delete_pods(&["first", "follower-1", "follower-2", "elsewhere", "blocked"])
        .await
}

/// The scheduler waits for claims to exist and for Immediate ones to be
/// bound.
async fn unbound_and_missing_claims(test: &TestCluster) -> anyhow::Result<()> {
    test.pod("ghostly", using(&["ghost"], json!({}))).await?;
    assert_eq!(
        test.unschedulable("ghostly").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: persistentvolumeclaim \"ghost\" not found. preemption: \
             0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        )
    );
    claim(test, "classless", Some("no-such-class"), &["ReadWriteOnce"]).await?;
    test.pod("stranded", using(&["classless"], json!({})))
        .await?;
    assert_eq!(
        test.unschedulable("stranded").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        )
    );
    // The claim appears: the pod is scheduled.
    claim(test, "ghost", None, &["ReadWriteOnce"]).await?;
    test.running("ghostly").await?;
    test.delete_pods(&["ghostly", "stranded"]).await
}

/// A ReadWriteOnce volume is attached to one node at a time: pods of that
/// node share it, a pod of another node waits in ContainerCreating with a
/// Multi-Attach error until the volume's pods are gone. ReadWriteMany
/// volumes attach anywhere.
async fn read_write_once_attaches_to_one_node(test: &TestCluster) -> anyhow::Result<()> {
    let shared = claim(test, "shared", None, &["ReadWriteOnce"]).await?;
    let pv = format!("pvc-{}", shared.metadata.uid.context("a claim uid")?);
    test.pod("holder", using(&["shared"], test.on_node(1)))
        .await?;
    test.running("holder").await?;
    test.pod("neighbour", using(&["shared"], test.on_node(1)))
        .await?;
    test.running("neighbour").await?;
    test.pod("intruder", using(&["shared"], test.on_node(2)))
        .await?;
    let event = test.event("intruder", "FailedAttachVolume").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.clone()
        ),
        (
            Some("Warning"),
            "attachdetach-controller",
            Some(format!(
                "Multi-Attach error for volume \"{pv}\" Volume is already used by pod(s) holder, \
                 neighbour"
            ))
        )
    );
    let intruder = test.api::<Pod>().get("intruder").await?;
    assert_eq!(
        (
            phase(&intruder),
            node_name(&intruder),
            waiting_reason(&intruder).as_deref()
        ),
        ("Pending", test.node(2).as_str(), Some("ContainerCreating"))
    );
    test.delete_pods(&["holder", "neighbour"]).await?;
    test.running("intruder").await?;

    claim(test, "everywhere", None, &["ReadWriteMany"]).await?;
    for (name, node) in [("many-1", 1), ("many-2", 2)] {
        test.pod(name, using(&["everywhere"], test.on_node(node)))
            .await?;
    }
    test.running("many-1").await?;
    test.running("many-2").await?;
    test.delete_pods(&["intruder", "many-1", "many-2"]).await
}

/// A ReadWriteOncePod claim serves one pod at all: the scheduler refuses a
/// second one until the first is gone.
async fn read_write_once_pod_serves_one_pod(test: &TestCluster) -> anyhow::Result<()> {
    claim(test, "solo", None, &["ReadWriteOncePod"]).await?;
    test.pod("solo-1", using(&["solo"], json!({}))).await?;
    test.running("solo-1").await?;
    test.pod("solo-2", using(&["solo"], json!({}))).await?;
    assert_eq!(
        test.unschedulable("solo-2").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same \
             name and ReadWriteOncePod access mode. preemption: 0/2 nodes are available: 2 No \
             preemption victims found for incoming pod.."
        )
    );
    test.delete_pods(&["solo-1"]).await?;
    test.running("solo-2").await?;
    test.delete_pods(&["solo-2"]).await
}

/// A Block claim mounted through volumeMounts is refused by the kubelet
/// (the pod stays ContainerCreating), and so is a Filesystem claim in
/// volumeDevices. Through volumeDevices a Block claim's disk (a sparse
/// image of the requested size) is attached to a loop device and given to
/// the container at its devicePath, owned by the container's user (read
/// only for a readOnly claim); the loop device is detached once no pod
/// uses it.
async fn block_volumes_need_volume_devices(test: &TestCluster) -> anyhow::Result<()> {
    block_claim(test, "raw").await?;
    test.pod("mounts-raw", using(&["raw"], json!({}))).await?;
    let event = test.event("mounts-raw", "FailedMount").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.as_deref()
        ),
        (
            Some("Warning"),
            "kubelet",
            Some(
                "Unable to attach or mount volumes: unmounted volumes=[raw-vol], unattached \
                 volumes=[], failed to process volumes=[raw-vol]: volume raw-vol has volumeMode \
                 Block, but is specified in volumeMounts"
            )
        )
    );
    let pod = test.api::<Pod>().get("mounts-raw").await?;
    assert_eq!(
        (phase(&pod), waiting_reason(&pod).as_deref()),
        ("Pending", Some("ContainerCreating"))
    );

    // A non-root container writes to the device; the bytes land in the
    // PV's disk image.
    test.pod(
        "maps-raw",
        mapping(
            "raw",
            "echo block-data > /dev/xvda && sleep 3600",
            json!({ "runAsUser": 1000, "runAsGroup": 1000 }),
        ),
    )
    .await?;
    test.running("maps-raw").await?;
    let image = test.claim_dir("raw").await?.join(BLOCK_IMAGE);
    assert_eq!(std::fs::metadata(&image)?.len(), 4 << 20);
    let written = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            let bytes = std::fs::read(&image)?;
            if bytes.starts_with(b"block-data\n") {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    written.context("the container's write never reached the disk image")??;
    assert_eq!(loop_devices(&image)?.len(), 1, "one loop device per disk");

    // A read-only claim gives a device the container can read, not write;
    // its pod shares the loop device of the running one (same node).
    let maps_raw = test.api::<Pod>().get("maps-raw").await?;
    let mut reader = mapping(
        "raw",
        "head -c 10 /dev/xvda | grep -q block-data && ! (echo x > /dev/xvda)",
        json!({}),
    );
    reader["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    reader["restartPolicy"] = json!("Never");
    reader["nodeName"] = json!(node_name(&maps_raw));
    test.pod("reads-raw", reader).await?;
    test.wait_pod("reads-raw", "the reader to end", |pod| {
        matches!(phase(pod), "Succeeded" | "Failed")
    })
    .await
    .and_then(|pod| {
        anyhow::ensure!(phase(&pod) == "Succeeded", "{:?}", pod.status);
        Ok(())
    })?;
    assert_eq!(loop_devices(&image)?.len(), 1, "one loop device per disk");

    claim(test, "files", None, &["ReadWriteOnce"]).await?;
    test.pod("maps-files", mapping("files", "sleep 3600", json!({})))
        .await?;
    let event = test.event("maps-files", "FailedMount").await?;
    assert_eq!(
        event.message.as_deref(),
        Some(
            "Unable to attach or mount volumes: unmounted volumes=[files-vol], unattached \
             volumes=[], failed to process volumes=[files-vol]: volume files-vol has volumeMode \
             Filesystem, but is specified in volumeDevices"
        )
    );
    test.delete_pods(&["mounts-raw", "maps-raw", "reads-raw", "maps-files"])
        .await?;
    let detached = tokio::time::timeout(WAIT_LIMIT, async {
        while !loop_devices(&image)?.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    })
    .await;
    detached.context("the loop device outlived its last pod")?
}

/// A pod whose container runs `script` with claim `name` as device
/// `/dev/xvda`, with `security` as its securityContext.
fn mapping(name: &str, script: &str, security: serde_json::Value) -> serde_json::Value {
    json!({
        "containers": [{
            "name": "main",
            "command": ["sh", "-c", script],
            "securityContext": security,
            "volumeDevices": [{ "name": format!("{name}-vol"), "devicePath": "/dev/xvda" }],
        }],
        "volumes": [{ "name": format!("{name}-vol"), "persistentVolumeClaim": { "claimName": name } }],
    })
}

async fn block_claim(test: &TestCluster, name: &str) -> anyhow::Result<PersistentVolumeClaim> {
    test.create(json!({
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "resources": { "requests": { "storage": "4Mi" } },
        },
    }))
    .await
}

/// The loop devices attached to `image` (`losetup -j`).
fn loop_devices(image: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "losetup -j: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(':').next().map(String::from))
        .collect())
}

/// Block claims of the default class get a sparse disk image of their
/// size; a class annotated as having no block support leaves them
/// Pending with the external provisioner's ProvisioningFailed Event.
#[tokio::test]
async fn block_claims_get_a_disk_unless_their_class_has_no_block_support() -> anyhow::Result<()> {
    let test = TestCluster::start(ClusterOptions::new("stor-block", false)).await?;
    block_claim(&test, "disk").await?;
    wait_for(
        &test.api::<PersistentVolumeClaim>(),
        "disk",
        "the claim to bind",
        |claim| claim_phase(claim) == "Bound",
    )
    .await?;
    let image = test.claim_dir("disk").await?.join(BLOCK_IMAGE);
    let metadata = std::fs::metadata(&image)?;
    assert_eq!(metadata.len(), 4 << 20);
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&metadata),
        0,
        "sparse"
    );

    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": "nfs", "annotations": { NO_BLOCK_ANNOTATION: "false" } },
        "provisioner": "nfs.csi.k8s.io",
    }))?;
    test.cluster_api::<StorageClass>()
        .create(&PostParams::default(), &class)
        .await?;
    test.create::<PersistentVolumeClaim>(json!({
        "metadata": { "name": "no-block" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "storageClassName": "nfs",
            "resources": { "requests": { "storage": "4Mi" } },
        },
    }))
    .await?;
    let event = test.event("no-block", "ProvisioningFailed").await?;
    assert_eq!(
        (event.type_.as_deref(), event.message.as_deref()),
        (
            Some("Warning"),
            Some("nfs.csi.k8s.io does not support block volume provisioning")
        )
    );
    let claim = test.api::<PersistentVolumeClaim>().get("no-block").await?;
    assert_eq!(claim_phase(&claim), "Pending");
    // Filesystem claims of the class are provisioned as before.
    claim_of(&test, "nfs-files", "nfs").await?;
    Ok(())
}

async fn claim_of(test: &TestCluster, name: &str, class: &str) -> anyhow::Result<()> {
    claim(test, name, Some(class), &["ReadWriteMany"]).await?;
    wait_for(
        &test.api::<PersistentVolumeClaim>(),
        name,
        "the claim to bind",
        |claim| claim_phase(claim) == "Bound",
    )
    .await?;
    Ok(())
}

/// A cluster's shutdown detaches the loop devices of its Block volumes,
/// even of pods still running.
#[tokio::test]
async fn shutdown_detaches_block_volumes() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("stor-down").await?;
    block_claim(&test, "held").await?;
    test.pod("holder", mapping("held", "sleep 3600", json!({})))
        .await?;
    test.running("holder").await?;
    let image = test.claim_dir("held").await?.join(BLOCK_IMAGE);
    assert_eq!(loop_devices(&image)?.len(), 1);
    let TestCluster { cluster, .. } = test;
    drop(cluster);
    assert_eq!(loop_devices(&image)?, Vec::<String>::new());
    Ok(())
}
