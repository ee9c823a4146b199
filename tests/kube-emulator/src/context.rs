//! What the pieces of one emulated cluster share, and what the two clusters
//! of a pair share with each other.

use std::collections::HashMap;
use std::net::IpAddr;
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
    pub shared: Arc<Shared>,
}

/// The kubelet's side of `GET .../pods/{name}/log`: the API server asks it
/// for a container's log, as the real API server proxies to the kubelet.
pub trait PodLogs: Send + Sync {
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
}
