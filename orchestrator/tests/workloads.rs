//! The workload building blocks (quiesce/unquiesce, PVC users, rollout
//! readiness) against the emulated API server. Without Docker there are
//! no controllers or kubelet: the tests write what those would (pod and
//! workload status) and check what the orchestrator reads and writes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use kube_emulator::ClusterPair;
use orchestrator::clusters::Cluster;
use orchestrator::names::*;
use orchestrator::workloads::quiesce::{quiesce, unquiesce};
use orchestrator::workloads::users::{pods_using, unused};
use orchestrator::workloads::verify::{readiness, RolloutState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const NS: &str = "shop";

async fn start() -> (tempfile::TempDir, ClusterPair, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
        .await
        .unwrap();
    let cluster = Cluster {
        side: "source",
        context: "source".into(),
        client: pair.source.client.clone(),
    };
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    (dir, pair, cluster)
}

fn api<K>(cluster: &Cluster) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(cluster.client.clone(), NS)
}

async fn create<K>(cluster: &Cluster, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api::<K>(cluster)
        .create(&PostParams::default(), &object)
        .await
        .unwrap()
}

fn template(app: &str, spec: Value) -> Value {
    let mut pod = json!({"containers": [{"name": "app", "image": "registry/app:1"}]});
    merge(&mut pod, spec);
    json!({"metadata": {"labels": {"app": app}}, "spec": pod})
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

fn replicated(kind: &str, name: &str, replicas: i32) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": template(name, json!({})),
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

fn annotations(meta: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

/// The resourceVersion of every object quiesce may touch, to show that a
/// second pass writes nothing.
async fn versions(cluster: &Cluster) -> Vec<(String, String)> {
    async fn of<K>(cluster: &Cluster) -> Vec<(String, String)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        api::<K>(cluster)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| (o.name_any(), o.resource_version().unwrap()))
            .collect()
    }
    let mut all = of::<Deployment>(cluster).await;
    all.extend(of::<StatefulSet>(cluster).await);
    all.extend(of::<ReplicaSet>(cluster).await);
    all.extend(of::<DaemonSet>(cluster).await);
    all.extend(of::<CronJob>(cluster).await);
    all.extend(of::<Job>(cluster).await);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_saves_originals_on_the_objects_and_unquiesce_restores_them_exactly() {
    let (_dir, _pair, cluster) = start().await;
    let web: Deployment = create(&cluster, replicated("Deployment", "web", 3)).await;
    create::<Deployment>(&cluster, replicated("Deployment", "idle", 0)).await;
    create::<StatefulSet>(&cluster, replicated("StatefulSet", "db", 2)).await;
    create::<ReplicaSet>(&cluster, replicated("ReplicaSet", "bare", 1)).await;
    // A Deployment's ReplicaSet: stopping the Deployment stops it.
    let mut owned = replicated("ReplicaSet", "web-5d8f", 3);
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
        "kind": "Deployment", "name": "web", "uid": web.uid().unwrap(), "controller": true}]);
    create::<ReplicaSet>(&cluster, owned).await;
    let job_template = template("report", json!({"restartPolicy": "Never"}));
    create::<CronJob>(
        &cluster,
        json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 1 * * *",
            "suspend": false, "jobTemplate": {"spec": {"template": job_template}}}}),
    )
    .await;
    create::<Job>(
        &cluster,
        json!({"metadata": {"name": "report"}, "spec": {"parallelism": 2,
            "template": job_template}}),
    )
    .await;
    // Parallelism unset: a real API server defaults it to 1 (the emulator
    // may not); whatever the server stored is what comes back.
    let once: Job = create(
        &cluster,
        json!({"metadata": {"name": "once"}, "spec": {"template": job_template}}),
    )
    .await;
    let once_parallelism = once.spec.unwrap().parallelism;
    let once_saved = once_parallelism.map_or("null".to_string(), |p| p.to_string());
    let mut agent = replicated("DaemonSet", "agent", 0);
    agent["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas")
        .unwrap();
    agent["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create::<DaemonSet>(&cluster, agent.clone()).await;
    let mut logs = agent;
    logs["metadata"]["name"] = json!("logs");
    logs["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("nodeSelector");
    create::<DaemonSet>(&cluster, logs).await;

    // The emulator serves neither ReplicationControllers nor
    // DeploymentConfigs yet: "not served" is nothing to do.
    let quiesced = quiesce(&cluster, NS).await.unwrap();
    let mut report: Vec<(&str, &str, &str, bool)> = quiesced
        .iter()
        .map(|q| (q.kind, q.name.as_str(), q.saved.as_str(), q.changed))
        .collect();
    report.sort();
    assert_eq!(
        report,
        [
            ("CronJob", "nightly", "false", true),
            ("DaemonSet", "agent", r#"{"disk":"ssd"}"#, true),
            ("DaemonSet", "logs", "null", true),
            ("Deployment", "idle", "0", true),
            ("Deployment", "web", "3", true),
            ("Job", "once", once_saved.as_str(), true),
            ("Job", "report", "2", true),
            ("ReplicaSet", "bare", "1", true),
            ("StatefulSet", "db", "2", true),
        ]
    );
    let deployments = api::<Deployment>(&cluster);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(0));
    assert_eq!(
        annotations(&web.metadata)[PRE_QUIESCE_REPLICAS_ANNOTATION],
        "3"
    );
    let owned = api::<ReplicaSet>(&cluster).get("web-5d8f").await.unwrap();
    assert_eq!(
        owned.spec.replicas,
        Some(3),
        "an owned ReplicaSet is left to its Deployment"
    );
    assert!(annotations(&owned.metadata).is_empty());
    let cron = api::<CronJob>(&cluster).get("nightly").await.unwrap();
    assert_eq!(cron.spec.suspend, Some(true));
    let job = api::<Job>(&cluster).get("report").await.unwrap();
    assert_eq!(job.spec.unwrap().parallelism, Some(0));
    let agent = api::<DaemonSet>(&cluster).get("agent").await.unwrap();
    assert_eq!(
        agent.spec.template.spec.unwrap().node_selector.unwrap(),
        BTreeMap::from([
            ("disk".to_string(), "ssd".to_string()),
            (
                QUIESCE_NODE_SELECTOR_KEY.to_string(),
                QUIESCE_NODE_SELECTOR_VALUE.to_string()
            ),
        ])
    );

    // A second pass (a resumed run) writes nothing and keeps the originals.
    let before = versions(&cluster).await;
    let again = quiesce(&cluster, NS).await.unwrap();
    assert!(again.iter().all(|q| !q.changed), "{again:?}");
    assert_eq!(versions(&cluster).await, before);

    // Someone scales the quiesced Deployment up: the next pass stops it
    // again, and the saved 3 is not replaced by 0 or 5.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let third = quiesce(&cluster, NS).await.unwrap();
    let web_again = third.iter().find(|q| q.name == "web").unwrap();
    assert!(web_again.changed);
    assert_eq!(web_again.saved, "3");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(0));
    assert_eq!(
        annotations(&web.metadata)[PRE_QUIESCE_REPLICAS_ANNOTATION],
        "3"
    );

    let restored = unquiesce(&cluster, NS).await.unwrap();
    assert_eq!(restored.len(), 9, "{restored:?}");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(3));
    assert!(annotations(&web.metadata).is_empty());
    let idle = deployments.get("idle").await.unwrap();
    assert_eq!(idle.spec.replicas, Some(0));
    assert!(annotations(&idle.metadata).is_empty());
    let cron = api::<CronJob>(&cluster).get("nightly").await.unwrap();
    assert_eq!(cron.spec.suspend, Some(false));
    let job = api::<Job>(&cluster).get("report").await.unwrap();
    assert_eq!(job.spec.unwrap().parallelism, Some(2));
    let once = api::<Job>(&cluster).get("once").await.unwrap();
    assert_eq!(once.spec.unwrap().parallelism, once_parallelism);
    let daemons = api::<DaemonSet>(&cluster);
    let agent = daemons.get("agent").await.unwrap();
    assert_eq!(
        agent.spec.template.spec.unwrap().node_selector.unwrap(),
        BTreeMap::from([("disk".to_string(), "ssd".to_string())])
    );
    let logs = daemons.get("logs").await.unwrap();
    assert_eq!(
        logs.spec.template.spec.unwrap().node_selector,
        None,
        "a DaemonSet without a nodeSelector gets none back, not {{}}"
    );
    assert!(annotations(&logs.metadata).is_empty());

    // Nothing is annotated any more: a second unquiesce writes nothing.
    let before = versions(&cluster).await;
    assert!(unquiesce(&cluster, NS).await.unwrap().is_empty());
    assert_eq!(versions(&cluster).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unquiesce_names_an_annotation_it_cannot_read() {
    let (_dir, _pair, cluster) = start().await;
    let mut broken = replicated("Deployment", "web", 0);
    broken["metadata"]["annotations"] = json!({PRE_QUIESCE_REPLICAS_ANNOTATION: "three"});
    create::<Deployment>(&cluster, broken).await;
    let error = format!("{:#}", unquiesce(&cluster, NS).await.unwrap_err());
    assert!(error.contains("Deployment web"), "{error}");
    assert!(error.contains(PRE_QUIESCE_REPLICAS_ANNOTATION), "{error}");
    assert!(error.contains("namespace shop"), "{error}");
}

fn pod(name: &str, claims: &[&str], labels: Value) -> Value {
    let volumes: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry/app:1"}], "volumes": volumes},
    })
}

