//! `orchestrator controller` drives migrations written as custom resources
//! only: the release binary, its host the destination cluster, the source
//! registered as a MigrationCluster with a token Secret, a MigrationPlan,
//! then a stage and a final Migration whose pods are real `mover:dev`
//! containers. The stage run copies under a bandwidth limit, slowly
//! enough to watch `/metrics` count the bytes as they go; the controller
//! is killed (SIGKILL) while the final run copies, and a new one finishes
//! it from the step the status names; a Migration deleted while it copies
//! stops, and its senders and receivers go with it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::controller::{
    create, migrations, noise, plans, register_clusters, source_volume, start_controller,
    start_pair, succeeded, wait_for_crds, wait_migration, NS,
};
use e2e::free_port;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::{json, Value};

/// Runs the release orchestrator against the destination (the host):
/// (exit code, stdout, stderr).
async fn orchestrator(kubeconfig: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let output = tokio::process::Command::new(e2e::release_binary("orchestrator")?)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "destination"])
        .output()
        .await?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The bytes PVC shop/data's copy has put on the wire, as the
/// controller's `/metrics` on `port` says for Migration `migration` (0
/// before any). (The bytes a file's copy has dealt with only count once
/// the file is done.)
async fn metric_bytes(port: u16, migration: &str) -> Result<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let series = format!(
        "mover_pvc_wire_bytes{{migration=\"{migration}\",namespace=\"shop\",pvc=\"data\"}} "
    );
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The reasons of the Events about Migration `name`, oldest first.
async fn event_reasons(client: &kube::Client, name: &str) -> Result<Vec<String>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let mut found: Vec<_> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(found
        .into_iter()
        .filter_map(|e| {
            e.reason
                .map(|r| format!("{r}: {}", e.note.unwrap_or_default()))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_from_custom_resources_only() -> Result<()> {
    let (_dir, pair, kubeconfig) = start_pair().await?;
    let (src, host) = (pair.source.client.clone(), pair.destination.client.clone());

    let big = noise(b"big", 64 << 20);
    let source_dir = source_volume(
        &src,
        "shop",
        &[("notes.txt", b"v1\n".to_vec()), ("big.bin", big)],
    )
    .await?;

    create(
        &Api::<Namespace>::all(host.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await?;
    let port = free_port()?;
    let mut controller = start_controller(&kubeconfig, port)?;
    // The controller installs its CRDs.
    wait_for_crds(&host).await?;
    register_clusters(&pair, &pair.source.api_url).await?;
    create(
        &plans(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "MigrationPlan",
               "metadata": {"name": "shop"},
               "spec": {"sourceCluster": "source", "destinationCluster": "host",
                        "plan": {"namespaces": ["shop:shop-prod"], "volumesOnly": true,
                                 "moverImage": e2e::MOVER_IMAGE,
                                 // 64 MiB take 8 s or more, over two
                                 // data connections sharing the limit.
                                 "bandwidthLimit": "8M", "streams": 2}}}),
    )
    .await?;

    // A stage run.
    create(
        &migrations(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "Migration",
               "metadata": {"name": "shop-stage"},
               "spec": {"planRef": "shop", "kind": "stage"}}),
    )
    .await?;
    // While it copies, the bytes the controller's metrics show grow.
    wait_migration(&host, "shop-stage", |s| s["step"] == "CopyVolumes").await?;
    let mut seen = Vec::new();
    for _ in 0..60 {
        let bytes = metric_bytes(port, "shop-stage").await?;
        if seen.last() != Some(&bytes) {
            seen.push(bytes);
        }
        if seen.iter().filter(|b| **b > 0).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = wait_migration(&host, "shop-stage", succeeded).await?;
    let growing: Vec<&u64> = seen.iter().filter(|b| **b > 0).collect();
    assert!(
        growing.len() >= 2 && growing.windows(2).all(|w| w[0] < w[1]),
        "the copy's bytes in /metrics: {seen:?}; the copy: {:#}",
        status["pvcs"]
    );
    assert_eq!(status["pvcs"][0]["state"], "done", "{status:#}");
    let reasons = event_reasons(&host, "shop-stage").await?;
    for expected in [
        "StepStarted: CopyVolumes",
        "StepSucceeded: CopyVolumes",
        "Succeeded",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(expected)),
            "no {expected:?} Event: {reasons:?}"
        );
    }
    let copy = e2e::volume_dir(&host, "shop-prod", "data").await?;
    assert_eq!(std::fs::read(copy.join("notes.txt"))?, b"v1\n");
    // The controller completed the spec from the plan.
    let stage = migrations(&host).get("shop-stage").await?;
    assert_eq!(stage.data["spec"]["planName"], "shop");
    assert_eq!(stage.data["spec"]["namespaces"], json!(["shop"]));

    // The final run; the controller is killed while it copies.
    std::fs::write(source_dir.join("notes.txt"), b"v2\n")?;
    create(
        &migrations(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "Migration",
               "metadata": {"name": "shop-final"},
               "spec": {"planRef": "shop", "kind": "final"}}),
    )
    .await?;
    wait_migration(&host, "shop-final", |s| {
        s["step"] == "CopyVolumes" || s["phase"] == "Succeeded"
    })
    .await?;
    controller.start_kill()?;
    controller.wait().await?;
    let _controller = start_controller(&kubeconfig, port)?;
    let status = wait_migration(&host, "shop-final", succeeded).await?;
    let steps: Vec<(&str, &str)> = status["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or(""),
                s["phase"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(steps.contains(&("CopyVolumes", "Done")), "{steps:?}");
    assert!(steps.contains(&("Cleanup", "Done")), "{steps:?}");
    assert_eq!(std::fs::read(copy.join("notes.txt"))?, b"v2\n");
    assert_eq!(
        std::fs::read(copy.join("big.bin"))?,
        std::fs::read(source_dir.join("big.bin"))?
    );

    // A stage run deleted while it copies stops: its Migration goes once
    // the controller has removed its senders and receivers.
    let changed = noise(b"changed", 64 << 20);
    std::fs::write(source_dir.join("big.bin"), changed)?;
    create(
        &migrations(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "Migration",
               "metadata": {"name": "shop-stopped"},
               "spec": {"planRef": "shop", "kind": "stage"}}),
    )
    .await?;
    wait_migration(&host, "shop-stopped", |s| {
        s["pvcs"][0]["state"] == "copying"
    })
    .await?;
    let doomed = migrations(&host).get("shop-stopped").await?;
    assert!(
        doomed
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "mover.io/transfers")),
        "{:?}",
        doomed.metadata
    );
    migrations(&host)
        .delete("shop-stopped", &Default::default())
        .await?;
    let mut gone = false;
    for _ in 0..240 {
        if migrations(&host).get_opt("shop-stopped").await?.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gone, "the deleted Migration is still there");
    for (client, ns) in [(&src, "shop"), (&host, "shop-prod")] {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?;
        let left: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n.starts_with("mover-"))
            .collect();
        assert!(left.is_empty(), "transfer pods left in {ns}: {left:?}");
    }
    // A Migration naming a plan that does not exist fails, saying so.
    create(
        &migrations(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "Migration",
               "metadata": {"name": "nowhere"},
               "spec": {"planRef": "missing", "kind": "stage"}}),
    )
    .await?;
    let api = migrations(&host);
    let mut failed = Value::Null;
    for _ in 0..200 {
        failed = api.get("nowhere").await?.data["status"].clone();
        if failed["phase"] == "Failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        failed["errors"],
        json!(["MigrationPlan mover-system/missing not found"])
    );
    Ok(())
}

