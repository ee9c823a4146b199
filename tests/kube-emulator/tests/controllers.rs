//! The workload controllers against real pods: Deployments (rollouts,
//! scaling, Recreate, garbage collection, and a real kubectl's `rollout
//! status`, `scale` and `rollout restart`), StatefulSets, Jobs, CronJobs,
//! DaemonSets, ReplicationControllers and DeploymentConfigs, and image
//! pulls from a loopback registry.
//!
//! Each test function runs one controller family on its own cluster (own
//! Docker network, own state): every `#[tokio::test]` has its own runtime,
//! which a cluster's tasks cannot outlive, and a cluster starts in well
//! under a second, so sharing one would save little and couple the tests.

mod controller_support;

use std::sync::Arc;

use controller_support::{eventually, from_json};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ContainerStateWaiting, Node, PersistentVolumeClaim, Pod, ReplicationController,
};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt as _};
use kube_emulator::cluster::instance_id;
use kube_emulator::testing::busybox_image;
use kube_emulator::{Cluster, ClusterOptions, Shared};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// The namespaced kinds the tests create and read.
trait Namespaced: kube::Resource<Scope = NamespaceResourceScope, DynamicType: Default> + Data {}

/// What reading and writing objects needs of them.
trait Data: Clone + std::fmt::Debug + DeserializeOwned + Serialize {}

impl<T: Clone + std::fmt::Debug + DeserializeOwned + Serialize> Data for T {}
impl<T: kube::Resource<Scope = NamespaceResourceScope, DynamicType: Default> + Data> Namespaced
    for T
{
}

/// One emulated cluster with Docker and its state directory.
struct TestCluster {
    cluster: Cluster,
    state: tempfile::TempDir,
}

impl TestCluster {
    async fn start(name: &str) -> Self {
        busybox_image().await.expect("the busybox test image");
        let state = tempfile::tempdir().expect("a state directory");
        let shared = Arc::new(Shared {
            instance: instance_id(),
            velero_bucket: state.path().join("velero-bucket"),
            ..Shared::default()
        });
        let options = ClusterOptions::new(name, true);
        let cluster = Cluster::start(&options, state.path(), shared)
            .await
            .expect("starting the emulated cluster");
        Self { cluster, state }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Namespaced,
    {
        Api::namespaced(self.cluster.client.clone(), "default")
    }

    async fn create<K>(&self, object: Value) -> K
    where
        K: Namespaced,
    {
        let object: K = from_json(object);
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .expect("creating a test object")
    }

    async fn patch<K>(&self, name: &str, patch: Value) -> K
    where
        K: Namespaced,
    {
        self.api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching a test object")
    }

    /// Changes the pod template of workload `name` (an annotation `rev`),
    /// which makes a new rollout.
    async fn change_template<K>(&self, name: &str, rev: &str)
    where
        K: Namespaced,
    {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"rev": rev}}}}});
        self.patch::<K>(name, patch).await;
    }

    /// Polls `K` object `name` until `check` passes, failing with what was
    /// last seen.
    async fn until<K>(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
    where
        K: Namespaced,
    {
        let api = self.api::<K>();
        eventually(what, || async {
            match api.get_opt(name).await {
                Ok(Some(object)) if check(&object) => Ok(object),
                Ok(object) => Err(serde_json::to_string(&object).unwrap_or_default()),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Polls the pods of `selector` until `check` passes on them.
    async fn pods_until(
        &self,
        selector: &str,
        what: &str,
        check: impl Fn(&[Pod]) -> bool,
    ) -> Vec<Pod> {
        let api = self.api::<Pod>();
        eventually(what, || async {
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|error| error.to_string())?
                .items;
            if check(&pods) {
                Ok(pods)
            } else {
                Err(summary(&pods))
            }
        })
        .await
    }

    /// A kubeconfig for this cluster, written in its state directory.
    fn kubeconfig(&self) -> std::path::PathBuf {
        let path = self.state.path().join("kubeconfig");
        let config = self.cluster.kubeconfig();
        std::fs::write(&path, config).expect("writing the kubeconfig");
        path
    }
}

/// `name phase ready` of each pod, for failure messages.
fn summary(pods: &[Pod]) -> String {
    pods.iter()
        .map(|pod| {
            format!(
                "{} {} ready={} deleting={}",
                pod.name_any(),
                phase(pod),
                ready(pod),
                pod.metadata.deletion_timestamp.is_some()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// Live pods (not being deleted).
fn live(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

fn running_ready(pods: &[Pod]) -> usize {
    live(pods)
        .into_iter()
        .filter(|pod| phase(pod) == "Running" && ready(pod))
        .count()
}

/// A pod template running the busybox image with `command`.
async fn template(labels: Value, command: &str) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": busybox_image().await.expect("the busybox test image"),
                "command": ["sh", "-c", command],
            }],
        },
    })
}

fn deployment_complete(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let replicas = d.spec.replicas.unwrap_or(1);
    let progressing = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("NewReplicaSetAvailable")
    });
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && progressing
}

