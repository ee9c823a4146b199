//! The emulated OpenShift router against a real emulated API server:
//! Route admission and its status, the DNS table, TLS passthrough by SNI to
//! the right backend, LoadBalancer and NodePort Services.
//!
//! The backends are TLS and TCP servers of the test on loopback, standing
//! for pods: the test creates the Pod objects and reports them Running at
//! `127.0.0.1` through `/status`, as the kubelet would. The cluster runs
//! without Docker (so no kubelet competes for the pods), and the router
//! runs on a loopback address of its own, so tests running in parallel
//! each have their own port 443.

mod controller_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use controller_support::{eventually, from_json};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kube_emulator::{Cluster, ClusterContext, ClusterOptions, Shared};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const APPS_DOMAIN: &str = "apps.router.emu.test";
/// How long one client exchange may take before it counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster with the router running on its own loopback address.
struct RouterCluster {
    client: kube::Client,
    ctx: Arc<ClusterContext>,
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl RouterCluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let shared = Arc::new(Shared {
            velero_bucket: dir.path().join("bucket"),
            instance: "router-test".into(),
            ..Shared::default()
        });
        std::fs::create_dir_all(&shared.velero_bucket).expect("bucket directory");
        let options = ClusterOptions::new("router", false);
        let cluster = Cluster::start(&options, dir.path(), shared.clone())
            .await
            .expect("starting the emulated cluster");
        let ctx = Arc::new(ClusterContext {
            name: "router".into(),
            client: cluster.client.clone(),
            state_dir: dir.path().join("router"),
            network: String::new(),
            router_ip: own_loopback_address(),
            apps_domain: APPS_DOMAIN.into(),
            policy: options.policy.clone(),
            api_server: cluster.context.api_server.clone(),
            shared,
        });
        let router_ctx = ctx.clone();
        // Stops with the test's runtime.
        tokio::spawn(async move {
            if let Err(error) = kube_emulator::router::run(router_ctx).await {
                eprintln!("the router stopped: {error:#}");
            }
        });
        Self {
            client: cluster.client.clone(),
            ctx,
            _cluster: cluster,
            _dir: dir,
        }
    }

    fn router_ip(&self) -> IpAddr {
        self.ctx.router_ip
    }

    fn dns(&self, host: &str) -> Option<IpAddr> {
        self.ctx
            .shared
            .dns
            .lock()
            .expect("the DNS table")
            .get(host)
            .copied()
    }

    async fn namespace(&self, name: &str) {
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &from_json(json!({ "metadata": { "name": name } })),
            )
            .await
            .expect("creating a namespace");
    }

    /// A Pod object standing for a server of the test on 127.0.0.1:`port`,
    /// reported Running (and Ready or not) as the kubelet would.
    async fn pod(&self, namespace: &str, name: &str, app: &str, port: u16, ready: bool) {
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let pod = json!({
            "metadata": { "name": name, "labels": { "app": app } },
            "spec": { "containers": [{
                "name": "server",
                "image": "test-server",
                "ports": [{ "name": "serve", "containerPort": port }],
            }] },
        });
        pods.create(&PostParams::default(), &from_json(pod))
            .await
            .expect("creating a pod");
        self.set_ready(namespace, name, ready).await;
    }

    async fn set_ready(&self, namespace: &str, name: &str, ready: bool) {
        let status = json!({ "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
        } });
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("reporting pod status");
    }

    async fn service(&self, namespace: &str, name: &str, app: &str, spec: Value) -> Service {
        let mut spec = spec;
        spec["selector"] = json!({ "app": app });
        let service = json!({ "metadata": { "name": name }, "spec": spec });
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &from_json(service))
            .await
            .expect("creating a service")
    }

    fn routes(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &kube_emulator::router::route_resource(),
        )
    }

    async fn route(&self, namespace: &str, name: &str, annotations: Value, spec: Value) {
        let route = json!({
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": { "name": name, "annotations": annotations },
            "spec": spec,
        });
        self.routes(namespace)
            .create(&PostParams::default(), &from_json(route))
            .await
            .expect("creating a route");
    }

    /// `route`'s host and this router's ingress entry, if it has one yet.
    async fn ingress(&self, namespace: &str, route: &str) -> Result<(String, Value), String> {
        let route = self
            .routes(namespace)
            .get(route)
            .await
            .map_err(|e| e.to_string())?;
        let ingress = route
            .data
            .pointer("/status/ingress/0")
            .cloned()
            .ok_or(format!("no ingress status: {:?}", route.data))?;
        let host = route
            .data
            .pointer("/spec/host")
            .and_then(Value::as_str)
            .ok_or("no spec.host")?;
        Ok((host.to_string(), ingress))
    }

    /// Waits until the router has written `route`'s admission.
    async fn admission(&self, namespace: &str, route: &str) -> (String, Value) {
        eventually(&format!("route {route} has an ingress status"), || {
            self.ingress(namespace, route)
        })
        .await
    }
}

