//! The host of the controller tests (`controller.rs`, `console.rs`): a
//! Docker-less emulated pair whose destination hosts the real
//! `orchestrator controller` process, serving its metrics and its console
//! on free loopback ports, with the source and the host registered as
//! MigrationClusters.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube_emulator::{ClusterPair, PairOptions};
use orchestrator::controller::cluster::MigrationCluster;
use orchestrator::controller::plan::MigrationPlan;
use serde_json::{json, Value};

pub const NS: &str = "mover-system";

/// A controller process: its metrics address, its console's URL, and
/// whether it said it leads. Killed when dropped.
pub struct Controller {
    pub child: tokio::process::Child,
    pub address: std::net::SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub console: String,
    pub leading: tokio::sync::watch::Receiver<bool>,
}

/// Starts the controller process with the destination as its host,
/// serving its metrics and its console on free loopback ports; its log is
/// passed on to the test's.
pub async fn start_controller(kubeconfig: &Path) -> Controller {
    use tokio::io::AsyncBufReadExt as _;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "destination", "--listen", "127.0.0.1:0"])
        .args(["--console-listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting orchestrator controller");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let (console_tx, console_rx) = tokio::sync::oneshot::channel();
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut address_tx = Some(address_tx);
        let mut console_tx = Some(console_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("controller {}: {line}", std::process::id());
            if let Some(address) = line.strip_prefix("serving /metrics, /healthz and /readyz on ") {
                if let Some(tx) = address_tx.take() {
                    let _ = tx.send(address.parse::<std::net::SocketAddr>().unwrap());
                }
            }
            if let Some(address) = line.strip_prefix("serving the console on ") {
                if let Some(tx) = console_tx.take() {
                    let _ = tx.send(format!("http://{address}"));
                }
            }
            if line == "leading" {
                let _ = leading_tx.send(true);
            }
        }
    });
    let said = |what| format!("the controller never said where it serves {what}");
    let address = tokio::time::timeout(Duration::from_secs(30), address_rx)
        .await
        .unwrap_or_else(|_| panic!("{}", said("metrics")))
        .unwrap();
    let console = tokio::time::timeout(Duration::from_secs(30), console_rx)
        .await
        .unwrap_or_else(|_| panic!("{}", said("the console")))
        .unwrap();
    Controller {
        child,
        address,
        console,
        leading,
    }
}

/// A pair of Docker-less clusters started with `options`, their
/// kubeconfig, and the controller running with the destination as its
/// host, its CRDs served and its namespace made.
pub struct Setup {
    pub pair: ClusterPair,
    pub kubeconfig: std::path::PathBuf,
    pub controller: Controller,
    pub _dir: tempfile::TempDir,
}

pub async fn setup(options: &PairOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start_with(&dir.path().join("state"), options)
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig()).unwrap();
    let host = pair.destination.client.clone();
    create(
        &Api::<Namespace>::all(host.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await;
    let controller = start_controller(&kubeconfig).await;
    // The controller applies its CRDs when it starts.
    let plans: Api<MigrationPlan> = Api::namespaced(host, NS);
    for _ in 0..100 {
        if plans.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Setup {
        pair,
        kubeconfig,
        controller,
        _dir: dir,
    }
}

/// Registers the source (by URL and a token Secret) and the host itself
/// as MigrationClusters `source` and `host`.
pub async fn register_clusters(pair: &ClusterPair) {
    let host = pair.destination.client.clone();
    let clusters: Api<MigrationCluster> = Api::namespaced(host.clone(), NS);
    create(
        &Api::<Secret>::namespaced(host, NS),
        json!({"metadata": {"name": "source-token"},
               "stringData": {"token": pair.source.token_for("migrator", &["system:masters"]),
                              "ca.crt": pair.source.ca_pem()}}),
    )
    .await;
    create(
        &clusters,
        json!({"metadata": {"name": "source"},
               "spec": {"url": pair.source.api_url, "secretRef": {"name": "source-token"}}}),
    )
    .await;
    create(
        &clusters,
        json!({"metadata": {"name": "host"}, "spec": {"isHostCluster": true}}),
    )
    .await;
}

/// Creates `object` with `api`, as the cluster's administrator.
pub async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}
