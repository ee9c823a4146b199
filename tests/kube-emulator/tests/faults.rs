//! Injected API faults seen by real clients: 429s with `Retry-After`, 500s
//! and 503s with their `Status` bodies, watches and log follows cut
//! mid-stream, and a restart window after which the cluster carries on
//! with its resourceVersions. No Docker: the cluster's API server alone
//! (HTTPS, its clients authenticating as its administrator).

mod controller_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use controller_support::{eventually, from_json};
use futures_util::stream::BoxStream;
use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt as _;
use kube_emulator::api::{
    Authenticator, Authority, Failure, FaultCounts, Faults, Requests, Span, MASTERS,
};
use kube_emulator::{Cluster, ClusterOptions, Credentials, PodStreams, Shared};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A Docker-less cluster, its faults, an administrator's token and its
/// state directory.
struct FaultyCluster {
    cluster: Cluster,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl FaultyCluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let shared = Arc::new(Shared {
            velero_bucket: dir.path().join("bucket"),
            instance: "faults-test".into(),
            ..Shared::default()
        });
        std::fs::create_dir_all(&shared.velero_bucket).expect("bucket directory");
        let cluster = Cluster::start(&ClusterOptions::new("faults", false), dir.path(), shared)
            .await
            .expect("starting the emulated cluster");
        let admin_token = cluster.token_for("admin", &[MASTERS]);
        Self {
            cluster,
            admin_token,
            _dir: dir,
        }
    }

    fn faults(&self) -> &Faults {
        self.cluster.faults()
    }

    /// The configuration of an administrator's client.
    fn admin_config(&self) -> kube::Config {
        self.cluster
            .config_with(&Credentials::Token(self.admin_token.clone()))
            .expect("a client configuration")
    }

    /// A client that retries nothing, so that every fault reaches the test.
    fn raw_client(&self) -> kube::Client {
        no_retry_client(self.admin_config())
    }

    /// A client as kube-rs makes it by default: it retries 429s and 503s,
    /// honouring `Retry-After`.
    fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }
}

/// A client of `config` that retries nothing.
fn no_retry_client(mut config: kube::Config) -> kube::Client {
    config.default_retry = false;
    kube::Client::try_from(config).expect("a kube client")
}

async fn namespace(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": name } })),
        )
        .await
        .expect("creating a namespace");
}

async fn config_map(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    api.create(
        &PostParams::default(),
        &from_json(json!({ "metadata": { "name": name }, "data": { "k": "v" } })),
    )
    .await
    .unwrap_or_else(|error| panic!("creating config map {name}: {error}"))
}

fn resource_version(object: &impl kube::Resource) -> u64 {
    object
        .resource_version()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

fn api_status<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Starts a raw watch of `path` (a collection) from `resource_version`.
async fn raw_watch(
    client: &kube::Client,
    path: &str,
    resource_version: &str,
) -> kube::client::Body {
    let uri = format!("{path}?watch=true&resourceVersion={resource_version}");
    let request = http::Request::get(uri)
        .body(kube::client::Body::from(Vec::new()))
        .expect("a request");
    let response = client.send(request).await.expect("the watch starts");
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// Reads `body` to its end: whether it broke off (an error reading it)
/// rather than ending cleanly. kube-rs's watch streams hide the difference
/// (they end either way), so the tests read the HTTP body itself.
async fn broke_off(mut body: kube::client::Body) -> bool {
    use http_body_util::BodyExt as _;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), body.frame()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) => return true,
            Ok(None) => return false,
            Err(_) => panic!("the stream neither broke nor ended"),
        }
    }
}