async fn replica_sets(cluster: &TestCluster, selector: &str) -> Vec<ReplicaSet> {
    cluster
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing ReplicaSets")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_scale_and_recreate() {
    let cluster = TestCluster::start("deployments").await;
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(json!({"app": "web"}), "sleep 3600").await,
            },
        }))
        .await;
    let done = cluster
        .until::<Deployment>("web", "the first rollout completes", deployment_complete)
        .await;
    let available = done
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .cloned()
        .unwrap();
    assert_eq!(available.status.as_deref(), Some("True"));
    assert_eq!(
        done.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision"], "1");
    let pods = cluster
        .pods_until("app=web", "two running pods", |pods| {
            running_ready(pods) == 2
        })
        .await;
    for pod in &pods {
        assert!(
            pod.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            pod.name_any()
        );
        assert_eq!(pod.labels()["pod-template-hash"], hash);
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ReplicaSet", rs.name_any().as_str(), Some(true))
        );
    }

    // Scale to 0 (as a quiesce does) and back.
    cluster
        .patch::<Deployment>("web", json!({"spec": {"replicas": 0}}))
        .await;
    cluster
        .pods_until("app=web", "no pods", |pods| live(pods).is_empty())
        .await;
    cluster
        .until::<Deployment>("web", "scaled to 0", |d| {
            deployment_complete(d) && d.status.as_ref().unwrap().replicas == Some(0)
        })
        .await;
    cluster
        .patch::<Deployment>("web", json!({"spec": {"replicas": 2}}))
        .await;
    cluster
        .until::<Deployment>("web", "scaled back to 2", deployment_complete)
        .await;
    assert_eq!(
        replica_sets(&cluster, "app=web").await.len(),
        1,
        "scaling makes no new ReplicaSet"
    );

    // A new template: a new ReplicaSet, the old one scaled to 0 and kept.
    cluster.change_template::<Deployment>("web", "2").await;
    cluster
        .until::<Deployment>("web", "the second rollout completes", |d| {
            deployment_complete(d)
                && d.annotations()
                    .get("deployment.kubernetes.io/revision")
                    .map(String::as_str)
                    == Some("2")
        })
        .await;
    let sets = replica_sets(&cluster, "app=web").await;
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|s| s.labels()["pod-template-hash"] == hash)
        .unwrap();
    let new = sets
        .iter()
        .find(|s| s.labels()["pod-template-hash"] != hash)
        .unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    assert_eq!(new.spec.replicas, Some(2));
    assert_eq!(new.annotations()["deployment.kubernetes.io/revision"], "2");
    let pods = cluster
        .pods_until("app=web", "only new pods", |pods| {
            live(pods).len() == 2
                && live(pods)
                    .iter()
                    .all(|p| p.labels()["pod-template-hash"] != hash)
        })
        .await;
    assert_eq!(running_ready(&pods), 2);

    // Recreate: every old pod is gone before a new one is made.
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "batch"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "batch"}},
                "template": template(json!({"app": "batch"}), "sleep 3600").await,
            },
        }))
        .await;
    cluster
        .until::<Deployment>(
            "batch",
            "the Recreate deployment is up",
            deployment_complete,
        )
        .await;
    let first: Vec<String> = cluster
        .pods_until("app=batch", "two pods", |p| live(p).len() == 2)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    cluster.change_template::<Deployment>("batch", "2").await;
    // Watch every pod list until the new rollout is done: old and new
    // pods never live together.
    let api = cluster.api::<Pod>();
    eventually("the Recreate rollout completes without overlap", || async {
        let pods = api
            .list(&ListParams::default().labels("app=batch"))
            .await
            .map_err(|e| e.to_string())?
            .items;
        let names: Vec<String> = live(&pods).iter().map(|p| p.name_any()).collect();
        let old = names.iter().filter(|n| first.contains(n)).count();
        let new = names.len() - old;
        assert!(
            old == 0 || new == 0,
            "old and new pods together: {}",
            summary(&pods)
        );
        let d: Deployment = cluster
            .api()
            .get("batch")
            .await
            .map_err(|e| e.to_string())?;
        if new == 2 && deployment_complete(&d) {
            Ok(())
        } else {
            Err(summary(&pods))
        }
    })
    .await;

    // Deleting a Deployment removes its ReplicaSets and pods; with
    // propagationPolicy=Orphan they stay.
    cluster
        .api::<Deployment>()
        .delete("batch", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .pods_until(
            "app=batch",
            "the pods of the deleted deployment are gone",
            |p| p.is_empty(),
        )
        .await;
    assert!(replica_sets(&cluster, "app=batch").await.is_empty());
    cluster
        .api::<Deployment>()
        .delete("web", &DeleteParams::orphan())
        .await
        .unwrap();
    let deployments = cluster.api::<Deployment>();
    eventually("the orphaning delete completes", || async {
        match deployments.get_opt("web").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        replica_sets(&cluster, "app=web").await.len(),
        2,
        "orphaned ReplicaSets stay"
    );
    let pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        live(&pods).len(),
        2,
        "orphaned pods stay: {}",
        summary(&pods)
    );
}

