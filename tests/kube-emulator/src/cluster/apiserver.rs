//! How a cluster's pods reach its API server: a second listener on the
//! cluster network's gateway (`router_ip:6443`, the port a kubeadm API
//! server serves on), and the `default/kubernetes` Endpoints naming it, as
//! the API server's own endpoint reconciler keeps them.
//!
//! A real pod reaches the API server through the `kubernetes` Service's IP
//! (`10.96.0.1:443`), which kube-proxy translates to these endpoints; the
//! emulator has no kube-proxy for ClusterIPs, so the kubelet gives pods
//! the endpoint itself in `KUBERNETES_SERVICE_HOST`/`_PORT` (see
//! `kubelet::env`), which is all kube-rs's and client-go's in-cluster
//! configurations read.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The API server's port on the cluster network, kubeadm's default.
const SECURE_PORT: u16 = 6443;

/// Binds the API server's listener for pods on `router_ip`: port 6443, or
/// any free port if something else holds that one.
pub(super) async fn bind_for_pods(router_ip: IpAddr) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(SocketAddr::new(router_ip, SECURE_PORT)).await {
        Ok(listener) => Ok(listener),
        Err(error) => {
            tracing::warn!("the API server cannot listen on {router_ip}:{SECURE_PORT} ({error}); it takes another port");
            tokio::net::TcpListener::bind(SocketAddr::new(router_ip, 0))
                .await
                .with_context(|| format!("binding the API server on {router_ip}"))
        }
    }
}

/// Points the `default/kubernetes` Service (its `targetPort`) and its
/// Endpoints at `address`.
pub(super) async fn publish_endpoints(
    client: &kube::Client,
    address: SocketAddr,
) -> anyhow::Result<()> {
    let apply = PatchParams::apply("kube-apiserver").force();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" },
        },
        "subsets": [{
            "addresses": [{ "ip": address.ip().to_string() }],
            "ports": [{ "name": "https", "port": address.port(), "protocol": "TCP" }],
        }],
    });
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .patch("kubernetes", &apply, &Patch::Apply(&endpoints))
        .await?;
    let ports = json!({ "spec": { "ports": [
        { "name": "https", "port": 443, "protocol": "TCP", "targetPort": address.port() },
    ] } });
    Api::<Service>::namespaced(client.clone(), "default")
        .patch("kubernetes", &PatchParams::default(), &Patch::Merge(&ports))
        .await?;
    Ok(())
}
