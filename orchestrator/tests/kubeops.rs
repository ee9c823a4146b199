//! The generic waits every step uses, against an emulated cluster without
//! Docker: a wait ends as soon as the watched object changes, and one that
//! times out says what the object's status and events showed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_emulator::ClusterPair;
use orchestrator::kubeops::poll;
use serde_json::json;

async fn namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn claim(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_wait_ends_when_the_object_changes_and_a_timeout_says_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(dir.path(), false).await.unwrap();
    let client = pair.source.client.clone();
    namespace(&client, "waits").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "waits");

    // Created while the wait runs: the wait sees it appear and bind.
    let waiting = {
        let claims = claims.clone();
        tokio::spawn(async move {
            poll(&claims, "data", Duration::from_secs(60), "to bind", |pvc| {
                pvc.and_then(|p| p.status.as_ref()?.phase.clone())
                    .filter(|phase| phase == "Bound")
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    claims
        .create(&PostParams::default(), &claim("data", "standard"))
        .await
        .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "Bound");

    // A claim of a class nothing provisions stays Pending: the timeout
    // names its phase, its failing condition and its latest event.
    claims
        .create(&PostParams::default(), &claim("stuck", "no-such-class"))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Pending", "conditions": [{
        "type": "Resizing", "status": "False", "reason": "Waiting",
        "message": "nothing provisions this class"
    }]}});
    claims
        .patch_status("stuck", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let event = Event {
        metadata: ObjectMeta {
            name: Some("stuck.1".into()),
            namespace: Some("waits".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            name: Some("stuck".into()),
            namespace: Some("waits".into()),
            ..ObjectReference::default()
        },
        reason: Some("ProvisioningFailed".into()),
        message: Some("storageclass.storage.k8s.io \"no-such-class\" not found".into()),
        type_: Some("Warning".into()),
        ..Event::default()
    };
    Api::<Event>::namespaced(client.clone(), "waits")
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let error = poll(&claims, "stuck", Duration::from_secs(2), "to bind", |pvc| {
        pvc.and_then(|p| p.status.as_ref()?.phase.clone())
            .filter(|phase| phase == "Bound")
    })
    .await
    .unwrap_err()
    .to_string();
    for expected in [
        "timed out after 2s waiting for stuck to bind",
        "phase Pending",
        "Resizing Waiting: nothing provisions this class",
        "event Warning ProvisioningFailed: storageclass.storage.k8s.io \"no-such-class\" not found",
    ] {
        assert!(
            error.contains(expected),
            "{expected:?} missing from: {error}"
        );
    }

    // Waiting for something that never appears says so.
    let error = poll(&claims, "ghost", Duration::from_secs(1), "to bind", |pvc| {
        pvc.map(|_| ())
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(error.ends_with("it does not exist"), "{error}");
}