/// The controller as `orchestrator install` deploys it: two replicas of
/// the orchestrator image as pods of the destination (the host), with the
/// in-cluster credentials of their ServiceAccount and its least-privilege
/// roles. The leader's pod is deleted mid-copy; the standby takes the
/// lease and finishes the migration. `kubectl get` shows each resource's
/// columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_installed_controller_runs_as_pods_and_survives_losing_its_leader() -> Result<()> {
    let (dir, pair, kubeconfig) = start_pair().await?;
    let (src, host) = (pair.source.client.clone(), pair.destination.client.clone());
    let big = noise(b"pods", 64 << 20);
    let source_dir = source_volume(&src, "shop", &[("big.bin", big)]).await?;

    let (code, stdout, stderr) = orchestrator(
        &kubeconfig,
        &[
            "install",
            "--image",
            e2e::ORCHESTRATOR_IMAGE,
            "--replicas",
            "2",
        ],
    )
    .await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // The controller's pods reach the source's API server where the
    // source's own pods do.
    let endpoints =
        Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(src.clone(), "default")
            .get("kubernetes")
            .await?;
    let subset = &endpoints.subsets.context("subsets")?[0];
    let source_url = format!(
        "https://{}:{}",
        subset.addresses.as_ref().context("addresses")?[0].ip,
        subset.ports.as_ref().context("ports")?[0].port
    );
    register_clusters(&pair, &source_url).await?;
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: shop\nnamespaces: ['shop:shop-prod']\nvolumesOnly: true\nmoverImage: {}\n\
             bandwidthLimit: 8M\nsource: {{context: source}}\ndestination: {{context: host}}\n",
            e2e::MOVER_IMAGE
        ),
    )?;
    let (code, stdout, stderr) = orchestrator(
        &kubeconfig,
        &["submit", "-f", &plan.to_string_lossy(), "--no-watch"],
    )
    .await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let name = stdout.trim().to_string();

    wait_migration(&host, &name, |s| s["pvcs"][0]["state"] == "copying").await?;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(host.clone(), NS);
    let holder = leases
        .get("mover-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .context("no lease holder")?;
    let leader = holder.split('_').next().unwrap_or_default().to_string();
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(host.clone(), NS);
    pods.delete(&leader, &Default::default()).await?;
    let (code, stdout, stderr) = orchestrator(&kubeconfig, &["watch", &name]).await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let copy = e2e::volume_dir(&host, "shop-prod", "data").await?;
    assert_eq!(
        std::fs::read(copy.join("big.bin"))?,
        std::fs::read(source_dir.join("big.bin"))?
    );
    let now = leases
        .get("mover-controller")
        .await?
        .spec
        .context("lease")?;
    assert!(
        now.holder_identity
            .as_deref()
            .is_some_and(|h| !h.starts_with(&leader)),
        "{now:?}"
    );

    // `kubectl get` shows each resource's columns.
    for (resource, columns) in [
        ("migrationclusters", "READY"),
        ("migrationplans", "SOURCE"),
        ("migrations", "STEP"),
    ] {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--context", "destination", "-n", NS, "get", resource])
            .output()
            .await?;
        let table = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && table.contains(columns),
            "{table}"
        );
    }
    Ok(())
}
