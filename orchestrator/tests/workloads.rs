//! The workload building blocks (quiesce/unquiesce, PVC users, rollout
//! readiness) against the emulated clusters and their workload
//! controllers (Deployment, ReplicaSet, StatefulSet, Job, CronJob,
//! DaemonSet). Without Docker no kubelet runs pods: the tests write a
//! pod's status as a kubelet would, and the controllers do the rest.

mod emulated;
mod racing;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Resource, ResourceExt};
use orchestrator::clusters::Cluster;
use orchestrator::names::*;
use orchestrator::workloads::quiesce::{quiesce, unquiesce};
use orchestrator::workloads::users::{pods_using, unused};
use orchestrator::workloads::verify::{readiness, RolloutState, WorkloadReadiness};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const NS: &str = "shop";

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

/// What quiesce may change on one object: the stopping field (`null`
/// when unset) and its own annotations (the controllers add theirs).
type Seen = (Value, BTreeMap<String, String>);

/// Every object of the kinds quiesce handles that no other object
/// controls (what the test made, not what the controllers made), by
/// `Kind/name`.
async fn snapshot(cluster: &Cluster) -> BTreeMap<String, Seen> {
    let kinds = [
        (ApiResource::erase::<Deployment>(&()), "/spec/replicas"),
        (ApiResource::erase::<StatefulSet>(&()), "/spec/replicas"),
        (ApiResource::erase::<ReplicaSet>(&()), "/spec/replicas"),
        (
            ApiResource::erase::<DaemonSet>(&()),
            "/spec/template/spec/nodeSelector",
        ),
        (ApiResource::erase::<CronJob>(&()), "/spec/suspend"),
        (ApiResource::erase::<Job>(&()), "/spec/parallelism"),
    ];
    let mut all = BTreeMap::new();
    for (resource, field) in kinds {
        let api = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), NS, &resource);
        for object in api.list(&ListParams::default()).await.unwrap() {
            if object
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true))
            {
                continue;
            }
            let seen = (
                object.data.pointer(field).cloned().unwrap_or(Value::Null),
                object
                    .annotations()
                    .iter()
                    .filter(|(k, _)| k.starts_with("mover.io/"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
            all.insert(format!("{}/{}", resource.kind, object.name_any()), seen);
        }
    }
    all
}

