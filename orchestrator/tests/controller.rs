//! `orchestrator controller`, the real binary, against an emulated pair of
//! clusters (the destination as its host): clusters registered as
//! MigrationCluster resources, with the status the controller finds;
//! MigrationPlans validated continuously, their conditions following the
//! clusters as they change; and the printer columns `kubectl get` shows.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube_emulator::{PairOptions, Policy};
use orchestrator::controller::cluster::{MigrationCluster, MigrationClusterStatus};
use orchestrator::controller::conditions::Condition;
use orchestrator::controller::plan::MigrationPlan;
use serde_json::{json, Value};

mod host;

use host::{create, register_clusters, setup, start_controller, Controller, Setup, NS};

/// GETs `path` of a controller's endpoint: (status code, body).
async fn get(controller: &Controller, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", controller.address))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the series named exactly `series` in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Waits until `controller` says it leads.
async fn leads(controller: &mut Controller, within: Duration) -> bool {
    tokio::time::timeout(within, controller.leading.wait_for(|l| *l))
        .await
        .is_ok()
}

/// Waits until cluster `name`'s Ready condition has `status`, and returns
/// the status then.
async fn ready(api: &Api<MigrationCluster>, name: &str, status: &str) -> MigrationClusterStatus {
    let wanted = status.to_string();
    let condition = move |cluster: Option<&MigrationCluster>| {
        cluster
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == wanted)
    };
    let found = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api.clone(), name, condition),
    )
    .await
    .unwrap_or_else(|_| panic!("cluster {name} never became Ready={status}"))
    .unwrap();
    found.unwrap().status.unwrap()
}

fn reason(status: &MigrationClusterStatus) -> (&str, &str) {
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (ready.reason.as_str(), ready.message.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_clusters_say_what_the_controller_finds() {
    let options = PairOptions {
        destination: Policy::openshift(),
        ..PairOptions::default()
    };
    let Setup {
        pair, kubeconfig, ..
    } = &setup(&options).await;
    let host = pair.destination.client.clone();
    let clusters: Api<MigrationCluster> = Api::namespaced(host.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(host.clone(), NS);

    // The host: its own identity, OpenShift, Velero installed.
    create(
        &clusters,
        json!({"metadata": {"name": "host"}, "spec": {"isHostCluster": true}}),
    )
    .await;
    let status = ready(&clusters, "host", "True").await;
    assert_eq!(
        (status.open_shift, status.velero),
        (Some(true), Some(true)),
        "{status:?}"
    );
    assert!(status
        .kubernetes_version
        .is_some_and(|v| v.starts_with('v')));

    // The source, through a token Secret that does not exist yet: the
    // status says so, and the Secret's arrival is noticed at once.
    let token = pair.source.token_for("migrator", &["system:masters"]);
    create(
        &clusters,
        json!({"metadata": {"name": "source"},
               "spec": {"url": pair.source.api_url, "secretRef": {"name": "source-token"}}}),
    )
    .await;
    let status = ready(&clusters, "source", "False").await;
    assert_eq!(
        reason(&status),
        (
            "SecretNotFound",
            "Secret mover-system/source-token not found"
        )
    );
    create(
        &secrets,
        json!({"metadata": {"name": "source-token"},
               "stringData": {"token": token, "ca.crt": pair.source.ca_pem()}}),
    )
    .await;
    let status = ready(&clusters, "source", "True").await;
    assert_eq!(
        (status.open_shift, status.velero),
        (Some(false), Some(true)),
        "{status:?}"
    );

    // A token the source does not know: refused in the cluster's words.
    create(
        &secrets,
        json!({"metadata": {"name": "stale"},
               "stringData": {"token": "not-a-token", "ca.crt": pair.source.ca_pem()}}),
    )
    .await;
    create(
        &clusters,
        json!({"metadata": {"name": "stale"},
               "spec": {"url": pair.source.api_url, "secretRef": {"name": "stale"}}}),
    )
    .await;
    let status = ready(&clusters, "stale", "False").await;
    let (why, message) = reason(&status);
    assert_eq!(why, "ConnectionFailed");
    assert!(message.contains("Unauthorized"), "{message}");

    // A kubeconfig Secret works as well; a CA that did not sign the
    // server's certificate does not.
    let source_only: Value = {
        let mut config: Value = serde_yaml::from_str(&pair.kubeconfig()).unwrap();
        config["current-context"] = json!("source");
        config
    };
    create(
        &secrets,
        json!({"metadata": {"name": "source-kubeconfig"},
               "stringData": {"kubeconfig": serde_yaml::to_string(&source_only).unwrap()}}),
    )
    .await;
    create(
        &clusters,
        json!({"metadata": {"name": "by-kubeconfig"},
               "spec": {"secretRef": {"name": "source-kubeconfig"}}}),
    )
    .await;
    let status = ready(&clusters, "by-kubeconfig", "True").await;
    assert_eq!(status.open_shift, Some(false));
    create(
        &secrets,
        json!({"metadata": {"name": "token-only"}, "stringData": {"token": "x"}}),
    )
    .await;
    create(
        &clusters,
        json!({"metadata": {"name": "wrong-ca"},
               "spec": {"url": pair.source.api_url, "secretRef": {"name": "token-only"},
                        "caBundle": pair.destination.ca_pem()}}),
    )
    .await;
    let status = ready(&clusters, "wrong-ca", "False").await;
    assert_eq!(reason(&status).0, "ConnectionFailed", "{status:?}");

    // kubectl shows the printer columns.
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--context",
            "destination",
            "-n",
            NS,
            "get",
            "migrationclusters",
        ])
        .output()
        .await
        .expect("running kubectl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "VERSION", "OPENSHIFT", "VELERO", "AGE"]
    );
    let host_row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("host "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (host_row[1], host_row[3], host_row[4]),
        ("True", "true", "true")
    );
}

/// Waits until plan `name`'s Ready condition has `status` and `reason`,
/// and returns its conditions then.
async fn plan_state(
    api: &Api<MigrationPlan>,
    name: &str,
    status: &str,
    reason: &str,
) -> Vec<Condition> {
    let wanted = (status.to_string(), reason.to_string());
    let condition = move |plan: Option<&MigrationPlan>| {
        plan.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| (c.status.clone(), c.reason.clone()) == wanted)
    };
    let found = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api.clone(), name, condition),
    )
    .await
    .unwrap_or_else(|_| panic!("plan {name} never became Ready={status} ({reason})"))
    .unwrap();
    found.unwrap().status.unwrap().conditions
}

