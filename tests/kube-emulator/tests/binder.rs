//! The PVC/PV binder: claims of existing (or default) storage classes bind
//! to fresh host directories, claims of unknown classes wait with an Event
//! until the class appears, and deleting a claim reclaims its volume by the
//! class's reclaim policy. No Docker needed: the binder runs in every
//! emulated cluster.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use kube_emulator::cluster::instance_id;
use kube_emulator::testing::{wait_for, WAIT_LIMIT};
use kube_emulator::{Cluster, ClusterOptions, Shared};
use serde_json::json;

struct TestCluster {
    cluster: Cluster,
    _state: tempfile::TempDir,
}

impl TestCluster {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let shared = Arc::new(Shared {
            instance: instance_id(),
            velero_bucket: state.path().join("velero-bucket"),
            ..Shared::default()
        });
        let options = ClusterOptions::new(name, false);
        let cluster = Cluster::start(&options, state.path(), shared).await?;
        Ok(Self {
            cluster,
            _state: state,
        })
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.cluster.client.clone(), "default")
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.cluster.client.clone())
    }

    async fn claim(&self, name: &str, class: Option<&str>) -> anyhow::Result<()> {
        let mut claim = json!({
            "metadata": { "name": name },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "2Gi" } } },
        });
        if let Some(class) = class {
            claim["spec"]["storageClassName"] = json!(class);
        }
        let claim: PersistentVolumeClaim = serde_json::from_value(claim)?;
        self.claims().create(&PostParams::default(), &claim).await?;
        Ok(())
    }

    async fn bound(&self, name: &str) -> anyhow::Result<(PersistentVolumeClaim, PersistentVolume)> {
        let claim = wait_for(&self.claims(), name, "the claim to be bound", |claim| {
            claim
                .status
                .as_ref()
                .and_then(|status| status.phase.as_deref())
                == Some("Bound")
        })
        .await?;
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_name.clone())
            .context("volumeName")?;
        let volume = self.volumes().get(&volume_name).await?;
        Ok((claim, volume))
    }
}

fn host_dir(volume: &PersistentVolume) -> PathBuf {
    PathBuf::from(
        volume
            .spec
            .as_ref()
            .and_then(|spec| spec.host_path.as_ref())
            .map(|host| host.path.clone())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn claims_bind_to_fresh_directories_and_unknown_classes_wait_for_theirs() -> anyhow::Result<()>
{
    let test = TestCluster::start("binder-classes").await?;
    test.claim("named", Some("standard")).await?;
    test.claim("defaulted", None).await?;
    test.claim("golden", Some("gold")).await?;

    let (claim, volume) = test.bound("named").await?;
    let status = claim.status.unwrap_or_default();
    assert_eq!(status.capacity.unwrap_or_default()["storage"].0, "2Gi");
    assert_eq!(status.access_modes.unwrap_or_default(), ["ReadWriteOnce"]);
    let spec = volume.spec.clone().unwrap_or_default();
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    let claim_ref = spec.claim_ref.unwrap_or_default();
    assert_eq!(
        (claim_ref.namespace.as_deref(), claim_ref.name.as_deref()),
        (Some("default"), Some("named"))
    );
    assert_eq!(
        volume
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Bound")
    );
    let named_dir = host_dir(&volume);
    assert!(named_dir.is_dir(), "{}", named_dir.display());
    assert!(named_dir.starts_with(&test.cluster.context.state_dir));

    let (claim, volume) = test.bound("defaulted").await?;
    assert_eq!(
        claim
            .spec
            .and_then(|spec| spec.storage_class_name)
            .as_deref(),
        Some("standard")
    );
    assert_ne!(host_dir(&volume), named_dir);

    // The unknown class: Pending, with an Event saying why.
    let events: Api<Event> = Api::namespaced(test.cluster.client.clone(), "default");
    let event = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|event| event.involved_object.name.as_deref() == Some("golden"));
            if let Some(event) = found {
                return anyhow::Ok(event);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .context("no Event about the claim of an unknown class")??;
    assert_eq!(event.reason.as_deref(), Some("ProvisioningFailed"));
    let message = event.message.unwrap_or_default();
    assert!(message.contains("\"gold\" not found"), "{message}");
    let claim = test.claims().get("golden").await?;
    assert_eq!(
        claim.status.and_then(|status| status.phase).as_deref(),
        Some("Pending")
    );
    assert_eq!(claim.spec.and_then(|spec| spec.volume_name), None);

    // Once the class exists the claim binds.
    let gold: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": "gold" },
        "provisioner": "example.com/gold",
        "reclaimPolicy": "Retain",
    }))?;
    Api::<StorageClass>::all(test.cluster.client.clone())
        .create(&PostParams::default(), &gold)
        .await?;
    let (_, volume) = test.bound("golden").await?;
    let spec = volume.spec.unwrap_or_default();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("gold"));
    Ok(())
}

#[tokio::test]
async fn deleting_a_claim_reclaims_its_volume_by_policy() -> anyhow::Result<()> {
    let test = TestCluster::start("binder-reclaim").await?;
    let kept: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": "kept" },
        "provisioner": "example.com/kept",
        "reclaimPolicy": "Retain",
    }))?;
    Api::<StorageClass>::all(test.cluster.client.clone())
        .create(&PostParams::default(), &kept)
        .await?;
    test.claim("deleted", Some("standard")).await?;
    test.claim("retained", Some("kept")).await?;
    let (_, deleted) = test.bound("deleted").await?;
    let (_, retained) = test.bound("retained").await?;
    std::fs::write(host_dir(&deleted).join("file"), "data")?;
    std::fs::write(host_dir(&retained).join("file"), "data")?;

    test.claims()
        .delete("deleted", &DeleteParams::default())
        .await?;
    test.claims()
        .delete("retained", &DeleteParams::default())
        .await?;

    let deleted_name = deleted.metadata.name.clone().unwrap_or_default();
    tokio::time::timeout(WAIT_LIMIT, async {
        while test.volumes().get_opt(&deleted_name).await?.is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("the PV of a deleted claim with reclaimPolicy Delete is still there")??;
    assert!(!host_dir(&deleted).exists());

    let retained_name = retained.metadata.name.clone().unwrap_or_default();
    wait_for(
        &test.volumes(),
        &retained_name,
        "the PV to be Released",
        |volume| {
            volume
                .status
                .as_ref()
                .and_then(|status| status.phase.as_deref())
                == Some("Released")
        },
    )
    .await?;
    assert_eq!(
        std::fs::read_to_string(host_dir(&retained).join("file"))?,
        "data"
    );
    Ok(())
}
