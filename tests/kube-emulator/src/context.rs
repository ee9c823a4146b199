//! What the pieces of one emulated cluster share, and what the two clusters
//! of a pair share with each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;

/// Shared by both clusters of a pair (one emulator process).
#[derive(Default)]
pub struct Shared {
    /// Host names that resolve inside pods: admitted Route hosts (and the
    /// routers' own names) mapped to the router address that serves them.
    /// The router inserts a Route's host when it admits it; the kubelet adds
    /// every entry to a container's `/etc/hosts` (`docker run --add-host`)
    /// when it starts the container, as cluster DNS would resolve them.
    pub dns: Mutex<HashMap<String, IpAddr>>,
    /// The object-storage "bucket" both clusters' Velero use.
    pub velero_bucket: PathBuf,
    /// Label put on every Docker object (containers, networks) this emulator
    /// creates, `kube-emu.instance=<id>`, so they can be removed at the end.
    pub instance: String,
    /// Per cluster name: registry hosts mapped to the loopback registry
    /// that stands in for them (see [`ClusterContext::set_registry_mirror`]).
    pub registry_mirrors: Mutex<HashMap<String, HashMap<String, String>>>,
    /// The pair's clock, as the time-driven controllers (CronJobs) read it.
    pub clock: Clock,
}

/// The time as the controllers see it: the real time plus an offset that
/// tests advance, so that a schedule due in minutes fires now without the
/// test waiting for it (both clusters of a pair share one clock, as two
/// real clusters share the time of day).
#[derive(Default)]
pub struct Clock {
    offset_seconds: std::sync::atomic::AtomicI64,
}

impl Clock {
    pub fn now(&self) -> k8s_openapi::jiff::Timestamp {
        let offset = self
            .offset_seconds
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = k8s_openapi::jiff::Timestamp::now();
        now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(offset))
            .unwrap_or(now)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_seconds
            .fetch_add(seconds, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything a controller of one cluster needs.
pub struct ClusterContext {
    /// `source` or `destination` (or any name a test gives).
    pub name: String,
    /// A client for this cluster's own API server.
    pub client: kube::Client,
    /// This cluster's private directory: PV host directories under
    /// `volumes/`, per-pod files (Secrets, ConfigMaps, termination logs)
    /// under `pods/`.
    pub state_dir: PathBuf,
    /// The Docker network the cluster's pods run on.
    pub network: String,
    /// The cluster's router address: the gateway IP of its Docker network,
    /// reachable from the host and from pods of both clusters. Routes are
    /// served on port 443 there; NodePort/LoadBalancer Services also bind
    /// there. Node objects report it as their InternalIP.
    pub router_ip: IpAddr,
    /// The domain admitted Route hosts get when a Route names none:
    /// `<route>-<namespace>.<apps_domain>`.
    pub apps_domain: String,
    /// What the cluster enforces.
    pub policy: crate::policy::Policy,
    /// Where the cluster's pods reach its API server, and the CA they
    /// trust it by.
    pub api_server: InCluster,
    pub shared: Arc<Shared>,
}

/// What a pod needs to reach its cluster's API server, as a real pod
/// reaches it through the `default/kubernetes` Service.
#[derive(Clone, Debug)]
pub struct InCluster {
    /// The API server's address on the cluster's network: `router_ip:6443`
    /// (the Service IP `10.96.0.1` routes nowhere in the emulator, so the
    /// pods' `KUBERNETES_SERVICE_HOST`/`_PORT` name this address, as the
    /// `kubernetes` Endpoints do).
    pub address: SocketAddr,
    /// The cluster's CA certificate, PEM (what `kube-root-ca.crt` holds).
    pub ca_pem: String,
}

impl ClusterContext {
    /// Makes the kubelet pull images named with registry `host` (as in
    /// `host/ns/app@sha256:...`) from `mirror` instead (a loopback
    /// registry, `127.0.0.1:PORT`), as a cluster's nodes reach its
    /// internal registry: the pulled image is tagged with the name the pod
    /// used, so the container runs what the pod asked for.
    pub fn set_registry_mirror(&self, host: &str, mirror: &str) {
        self.shared
            .registry_mirrors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(self.name.clone())
            .or_default()
            .insert(host.to_string(), mirror.to_string());
    }

    /// The loopback registry standing in for registry `host`, if any.
    pub fn registry_mirror(&self, host: &str) -> Option<String> {
        self.shared
            .registry_mirrors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&self.name)?
            .get(host)
            .cloned()
    }
}

/// The kubelet's side of the pods' streaming subresources: the API server
/// asks it for a container's log (`pods/{name}/log`) and to run a command
/// in a container (`pods/{name}/exec`), as the real API server proxies
/// both to the node's kubelet.
pub trait PodStreams: Send + Sync {
    /// The log of `container` (the pod's only container when `None`) as a
    /// byte stream; with `follow` the stream stays open until the container
    /// ends.
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        follow: bool,
        tail_lines: Option<u64>,
    ) -> futures_util::future::BoxFuture<
        'static,
        anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>>,
    >;

    /// Starts `exec.command` in a running container of the pod, with its
    /// stdout and stderr piped and its stdin piped when `exec.stdin` asks
    /// for it (null otherwise). The process's exit code is the command's.
    /// A kubelet that runs no containers says so.
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        exec: Exec,
    ) -> futures_util::future::BoxFuture<'static, anyhow::Result<tokio::process::Child>> {
        let _ = exec;
        let message = format!("no kubelet runs containers for pod {namespace}/{pod}");
        Box::pin(async move { Err(anyhow::anyhow!(message)) })
    }
}

/// What `pods/{name}/exec` asks the kubelet to run.
#[derive(Clone, Debug)]
pub struct Exec {
    pub container: String,
    /// The command and its arguments, run without a shell.
    pub command: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
}