/// A loopback address no other test of this process uses.
fn own_loopback_address() -> IpAddr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (pid >> 8) as u8 % 254,
        pid as u8,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on loopback for `host`, answering each connection with
/// `<name>:<everything the client sent>` once the client has finished
/// sending (so a client must be able to half-close through the router).
struct TlsBackend {
    port: u16,
    certificate: CertificateDer<'static>,
}

async fn tls_backend(name: &'static str, host: &str) -> TlsBackend {
    let certified =
        rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("a certificate");
    let certificate = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding a backend");
    let port = listener.local_addr().expect("backend address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut received = Vec::new();
                if tls.read_to_end(&mut received).await.is_ok() {
                    let reply = [format!("{name}:").into_bytes(), received].concat();
                    let _ = tls.write_all(&reply).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    TlsBackend { port, certificate }
}

/// A plain TCP server on loopback answering `<name>:<what the client sent>`.
async fn tcp_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding a backend");
    let port = listener.local_addr().expect("backend address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).await.is_ok() {
                    let reply = [format!("{name}:").into_bytes(), received].concat();
                    let _ = stream.write_all(&reply).await;
                }
            });
        }
    });
    port
}

/// Connects to `router_ip:443` asking for `host`, trusting `roots`, sends
/// "hello", half-closes and returns the answer; `Err` if the connection
/// is refused, closed or the certificate is not `host`'s.
async fn tls_exchange(
    router_ip: IpAddr,
    host: &str,
    roots: &[&TlsBackend],
) -> Result<String, String> {
    let mut trusted = rustls::RootCertStore::empty();
    for backend in roots {
        trusted
            .add(backend.certificate.clone())
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(trusted)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = TcpStream::connect((router_ip, 443))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let mut tls = connector
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"hello")
            .await
            .map_err(|e| format!("writing: {e}"))?;
        tls.shutdown()
            .await
            .map_err(|e| format!("half-closing: {e}"))?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer)
            .await
            .map_err(|e| format!("reading: {e}"))?;
        Ok(answer)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// Sends "ping" over plain TCP to `address`, half-closes, returns the answer.
