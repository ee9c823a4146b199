//! Stopping emulated clusters leaves nothing behind in Docker: neither
//! `kube-emulator up` stopped by a signal (the real binary, as a developer
//! or a CI job stops it) nor a `ClusterPair` dropped by a test.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;
use kube_emulator::docker::{self, INSTANCE_LABEL};
use kube_emulator::testing::{busybox_image, wait_for, WAIT_LIMIT};
use kube_emulator::ClusterPair;
use serde_json::json;

/// Starts a busybox pod that sleeps in `client`'s cluster and waits until
/// it runs.
async fn sleeping_pod(client: &kube::Client) -> anyhow::Result<()> {
    let image = busybox_image().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({
        "metadata": { "name": "sleeper" },
        "spec": { "containers": [{ "name": "main", "image": image, "command": ["sleep", "3600"] }] },
    });
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    wait_for(&pods, "sleeper", "the pod to run", |pod: &Pod| {
        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await?;
    Ok(())
}

/// The Docker containers and networks labelled with emulator instance
/// `instance`, one per line.
async fn docker_objects(instance: &str) -> anyhow::Result<String> {
    let filter = format!("label={INSTANCE_LABEL}={instance}");
    let containers = docker::docker(["ps", "-a", "--format", "{{.Names}}", "--filter", &filter]);
    let networks = docker::docker([
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &filter,
    ]);
    Ok(format!("{}{}", containers.await?, networks.await?))
}

#[tokio::test]
async fn dropping_a_pair_removes_its_pods_containers_and_both_networks() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let pair = ClusterPair::start(state.path(), true).await?;
    sleeping_pod(&pair.source.client).await?;
    sleeping_pod(&pair.destination.client).await?;
    let instance = pair.shared.instance.clone();
    let before = docker_objects(&instance).await?;
    assert_eq!(
        before.lines().count(),
        4,
        "two containers, two networks: {before}"
    );

    drop(pair);
    assert_eq!(docker_objects(&instance).await?, "", "left behind");
    Ok(())
}

#[tokio::test]
async fn up_stopped_by_sigterm_removes_everything_it_made() -> anyhow::Result<()> {
    stopping_up_removes_everything("TERM").await
}

#[tokio::test]
async fn up_stopped_by_ctrl_c_removes_everything_it_made() -> anyhow::Result<()> {
    stopping_up_removes_everything("INT").await
}

/// Runs `kube-emulator up`, runs a pod in its source cluster, sends it
/// `signal` and checks that it exits successfully, having removed its
/// containers and networks.
async fn stopping_up_removes_everything(signal: &str) -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let kubeconfig = state.path().join("kubeconfig");
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .arg("up")
        .arg("--state")
        .arg(state.path().join("clusters"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting kube-emulator up")?;
    let pid = up.id().context("the emulator's pid")?;
    let client = tokio::time::timeout(WAIT_LIMIT, source_client(&kubeconfig))
        .await
        .context("the emulator wrote no kubeconfig")??;
    sleeping_pod(&client).await?;
    // The kubelet reports the emulator instance as the nodes' boot id.
    let node = Api::<Node>::all(client).get("source-node-1").await?;
    let instance = node
        .status
        .and_then(|s| s.node_info)
        .map(|info| info.boot_id)
        .context("the node's boot id")?;
    assert_eq!(docker_objects(&instance).await?.lines().count(), 3);

    let sent = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await?;
    assert!(sent.success(), "kill -{signal} {pid} failed");
    let exit = tokio::time::timeout(WAIT_LIMIT, up.wait())
        .await
        .context("the emulator did not stop")??;
    assert!(exit.success(), "the emulator exited with {exit}");
    assert_eq!(docker_objects(&instance).await?, "", "left behind");
    Ok(())
}

/// A client for the `source` context of the kubeconfig the emulator
/// writes once its clusters are up.
async fn source_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    loop {
        if let Ok(config) = Kubeconfig::read_from(kubeconfig) {
            let options = KubeConfigOptions {
                context: Some("source".into()),
                ..KubeConfigOptions::default()
            };
            let config = kube::Config::from_custom_kubeconfig(config, &options).await?;
            return Ok(kube::Client::try_from(config)?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