fn sts_status(sts: &StatefulSet) -> k8s_openapi::api::apps::v1::StatefulSetStatus {
    sts.status.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_start_in_order_with_claims_and_scale_down_from_the_top() {
    let cluster = TestCluster::start("statefulsets").await;
    let mut pod_template = template(json!({"app": "db"}), "sleep 3600").await;
    pod_template["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    cluster
        .create::<StatefulSet>(json!({
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": pod_template,
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }],
            },
        }))
        .await;
    // OrderedReady: at every moment, the pods that exist are a prefix of
    // the ordinals, and each pod past the first appeared only once the
    // previous one was Running and Ready.
    let api = cluster.api::<Pod>();
    eventually("three ordered pods running", || async {
        let pods = api
            .list(&ListParams::default().labels("app=db"))
            .await
            .map_err(|e| e.to_string())?
            .items;
        let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        names.sort();
        let expected: Vec<String> = (0..names.len()).map(|i| format!("db-{i}")).collect();
        assert_eq!(names, expected, "pods are not a prefix of the ordinals");
        for pod in &pods {
            let ordinal: usize = pod.name_any()[3..].parse().unwrap();
            if ordinal > 0 {
                let previous = pods
                    .iter()
                    .find(|p| p.name_any() == format!("db-{}", ordinal - 1))
                    .unwrap();
                let created = pod.metadata.creation_timestamp.clone().unwrap().0;
                let ready_at = previous
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
                    .and_then(|c| c.last_transition_time.clone())
                    .map(|t| t.0);
                assert!(
                    ready_at.is_some_and(|ready| ready <= created),
                    "{} made before {} was ready",
                    pod.name_any(),
                    previous.name_any()
                );
            }
        }
        if running_ready(&pods) == 3 {
            Ok(pods)
        } else {
            Err(summary(&pods))
        }
    })
    .await;
    let done = cluster
        .until::<StatefulSet>("db", "status says 3 ready at one revision", |s| {
            let status = sts_status(s);
            status.ready_replicas == Some(3)
                && status.updated_replicas == Some(3)
                && status.current_revision == status.update_revision
                && status.observed_generation == s.metadata.generation
        })
        .await;
    assert!(sts_status(&done)
        .update_revision
        .unwrap()
        .starts_with("db-"));
    for ordinal in 0..3 {
        let pod: Pod = cluster.api().get(&format!("db-{ordinal}")).await.unwrap();
        assert_eq!(
            pod.labels()["statefulset.kubernetes.io/pod-name"],
            format!("db-{ordinal}")
        );
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("db-{ordinal}").as_str())
        );
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let claim = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            claim.persistent_volume_claim.unwrap().claim_name,
            format!("data-db-{ordinal}")
        );
        cluster
            .until::<PersistentVolumeClaim>(
                &format!("data-db-{ordinal}"),
                "the claim is bound",
                |c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            )
            .await;
    }

    // Scale down: the highest ordinal goes first; the claims stay.
    cluster
        .patch::<StatefulSet>("db", json!({"spec": {"replicas": 1}}))
        .await;
    eventually("db-2 goes before db-1", || async {
        let pods = api
            .list(&ListParams::default().labels("app=db"))
            .await
            .map_err(|e| e.to_string())?
            .items;
        let alive = |name: &str| {
            pods.iter()
                .any(|p| p.name_any() == name && p.metadata.deletion_timestamp.is_none())
        };
        assert!(
            !alive("db-2") || alive("db-1"),
            "db-1 went first: {}",
            summary(&pods)
        );
        if pods.len() == 1 && alive("db-0") {
            Ok(())
        } else {
            Err(summary(&pods))
        }
    })
    .await;
    cluster
        .until::<StatefulSet>("db", "status says 1 replica", |s| {
            sts_status(s).replicas == 1 && sts_status(s).ready_replicas == Some(1)
        })
        .await;
    let claims = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        ["data-db-0", "data-db-1", "data-db-2"],
        "claims are kept on scale-down"
    );
}

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_and_stop_with_parallelism_zero() {
    let cluster = TestCluster::start("jobs").await;
    let mut work = template(json!({}), "echo done").await;
    work["spec"]["restartPolicy"] = json!("Never");
    cluster
        .create::<Job>(json!({"metadata": {"name": "work"}, "spec": {"completions": 2, "parallelism": 2, "template": work}}))
        .await;
    let done = cluster
        .until::<Job>("work", "the Job completes", |j| {
            job_condition(j, "Complete")
        })
        .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(status.active, Some(0));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(job_condition(&done, "SuccessCriteriaMet"));
    let uid = done.uid().unwrap();
    let pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2, "{}", summary(&pods));
    for pod in &pods {
        assert_eq!(pod.labels()["job-name"], "work");
        assert_eq!(pod.labels()["controller-uid"], uid);
        assert!(pod.name_any().starts_with("work-"));
    }

    let mut failing = template(json!({}), "exit 3").await;
    failing["spec"]["restartPolicy"] = json!("Never");
    cluster
        .create::<Job>(json!({"metadata": {"name": "broken"}, "spec": {"backoffLimit": 0, "template": failing}}))
        .await;
    let failed = cluster
        .until::<Job>("broken", "the Job fails", |j| job_condition(j, "Failed"))
        .await;
    assert!(job_condition(&failed, "FailureTarget"));
    let reason = failed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(1));

    // parallelism 0, as a quiesce sets it, deletes the running pods.
    let mut long = template(json!({}), "sleep 3600").await;
    long["spec"]["restartPolicy"] = json!("Never");
    cluster
        .create::<Job>(json!({"metadata": {"name": "long"}, "spec": {"parallelism": 2, "completions": 4, "template": long}}))
        .await;
    cluster
        .pods_until("job-name=long", "two running pods", |p| {
            running_ready(p) == 2
        })
        .await;
    cluster
        .patch::<Job>("long", json!({"spec": {"parallelism": 0}}))
        .await;
    cluster
        .pods_until("job-name=long", "no pods", |p| live(p).is_empty())
        .await;
    let stopped = cluster
        .until::<Job>("long", "no active pods", |j| {
            j.status.as_ref().and_then(|s| s.active) == Some(0)
        })
        .await;
    assert!(!job_condition(&stopped, "Failed") && !job_condition(&stopped, "Complete"));
    cluster
        .patch::<Job>("long", json!({"spec": {"parallelism": 1}}))
        .await;
    cluster
        .pods_until("job-name=long", "one pod again", |p| running_ready(p) == 1)
        .await;
}