async fn tcp_exchange(address: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

fn passthrough(host: Option<&str>, service: &str, target_port: Value) -> Value {
    let mut spec = json!({
        "to": { "kind": "Service", "name": service },
        "port": { "targetPort": target_port },
        "tls": { "termination": "passthrough" },
    });
    if let Some(host) = host {
        spec["host"] = json!(host);
    }
    spec
}

#[tokio::test]
async fn passthrough_routes_reach_their_own_backend_by_sni() {
    let test = RouterCluster::start().await;
    let ns = "web";
    test.namespace(ns).await;
    let router_ip = test.router_ip();

    // Route "a" names its host and its Service's port by name; route "b"
    // gets the default host and names its Service's port by number.
    let host_a = "receiver-a.example.test";
    let host_b = format!("b-{ns}.{APPS_DOMAIN}");
    let a = tls_backend("a", host_a).await;
    let b = tls_backend("b", &host_b).await;
    test.pod(ns, "pod-a", "a", a.port, true).await;
    test.pod(ns, "pod-b", "b", b.port, true).await;
    test.service(
        ns,
        "svc-a",
        "a",
        json!({ "ports": [{ "name": "tls", "port": 443, "targetPort": "serve" }] }),
    )
    .await;
    test.service(
        ns,
        "svc-b",
        "b",
        json!({ "ports": [{ "name": "https", "port": 8443, "targetPort": b.port }] }),
    )
    .await;
    test.route(
        ns,
        "a",
        json!({}),
        passthrough(Some(host_a), "svc-a", json!("tls")),
    )
    .await;
    test.route(
        ns,
        "b",
        json!({}),
        passthrough(None, "svc-b", json!(b.port)),
    )
    .await;

    let (host, ingress) = test.admission(ns, "a").await;
    assert_eq!(host, host_a);
    assert_eq!(ingress["host"], host_a);
    assert_eq!(ingress["routerName"], "default");
    assert_eq!(ingress["wildcardPolicy"], "None");
    assert_eq!(ingress["conditions"][0]["type"], "Admitted");
    assert_eq!(ingress["conditions"][0]["status"], "True");
    let (host, ingress) = test.admission(ns, "b").await;
    assert_eq!(
        host, host_b,
        "the router writes the default host into spec.host"
    );
    assert_eq!(ingress["host"], host_b.as_str());
    assert_eq!(ingress["conditions"][0]["status"], "True");
    // As OpenShift's API server does, a generated host is marked so that
    // a migration knows to drop it; a host the user chose is not.
    let generated = |route: DynamicObject| {
        route
            .annotations()
            .get("openshift.io/host.generated")
            .cloned()
    };
    assert_eq!(
        generated(test.routes(ns).get("b").await.unwrap()).as_deref(),
        Some("true")
    );
    assert_eq!(generated(test.routes(ns).get("a").await.unwrap()), None);

    assert_eq!(test.dns(host_a), Some(router_ip));
    assert_eq!(test.dns(&host_b), Some(router_ip));
    assert_eq!(
        test.dns(&format!("router-default.{APPS_DOMAIN}")),
        Some(router_ip)
    );

    let both = [&a, &b];
    assert_eq!(
        tls_exchange(router_ip, host_a, &both).await,
        Ok("a:hello".to_string())
    );
    assert_eq!(
        tls_exchange(router_ip, &host_b, &both).await,
        Ok("b:hello".to_string())
    );
    // Case does not matter in host names.
    assert_eq!(
        tls_exchange(router_ip, "Receiver-A.example.test", &both).await,
        Ok("a:hello".to_string())
    );
    let unknown = tls_exchange(router_ip, "nobody.example.test", &both).await;
    assert!(
        unknown.is_err(),
        "an unknown host is not served: {unknown:?}"
    );

    // A Route the router is told to ignore gets no status, no DNS entry
    // and no traffic. Route "marker", created after it, shows the router
    // has seen it.
    test.route(
        ns,
        "hidden",
        json!({ kube_emulator::router::ADMIT_ANNOTATION: "false" }),
        passthrough(Some("hidden.example.test"), "svc-a", json!("tls")),
    )
    .await;
    test.route(
        ns,
        "marker",
        json!({}),
        passthrough(Some("marker.example.test"), "svc-a", json!("tls")),
    )
    .await;
    test.admission(ns, "marker").await;
    let hidden = test
        .routes(ns)
        .get("hidden")
        .await
        .expect("reading route hidden");
    assert_eq!(
        hidden.data.pointer("/status/ingress/0"),
        None,
        "{:?}",
        hidden.data
    );
    assert_eq!(test.dns("hidden.example.test"), None);
    assert!(tls_exchange(router_ip, "hidden.example.test", &both)
        .await
        .is_err());

    // Deleting a Route takes its host out of DNS and out of service.
    test.routes(ns)
        .delete("a", &DeleteParams::default())
        .await
        .expect("deleting route a");
    eventually("route a's host leaves the DNS table", || async {
        match test.dns(host_a) {
            None => Ok(()),
            Some(ip) => Err(ip.to_string()),
        }
    })
    .await;
    assert!(tls_exchange(router_ip, host_a, &both).await.is_err());
    assert_eq!(
        tls_exchange(router_ip, &host_b, &both).await,
        Ok("b:hello".to_string())
    );
}

#[tokio::test]
async fn only_ready_pods_receive_route_traffic() {
    let test = RouterCluster::start().await;
    let ns = "slow";
    test.namespace(ns).await;
    let host = "starting.example.test";
    let backend = tls_backend("starting", host).await;
    test.pod(ns, "starting", "starting", backend.port, false)
        .await;
    test.service(
        ns,
        "svc",
        "starting",
        json!({ "ports": [{ "port": 443, "targetPort": "serve" }] }),
    )
    .await;
    test.route(
        ns,
        "starting",
        json!({}),
        passthrough(Some(host), "svc", json!(443)),
    )
    .await;
    test.admission(ns, "starting").await;
    let refused = tls_exchange(test.router_ip(), host, &[&backend]).await;
    assert!(
        refused.is_err(),
        "a pod that is not Ready gets no traffic: {refused:?}"
    );

    test.set_ready(ns, "starting", true).await;
    eventually("the pod gets traffic once Ready", || async {
        tls_exchange(test.router_ip(), host, &[&backend]).await
    })
    .await;
}

#[tokio::test]
async fn the_older_route_keeps_a_contested_host() {
    let test = RouterCluster::start().await;
    let ns = "claims";
    test.namespace(ns).await;
    let host = "shared.example.test";
    test.route(
        ns,
        "first",
        json!({}),
        passthrough(Some(host), "svc", json!(443)),
    )
    .await;
    let (_, first) = test.admission(ns, "first").await;
    assert_eq!(first["conditions"][0]["status"], "True");
    test.route(
        ns,
        "second",
        json!({}),
        passthrough(Some(host), "svc", json!(443)),
    )
    .await;
    let (_, second) = test.admission(ns, "second").await;
    let condition = &second["conditions"][0];
    assert_eq!(condition["type"], "Admitted");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "HostAlreadyClaimed");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("first")),
        "the message names the route holding the host: {condition}"
    );

    test.routes(ns)
        .delete("first", &DeleteParams::default())
        .await
        .expect("deleting route first");
    eventually(
        "the second route is admitted once the first is gone",
        || async {
            let (_, ingress) = test.ingress(ns, "second").await?;
            match ingress["conditions"][0]["status"].as_str() {
                Some("True") => Ok(()),
                _ => Err(ingress.to_string()),
            }
        },
    )
    .await;
    assert_eq!(test.dns(host), Some(test.router_ip()));
}

