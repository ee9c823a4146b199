//! Starting and stopping emulated clusters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::context::{ClusterContext, PodLogs, Shared};
use crate::policy::Policy;
use crate::{api, binder, controllers, docker, kubelet, router, velero};

/// How to start one cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The cluster's name: `source`, `destination`, ...
    pub name: String,
    /// Run the parts that need Docker (kubelet, router, Services). Without
    /// them the cluster is an API server with the PVC binder and Velero,
    /// enough for API conformance tests on a machine without Docker.
    pub docker: bool,
    /// What the cluster enforces (RBAC, admission, scheduling, storage).
    pub policy: Policy,
}

impl ClusterOptions {
    /// A cluster named `name` enforcing the default policy.
    pub fn new(name: &str, docker: bool) -> Self {
        Self {
            name: name.to_string(),
            docker,
            policy: Policy::default(),
        }
    }
}

/// How to start a pair of clusters.
#[derive(Clone, Debug, Default)]
pub struct PairOptions {
    /// Run the parts that need Docker (see [`ClusterOptions::docker`]).
    pub docker: bool,
    pub velero: velero::VeleroOptions,
    pub source: Policy,
    pub destination: Policy,
}

/// One running emulated cluster. Dropping it stops its tasks and removes
/// its Docker containers and network.
pub struct Cluster {
    pub name: String,
    /// `http://127.0.0.1:PORT` of the API server.
    pub api_url: String,
    /// A client for the API server.
    pub client: kube::Client,
    pub context: Arc<ClusterContext>,
    /// The faults injected into this cluster's API server.
    faults: api::Faults,
    tasks: JoinSet<()>,
}

/// A source and a destination cluster sharing one Velero bucket and one
/// DNS table, as two real clusters share object storage and the Internet.
pub struct ClusterPair {
    pub source: Cluster,
    pub destination: Cluster,
    pub state_dir: PathBuf,
    pub shared: Arc<Shared>,
}

impl ClusterPair {
    /// Starts both clusters with their state under `state_dir`.
    pub async fn start(state_dir: &Path, docker: bool) -> anyhow::Result<Self> {
        Self::start_with_velero(state_dir, docker, &velero::VeleroOptions::default()).await
    }

    /// Starts both clusters with Velero installed as `velero` says in each
    /// (its namespace, BSL name, sync period, version).
    pub async fn start_with_velero(
        state_dir: &Path,
        docker: bool,
        velero: &velero::VeleroOptions,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            state_dir,
            &PairOptions {
                docker,
                velero: velero.clone(),
                ..PairOptions::default()
            },
        )
        .await
    }

    /// Starts both clusters as `options` say.
    pub async fn start_with(state_dir: &Path, options: &PairOptions) -> anyhow::Result<Self> {
        let velero = &options.velero;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let state_dir = state_dir.canonicalize()?;
        let shared = Arc::new(Shared {
            velero_bucket: state_dir.join("velero-bucket"),
            instance: instance_id(),
            ..Shared::default()
        });
        std::fs::create_dir_all(&shared.velero_bucket)?;
        let cluster = |name: &str, policy: &Policy| ClusterOptions {
            name: name.to_string(),
            docker: options.docker,
            policy: policy.clone(),
        };
        let source = cluster("source", &options.source);
        let source =
            Cluster::start_with_velero(&source, &state_dir, shared.clone(), velero).await?;
        let destination = cluster("destination", &options.destination);
        let destination =
            Cluster::start_with_velero(&destination, &state_dir, shared.clone(), velero).await?;
        Ok(Self {
            source,
            destination,
            state_dir,
            shared,
        })
    }

    /// A kubeconfig with the contexts `source` and `destination`
    /// (`source` current).
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&[&self.source, &self.destination])
    }
}

impl Cluster {
    /// Starts one cluster whose private state lives in `state_dir/<name>`.
    pub async fn start(
        options: &ClusterOptions,
        state_dir: &Path,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        Self::start_with_velero(
            options,
            state_dir,
            shared,
            &velero::VeleroOptions::default(),
        )
        .await
    }