/// The CronJob test's schedule: the first of each month.
const SCHEDULE: &str = "0 0 1 * *";

/// Advances the pair's clock to one second past the schedule's next run,
/// and returns that run's time.
fn advance_past_next_run(clock: &kube_emulator::context::Clock) -> k8s_openapi::jiff::Timestamp {
    let schedule: kube_emulator::controllers::Schedule = SCHEDULE.parse().unwrap();
    let now = clock.now();
    let next = schedule.next_after(now).unwrap();
    let wait = u64::try_from(next.as_second() - now.as_second()).unwrap() + 1;
    clock.advance(std::time::Duration::from_secs(wait));
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_create_jobs_on_schedule_and_stop_when_suspended() {
    let cluster = TestCluster::start("cronjobs").await;
    let mut work = template(json!({}), "echo tick").await;
    work["spec"]["restartPolicy"] = json!("OnFailure");
    cluster
        .create::<CronJob>(json!({
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": SCHEDULE,
                "successfulJobsHistoryLimit": 1,
                "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"template": work}},
            },
        }))
        .await;
    let clock = &cluster.cluster.context.shared.clock;
    let jobs = cluster.api::<Job>();
    let owned = || async {
        jobs.list(&ListParams::default().labels("app=tick"))
            .await
            .map(|l| l.items)
            .map_err(|e| e.to_string())
    };
    // Just past the next run (monthly, so that real time never reaches
    // one during the test), exactly one run is due.
    let due = advance_past_next_run(clock);
    let first = eventually("the first Job", || async {
        let jobs = owned().await?;
        if jobs.len() == 1 {
            Ok(jobs[0].clone())
        } else {
            Err(format!("{} jobs", jobs.len()))
        }
    })
    .await;
    let minutes = due.as_second() / 60;
    assert_eq!(
        first.name_any(),
        format!("tick-{minutes}"),
        "named for its scheduled minute"
    );
    cluster
        .until::<Job>(&first.name_any(), "the first Job completes", |j| {
            job_condition(j, "Complete")
        })
        .await;
    let cj = cluster
        .until::<CronJob>("tick", "lastScheduleTime set", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.last_schedule_time.is_some() && s.active.as_ref().is_none_or(Vec::is_empty)
            })
        })
        .await;
    assert_eq!(
        cj.status.unwrap().last_schedule_time.unwrap().0.as_second(),
        minutes * 60
    );

    // The next run; the first Job goes (history limit 1).
    advance_past_next_run(clock);
    eventually("a second Job replaces the first in the history", || async {
        let jobs = owned().await?;
        let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        if names.len() == 1 && names[0] != first.name_any() && job_condition(&jobs[0], "Complete") {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;

    // Suspended: no run however late it gets.
    cluster
        .patch::<CronJob>("tick", json!({"spec": {"suspend": true}}))
        .await;
    let before = owned().await.unwrap();
    let suspended_at = cluster
        .until::<CronJob>("tick", "suspended seen", |c| c.spec.suspend == Some(true))
        .await;
    advance_past_next_run(clock);
    // A negative can only be watched for a while: three of the
    // controller's one-second rounds make no Job (and resuming below shows
    // that a run was indeed due).
    let resumed_probe = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        loop {
            let jobs = owned().await.unwrap();
            let new: Vec<String> = jobs
                .iter()
                .map(|j| j.name_any())
                .filter(|name| !before.iter().any(|b| b.name_any() == *name))
                .collect();
            if !new.is_empty() {
                return new;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        resumed_probe.is_err(),
        "a suspended CronJob made a Job: {:?}",
        resumed_probe
    );
    let after: CronJob = cluster.api().get("tick").await.unwrap();
    assert_eq!(
        after.status.unwrap().last_schedule_time,
        suspended_at.status.clone().unwrap().last_schedule_time
    );
    cluster
        .patch::<CronJob>("tick", json!({"spec": {"suspend": false}}))
        .await;
    cluster
        .until::<CronJob>("tick", "the missed run made once resumed", |c| {
            c.status.as_ref().and_then(|s| s.last_schedule_time.clone())
                != suspended_at
                    .status
                    .as_ref()
                    .and_then(|s| s.last_schedule_time.clone())
        })
        .await;

    // A bad schedule is an Event, not a crash.
    cluster
        .create::<CronJob>(json!({"metadata": {"name": "bad"}, "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": template(json!({}), "true").await}}}}))
        .await;
    let events = cluster.api::<k8s_openapi::api::core::v1::Event>();
    eventually("an UnparseableSchedule event", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        list.iter()
            .find(|e| {
                e.reason.as_deref() == Some("UnparseableSchedule")
                    && e.involved_object.name.as_deref() == Some("bad")
            })
            .map(drop)
            .ok_or_else(|| format!("{} events", list.len()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_follow_the_node_selector() {
    let cluster = TestCluster::start("daemons").await;
    cluster
        .create::<DaemonSet>(json!({
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": template(json!({"app": "agent"}), "sleep 3600").await,
            },
        }))
        .await;
    let node_api = Api::<Node>::all(cluster.cluster.client.clone());
    let nodes = eventually("the kubelet registers two nodes", || async {
        let nodes = node_api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        if nodes.len() == 2 {
            Ok(nodes)
        } else {
            Err(format!("{} nodes", nodes.len()))
        }
    })
    .await;
    let pods = cluster
        .pods_until("app=agent", "a pod on each node", |p| running_ready(p) == 2)
        .await;
    let mut bound: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    bound.sort();
    let mut names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    names.sort();
    assert_eq!(bound, names);
    cluster
        .until::<DaemonSet>("agent", "status: 2 of 2", |d| {
            d.status.as_ref().is_some_and(|s| {
                s.desired_number_scheduled == 2
                    && s.number_ready == 2
                    && s.number_available == Some(2)
                    && s.updated_number_scheduled == Some(2)
                    && s.current_number_scheduled == 2
            })
        })
        .await;

    // One node.
    let first = names[0].clone();
    cluster.patch::<DaemonSet>("agent", json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": first}}}}})).await;
    cluster
        .pods_until("app=agent", "only the first node", |p| {
            live(p).len() == 1
                && live(p)[0]
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    == Some(first.as_str())
                && running_ready(p) == 1
        })
        .await;
    // Parked: a selector no node has.
    cluster.patch::<DaemonSet>("agent", json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": null, "migration.example/parked": "true"}}}}})).await;
    cluster
        .pods_until("app=agent", "no pods", |p| live(p).is_empty())
        .await;
    cluster
        .until::<DaemonSet>("agent", "status: none desired", |d| {
            d.status
                .as_ref()
                .is_some_and(|s| s.desired_number_scheduled == 0 && s.current_number_scheduled == 0)
                && d.status.as_ref().unwrap().observed_generation == d.metadata.generation
        })
        .await;
    // A node that gets the label gets a pod again.
    node_api
        .patch(
            &names[1],
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"migration.example/parked": "true"}}})),
        )
        .await
        .unwrap();
    let pods = cluster
        .pods_until("app=agent", "a pod on the labelled node", |p| {
            running_ready(p) == 1
        })
        .await;
    assert_eq!(
        live(&pods)[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some(names[1].as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploymentconfigs_make_replication_controllers() {
    let cluster = TestCluster::start("openshift").await;
    // A plain ReplicationController with its equality selector, and /scale.
    cluster
        .create::<ReplicationController>(json!({
            "metadata": {"name": "legacy"},
            "spec": {"replicas": 2, "selector": {"app": "legacy"}, "template": template(json!({"app": "legacy"}), "sleep 3600").await},
        }))
        .await;
    cluster
        .pods_until("app=legacy", "two pods", |p| running_ready(p) == 2)
        .await;
    cluster
        .until::<ReplicationController>("legacy", "status 2 ready", |rc| {
            rc.status.as_ref().is_some_and(|s| {
                s.replicas == 2 && s.ready_replicas == Some(2) && s.available_replicas == Some(2)
            })
        })
        .await;
    cluster
        .api::<ReplicationController>()
        .patch_scale(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    cluster
        .pods_until("app=legacy", "one pod", |p| live(p).len() == 1)
        .await;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.openshift.io", "v1", "DeploymentConfig"),
        "deploymentconfigs",
    );
    let dcs: Api<DynamicObject> =
        Api::namespaced_with(cluster.cluster.client.clone(), "default", &resource);
    let dc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig",
        "metadata": {"name": "app"},
        "spec": {"replicas": 2, "selector": {"app": "app"}, "template": template(json!({"app": "app"}), "sleep 3600").await},
    })).unwrap();
    dcs.create(&PostParams::default(), &dc).await.unwrap();
    let rcs = cluster.api::<ReplicationController>();
    let complete = |rc: &ReplicationController| {
        rc.annotations()
            .get("openshift.io/deployment.phase")
            .map(String::as_str)
            == Some("Complete")
    };
    let first = cluster
        .until::<ReplicationController>("app-1", "app-1 complete", complete)
        .await;
    assert_eq!(
        first.annotations()["openshift.io/deployment-config.name"],
        "app"
    );
    assert_eq!(
        first.annotations()["openshift.io/deployment-config.latest-version"],
        "1"
    );
    assert_eq!(
        first.spec.as_ref().unwrap().selector.as_ref().unwrap()["deployment"],
        "app-1"
    );
    let pods = cluster
        .pods_until("deploymentconfig=app", "two pods of app-1", |p| {
            running_ready(p) == 2
        })
        .await;
    assert!(pods.iter().all(|p| p.labels()["deployment"] == "app-1"));
    let status = |dc: &DynamicObject| dc.data["status"].clone();
    eventually("the DC reports version 1 available", || async {
        let dc = dcs.get("app").await.map_err(|e| e.to_string())?;
        let s = status(&dc);
        if s["latestVersion"] == 1 && s["availableReplicas"] == 2 && s["updatedReplicas"] == 2 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;

    // A template change makes version 2; version 1 is scaled to 0.
    dcs.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}})),
    )
    .await
    .unwrap();
    cluster
        .until::<ReplicationController>("app-2", "app-2 complete", complete)
        .await;
    cluster
        .until::<ReplicationController>("app-1", "app-1 scaled to 0", |rc| {
            rc.spec.as_ref().unwrap().replicas == Some(0)
        })
        .await;
    cluster
        .pods_until("deploymentconfig=app", "only app-2 pods", |p| {
            live(p).len() == 2 && live(p).iter().all(|p| p.labels()["deployment"] == "app-2")
        })
        .await;

    // Scaling the DC (through /scale, as a quiesce does) scales its RC.
    let scale_dc = |replicas: i32| {
        let dcs = dcs.clone();
        async move {
            let patch = json!({"spec": {"replicas": replicas}});
            dcs.patch_scale("app", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("scaling the DeploymentConfig");
        }
    };
    scale_dc(0).await;
    cluster
        .pods_until("deploymentconfig=app", "no pods", |p| live(p).is_empty())
        .await;
    assert_eq!(
        rcs.get("app-2").await.unwrap().spec.unwrap().replicas,
        Some(0)
    );
    scale_dc(1).await;
    cluster
        .pods_until("deploymentconfig=app", "one pod", |p| running_ready(p) == 1)
        .await;
    let dc = dcs.get("app").await.unwrap();
    assert_eq!(
        status(&dc)["latestVersion"],
        2,
        "scaling makes no new version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_from_a_mapped_loopback_registry() {
    let cluster = TestCluster::start("pulls").await;
    let registry = kube_emulator::testing::LoopbackRegistry::start().expect("a loopback registry");
    let busybox = busybox_image().await.unwrap();
    let digest = registry
        .push(busybox, "shop/app", "v1")
        .await
        .expect("pushing the image");
    let internal = "image-registry.openshift-image-registry.svc:5000";
    cluster
        .cluster
        .context
        .set_registry_mirror(internal, &registry.address);
    let pod_with = |name: &str, image: String| {
        json!({
            "metadata": {"name": name, "labels": {"test": "pull"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]},
        })
    };
    // By digest through the mapping, and by tag straight from loopback.
    let by_digest = format!("{internal}/shop/app@{digest}");
    cluster
        .create::<Pod>(pod_with("by-digest", by_digest.clone()))
        .await;
    let by_tag = format!("{}/shop/app:v1", registry.address);
    cluster
        .create::<Pod>(pod_with("by-tag", by_tag.clone()))
        .await;
    for (name, image) in [("by-digest", &by_digest), ("by-tag", &by_tag)] {
        let pod = cluster
            .until::<Pod>(name, "running", |p| phase(p) == "Running" && ready(p))
            .await;
        let status = &pod.status.unwrap().container_statuses.unwrap()[0];
        assert_eq!(&status.image, image, "the status names the pod's image");
    }
    // A tag the registry does not have.
    cluster
        .create::<Pod>(pod_with("missing", format!("{internal}/shop/app:nope")))
        .await;
    let waiting = pull_error(&cluster, "missing").await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("Failed to pull image") && message.contains("shop/app:nope"),
        "{message}"
    );
    // An unmapped registry is never pulled from.
    cluster
        .create::<Pod>(pod_with(
            "elsewhere",
            "registry.example.com/shop/app:v1".to_string(),
        ))
        .await;
    let waiting = pull_error(&cluster, "elsewhere").await;
    assert!(waiting.message.unwrap_or_default().contains("never pulls"));
}

