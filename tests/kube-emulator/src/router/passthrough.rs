//! TLS passthrough: connections to `router_ip:443` go, still encrypted, to
//! the endpoints of the Route whose host the client names in SNI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio::net::{TcpListener, TcpStream};

use super::admission::route_spec;
use super::endpoints::{addresses, route_port};
use super::{proxy, sni, Router};

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves Routes on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, router: Arc<Router>) {
    proxy::accept_loop(listener, "routes".into(), |client| {
        handle(client, router.clone())
    })
    .await;
}

/// One connection: find the backend from the ClientHello, then relay. A
/// connection for an unknown host or a Route without ready endpoints is
/// closed, as the real router does.
async fn handle(mut client: TcpStream, router: Arc<Router>) -> anyhow::Result<()> {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, sni::read_client_hello(&mut client))
        .await
        .with_context(|| format!("no complete ClientHello within {HELLO_TIMEOUT:?}"))??;
    let host = hello
        .server_name
        .context("the ClientHello names no server (no SNI)")?;
    let backends = backends(&router, &host).with_context(|| format!("host {host}"))?;
    let backend = proxy::connect_any(&backends)
        .await
        .with_context(|| format!("host {host}"))?;
    proxy::pipe(client, backend, &hello.buffered).await
}

/// The endpoints serving `host`: the admitted passthrough Route for it,
/// its Service, and the ready pods behind the Service port it names.
fn backends(router: &Router, host: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let route = router
        .admission
        .route_for(host)
        .context("no admitted route")?;
    let namespace = route.namespace().unwrap_or_default();
    let name = format!("route {namespace}/{}", route.name_any());
    let spec = route_spec(&route).map_err(anyhow::Error::msg)?;
    let termination = spec.tls.as_ref().and_then(|tls| tls.termination.as_deref());
    anyhow::ensure!(
        termination == Some("passthrough"),
        "{name} is not a passthrough route (tls.termination is {termination:?}); only passthrough is served"
    );
    let service_name = spec
        .to
        .as_ref()
        .map(|to| to.name.clone())
        .unwrap_or_default();
    let service = router
        .services
        .get(&ObjectRef::<Service>::new(&service_name).within(&namespace))
        .with_context(|| format!("{name}: service {namespace}/{service_name} does not exist"))?;
    let target = spec
        .port
        .as_ref()
        .and_then(|port| port.target_port.as_ref());
    let port = route_port(&service, target).with_context(|| {
        format!("{name}: service {namespace}/{service_name} has no port matching {target:?}")
    })?;
    let backends = addresses(router, &service, port);
    anyhow::ensure!(
        !backends.is_empty(),
        "{name}: service {namespace}/{service_name} has no ready endpoints"
    );
    Ok(backends)
}