fn message<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_validated_continuously() {
    let Setup {
        pair, kubeconfig, ..
    } = &setup(&PairOptions::default()).await;
    let (src, host) = (pair.source.client.clone(), pair.destination.client.clone());
    let plans: Api<MigrationPlan> = Api::namespaced(host.clone(), NS);

    // A plan over clusters not registered yet, and a namespace the source
    // does not have.
    create(
        &plans,
        json!({"metadata": {"name": "shop"},
               "spec": {"sourceCluster": "source", "destinationCluster": "host",
                        "plan": {"namespaces": ["shop:shop-prod"]}}}),
    )
    .await;
    let conditions = plan_state(&plans, "shop", "False", "InvalidSourceCluster").await;
    assert_eq!(
        message(&conditions, "InvalidSourceCluster"),
        Some("MigrationCluster mover-system/source not found")
    );
    assert_eq!(
        message(&conditions, "InvalidDestinationCluster"),
        Some("MigrationCluster mover-system/host not found")
    );

    // The clusters registered: what is left is the namespace.
    register_clusters(pair).await;
    let conditions = plan_state(&plans, "shop", "False", "NamespaceNotFound").await;
    assert_eq!(
        message(&conditions, "NamespaceNotFound"),
        Some("not found on the source cluster: shop")
    );
    assert_eq!(message(&conditions, "InvalidSourceCluster"), None);

    // The namespace with a PVC of a class the destination lacks.
    create(
        &Api::<Namespace>::all(src.clone()),
        json!({"metadata": {"name": "shop"}}),
    )
    .await;
    create(
        &Api::<PersistentVolumeClaim>::namespaced(src.clone(), "shop"),
        json!({"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gold",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let conditions = plan_state(&plans, "shop", "False", "StorageClassNotFound").await;
    assert_eq!(
        message(&conditions, "StorageClassNotFound"),
        Some("not found on the destination cluster: gold (map them with storageClassMapping)")
    );

    // Mapped to the destination's class: ready.
    plans
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"plan": {"storageClassMapping": {"gold": "standard"}}}})),
        )
        .await
        .unwrap();
    let conditions = plan_state(&plans, "shop", "True", "Ready").await;
    assert_eq!(conditions.len(), 1, "{conditions:?}");

    // A crash-looping source pod is a warning: the plan stays ready.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(src.clone(), "shop");
    create(
        &pods,
        json!({"metadata": {"name": "web-1"},
               "spec": {"containers": [{"name": "web", "image": "web:1",
                        "securityContext": {"allowPrivilegeEscalation": false}}]}}),
    )
    .await;
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "containerStatuses": [{
            "name": "web", "image": "web:1", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
        ),
    )
    .await
    .unwrap();
    // (Source pods do not wake the plan: touch it rather than wait for
    // the periodic validation.)
    plans
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})),
        )
        .await
        .unwrap();
    let mut warned = None;
    for _ in 0..100 {
        let status = plans.get("shop").await.unwrap().status.unwrap();
        if let Some(text) = message(&status.conditions, "PodsNotHealthy") {
            warned = Some((text.to_string(), status.conditions[0].status.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        warned,
        Some((
            "shop/web-1 (CrashLoopBackOff)".to_string(),
            "True".to_string()
        ))
    );

    // A second plan over the same namespace conflicts; a plan with a bad
    // field says which.
    create(
        &plans,
        json!({"metadata": {"name": "shop-again"},
               "spec": {"sourceCluster": "source", "destinationCluster": "host",
                        "plan": {"namespaces": ["shop"]}}}),
    )
    .await;
    let conditions = plan_state(&plans, "shop-again", "False", "PlanConflict").await;
    assert_eq!(
        message(&conditions, "PlanConflict"),
        Some("MigrationPlan shop also migrates shop")
    );
    create(
        &plans,
        json!({"metadata": {"name": "typo"},
               "spec": {"sourceCluster": "source", "destinationCluster": "host",
                        "plan": {"namespace": ["x"]}}}),
    )
    .await;
    let conditions = plan_state(&plans, "typo", "False", "InvalidPlan").await;
    let text = message(&conditions, "InvalidPlan").unwrap();
    assert!(
        text.starts_with("MigrationPlan mover-system/typo: spec.plan: unknown field `namespace`"),
        "{text}"
    );

    // kubectl shows why a plan is not ready.
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--context",
            "destination",
            "-n",
            NS,
            "get",
            "migrationplans",
        ])
        .output()
        .await
        .expect("running kubectl");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "SOURCE", "DESTINATION", "REASON", "AGE"]
    );
    assert!(
        rows.iter()
            .any(|r| r[..5] == ["typo", "False", "source", "host", "InvalidPlan"]),
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r[..5] == ["shop", "True", "source", "host", "Ready"]),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_standby_takes_over() {
    let Setup {
        pair,
        kubeconfig,
        controller: mut first,
        _dir: _state,
    } = setup(&PairOptions::default()).await;
    let host = pair.destination.client.clone();
    assert!(leads(&mut first, Duration::from_secs(30)).await);
    let mut second = start_controller(&kubeconfig).await;
    // Both are live and ready; only one leads, for as long as it renews.
    for controller in [&first, &second] {
        assert_eq!(get(controller, "/healthz").await.0, 200);
        for _ in 0..50 {
            if get(controller, "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(get(controller, "/readyz").await.0, 200);
    }
    assert!(!leads(&mut second, Duration::from_secs(20)).await);
    // The standby serves the console too (it holds no state).
    let session = reqwest::get(format!("{}/api/session", second.console))
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    let (_, metrics) = get(&first, "/metrics").await;
    assert_eq!(
        sample(&metrics, "mover_controller_leader"),
        Some(1.0),
        "{metrics}"
    );
    let (_, metrics) = get(&second, "/metrics").await;
    assert_eq!(
        sample(&metrics, "mover_controller_leader"),
        Some(0.0),
        "{metrics}"
    );
    let leases: Api<Lease> = Api::namespaced(host.clone(), NS);
    let lease = leases.get("mover-controller").await.unwrap().spec.unwrap();
    let holder = lease.holder_identity.clone().unwrap();
    assert_eq!(lease.lease_transitions, Some(0));

    // The leader reconciles; the standby does not.
    let clusters: Api<MigrationCluster> = Api::namespaced(host.clone(), NS);
    create(
        &clusters,
        json!({"metadata": {"name": "host"}, "spec": {"isHostCluster": true}}),
    )
    .await;
    ready(&clusters, "host", "True").await;
    let reconciles = "mover_controller_reconciles_total{kind=\"MigrationCluster\"}";
    let (_, metrics) = get(&first, "/metrics").await;
    assert!(
        sample(&metrics, reconciles).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    let (_, metrics) = get(&second, "/metrics").await;
    assert_eq!(sample(&metrics, reconciles), None, "{metrics}");

    // The leader dies without releasing the lease: the standby takes it
    // once a lease duration has passed without a renewal, and drives.
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    assert!(leads(&mut second, Duration::from_secs(45)).await);
    let lease = leases.get("mover-controller").await.unwrap().spec.unwrap();
    assert_ne!(lease.holder_identity.as_deref(), Some(holder.as_str()));
    assert_eq!(lease.lease_transitions, Some(1));
    create(
        &clusters,
        json!({"metadata": {"name": "again"}, "spec": {"isHostCluster": true}}),
    )
    .await;
    ready(&clusters, "again", "True").await;

    // A replica stopped with SIGTERM gives the lease up at once.
    let mut third = start_controller(&kubeconfig).await;
    let pid = second.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    second.child.wait().await.unwrap();
    assert!(leads(&mut third, Duration::from_secs(10)).await);
}

/// Runs the orchestrator binary against the destination (the host):
/// (exit code, stdout, stderr).
async fn orchestrator(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "destination"])
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_watch_follow_a_migration_from_a_plan_file() {
    let Setup {
        pair,
        kubeconfig,
        controller: _controller,
        _dir: dir,
    } = setup(&PairOptions::default()).await;
    register_clusters(&pair).await;
    let host = pair.destination.client.clone();
    create(
        &Api::<Namespace>::all(pair.source.client.clone()),
        json!({"metadata": {"name": "empty"}}),
    )
    .await;
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };

    // Submitted and followed to its end: each step as it goes, then the
    // run's summary; the exit code says it succeeded.
    let plan = file(
        "empty.yaml",
        "name: empty\nnamespaces: ['empty:empty-copy']\nvolumesOnly: true\n\
         source: {context: source}\ndestination: {context: host}\n",
    );
    let (code, stdout, stderr) =
        orchestrator(&kubeconfig, &["submit", "-f", &plan, "--stage"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Preflight running"), "{stdout}");
    assert!(stdout.contains("Preflight done"), "{stdout}");
    assert!(
        stdout.contains("(stage run of \"empty\"): Succeeded"),
        "{stdout}"
    );
    let submitted = stderr
        .lines()
        .find_map(|l| l.strip_prefix("submitted Migration "))
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_string();
    let plans: Api<MigrationPlan> = Api::namespaced(host.clone(), NS);
    let applied = plans.get("empty").await.unwrap().spec;
    assert_eq!(
        (
            applied.source_cluster.as_str(),
            applied.destination_cluster.as_str()
        ),
        ("source", "host")
    );
    assert_eq!(applied.plan["namespaces"], json!(["empty:empty-copy"]));
    // `watch` of a finished Migration prints its end at once.
    let (code, stdout, _) = orchestrator(&kubeconfig, &["watch", &submitted]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("Succeeded"), "{stdout}");

    // A run that fails: the exit code says so, the summary says why.
    let missing = file(
        "missing.yaml",
        "name: missing\nnamespaces: [nowhere]\nvolumesOnly: true\n",
    );
    let (code, stdout, stderr) = orchestrator(
        &kubeconfig,
        &[
            "submit",
            "-f",
            &missing,
            "--stage",
            "--source-cluster",
            "source",
            "--destination-cluster",
            "host",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("Failed"), "{stdout}");
    assert!(stdout.contains("nowhere"), "{stdout}");

    // Bad input is refused before anything is created, naming what and
    // where.
    let bad = file("bad.yaml", "name: bad\nnamespaces: [Bad]\n");
    let (code, _, stderr) = orchestrator(
        &kubeconfig,
        &[
            "submit",
            "-f",
            &bad,
            "--source-cluster",
            "source",
            "--destination-cluster",
            "host",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("bad.yaml: namespaces[0] \"Bad\""),
        "{stderr}"
    );
    assert!(plans.get_opt("bad").await.unwrap().is_none());
    let unnamed = file("unnamed.yaml", "name: unnamed\nnamespaces: [empty]\n");
    let (code, _, stderr) = orchestrator(&kubeconfig, &["submit", "-f", &unnamed]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--source-cluster"), "{stderr}");
    let (code, _, stderr) = orchestrator(&kubeconfig, &["watch", "no-such-run"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no Migration mover-system/no-such-run"),
        "{stderr}"
    );
}
