//! `pods/{name}/portforward`: TCP connections to the pod's IP (on its
//! cluster's Docker network, where its containers listen), carried over a
//! WebSocket in one of two ways:
//!
//! - `tunnel`: SPDY/3.1 tunnelled in the WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`), what kubectl 1.32 speaks: the
//!   client opens an error and a data stream per connection, naming the
//!   port in their headers;
//! - `channels`: the channel protocol (`v4.channel.k8s.io`,
//!   `portforward.k8s.io`) with the ports in the query, what kube-rs
//!   speaks.
//!
//! kubectl falls back to a plain SPDY upgrade (a POST) only when the
//! WebSocket upgrade is refused; that is answered with 400.

mod channels;
mod tunnel;

use std::net::IpAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use serde_json::Value;

use super::Query;
use crate::api::error::{ApiError, ApiResult};

/// The subprotocols served, the tunnel first (kubectl offers only it;
/// kube-rs only the channel ones).
const PROTOCOLS: &[&str] = &[tunnel::PROTOCOL, "v4.channel.k8s.io", "portforward.k8s.io"];

pub fn serve(pod: Value, query: &Query, upgrade: Option<WebSocketUpgrade>) -> ApiResult<Response> {
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} has no IP: it is not running",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            ))
        })?;
    let (upgrade, protocol) = super::upgrade(upgrade, PROTOCOLS)?;
    if protocol == tunnel::PROTOCOL {
        return Ok(upgrade.on_upgrade(move |socket| tunnel::relay(socket, ip)));
    }
    let ports = ports(query)?;
    Ok(upgrade.on_upgrade(move |socket| channels::relay(socket, ip, ports)))
}

/// The `ports` of the query (repeated or comma-separated), at least one.
fn ports(query: &Query) -> ApiResult<Vec<u16>> {
    let ports = query
        .all("ports")
        .flat_map(|ports| ports.split(','))
        .map(|port| {
            port.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("invalid port {port:?}: must be 1-65535"))
                })
        })
        .collect::<ApiResult<Vec<u16>>>()?;
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"port\" is required",
        ));
    }
    Ok(ports)
}
