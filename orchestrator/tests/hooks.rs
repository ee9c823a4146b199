//! Hooks against the emulated API server: `ensure` creates one Job per
//! hook (and only one, however often it runs), and reads the outcome the
//! Job controller and kubelet write. Without Docker the test writes that
//! status itself.

mod emulated;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use orchestrator::clusters::Cluster;
use orchestrator::hooks::{ensure, job_name, Hook, HookState};
use orchestrator::names::{HOOK_LABEL, TRANSFER_LABEL};
use serde_json::{json, Value};

const NS: &str = "shop";

fn hook(name: &str) -> Hook {
    serde_yaml::from_str(&format!(
        "name: {name}\ncluster: source\nnamespace: {NS}\nimage: busybox\n\
         command: [sh, -c, 'pg_dump > /backup/db.sql']\nphase: PreBackup\n\
         activeDeadlineSeconds: 120\n"
    ))
    .unwrap()
}

/// What the Job controller and the kubelet would write: a pod owned by
/// the Job whose container ended with `state`, and the Job's condition.
async fn finish(cluster: &Cluster, job: &Job, container: Value, condition: Value) {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-abcde", job.name_any()),
            "labels": job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                "name": job.name_any(), "uid": job.uid().unwrap(), "controller": true}],
        },
        "spec": job.spec.as_ref().unwrap().template.spec,
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    emulated::set_status(
        &pods,
        &pod.name_any(),
        json!({"phase": "Failed", "containerStatuses": [{
            "name": "hook", "ready": false, "restartCount": 0, "image": "busybox",
            "imageID": "", "state": container}]}),
    )
    .await;
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), NS);
    emulated::set_status(&jobs, &job.name_any(), json!({"conditions": [condition]})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_creates_the_job_once_and_reports_a_failure_with_its_exit_code() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let dump = hook("dump");
    assert_eq!(
        ensure(cluster, "m1", &dump).await.unwrap(),
        HookState::Running { waiting: None }
    );
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), NS);
    let job = jobs.get(&job_name("m1", &dump)).await.unwrap();
    assert_eq!(job.name_any(), "m1-prebackup-dump");
    assert_eq!(job.labels()[TRANSFER_LABEL], "m1");
    assert_eq!(job.labels()[HOOK_LABEL], "dump");
    let spec = job.spec.clone().unwrap();
    assert_eq!(
        (spec.backoff_limit, spec.active_deadline_seconds),
        (Some(0), Some(120))
    );

    // A resumed run finds the same Job instead of starting the hook again.
    assert_eq!(
        ensure(cluster, "m1", &dump).await.unwrap(),
        HookState::Running { waiting: None }
    );
    let again = jobs.get(&job.name_any()).await.unwrap();
    assert_eq!(again.uid(), job.uid());
    assert_eq!(again.resource_version(), job.resource_version());

    finish(
        cluster,
        &job,
        json!({"terminated": {"exitCode": 2, "reason": "Error",
            "message": "pg_dump: connection refused"}}),
        json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}),
    )
    .await;
    let HookState::Failed { reason, log } = ensure(cluster, "m1", &dump).await.unwrap() else {
        panic!("the hook should have failed");
    };
    assert_eq!(
        reason,
        "its pod failed (Job has reached the specified backoff limit); \
         container hook exited with code 2: pg_dump: connection refused"
    );
    // No kubelet serves logs without Docker: the report says so.
    assert!(log.contains("m1-prebackup-dump-abcde"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_completes_succeeds_and_one_past_its_deadline_fails() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let ok = hook("ok");
    ensure(cluster, "m1", &ok).await.unwrap();
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), NS);
    let job = jobs.get(&job_name("m1", &ok)).await.unwrap();
    finish(
        cluster,
        &job,
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        json!({"type": "Complete", "status": "True"}),
    )
    .await;
    assert!(matches!(
        ensure(cluster, "m1", &ok).await.unwrap(),
        HookState::Succeeded { .. }
    ));

    let slow = hook("slow");
    ensure(cluster, "m1", &slow).await.unwrap();
    let job = jobs.get(&job_name("m1", &slow)).await.unwrap();
    finish(
        cluster,
        &job,
        json!({"terminated": {"exitCode": 137, "reason": "Error"}}),
        json!({"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}),
    )
    .await;
    let state = ensure(cluster, "m1", &slow).await.unwrap();
    let HookState::Failed { reason, .. } = state else {
        panic!("{state:?}");
    };
    assert_eq!(
        reason,
        "ran longer than its activeDeadlineSeconds (120s) and was stopped \
         (Job was active longer than specified deadline); container hook exited with code 137: Error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_for_the_other_cluster_is_refused() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let mut elsewhere = hook("restore-check");
    elsewhere.cluster = orchestrator::hooks::Side::Destination;
    let error = ensure(cluster, "m1", &elsewhere).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("runs on the destination cluster"),
        "{error}"
    );
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), NS);
    assert!(jobs
        .get_opt(&job_name("m1", &elsewhere))
        .await
        .unwrap()
        .is_none());
}
