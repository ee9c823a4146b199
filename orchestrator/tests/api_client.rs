//! The orchestrator's Kubernetes client against an emulated API server
//! that misbehaves (`common::api_faults` between them): calls ride out
//! 429 with `Retry-After`, 500/503, reset connections, a lost answer to a
//! create and a short outage, give up with a clear error after their
//! bound, and never repeat what a retry cannot fix; a sender whose pod
//! the API server will not show for a while is waited for, not
//! recreated; a whole migration run by the binary passes through APIs
//! that misbehave all along; and without a kubeconfig outside a cluster
//! the error names both sources.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::api_faults::{ApiFaults, Fault, Rule};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_emulator::ClusterPair;
use orchestrator::client::{self, retry::Bounds};
use orchestrator::clusters::Cluster;
use orchestrator::kubeops::{create_if_missing, status_code};
use orchestrator::plan::{ClusterRef, PlanFlags};
use orchestrator::report::{Counters, PvcReport, PvcState};
use serde_json::json;

/// An emulated cluster behind a fault proxy, and the orchestrator's
/// client for it through the proxy.
struct Env {
    faults: Arc<ApiFaults>,
    client: kube::Client,
    cluster: Cluster,
    pair: ClusterPair,
    _dir: tempfile::TempDir,
}

/// Short pauses, so that the tests take little time; the bounds are what
/// the tests count on.
const BOUNDS: Bounds = Bounds {
    attempts: 4,
    total: Duration::from_secs(20),
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_millis(400),
    max_retry_after: Duration::from_secs(2),
};

async fn env(rule: Rule) -> Env {
    env_with(rule, BOUNDS).await
}

async fn env_with(rule: Rule, retry: Bounds) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
        .await
        .unwrap();
    let faults = ApiFaults::start(&pair.source, rule).await;
    let kubeconfig = faults.reroute(&pair.kubeconfig());
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let cluster = connect(&path, retry).await;
    Env {
        faults,
        client: cluster.client.clone(),
        cluster,
        pair,
        _dir: dir,
    }
}