    /// [`Cluster::start`] with Velero installed as `velero` says.
    pub async fn start_with_velero(
        options: &ClusterOptions,
        state_dir: &Path,
        shared: Arc<Shared>,
        velero: &velero::VeleroOptions,
    ) -> anyhow::Result<Self> {
        let cluster_dir = state_dir.join(&options.name);
        std::fs::create_dir_all(&cluster_dir)
            .with_context(|| format!("creating {}", cluster_dir.display()))?;
        let (network, router_ip) = if options.docker {
            let network = format!("kube-emu-{}-{}", shared.instance, options.name);
            let gateway = docker::create_network(&network, &shared.instance).await?;
            (network, gateway)
        } else {
            (String::new(), IpAddr::V4(Ipv4Addr::LOCALHOST))
        };

        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("binding the API server")?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let client = client_for(&api_url)?;
        let context = Arc::new(ClusterContext {
            name: options.name.clone(),
            client: client.clone(),
            state_dir: cluster_dir,
            network,
            router_ip,
            apps_domain: format!("apps.{}.emu.test", options.name),
            policy: options.policy.clone(),
            shared,
        });

        let mut tasks = JoinSet::new();
        let logs: Option<Arc<dyn PodLogs>> = if options.docker {
            Some(kubelet::log_source(context.clone()))
        } else {
            None
        };
        let faults = api::Faults::default();
        tasks.spawn(supervise(
            "api server",
            api::serve(listener, logs, options.policy.clone(), faults.clone()),
        ));
        tasks.spawn(supervise("pvc binder", binder::run(context.clone())));
        tasks.spawn(supervise(
            "velero",
            velero::run(context.clone(), velero.clone()),
        ));
        tasks.spawn(supervise(
            "controllers",
            controllers::run_apart(context.clone(), api_url.clone()),
        ));
        if options.docker {
            tasks.spawn(supervise("kubelet", kubelet::run(context.clone())));
            tasks.spawn(supervise("router", router::run(context.clone())));
        }
        Ok(Self {
            name: options.name.clone(),
            api_url,
            client,
            context,
            faults,
            tasks,
        })
    }

    /// A kubeconfig with this cluster as its only (and current) context.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&[self])
    }

    /// The faults injected into this cluster's API server: 429s, 500s and
    /// 503s, cut watches and log streams, restarts (see [`api::Faults`]).
    pub fn faults(&self) -> &api::Faults {
        &self.faults
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if !self.context.network.is_empty() {
            docker::remove_cluster_objects(&self.context.shared.instance, &self.context.network);
        }
    }
}

/// Runs a long-lived part of the cluster, logging why it stopped: a part
/// that dies makes the tests that need it fail with this message in their
/// output rather than hang silently.
async fn supervise(
    what: &'static str,
    part: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    if let Err(error) = part.await {
        tracing::error!("kube-emulator {what} stopped: {error:#}");
        eprintln!("kube-emulator {what} stopped: {error:#}");
    }
}

fn client_for(api_url: &str) -> anyhow::Result<kube::Client> {
    let config = kube::Config::new(api_url.parse().context("API server URL")?);
    Ok(kube::Client::try_from(config)?)
}

/// A short id unique to each call in this process, and very likely across
/// processes, used to name and label Docker objects (tests that start
/// single clusters give it to `Shared::instance`).
pub fn instance_id() -> String {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{:x}-{call}", std::process::id(), nanos & 0xfff)
}

fn kubeconfig(clusters: &[&Cluster]) -> String {
    let mut config = String::from("apiVersion: v1\nkind: Config\n");
    config += &format!("current-context: {}\nclusters:\n", clusters[0].name);
    for cluster in clusters {
        config += &format!(
            "- name: {0}\n  cluster:\n    server: {1}\n",
            cluster.name, cluster.api_url
        );
    }
    config += "users:\n";
    for cluster in clusters {
        config += &format!(
            "- name: {0}\n  user:\n    token: emulator-{0}\n",
            cluster.name
        );
    }
    config += "contexts:\n";
    for cluster in clusters {
        config += &format!(
            "- name: {0}\n  context:\n    cluster: {0}\n    user: {0}\n    namespace: default\n",
            cluster.name
        );
    }
    config
}