/// What a user's `kubectl scale deployment web --replicas=N` does.
async fn scale_web(client: kube::Client, replicas: i32) {
    Api::<Deployment>::namespaced(client, NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// `Some` once exactly `count` pods use the PVC `data`.
async fn data_users(cluster: &Cluster, count: usize) -> Option<()> {
    let uses = pods_using(cluster, NS, &["data".to_string()])
        .await
        .unwrap();
    (uses.len() == count).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_saves_originals_on_the_objects_and_unquiesce_restores_them_exactly() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    // The Deployment's pods use the PVC `data`.
    let mut web = replicated("Deployment", "web", 3);
    web["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    let web: Deployment = create(cluster, web).await;
    create::<Deployment>(cluster, replicated("Deployment", "idle", 0)).await;
    create::<StatefulSet>(cluster, replicated("StatefulSet", "db", 2)).await;
    create::<ReplicaSet>(cluster, replicated("ReplicaSet", "bare", 1)).await;
    let job_template = template("report", json!({"restartPolicy": "Never"}));
    create::<CronJob>(
        cluster,
        json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 1 * * *",
            "suspend": false, "jobTemplate": {"spec": {"template": job_template}}}}),
    )
    .await;
    create::<Job>(
        cluster,
        json!({"metadata": {"name": "report"}, "spec": {"parallelism": 2,
            "template": job_template}}),
    )
    .await;
    // Parallelism unset: a real API server defaults it to 1 (the emulator
    // may not); whatever the server stored is what comes back.
    create::<Job>(
        cluster,
        json!({"metadata": {"name": "once"}, "spec": {"template": job_template}}),
    )
    .await;
    let mut agent = replicated("DaemonSet", "agent", 0);
    agent["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas")
        .unwrap();
    agent["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create::<DaemonSet>(cluster, agent.clone()).await;
    let mut logs = agent;
    logs["metadata"]["name"] = json!("logs");
    logs["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("nodeSelector");
    create::<DaemonSet>(cluster, logs).await;
    emulated::eventually("the Deployment's 3 pods", || data_users(cluster, 3)).await;
    let original = snapshot(cluster).await;
    let once_saved = original["Job/once"].0.to_string();

    // The emulator on main serves neither ReplicationControllers nor
    // DeploymentConfigs: "not served" is nothing to do.
    let quiesced = quiesce(cluster, NS).await.unwrap();
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
    let stopped = snapshot(cluster).await;
    let saved = |key: &str, value: &str| BTreeMap::from([(key.to_string(), value.to_string())]);
    let parked = json!({"disk": "ssd", QUIESCE_NODE_SELECTOR_KEY: QUIESCE_NODE_SELECTOR_VALUE});
    let expected: BTreeMap<String, Seen> = [
        (
            "CronJob/nightly",
            (json!(true), saved(PRE_QUIESCE_SUSPEND_ANNOTATION, "false")),
        ),
        (
            "DaemonSet/agent",
            (
                parked,
                saved(PRE_QUIESCE_NODE_SELECTOR_ANNOTATION, r#"{"disk":"ssd"}"#),
            ),
        ),
        (
            "DaemonSet/logs",
            (
                json!({QUIESCE_NODE_SELECTOR_KEY: QUIESCE_NODE_SELECTOR_VALUE}),
                saved(PRE_QUIESCE_NODE_SELECTOR_ANNOTATION, "null"),
            ),
        ),
        (
            "Deployment/idle",
            (json!(0), saved(PRE_QUIESCE_REPLICAS_ANNOTATION, "0")),
        ),
        (
            "Deployment/web",
            (json!(0), saved(PRE_QUIESCE_REPLICAS_ANNOTATION, "3")),
        ),
        (
            "Job/once",
            (
                json!(0),
                saved(PRE_QUIESCE_PARALLELISM_ANNOTATION, &once_saved),
            ),
        ),
        (
            "Job/report",
            (json!(0), saved(PRE_QUIESCE_PARALLELISM_ANNOTATION, "2")),
        ),
        (
            "ReplicaSet/bare",
            (json!(0), saved(PRE_QUIESCE_REPLICAS_ANNOTATION, "1")),
        ),
        (
            "StatefulSet/db",
            (json!(0), saved(PRE_QUIESCE_REPLICAS_ANNOTATION, "2")),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(stopped, expected);

    // The Deployment's own ReplicaSet is left to it (never annotated), and
    // the controllers stop the pods: nothing uses the PVC any more.
    emulated::eventually("the Deployment's pods to stop", || data_users(cluster, 0)).await;
    let owned: Vec<ReplicaSet> = api::<ReplicaSet>(cluster)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == web.uid().unwrap())
        })
        .collect();
    assert_eq!(owned.len(), 1);
    assert!(owned[0]
        .annotations()
        .keys()
        .all(|k| !k.starts_with("mover.io/")));

    // A second pass (a resumed run) writes nothing and keeps the originals.
    let again = quiesce(cluster, NS).await.unwrap();
    assert!(again.iter().all(|q| !q.changed), "{again:?}");
    assert_eq!(snapshot(cluster).await, stopped);
    data_users(cluster, 0).await.unwrap();

    // Someone scales the quiesced Deployment up: the next pass stops it
    // again, and the saved 3 is not replaced by 0 or 5.
    scale_web(cluster.client.clone(), 5).await;
    let third = quiesce(cluster, NS).await.unwrap();
    let web_again = third.iter().find(|q| q.name == "web").unwrap();
    assert_eq!((web_again.saved.as_str(), web_again.changed), ("3", true));
    assert_eq!(snapshot(cluster).await, expected);

    // Unquiesce gives back exactly what was there: values, unset fields
    // (the DaemonSet without a nodeSelector gets none, not {}), no
    // annotations.
    let restored = unquiesce(cluster, NS).await.unwrap();
    assert_eq!(restored.len(), 9, "{restored:?}");
    let back = snapshot(cluster).await;
    assert_eq!(back, original);
    emulated::eventually("the Deployment's pods to come back", || {
        data_users(cluster, 3)
    })
    .await;

    // Nothing is annotated any more: a second unquiesce writes nothing.
    assert!(unquiesce(cluster, NS).await.unwrap().is_empty());
    assert_eq!(snapshot(cluster).await, back);
}

/// A user scales the Deployment between quiesce's read and its write:
/// the resourceVersion precondition makes the API server refuse the stale
/// patch, quiesce reads again, and saves what the user set (5), not the
/// value it had read (3), so unquiesce gives the user's change back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_is_not_lost() {
    let emulated = emulated::source_with_namespace(NS).await;
    create::<Deployment>(&emulated.cluster, replicated("Deployment", "web", 3)).await;
    let direct = emulated.cluster.client.clone();
    let client = racing::client(
        emulated._pair.source.client.clone(),
        "/deployments/web",
        move || Box::pin(scale_web(direct, 5)),
    )
    .await;
    let racing = Cluster {
        client,
        ..emulated.cluster.clone()
    };
    let quiesced = quiesce(&racing, NS).await.unwrap();
    let web = quiesced.iter().find(|q| q.name == "web").unwrap();
    assert_eq!(web.saved, "5");
    let deployment = api::<Deployment>(&emulated.cluster)
        .get("web")
        .await
        .unwrap();
    assert_eq!(deployment.spec.replicas, Some(0));
    assert_eq!(
        deployment.annotations()[PRE_QUIESCE_REPLICAS_ANNOTATION],
        "5"
    );
    unquiesce(&racing, NS).await.unwrap();
    let deployment = api::<Deployment>(&emulated.cluster)
        .get("web")
        .await
        .unwrap();
    assert_eq!(deployment.spec.replicas, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unquiesce_names_an_annotation_it_cannot_read() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let mut broken = replicated("Deployment", "web", 0);
    broken["metadata"]["annotations"] = json!({PRE_QUIESCE_REPLICAS_ANNOTATION: "three"});
    create::<Deployment>(cluster, broken).await;
    let error = format!("{:#}", unquiesce(cluster, NS).await.unwrap_err());
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
    emulated::set_status(&api::<Pod>(cluster), name, status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_using_lists_the_unfinished_pods_that_mount_the_claims() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    for (name, claims) in [
        ("web-1", &["data"][..]),
        ("batch-done", &["data"][..]),
        ("leaving", &["data", "logs"][..]),
        ("other", &["unrelated"][..]),
    ] {
        create::<Pod>(cluster, pod(name, claims, json!({"app": name}))).await;
    }
    create::<Pod>(
        cluster,
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
    create::<Pod>(cluster, scratch).await;
    set_pod_status(cluster, "web-1", json!({"phase": "Running"})).await;
    set_pod_status(cluster, "batch-done", json!({"phase": "Succeeded"})).await;
    // A pod being deleted (held by a finalizer, as during a grace period)
    // still counts.
    let pods = api::<Pod>(cluster);
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
    let uses = pods_using(cluster, NS, &pvcs).await.unwrap();
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
    assert!(pods_using(cluster, NS, &pvcs).await.unwrap().is_empty());
}

/// The pods labelled `app=<app>`, once there are `count` of them.
async fn app_pods(cluster: &Cluster, app: &str, count: usize) -> Vec<Pod> {
    emulated::eventually(&format!("{count} pods of {app}"), || async {
        let pods = api::<Pod>(cluster)
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items;
        (pods.len() == count).then_some(pods)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_judges_rollouts_and_names_the_pods_reasons() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    // web's pods start; api's image cannot be pulled; off is at 0 on
    // purpose; stuck's pod never starts and its deadline is 1 second.
    for (name, replicas) in [("web", 2), ("api", 1), ("off", 0)] {
        create::<Deployment>(cluster, replicated("Deployment", name, replicas)).await;
    }
    let mut stuck = replicated("Deployment", "stuck", 1);
    stuck["spec"]["progressDeadlineSeconds"] = json!(1);
    create::<Deployment>(cluster, stuck).await;
    for pod in app_pods(cluster, "web", 2).await {
        emulated::kubelet_status(cluster, &pod, "Running", json!({"running": {}}), true).await;
    }
    let api_pod = app_pods(cluster, "api", 1).await.remove(0);
    emulated::kubelet_status(
        cluster,
        &api_pod,
        "Pending",
        json!({"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"registry/app:1\""}}),
        false,
    )
    .await;
    let stuck_pod = app_pods(cluster, "stuck", 1).await.remove(0);

    // What the Deployment controller reports, judged as kubectl would.
    let readiness = emulated::eventually("web ready and stuck failed", || async {
        let readiness = readiness(cluster, NS).await.unwrap();
        let web = readiness.workloads.iter().find(|w| w.name == "web")?;
        (web.state == RolloutState::Complete && readiness.failed().count() == 1)
            .then_some(readiness)
    })
    .await;
    let states: BTreeMap<&str, &RolloutState> = readiness
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), &w.state))
        .collect();
    assert_eq!(
        states["off"],
        &RolloutState::Complete,
        "scaled to 0 on purpose"
    );
    assert!(!readiness.complete());
    let lines = |workloads: Vec<&WorkloadReadiness>| -> Vec<String> {
        workloads.iter().map(|w| w.to_string()).collect()
    };
    assert_eq!(
        lines(readiness.progressing().collect()),
        [format!(
            "Deployment api: 0 of 1 updated replicas are available (pod {}: container app: \
             ImagePullBackOff: Back-off pulling image \"registry/app:1\")",
            api_pod.name_any()
        )]
    );
    assert_eq!(
        lines(readiness.failed().collect()),
        [format!(
            "Deployment stuck: exceeded its progress deadline (pod {}: Pending, not ready)",
            stuck_pod.name_any()
        )]
    );
}