/// Waits until pod `name`'s container waits on an image pull error, and
/// returns that waiting state.
async fn pull_error(cluster: &TestCluster, name: &str) -> ContainerStateWaiting {
    let waiting = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|s| s[0].state.as_ref()?.waiting.clone())
    };
    let pod = cluster
        .until::<Pod>(name, "a pull error", |p| {
            waiting(p).is_some_and(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                )
            })
        })
        .await;
    waiting(&pod).unwrap()
}

/// Runs kubectl against the cluster; returns (exit code, stdout+stderr).
async fn kubectl(cluster: &TestCluster, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .output()
        .await
        .expect("running kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_scale_and_restart() {
    let cluster = TestCluster::start("kubectl").await;
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "x"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}), "sleep 3600").await},
        }))
        .await;
    let (code, out) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/x", "--timeout=90s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("deployment \"x\" successfully rolled out"),
        "{out}"
    );

    let (code, out) = kubectl(&cluster, &["scale", "deployment/x", "--replicas=3"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deployment.apps/x scaled"), "{out}");
    let (code, out) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/x", "--timeout=90s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    cluster
        .pods_until("app=x", "three pods", |p| running_ready(p) == 3)
        .await;

    let before = replica_sets(&cluster, "app=x").await;
    let (code, out) = kubectl(&cluster, &["rollout", "restart", "deployment/x"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deployment.apps/x restarted"), "{out}");
    let (code, out) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/x", "--timeout=90s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("successfully rolled out"), "{out}");
    let after = replica_sets(&cluster, "app=x").await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "the restart made a new ReplicaSet"
    );
    let d: Deployment = cluster.api().get("x").await.unwrap();
    assert!(d
        .spec
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()
        .contains_key("kubectl.kubernetes.io/restartedAt"));
    let pods = cluster
        .pods_until("app=x", "three new pods", |p| {
            live(p).len() == 3 && running_ready(p) == 3
        })
        .await;
    let new_hash = after
        .iter()
        .find(|rs| rs.spec.replicas == Some(3))
        .unwrap()
        .labels()["pod-template-hash"]
        .clone();
    assert!(live(&pods)
        .iter()
        .all(|p| p.labels()["pod-template-hash"] == new_hash));

    // Paused: a template change waits for the resume.
    let (code, out) = kubectl(&cluster, &["rollout", "pause", "deployment/x"]).await;
    assert_eq!(code, 0, "{out}");
    cluster.change_template::<Deployment>("x", "paused").await;
    cluster
        .until::<Deployment>("x", "the paused change is seen", |d| {
            let status = d.status.clone().unwrap_or_default();
            status.observed_generation == d.metadata.generation
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.reason.as_deref() == Some("DeploymentPaused"))
        })
        .await;
    assert_eq!(
        replica_sets(&cluster, "app=x").await.len(),
        after.len(),
        "no rollout while paused"
    );
    let (code, out) = kubectl(&cluster, &["rollout", "resume", "deployment/x"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = kubectl(
        &cluster,
        &["rollout", "status", "deployment/x", "--timeout=90s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(replica_sets(&cluster, "app=x").await.len(), after.len() + 1);

    // `rollout status` of the other kinds it knows.
    cluster
        .create::<StatefulSet>(json!({
            "metadata": {"name": "s"},
            "spec": {"replicas": 2, "serviceName": "s", "selector": {"matchLabels": {"app": "s"}},
                     "template": template(json!({"app": "s"}), "sleep 3600").await},
        }))
        .await;
    cluster
        .create::<DaemonSet>(json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": template(json!({"app": "d"}), "sleep 3600").await},
        }))
        .await;
    for (what, done) in [
        (
            "statefulset/s",
            "partitioned roll out complete: 2 new pods have been updated",
        ),
        ("daemonset/d", "daemon set \"d\" successfully rolled out"),
    ] {
        let (code, out) = kubectl(&cluster, &["rollout", "status", what, "--timeout=90s"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(done) || out.contains("rolling update complete"),
            "{out}"
        );
    }

    // kubectl scale to 0 and `get` of the kinds added with the controllers.
    let (code, out) = kubectl(&cluster, &["scale", "deployment/x", "--replicas=0"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = kubectl(&cluster, &["get", "rc,dc,deploy,rs,sts,ds,jobs,cronjobs"]).await;
    assert_eq!(code, 0, "{out}");
}

/// Runs `command` in container `container` of pod `name` (as `kubectl exec`
/// would).
async fn exec_in(cluster: &TestCluster, name: &str, container: &str, command: &[&str]) {
    let pod: Pod = cluster.api().get(name).await.unwrap();
    let labels = [
        format!("io.kubernetes.pod.uid={}", pod.uid().unwrap()),
        format!("io.kubernetes.container.name={container}"),
    ];
    let ids = kube_emulator::docker::containers(&cluster.cluster.context.shared.instance, &labels)
        .await
        .unwrap();
    let mut args = vec!["exec".to_string(), ids[0].clone()];
    args.extend(command.iter().map(|s| s.to_string()));
    kube_emulator::docker::docker(args)
        .await
        .expect("docker exec");
}

fn container_ready(pod: &Pod, container: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|statuses| statuses.iter().any(|s| s.name == container && s.ready))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_gate_pod_and_rollout_readiness() {
    let cluster = TestCluster::start("probes").await;
    let image = busybox_image().await.unwrap();
    cluster
        .create::<Deployment>(json!({
            "metadata": {"name": "probed"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "probed"}},
                "template": {
                    "metadata": {"labels": {"app": "probed"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {
                                "name": "web", "image": image,
                                "command": ["sh", "-c", "mkdir -p /www && httpd -f -p 8080 -h /www"],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"}, "periodSeconds": 1},
                            },
                            {
                                "name": "worker", "image": image,
                                "command": ["sleep", "3600"],
                                "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
                            },
                        ],
                    },
                },
            },
        }))
        .await;
    let pods = cluster
        .pods_until("app=probed", "the pod runs", |p| {
            live(p).len() == 1 && phase(live(p)[0]) == "Running"
        })
        .await;
    let name = live(&pods)[0].name_any();
    // Running, but neither probe can pass yet.
    let pod: Pod = cluster.api().get(&name).await.unwrap();
    assert!(!ready(&pod) && !container_ready(&pod, "web") && !container_ready(&pod, "worker"));
    exec_in(&cluster, &name, "web", &["touch", "/www/ok"]).await;
    let pod = cluster
        .until::<Pod>(&name, "web is ready", |p| container_ready(p, "web"))
        .await;
    assert!(!ready(&pod), "the pod is not ready while worker is not");
    let d: Deployment = cluster.api().get("probed").await.unwrap();
    assert_eq!(d.status.and_then(|s| s.available_replicas).unwrap_or(0), 0);
    exec_in(&cluster, &name, "worker", &["touch", "/tmp/ready"]).await;
    cluster.until::<Pod>(&name, "the pod is ready", ready).await;
    cluster
        .until::<Deployment>("probed", "the rollout completes", deployment_complete)
        .await;
    // A probe that fails again makes the pod unready (failureThreshold 1).
    exec_in(&cluster, &name, "worker", &["rm", "/tmp/ready"]).await;
    cluster
        .until::<Pod>(&name, "the pod is unready again", |p| !ready(p))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_run_without_docker() {
    let state = tempfile::tempdir().unwrap();
    let shared = Arc::new(Shared {
        instance: instance_id(),
        velero_bucket: state.path().join("velero-bucket"),
        ..Shared::default()
    });
    let options = ClusterOptions::new("api-only", false);
    let cluster = Cluster::start(&options, state.path(), shared)
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let deployment: Deployment = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nowhere"}]}},
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // Pods are made (and never run: there is no kubelet).
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    eventually("two pending pods of a ReplicaSet", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?
            .items;
        if list.len() == 2
            && list
                .iter()
                .all(|p| p.labels().contains_key("pod-template-hash"))
        {
            Ok(())
        } else {
            Err(summary(&list))
        }
    })
    .await;
    eventually(
        "the Deployment counts 2 replicas, none available",
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            if (status.replicas, status.available_replicas) == (Some(2), Some(0)) {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
}