/// A TLS connection to `cluster`'s API server trusting its CA, for raw
/// HTTP/1.1 on the wire.
async fn tls_connect(cluster: &Cluster) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cluster.ca_pem().as_bytes()).expect("the CA"))
        .expect("trusting the CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let address = cluster.api_url.trim_start_matches("https://");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the listener still accepts");
    let name = ServerName::try_from("127.0.0.1").expect("a server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .expect("the TLS handshake")
}

/// The raw HTTP/1.1 answer to an administrator's `GET /version`, read
/// from the TLS connection until it closes.
async fn raw_version(test: &FaultyCluster) -> String {
    let mut connection = tls_connect(&test.cluster).await;
    let request = format!(
        "GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        test.admin_token
    );
    connection
        .write_all(request.as_bytes())
        .await
        .expect("sending a request");
    let mut answer = Vec::new();
    // A connection closed without TLS close_notify is an error, after
    // whatever was read.
    let _ = tokio::time::timeout(Duration::from_secs(60), connection.read_to_end(&mut answer))
        .await
        .expect("the connection closes");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn too_many_requests_carry_retry_after_and_a_status_and_kube_clients_retry_them() {
    let test = FaultyCluster::start().await;
    let faults = test.faults();
    faults.fail(
        Requests::all().path_containing("/configmaps"),
        Failure::TooManyRequests {
            retry_after_seconds: 1,
        },
        Span::Requests(3),
    );

    let request = http::Request::get("/api/v1/namespaces/default/configmaps")
        .body(Vec::new())
        .expect("a request");
    let response = test
        .raw_client()
        .send(request.map(kube::client::Body::from))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .expect("the body");
    let status: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(status["details"]["retryAfterSeconds"], 1);

    // Other requests are served meanwhile.
    Api::<Namespace>::all(test.raw_client())
        .get("default")
        .await
        .expect("namespaces are not throttled");

    // kube-rs retries the two 429s left, waiting as told, and succeeds.
    let config_maps: Api<ConfigMap> = Api::namespaced(test.client(), "default");
    config_maps
        .list(&Default::default())
        .await
        .expect("the list succeeds after the retries");
    assert_eq!(
        faults.counts(),
        FaultCounts {
            too_many_requests: 3,
            ..FaultCounts::default()
        }
    );
}

#[tokio::test]
async fn internal_and_unavailable_errors_are_status_errors_for_the_requests_matched() {
    let test = FaultyCluster::start().await;
    namespace(&test.raw_client(), "app").await;
    let faults = test.faults();
    faults.fail(
        Requests::all().resource("configmaps").method(Method::POST),
        Failure::InternalError,
        Span::Requests(1),
    );
    faults.fail(
        Requests::all().user_agent("faults-test-agent"),
        Failure::ServiceUnavailable,
        Span::For(Duration::from_secs(3600)),
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(test.raw_client(), "app");

    let failed = api_status(
        config_maps
            .create(
                &PostParams::default(),
                &from_json(json!({ "metadata": { "name": "a" } })),
            )
            .await,
    );
    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (500, "InternalError")
    );
    assert!(
        failed.message.starts_with("Internal error occurred: "),
        "{failed:?}"
    );
    // The order was for one request: the next create succeeds, and reads
    // were never affected.
    config_map(&config_maps, "a").await;
    config_maps.get("a").await.expect("reading the config map");

    let mut config = test.admin_config();
    config.headers = vec![(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("faults-test-agent/1.0"),
    )];
    let agent: Api<ConfigMap> = Api::namespaced(no_retry_client(config), "app");
    for _ in 0..2 {
        let unavailable = api_status(agent.get("a").await);
        assert_eq!(
            (unavailable.code, unavailable.reason.as_str()),
            (503, "ServiceUnavailable")
        );
    }
    config_maps
        .get("a")
        .await
        .expect("other user agents are served");

    faults.clear();
    agent
        .get("a")
        .await
        .expect("served once the faults are cleared");
    assert_eq!(
        faults.counts(),
        FaultCounts {
            internal_errors: 1,
            service_unavailable: 2,
            ..FaultCounts::default()
        }
    );
}

#[tokio::test]
async fn a_cut_watch_breaks_off_and_a_watcher_resumes_where_it_was() {
    let test = FaultyCluster::start().await;
    namespace(&test.raw_client(), "app").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(test.raw_client(), "app");
    let mut events = watcher(config_maps.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("a watch event in time")
            .expect("the watcher goes on")
    };
    while !matches!(next().await, Ok(watcher::Event::InitDone)) {}
    let before = config_map(&config_maps, "before").await;
    assert!(matches!(next().await, Ok(watcher::Event::Apply(cm)) if cm.name_any() == "before"));
    let raw = raw_watch(
        &test.raw_client(),
        "/api/v1/namespaces/app/configmaps",
        &before.resource_version().expect("an rv"),
    )
    .await;

    test.faults().cut_streams();
    assert!(broke_off(raw).await, "the raw watch ended cleanly");
    config_map(&config_maps, "after").await;
    // The watcher resumed from its last resourceVersion: no relist
    // (Init...), just the change made since.
    loop {
        match next().await {
            Err(_) => continue,
            Ok(watcher::Event::Apply(cm)) => {
                assert_eq!(cm.name_any(), "after");
                break;
            }
            Ok(other) => panic!("expected the watch to resume with `after`, got {other:?}"),
        }
    }
    assert!(test.faults().counts().streams_cut >= 2);
}

#[tokio::test]
async fn streams_are_cut_every_period_while_asked() {
    let test = FaultyCluster::start().await;
    let faults = test.faults();
    faults.cut_streams_every(Duration::from_millis(300), Duration::from_secs(3600));
    for round in 0..2 {
        let watch = raw_watch(&test.raw_client(), "/api/v1/namespaces", "0").await;
        assert!(
            broke_off(watch).await,
            "round {round}: the watch ended cleanly"
        );
    }
    faults.clear();
    assert!(faults.counts().streams_cut >= 2);
}

/// A kubelet stand-in whose logs are one line, then nothing until the
/// stream is dropped.
struct EndlessLogs;

impl PodStreams for EndlessLogs {
    fn logs(
        &self,
        _namespace: &str,
        _pod: &str,
        _container: Option<&str>,
        _follow: bool,
        _tail_lines: Option<u64>,
    ) -> futures_util::future::BoxFuture<
        'static,
        anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>>,
    > {
        Box::pin(async {
            let line = futures_util::stream::once(async { Ok(Bytes::from("started\n")) });
            Ok(line.chain(futures_util::stream::pending()).boxed())
        })
    }
}

#[tokio::test]
async fn a_cut_log_follow_breaks_instead_of_ending() {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("binding the API server");
    let url = format!("https://{}", listener.local_addr().expect("an address"));
    let authenticator = Arc::new(Authenticator::new(
        Arc::new(Authority::new("faults").expect("a CA")),
        Arc::new(Shared::default()),
    ));
    let admin = Credentials::Token(authenticator.token_for("admin", &[MASTERS]));
    let faults = Faults::default();
    tokio::spawn(kube_emulator::api::serve(
        vec![listener],
        Some(Arc::new(EndlessLogs)),
        kube_emulator::Policy::default(),
        authenticator.clone(),
        faults.clone(),
    ));
    let config = kube_emulator::cluster::client_config(&url, authenticator.authority(), &admin)
        .expect("a client configuration");
    let pods: Api<Pod> = Api::namespaced(no_retry_client(config), "default");
    pods.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": { "name": "talker" },
            "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
        })),
    )
    .await
    .expect("creating the pod");
    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods
        .log_stream("talker", &params)
        .await
        .expect("following the log")
        .lines();
    let first = lines.next().await.expect("a line").expect("readable");
    assert_eq!(first, "started");
    faults.cut_streams();
    match tokio::time::timeout(Duration::from_secs(60), lines.next()).await {
        Ok(Some(Err(_))) => {}
        other => panic!("expected the log stream to break, got {other:?}"),
    }
    assert_eq!(faults.counts().streams_cut, 1);
}

