//! Hooks against the emulated clusters: `ensure` creates one Job per hook
//! (and only one, however often it runs), and reads the outcome the
//! emulator's Job controller decides. Without Docker no kubelet runs the
//! pod: the test writes the container's end as a kubelet would.

mod emulated;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use orchestrator::clusters::Cluster;
use orchestrator::hooks::{ensure, job_name, Hook, HookState};
use orchestrator::names::{HOOK_LABEL, TRANSFER_LABEL};
use serde_json::json;

const NS: &str = "shop";

fn hook(name: &str, deadline: i64) -> Hook {
    serde_yaml::from_str(&format!(
        "name: {name}\ncluster: source\nnamespace: {NS}\nimage: busybox\n\
         command: [sh, -c, 'pg_dump > /backup/db.sql']\nphase: PreBackup\n\
         activeDeadlineSeconds: {deadline}\n"
    ))
    .unwrap()
}

/// The pod the Job controller made for the hook's Job.
async fn hook_pod(cluster: &Cluster, job: &Job) -> Pod {
    let uid = job.uid().unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), NS);
    emulated::eventually("the Job controller's pod", || async {
        let listed = pods.list(&ListParams::default()).await.unwrap();
        listed.items.into_iter().find(|pod| {
            pod.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
    })
    .await
}

/// Runs `ensure` until the hook has finished.
async fn finished(cluster: &Cluster, hook: &Hook) -> HookState {
    emulated::eventually("the hook to finish", || async {
        match ensure(cluster, "m1", hook).await.unwrap() {
            HookState::Running { .. } => None,
            done => Some(done),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_creates_the_job_once_and_reports_a_failure_with_its_exit_code() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let dump = hook("dump", 120);
    assert!(matches!(
        ensure(cluster, "m1", &dump).await.unwrap(),
        HookState::Running { .. }
    ));
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
    let pod = hook_pod(cluster, &job).await;
    assert!(matches!(
        ensure(cluster, "m1", &dump).await.unwrap(),
        HookState::Running { .. }
    ));
    let listed = jobs
        .list(&ListParams::default().labels(&format!("{TRANSFER_LABEL}=m1")))
        .await
        .unwrap();
    let uids: Vec<_> = listed.items.iter().map(|j| j.uid()).collect();
    assert_eq!(uids, [job.uid()]);

    // The container fails; with backoffLimit 0 the Job controller fails
    // the Job, and the hook's reason carries the exit code.
    emulated::kubelet_status(
        cluster,
        &pod,
        "Failed",
        json!({"terminated": {"exitCode": 2, "reason": "Error",
            "message": "pg_dump: connection refused"}}),
        false,
    )
    .await;
    let HookState::Failed { reason, log } = finished(cluster, &dump).await else {
        panic!("the hook should have failed");
    };
    assert_eq!(
        reason,
        "its pod failed (Job has reached the specified backoff limit); \
         container hook exited with code 2: pg_dump: connection refused"
    );
    // No kubelet serves logs without Docker: the report says so.
    assert!(log.contains(&pod.name_any()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_completes_succeeds_and_one_past_its_deadline_fails() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let ok = hook("ok", 120);
    ensure(cluster, "m1", &ok).await.unwrap();
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), NS);
    let job = jobs.get(&job_name("m1", &ok)).await.unwrap();
    let pod = hook_pod(cluster, &job).await;
    emulated::kubelet_status(
        cluster,
        &pod,
        "Succeeded",
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        false,
    )
    .await;
    assert!(matches!(
        finished(cluster, &ok).await,
        HookState::Succeeded { .. }
    ));

    // A hook that never ends is stopped by its Job's deadline.
    let slow = hook("slow", 1);
    let state = finished(cluster, &slow).await;
    let HookState::Failed { reason, .. } = state else {
        panic!("{state:?}");
    };
    assert!(
        reason.starts_with(
            "ran longer than its activeDeadlineSeconds (1s) and was stopped \
             (Job was active longer than specified deadline)"
        ),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_for_the_other_cluster_is_refused() {
    let emulated = emulated::source_with_namespace(NS).await;
    let cluster = &emulated.cluster;
    let mut elsewhere = hook("restore-check", 120);
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

/// With Docker: the kubelet really runs the hook's container, so its log
/// and exit code come from a real process, and the restricted security
/// context meets a real runAsNonRoot check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_containers_with_their_logs_and_exit_codes() {
    let emulated = emulated::start(NS, true).await;
    let cluster = &emulated.cluster;
    let image = kube_emulator::testing::busybox_image().await.unwrap();
    let hook = |name: &str, script: &str, run_as_user: Option<i64>| Hook {
        image: image.to_string(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        run_as_user,
        ..hook(name, 120)
    };

    // busybox's user is root: without runAsUser the kubelet refuses it,
    // and the running hook says why.
    let as_root = hook("as-root", "true", None);
    let waiting = emulated::eventually("the kubelet to refuse a root image", || async {
        match ensure(cluster, "m1", &as_root).await.unwrap() {
            HookState::Running { waiting } => waiting,
            other => panic!("{other:?}"),
        }
    })
    .await;
    assert!(
        waiting.starts_with("CreateContainerConfigError: container has runAsNonRoot"),
        "{waiting}"
    );

    let dump = hook("dump", "echo dumped 3 tables", Some(1000));
    let HookState::Succeeded { log } = finished(cluster, &dump).await else {
        panic!("the dump hook should have succeeded");
    };
    assert_eq!(log, "dumped 3 tables\n");

    let check = hook(
        "check",
        "echo checking the schema; echo no space left >&2; exit 3",
        Some(1000),
    );
    let state = finished(cluster, &check).await;
    let HookState::Failed { reason, log } = state else {
        panic!("{state:?}");
    };
    assert!(
        reason.starts_with(
            "its pod failed (Job has reached the specified backoff limit); \
             container hook exited with code 3"
        ),
        "{reason}"
    );
    assert!(log.contains("checking the schema"), "{log}");
    assert!(log.contains("no space left"), "{log}");
}