#[tokio::test]
async fn route_hosts_must_be_dns_names_and_too_long_generated_hosts_are_not_admitted() {
    let test = RouterCluster::start().await;
    let ns = "hosts";
    test.namespace(ns).await;
    let long_label = "x".repeat(64);
    let bad_host = format!("{long_label}.example.test");
    let route = |name: &str, spec: Value| -> DynamicObject {
        from_json(json!({
            "apiVersion": "route.openshift.io/v1",
            "kind": "Route",
            "metadata": { "name": name },
            "spec": spec,
        }))
    };

    // The API refuses a host with a label over 63 characters, on create...
    let refused = test
        .routes(ns)
        .create(
            &PostParams::default(),
            &route("long", passthrough(Some(&bad_host), "svc", json!(443))),
        )
        .await;
    let status = match refused {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected the create to be refused, got {other:?}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        format!(
            "Route.route.openshift.io \"long\" is invalid: spec.host: Invalid value: \"{bad_host}\": must be no more than 63 characters"
        )
    );
    // ... and on update, with every problem listed.
    test.route(
        ns,
        "fine",
        json!({}),
        passthrough(Some("fine.example.test"), "svc", json!(443)),
    )
    .await;
    let patch = json!({ "spec": { "host": format!("{long_label}.Bad_Host") } });
    let refused = test
        .routes(ns)
        .patch("fine", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let status = match refused {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected the update to be refused, got {other:?}"),
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("is invalid: [spec.host: Invalid value: ")
            && status
                .message
                .contains("host must conform to DNS 952 subdomain conventions")
            && status
                .message
                .contains("must be no more than 63 characters")
            && status
                .message
                .contains("a lowercase RFC 1123 label must consist of"),
        "{}",
        status.message
    );

    // A Route without a host whose generated host would start with a
    // label over 63 characters is created but not admitted.
    let name = "r".repeat(60);
    test.route(ns, &name, json!({}), passthrough(None, "svc", json!(443)))
        .await;
    let generated = format!("{name}-{ns}.{APPS_DOMAIN}");
    let condition = eventually("the route's rejection", || async {
        let route = test
            .routes(ns)
            .get(&name)
            .await
            .map_err(|e| e.to_string())?;
        route
            .data
            .pointer("/status/ingress/0")
            .cloned()
            .ok_or_else(|| format!("no ingress status: {:?}", route.data))
    })
    .await;
    assert_eq!(condition["host"], generated.as_str());
    let condition = &condition["conditions"][0];
    assert_eq!(condition["type"], "Admitted");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidHost");
    assert_eq!(
        condition["message"],
        format!(
            "host name validation errors: spec.host: Invalid value: \"{generated}\": must be no more than 63 characters"
        )
        .as_str()
    );
    let route = test.routes(ns).get(&name).await.expect("the route");
    assert_eq!(
        route.data.pointer("/spec/host"),
        None,
        "no invalid host is written"
    );
    assert_eq!(test.dns(&generated), None);
}

#[tokio::test]
async fn load_balancer_and_node_port_services_forward_to_their_endpoints() {
    let test = RouterCluster::start().await;
    let ns = "data";
    test.namespace(ns).await;
    let router_ip = test.router_ip();
    let port = tcp_backend("db").await;
    test.pod(ns, "db-0", "db", port, true).await;
    let services = Api::<Service>::namespaced(test.client.clone(), ns);

    // Port 443 of the router address is the Routes listener's: this
    // Service cannot have it, and must not be told it does.
    test.service(
        ns,
        "taken",
        "db",
        json!({ "type": "LoadBalancer", "ports": [{ "port": 443, "targetPort": "serve" }] }),
    )
    .await;
    test.service(
        ns,
        "lb",
        "db",
        json!({ "type": "LoadBalancer", "ports": [{ "port": 15432, "targetPort": "serve" }] }),
    )
    .await;
    let node_port = test
        .service(
            ns,
            "np",
            "db",
            json!({ "type": "NodePort", "ports": [{ "port": 80, "targetPort": port }] }),
        )
        .await;
    let node_port = node_port
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .expect("the API server allocates a node port");

    let ingress = eventually("service lb gets an ingress address", || async {
        let lb = services.get("lb").await.map_err(|e| e.to_string())?;
        let ingress = lb
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress);
        ingress
            .filter(|i| !i.is_empty())
            .ok_or_else(|| "no ingress yet".to_string())
    })
    .await;
    assert_eq!(
        ingress[0].ip.as_deref(),
        Some(router_ip.to_string().as_str())
    );
    let taken = services.get("taken").await.expect("reading service taken");
    let taken_ingress = taken
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress);
    assert!(
        taken_ingress.as_ref().is_none_or(|i| i.is_empty()),
        "{taken_ingress:?}"
    );

    assert_eq!(
        tcp_exchange(SocketAddr::new(router_ip, 15432)).await,
        Ok("db:ping".to_string())
    );
    let node_port = SocketAddr::new(router_ip, u16::try_from(node_port).expect("a port number"));
    assert_eq!(
        eventually("the node port forwards", || tcp_exchange(node_port)).await,
        "db:ping"
    );

    let endpoints = Api::<Endpoints>::namespaced(test.client.clone(), ns);
    let subsets = eventually("service lb has Endpoints", || async {
        let found = endpoints.get_opt("lb").await.map_err(|e| e.to_string())?;
        found
            .and_then(|e| e.subsets)
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let address = &subsets[0].addresses.as_ref().expect("a ready address")[0];
    assert_eq!(address.ip, "127.0.0.1");
    assert_eq!(
        address.target_ref.as_ref().and_then(|r| r.name.as_deref()),
        Some("db-0")
    );
    assert_eq!(
        subsets[0].ports.as_ref().expect("ports")[0].port,
        i32::from(port)
    );

    // A deleted Service's listener goes away.
    services
        .delete("lb", &DeleteParams::default())
        .await
        .expect("deleting service lb");
    eventually("service lb's port is closed", || async {
        match TcpStream::connect((router_ip, 15432)).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    eventually("service lb's Endpoints are deleted", || async {
        endpoints
            .get_opt("lb")
            .await
            .map_err(|e| e.to_string())?
            .map_or(Ok(()), |e| Err(e.name_any()))
    })
    .await;
}

/// The router of a cluster on Docker, with a real pod behind it: the
/// router listens on the Docker network's gateway, forwards to the pod's
/// container IP, and pods resolve admitted Route hosts to it.
#[tokio::test]
async fn pods_on_docker_are_reached_through_the_router_and_resolve_route_hosts() {
    let image = kube_emulator::testing::busybox_image()
        .await
        .expect("the busybox test image");
    let dir = tempfile::tempdir().expect("temporary directory");
    let shared = Arc::new(Shared {
        velero_bucket: dir.path().join("bucket"),
        instance: kube_emulator::cluster::instance_id(),
        ..Shared::default()
    });
    let options = ClusterOptions::new("routed", true);
    let cluster = Cluster::start(&options, dir.path(), shared.clone())
        .await
        .expect("starting the emulated cluster on Docker");
    let router_ip = cluster.context.router_ip;
    let client = cluster.client.clone();
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let labels = json!({ "app": "web" });
    let server = json!({
        "metadata": { "name": "web", "labels": labels },
        "spec": { "containers": [{
            "name": "httpd",
            "image": image,
            "args": ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
            "ports": [{ "name": "http", "containerPort": 8080 }],
        }] },
    });
    pods.create(&PostParams::default(), &from_json(server))
        .await
        .expect("creating the server pod");
    let service = json!({
        "metadata": { "name": "web" },
        "spec": { "type": "LoadBalancer", "selector": labels, "ports": [{ "port": 18080, "targetPort": "http" }] },
    });
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(service))
        .await
        .expect("creating the service");
    let route = json!({
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": { "name": "web" },
        "spec": passthrough(Some("web.example.test"), "web", json!("http")),
    });
    let routes = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "default",
        &kube_emulator::router::route_resource(),
    );
    routes
        .create(&PostParams::default(), &from_json(route))
        .await
        .expect("creating the route");

    // From the host, through the gateway address, to the container.
    let address = SocketAddr::new(router_ip, 18080);
    let page = eventually(
        "the pod answers through the LoadBalancer address",
        || async move {
            let mut stream = TcpStream::connect(address)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET / HTTP/1.0\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .await
                .map_err(|e| e.to_string())?;
            if response.contains("hello-from-pod") {
                Ok(response)
            } else {
                Err(response)
            }
        },
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");

    // From another pod, by the Route's host name (admitted before the pod
    // starts, so it is in the pod's /etc/hosts).
    eventually("the route host is in the DNS table", || async {
        shared
            .dns
            .lock()
            .expect("the DNS table")
            .get("web.example.test")
            .copied()
            .ok_or("not yet".to_string())
    })
    .await;
    let fetcher = json!({
        "metadata": { "name": "fetch" },
        "spec": { "restartPolicy": "Never", "containers": [{
            "name": "wget",
            "image": image,
            "args": ["wget", "-q", "-O", "-", "http://web.example.test:18080/"],
        }] },
    });
    pods.create(&PostParams::default(), &from_json(fetcher))
        .await
        .expect("creating the fetching pod");
    let fetched =
        kube_emulator::testing::wait_for(&pods, "fetch", "the fetching pod to finish", |pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed")
        })
        .await
        .expect("the fetching pod finishes");
    let logs = pods
        .logs("fetch", &Default::default())
        .await
        .expect("the fetching pod's log");
    assert_eq!(
        fetched.status.and_then(|s| s.phase).as_deref(),
        Some("Succeeded"),
        "the pod could not fetch through the router: {logs}"
    );
    assert_eq!(logs.trim(), "hello-from-pod");
}