#[tokio::test]
async fn during_a_restart_connections_drop_and_afterwards_resource_versions_continue() {
    let test = FaultyCluster::start().await;
    namespace(&test.raw_client(), "app").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(test.raw_client(), "app");
    let before = config_map(&config_maps, "before").await;
    let watch = raw_watch(
        &test.raw_client(),
        "/api/v1/namespaces/app/configmaps",
        &before.resource_version().expect("an rv"),
    )
    .await;

    // The same raw request is answered before the restart.
    let answer = raw_version(&test).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let faults = test.faults();
    faults.restart(Duration::from_secs(2));
    assert!(faults.is_restarting());
    assert!(broke_off(watch).await, "the watch ended cleanly");
    // Whatever a client asks during the restart, its connection is
    // dropped: no HTTP answer at all, so no API error either.
    match config_maps.get("before").await {
        Err(kube::Error::Api(status)) => panic!("the restarting server answered {status:?}"),
        Err(_) => {}
        Ok(found) => panic!("the restarting server served {found:?}"),
    }
    // On the wire: the TLS handshake succeeds (the listener still accepts),
    // then the connection closes without a byte of HTTP answer.
    assert_eq!(raw_version(&test).await, "");
    assert!(faults.counts().connections_dropped >= 2);

    eventually("the server to be back", || async {
        config_maps
            .get("before")
            .await
            .map_err(|error| error.to_string())
    })
    .await;
    assert!(!faults.is_restarting());
    let after = config_map(&config_maps, "after").await;
    assert!(resource_version(&after) > resource_version(&before));
    // A watch from before the restart resumes where it was.
    let mut resumed = config_maps
        .watch(
            &Default::default(),
            &before.resource_version().expect("an rv"),
        )
        .await
        .expect("resuming the watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(60), resumed.next()).await {
        Ok(Some(Ok(kube::api::WatchEvent::Added(cm)))) => assert_eq!(cm.name_any(), "after"),
        other => panic!("expected `after` to be added, got {other:?}"),
    }
}
