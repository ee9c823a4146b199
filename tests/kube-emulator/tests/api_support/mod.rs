//! What the API conformance tests share: a cluster per test, a server with
//! a given log source or history length (and an administrator's client of
//! it), a TCP proxy that can cut the connections going through it, and
//! polling for eventual state.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_emulator::api::{Authenticator, Authority};
use kube_emulator::{Cluster, ClusterOptions, Credentials, PodStreams, Shared};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running emulated cluster (no Docker) and its state directory.
pub struct TestCluster {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }
}

pub async fn cluster() -> TestCluster {
    let dir = tempfile::tempdir().expect("temporary directory");
    let shared = Arc::new(Shared {
        velero_bucket: dir.path().join("bucket"),
        instance: "api-test".to_string(),
        ..Shared::default()
    });
    std::fs::create_dir_all(&shared.velero_bucket).expect("bucket directory");
    let options = ClusterOptions::new("api", false);
    let cluster = Cluster::start(&options, dir.path(), shared)
        .await
        .expect("starting the emulated cluster");
    TestCluster { cluster, dir }
}

/// An API server alone (HTTPS, with a CA of its own), and how to be its
/// administrator.
pub struct Server {
    pub url: String,
    authenticator: Arc<Authenticator>,
    admin_token: String,
}

impl Server {
    /// A client as an administrator of the server, reaching it at `url`
    /// (its own, or a proxy's in front of it).
    pub fn client(&self, url: &str) -> kube::Client {
        let credentials = Credentials::Token(self.admin_token.clone());
        let config = kube_emulator::cluster::client_config(
            url,
            self.authenticator.authority(),
            &credentials,
        )
        .expect("client configuration");
        kube::Client::try_from(config).expect("kube client")
    }
}

/// An API server alone, with `logs` as its pod log source and a watch
/// history of `history` events. It stops with the test's runtime.
pub async fn server(logs: Option<Arc<dyn PodStreams>>, history: usize) -> Server {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("binding the API server");
    let url = format!("https://{}", listener.local_addr().expect("local address"));
    let authority = Authority::new("bare").expect("a CA");
    let authenticator = Arc::new(Authenticator::new(
        Arc::new(authority),
        Arc::new(Shared::default()),
    ));
    let admin_token = authenticator.token_for("admin", &[kube_emulator::api::MASTERS]);
    tokio::spawn(kube_emulator::api::serve_with_history(
        vec![listener],
        logs,
        kube_emulator::Policy::default(),
        authenticator.clone(),
        kube_emulator::api::Faults::default(),
        history,
    ));
    Server {
        url,
        authenticator,
        admin_token,
    }
}

/// A TCP proxy in front of a server whose connections the test can cut
/// (as a network failure or an API server restart would), refusing new
/// ones until resumed.
pub struct CutProxy {
    pub url: String,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CutProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("https://").to_string();
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("binding the proxy");
        let url = format!("https://{}", listener.local_addr().expect("local address"));
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accept_open, accept_connections) = (open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_connections
                    .lock()
                    .expect("proxy connections")
                    .push(task.abort_handle());
            }
        });
        Self {
            url,
            open,
            connections,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self
            .connections
            .lock()
            .expect("proxy connections")
            .drain(..)
        {
            connection.abort();
        }
    }

    pub fn resume(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what`
/// if that takes unreasonably long (a hang, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `ErrorResponse` of a failed kube call, or a test failure naming
/// the unexpected outcome.
pub fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
