//! `kube-emulator up`: starts an emulated source and destination cluster,
//! writes a kubeconfig for them, prints it, and runs until interrupted.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_emulator::ClusterPair;

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
        /// Where to write the kubeconfig (contexts `source`, `destination`).
        #[arg(long, default_value = "/tmp/kube-emulator/kubeconfig")]
        kubeconfig: PathBuf,
        /// Run without Docker: API servers, PVC binder and Velero only.
        #[arg(long)]
        no_docker: bool,
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
    } = Cli::parse().command;
    let pair = ClusterPair::start(&state, !no_docker).await?;
    let config = pair.kubeconfig();
    std::fs::write(&kubeconfig, &config)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    println!("{config}");
    eprintln!(
        "kube-emulator: clusters up; export KUBECONFIG={} (Ctrl-C stops them)",
        kubeconfig.display()
    );
    tokio::signal::ctrl_c().await?;
    drop(pair);
    Ok(())
}