async fn connect(kubeconfig: &Path, retry: Bounds) -> Cluster {
    let reference = ClusterRef {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: Some("source".into()),
    };
    let options = client::Options {
        retry,
        ..client::Options::default()
    };
    Cluster::connect_with("source", &reference, &options)
        .await
        .unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

const DEFAULT_NS: &str = "/api/v1/namespaces/default";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_call_waits_what_retry_after_asks_and_succeeds() {
    let env = env(Box::new(|method, path, n| match (method, path, n) {
        ("GET", DEFAULT_NS, 1) => Fault::Status(429, Some(1)),
        _ => Fault::Forward,
    }))
    .await;
    let started = Instant::now();
    let ns = Api::<Namespace>::all(env.client.clone())
        .get("default")
        .await
        .expect("the second attempt is answered");
    assert_eq!(ns.metadata.name.as_deref(), Some("default"));
    assert_eq!(env.faults.count("GET", DEFAULT_NS), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited the second Retry-After asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_rides_out_503_and_500_and_a_lost_answer_finds_its_object() {
    let env = env(Box::new(|method, path, n| match (method, path, n) {
        ("POST", CONFIG_MAPS, 1) => Fault::Status(503, None),
        ("POST", CONFIG_MAPS, 2) => Fault::Status(500, None),
        // The fourth create reaches the server, whose answer is lost; the
        // retry then meets AlreadyExists.
        ("POST", CONFIG_MAPS, 4) => Fault::LoseAnswer,
        _ => Fault::Forward,
    }))
    .await;
    let maps = Api::<ConfigMap>::namespaced(env.client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("first"))
        .await
        .expect("created on the third attempt");
    assert_eq!(env.faults.count("POST", CONFIG_MAPS), 3);

    let second = create_if_missing(&maps, &config_map("second"))
        .await
        .expect("create_if_missing takes AlreadyExists after a lost answer");
    assert_eq!(second.data.unwrap()["k"], "v");
    assert_eq!(
        env.faults.count("POST", CONFIG_MAPS),
        5,
        "the lost create and its retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_and_a_short_outage_are_ridden_out() {
    let env = env_with(
        Box::new(|method, path, n| match (method, path, n) {
            ("GET", DEFAULT_NS, 1 | 2) => Fault::Reset,
            _ => Fault::Forward,
        }),
        Bounds {
            attempts: 30,
            ..BOUNDS
        },
    )
    .await;
    let namespaces = Api::<Namespace>::all(env.client.clone());
    namespaces
        .get("default")
        .await
        .expect("the third attempt is answered");
    assert_eq!(env.faults.count("GET", DEFAULT_NS), 3);

    // The API server's address refuses connections for a second (a
    // restart behind a load balancer); a call made then is answered once
    // it listens again.
    env.faults.outage(Duration::from_secs(1)).await;
    namespaces
        .get("default")
        .await
        .expect("answered after the outage");
    assert_eq!(env.faults.count("GET", DEFAULT_NS), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_give_up_after_their_bound_with_a_clear_error() {
    let env = env(Box::new(|method, path, _| match (method, path) {
        ("GET", DEFAULT_NS) => Fault::Status(503, Some(0)),
        ("GET", CONFIG_MAPS) => Fault::Reset,
        _ => Fault::Forward,
    }))
    .await;
    let error = Api::<Namespace>::all(env.client.clone())
        .get("default")
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&error),
        Some(503),
        "the server's last answer is passed on: {error}"
    );
    assert_eq!(
        env.faults.count("GET", DEFAULT_NS),
        BOUNDS.attempts as usize
    );
    assert!(client::is_transient(&error));

    let error = Api::<ConfigMap>::namespaced(env.client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("no answer from the API server after 4 attempts in"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("reset"), "{message}");
    assert_eq!(
        env.faults.count("GET", CONFIG_MAPS),
        BOUNDS.attempts as usize
    );
    assert!(client::is_transient(&error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_gone_is_given_up_on_after_the_bound() {
    let env = env(Box::new(|_, _, _| Fault::Forward)).await;
    env.faults.outage(Duration::from_secs(3600)).await;
    let error = Api::<Namespace>::all(env.client.clone())
        .get("default")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("no answer from the API server after 4 attempts in")
            && message.contains("Connection refused"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_missing_objects_are_not_retried() {
    let env = env(Box::new(|method, path, _| match (method, path) {
        ("GET", "/api/v1/namespaces/forbidden") => Fault::Status(403, None),
        _ => Fault::Forward,
    }))
    .await;
    let namespaces = Api::<Namespace>::all(env.client.clone());
    let error = namespaces.get("missing").await.unwrap_err();
    assert_eq!(status_code(&error), Some(404));
    assert_eq!(env.faults.count("GET", "/api/v1/namespaces/missing"), 1);
    let error = namespaces.get("forbidden").await.unwrap_err();
    assert_eq!(status_code(&error), Some(403));
    assert_eq!(env.faults.count("GET", "/api/v1/namespaces/forbidden"), 1);
    assert!(!client::is_transient(&error));

    let maps = Api::<ConfigMap>::namespaced(env.client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("once"))
        .await
        .unwrap();
    let error = maps
        .create(&PostParams::default(), &config_map("once"))
        .await
        .unwrap_err();
    assert_eq!(status_code(&error), Some(409));
    assert_eq!(env.faults.count("POST", CONFIG_MAPS), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_the_api_server_will_not_show_for_a_while_is_waited_for_not_recreated() {
    const POD: &str = "/api/v1/namespaces/app/pods/mover-sender-data";
    // Armed once the pod exists: its next six looks are answered 503,
    // twice what one call retries, so the sender's observation itself
    // must hold on.
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let rule = {
        let (armed, refused) = (armed.clone(), refused.clone());
        Box::new(move |method: &str, path: &str, _| {
            let away = method == "GET"
                && path == POD
                && armed.load(Ordering::SeqCst)
                && refused
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < 6).then_some(n + 1)
                    })
                    .is_ok();
            if away {
                Fault::Status(503, None)
            } else {
                Fault::Forward
            }
        })
    };
    let env = env_with(
        rule,
        Bounds {
            attempts: 3,
            ..BOUNDS
        },
    )
    .await;
    let direct = env.pair.source.client.clone();
    Api::<Namespace>::all(direct.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    let file = serde_yaml::from_str("namespaces: [app]\nmoverImage: mover:test\n").unwrap();
    let plan = orchestrator::plan::resolve(file, &PlanFlags::default(), "test").unwrap();
    let job = orchestrator::dvm::sender::Job {
        plan: &plan,
        source: &env.cluster,
        namespace: "app".into(),
        pvc: "data".into(),
        mode: orchestrator::manifests::VolumeMode::Filesystem,
        placement: Default::default(),
        target: orchestrator::manifests::Target {
            connect: "receiver.example:443".into(),
            server_name: "receiver.example".into(),
        },
        final_copy: false,
        ca_cert: "CA".into(),
        client_pem: mover::certs::Pem {
            cert: "CERT".into(),
            key: "KEY".into(),
        },
    };
    let board = orchestrator::display::Board::new();
    board.add(PvcReport {
        namespace: "app".into(),
        name: "data".into(),
        destination_namespace: "app".into(),
        state: PvcState::Waiting,
        attempts: 0,
        block: false,
        counters: Counters::default(),
        files_deleted: 0,
        duration_secs: 0.0,
        rate: 0.0,
        eta_secs: None,
        warning: None,
        error: None,
    });

    // The kubelet's part, with the API server away: the sender runs and
    // exits 0 while the orchestrator cannot look.
    let kubelet = async {
        let pods = Api::<Pod>::namespaced(direct.clone(), "app");
        while pods.get_opt("mover-sender-data").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        armed.store(true, Ordering::SeqCst);
        let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "mover", "ready": false, "restartCount": 0, "image": "mover:test",
            "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        }]}});
        pods.patch_status(
            "mover-sender-data",
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .unwrap();
    };
    let (done, ()) = tokio::join!(orchestrator::dvm::sender::run(&job, &board), kubelet);
    let report = board.get("app", "data").unwrap();
    assert!(done, "{report:?}");
    assert_eq!(
        (report.state, report.attempts),
        (PvcState::Done, 1),
        "the first sender was seen through"
    );
    assert_eq!(refused.load(Ordering::SeqCst), 6, "all six 503s were met");
    assert_eq!(
        env.faults.count("POST", "/api/v1/namespaces/app/pods"),
        1,
        "one sender pod, never recreated"
    );
}

/// Every tenth request answered 429 (`Retry-After: 0`), 503, 500, reset,
/// or passed on with its answer lost, in turn; `faulted` counts them.
fn now_and_then(faulted: Arc<AtomicUsize>) -> Rule {
    let seen = AtomicUsize::new(0);
    Box::new(move |_, _, _| {
        let fault = match seen.fetch_add(1, Ordering::SeqCst) % 10 {
            1 => Fault::Status(429, Some(0)),
            3 => Fault::Status(503, None),
            5 => Fault::Reset,
            7 => Fault::Status(500, None),
            9 => Fault::LoseAnswer,
            _ => return Fault::Forward,
        };
        faulted.fetch_add(1, Ordering::SeqCst);
        fault
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_runs_through_apis_that_misbehave_all_along() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
        .await
        .unwrap();
    let source = pair.source.client.clone();
    Api::<Namespace>::all(source.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(source.clone(), "shop")
        .create(&PostParams::default(), &config_map("settings"))
        .await
        .unwrap();
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
    }))
    .unwrap();
    Api::<Deployment>::namespaced(source.clone(), "shop")
        .create(&PostParams::default(), &web)
        .await
        .unwrap();

    let faulted = Arc::new(AtomicUsize::new(0));
    let mut kubeconfig = pair.kubeconfig();
    let mut proxies = Vec::new();
    for cluster in [&pair.source, &pair.destination] {
        let faults = ApiFaults::start(cluster, now_and_then(faulted.clone())).await;
        kubeconfig = faults.reroute(&kubeconfig);
        proxies.push(faults);
    }
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let path = path.to_str().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["migrate", "--name", "shaky", "-n", "shop", "--volumes-only"])
        .args(["--source-kubeconfig", path, "--source-context", "source"])
        .args([
            "--destination-kubeconfig",
            path,
            "--destination-context",
            "destination",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("orchestrator migrate: {stderr}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        faulted.load(Ordering::SeqCst) >= 10,
        "the run met faults all along"
    );
    let scaled = Api::<Deployment>::namespaced(source, "shop")
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        scaled.spec.replicas,
        Some(0),
        "the source application was quiesced exactly as without faults"
    );
}

#[tokio::test]
async fn without_a_kubeconfig_outside_a_cluster_the_error_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["plan", "-n", "shop"])
        .env("KUBECONFIG", dir.path().join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(
            "orchestrator: source cluster: no kubeconfig (reading the kubeconfig \
             ($KUBECONFIG or ~/.kube/config): "
        ) && stderr.contains(") and not running in a cluster ("),
        "{stderr}"
    );
}