async fn set_pod_status(cluster: &Cluster, name: &str, status: Value) {
    api::<Pod>(cluster)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_using_lists_the_unfinished_pods_that_mount_the_claims() {
    let (_dir, _pair, cluster) = start().await;
    for (name, claims) in [
        ("web-1", &["data"][..]),
        ("batch-done", &["data"][..]),
        ("leaving", &["data", "logs"][..]),
        ("other", &["unrelated"][..]),
    ] {
        create::<Pod>(&cluster, pod(name, claims, json!({"app": name}))).await;
    }
    create::<Pod>(
        &cluster,
        pod(
            "mover-sender-data",
            &["data"],
            json!({TRANSFER_LABEL: "m1"}),
        ),
    )
    .await;
    let mut scratch = pod("cache-0", &[], json!({}));
    scratch["spec"]["volumes"] = json!([{"name": "scratch", "ephemeral": {
        "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}}}]);
    create::<Pod>(&cluster, scratch).await;
    set_pod_status(&cluster, "web-1", json!({"phase": "Running"})).await;
    set_pod_status(&cluster, "batch-done", json!({"phase": "Succeeded"})).await;
    // A pod being deleted (held by a finalizer, as during a grace period)
    // still counts.
    let pods = api::<Pod>(&cluster);
    pods.patch(
        "leaving",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    pods.delete("leaving", &DeleteParams::default())
        .await
        .unwrap();

    let pvcs: Vec<String> = ["data", "logs", "cache-0-scratch", "idle"]
        .map(String::from)
        .to_vec();
    let uses = pods_using(&cluster, NS, &pvcs).await.unwrap();
    let seen: Vec<(&str, Vec<&str>, bool)> = uses
        .iter()
        .map(|u| {
            (
                u.pod.as_str(),
                u.pvcs.iter().map(String::as_str).collect(),
                u.terminating,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("cache-0", vec!["cache-0-scratch"], false),
            ("leaving", vec!["data", "logs"], true),
            ("web-1", vec!["data"], false),
        ]
    );
    assert_eq!(uses[2].phase, "Running");
    assert_eq!(unused(&pvcs, &uses), ["idle"]);

    // Once the users are gone, nothing uses the claims.
    for name in ["web-1", "cache-0"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    pods.patch(
        "leaving",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(pods_using(&cluster, NS, &pvcs).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_judges_rollouts_and_names_the_pods_reasons() {
    let (_dir, _pair, cluster) = start().await;
    let deployments = api::<Deployment>(&cluster);
    for (name, replicas) in [("web", 2), ("api", 1), ("off", 0)] {
        create::<Deployment>(&cluster, replicated("Deployment", name, replicas)).await;
    }
    let generation = deployments
        .get("web")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap_or(1);
    let status = |replicas: i32, available: i32| {
        json!({"status": {"observedGeneration": generation, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": available,
            "availableReplicas": available}})
    };
    deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status(2, 2)))
        .await
        .unwrap();
    deployments
        .patch_status("api", &PatchParams::default(), &Patch::Merge(status(1, 0)))
        .await
        .unwrap();
    create::<Pod>(&cluster, pod("api-x", &[], json!({"app": "api"}))).await;
    set_pod_status(
        &cluster,
        "api-x",
        json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 0, "image": "registry/app:1", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"registry/app:1\""}}}]}),
    )
    .await;

    let readiness = readiness(&cluster, NS).await.unwrap();
    let states: BTreeMap<&str, &RolloutState> = readiness
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), &w.state))
        .collect();
    assert_eq!(states["web"], &RolloutState::Complete);
    assert_eq!(
        states["off"],
        &RolloutState::Complete,
        "scaled to 0 on purpose"
    );
    assert!(!readiness.complete());
    let api_line = readiness
        .progressing()
        .map(|w| w.to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        api_line,
        [
            "Deployment api: 0 of 1 updated replicas are available (pod api-x: container app: \
          ImagePullBackOff: Back-off pulling image \"registry/app:1\")"
        ]
    );

    // The progress deadline passes: the rollout has failed.
    deployments
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Progressing",
                "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"api-1\" has timed out progressing."}]}})),
        )
        .await
        .unwrap();
    let readiness = orchestrator::workloads::verify::readiness(&cluster, NS)
        .await
        .unwrap();
    let failed: Vec<String> = readiness.failed().map(|w| w.name.clone()).collect();
    assert_eq!(failed, ["api"]);
}
