//! Starting and stopping emulated clusters, and who their clients are:
//! the kubeconfig's `admin` (in `system:masters`) and `developer` (no
//! rights until a test binds some), the cluster's own components as
//! `system:kube-controller-manager`, Velero as its ServiceAccount
//! (`identity`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::context::{ClusterContext, InCluster, PodStreams, Shared};
use crate::policy::{Flavour, Policy};
use crate::{api, binder, controllers, docker, kubelet, router, velero};

mod apiserver;
mod identity;

pub use identity::config as client_config;

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

/// The user of the kubeconfig's `<cluster>` contexts (in `system:masters`).
pub const ADMIN: &str = "admin";
/// The user of the kubeconfig's `<cluster>-developer` contexts: no
/// permissions beyond discovery and self reviews until a test binds a role.
pub const DEVELOPER: &str = "developer";

/// How a client proves who it is to a cluster's API server.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A client certificate of the cluster's CA (CommonName the user,
    /// Organizations the groups).
    Certificate(api::KeyPairPem),
    /// A bearer token ([`Cluster::token_for`], or a ServiceAccount token
    /// from a TokenRequest).
    Token(String),
    /// None: the request is `system:anonymous`.
    Anonymous,
}

/// One running emulated cluster. Dropping it stops its tasks and removes
/// its Docker containers and network, and detaches the loop devices of
/// its Block volumes.
pub struct Cluster {
    pub name: String,
    /// `https://127.0.0.1:PORT` of the API server, whose certificate the
    /// cluster's CA signed ([`Cluster::ca_pem`]).
    pub api_url: String,
    /// A client for the API server as the cluster's administrator (the
    /// kubeconfig's `admin`, in `system:masters`).
    pub client: kube::Client,
    /// What the cluster's own components share; their client
    /// authenticates as `system:kube-controller-manager`.
    pub context: Arc<ClusterContext>,
    authenticator: Arc<api::Authenticator>,
    /// The kubeconfig users' certificates.
    admin: api::KeyPairPem,
    developer: api::KeyPairPem,
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

    /// A kubeconfig with the contexts `source` and `destination` (as
    /// `admin`, `source` current) and `source-developer` and
    /// `destination-developer` (as `developer`), trusting each cluster's CA.
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
        let api_url = format!("https://{}", listener.local_addr()?);
        let mut listeners = vec![listener];
        if options.docker {
            listeners.push(apiserver::bind_for_pods(router_ip).await?);
        }
        let pods_address = listeners.last().context("a listener")?.local_addr()?;
        let apps_domain = format!("apps.{}.emu.test", options.name);
        let authority = Arc::new(api::Authority::new(&options.name)?.serving_also(router_ip));
        let authenticator = Arc::new(api::Authenticator::new(authority.clone(), shared.clone()));
        let admin = authority.client(ADMIN, &[api::MASTERS])?;
        let developer = authority.client(DEVELOPER, &[])?;
        let as_admin = Credentials::Certificate(admin.clone());
        let client = kube::Client::try_from(client_config(&api_url, &authority, &as_admin)?)?;
        let as_components =
            Credentials::Certificate(authority.client(api::CONTROLLER_MANAGER, &[])?);
        let components = client_config(&api_url, &authority, &as_components)?;
        let context = |client: kube::Client| {
            Arc::new(ClusterContext {
                name: options.name.clone(),
                client,
                state_dir: cluster_dir.clone(),
                network: network.clone(),
                router_ip,
                apps_domain: apps_domain.clone(),
                policy: options.policy.clone(),
                api_server: InCluster {
                    address: pods_address,
                    ca_pem: authority.ca_pem().to_string(),
                },
                shared: shared.clone(),
            })
        };
        let components_context = context(kube::Client::try_from(components.clone())?);

        let mut tasks = JoinSet::new();
        let logs: Option<Arc<dyn PodStreams>> = if options.docker {
            Some(kubelet::log_source(components_context.clone()))
        } else {
            None
        };
        let faults = api::Faults::default();
        tasks.spawn(supervise(
            "api server",
            api::serve(
                listeners,
                logs,
                options.policy.clone(),
                authenticator.clone(),
                faults.clone(),
            ),
        ));
        apiserver::publish_endpoints(&client, pods_address)
            .await
            .context("publishing the kubernetes Endpoints")?;
        let velero_token = identity::install_velero_account(&client, &velero.namespace)
            .await
            .context("installing Velero's ServiceAccount")?;
        let as_velero = Credentials::Token(velero_token);
        if options.policy.flavour == Flavour::OpenShift {
            identity::install_ingress_config(&client, &apps_domain)
                .await
                .context("installing the cluster's ingress configuration")?;
        }
        let velero_context = context(kube::Client::try_from(client_config(
            &api_url, &authority, &as_velero,
        )?)?);
        let context = components_context;
        tasks.spawn(supervise("pvc binder", binder::run(context.clone())));
        tasks.spawn(supervise(
            "velero",
            velero::run(velero_context, velero.clone()),
        ));
        tasks.spawn(supervise(
            "controllers",
            controllers::run_apart(context.clone(), components),
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
            authenticator,
            admin,
            developer,
            faults,
            tasks,
        })
    }

    /// The cluster's CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.authenticator.authority().ca_pem()
    }

    /// A new bearer token authenticating as `user` in `groups` (and
    /// `system:authenticated`) for as long as the cluster runs, as a line
    /// of the API server's `--token-auth-file` would.
    pub fn token_for(&self, user: &str, groups: &[&str]) -> String {
        self.authenticator.token_for(user, groups)
    }

    /// A client certificate of the cluster's CA for `user` in `groups`.
    pub fn certificate_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<api::KeyPairPem> {
        self.authenticator.authority().client(user, groups)
    }

    /// A client of the API server that trusts the cluster's CA and
    /// authenticates with `credentials`.
    pub fn client_with(&self, credentials: &Credentials) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config_with(credentials)?)?)
    }

    /// The configuration of [`Cluster::client_with`], for tests that add
    /// to it (impersonation, timeouts).
    pub fn config_with(&self, credentials: &Credentials) -> anyhow::Result<kube::Config> {
        client_config(&self.api_url, self.authenticator.authority(), credentials)
    }

    /// A kubeconfig for this cluster alone: context `<name>` as `admin`
    /// (current) and `<name>-developer` as `developer`.
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
            // Only now are the loop devices of Block volumes unused.
            kubelet::detach_loop_devices(&self.context.state_dir);
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
    let entries: Vec<identity::KubeconfigCluster<'_>> = clusters
        .iter()
        .map(|cluster| identity::KubeconfigCluster {
            name: &cluster.name,
            server: &cluster.api_url,
            ca_pem: cluster.ca_pem(),
            users: vec![("", &cluster.admin), ("-developer", &cluster.developer)],
        })
        .collect();
    identity::kubeconfig(&entries)
}
