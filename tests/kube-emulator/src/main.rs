//! `kube-emulator up`: starts an emulated source and destination cluster
//! (HTTPS API servers with RBAC), writes a kubeconfig for them, prints it,
//! and runs until interrupted.
//!
//!
//! Interrupted means Ctrl-C (SIGINT), SIGTERM (`kill`, `timeout`, service
//! managers) or SIGHUP (the terminal closing): each stops the clusters
//! through their `Drop`, which removes every Docker container and network
//! they made. Left to their default handling, SIGTERM and SIGHUP would end
//! the process on the spot and leave the pods' containers and both
//! networks behind.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_emulator::testing::LoopbackRegistry;
use kube_emulator::ClusterPair;

/// The name OpenShift's pods and ImageStreams use for the cluster's own
/// registry.
const INTERNAL_REGISTRY: &str = "image-registry.openshift-image-registry.svc:5000";

#[derive(Parser)]
#[command(version, about = "Emulated Kubernetes/OpenShift clusters for tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the `source` and `destination` clusters.
    Up {
        /// Where the clusters keep PV directories, pod files and the shared
        /// Velero bucket.
        #[arg(long, default_value = "/tmp/kube-emulator")]
        state: PathBuf,
        /// Where to write the kubeconfig: contexts `source` and
        /// `destination` as `admin` (in `system:masters`), and
        /// `source-developer` and `destination-developer` as `developer`
        /// (no rights until a role is bound); the clusters' CAs included.
        #[arg(long, default_value = "/tmp/kube-emulator/kubeconfig")]
        kubeconfig: PathBuf,
        /// Run without Docker: API servers, PVC binder and Velero only.
        #[arg(long)]
        no_docker: bool,
        /// Give each cluster an internal registry: a docker-registry on
        /// loopback that its nodes pull `image-registry.openshift-image-registry.svc:5000/...`
        /// images from, as OpenShift's nodes reach their cluster's registry.
        /// Also builds the busybox image pods can run (`kube-emu-busybox:test`).
        #[arg(long)]
        registries: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Up {
        state,
        kubeconfig,
        no_docker,
        registries,
    } = Cli::parse().command;
    // Listening before anything is created: a signal that arrives while the
    // clusters start is kept and acted on as soon as they are up.
    let stop = stop_requested()?;
    let pair = ClusterPair::start(&state, !no_docker).await?;
    let config = pair.kubeconfig();
    std::fs::write(&kubeconfig, &config)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    println!("{config}");
    let mut running = Vec::new();
    if registries {
        let image = kube_emulator::testing::busybox_image().await?;
        for cluster in [&pair.source, &pair.destination] {
            let registry = LoopbackRegistry::start()?;
            cluster
                .context
                .set_registry_mirror(INTERNAL_REGISTRY, &registry.address);
            eprintln!(
                "kube-emulator: the {} cluster's internal registry {INTERNAL_REGISTRY} is http://{}",
                cluster.name, registry.address
            );
            running.push(registry);
        }
        eprintln!("kube-emulator: pods can run the image {image}");
    }
    eprintln!(
        "kube-emulator: clusters up; export KUBECONFIG={} (Ctrl-C stops them)",
        kubeconfig.display()
    );
    stop.await;
    eprintln!("kube-emulator: stopping the clusters");
    drop(running);
    drop(pair);
    Ok(())
}

/// Resolves on the first SIGINT, SIGTERM or SIGHUP received from now on.
fn stop_requested() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind| {
        signal(kind).with_context(|| format!("listening for signal {}", kind.as_raw_value()))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let mut hangup = listen(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
    })
}
