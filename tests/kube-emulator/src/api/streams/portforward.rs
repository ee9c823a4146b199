//! `pods/{name}/portforward` over a WebSocket in the channel protocol
//! (`portforward.k8s.io`, `v4.channel.k8s.io`, as kube-rs and client-go's
//! WebSocket port-forwarder of `?ports=` speak it): for the i-th port of
//! the query, channel 2i carries data and 2i+1 errors, and the first
//! message the server sends on each names the port (two bytes, little
//! endian). Each port is a TCP connection to the pod's IP on its Docker
//! network, where the container listens.
//!
//! kubectl 1.32 tunnels SPDY/3.1 through the WebSocket instead
//! (`SPDY/3.1+portforward.k8s.io`); that is not served, and kubectl's
//! fallback to a SPDY upgrade is refused, which kubectl reports.

use std::net::IpAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Query;
use crate::api::error::{ApiError, ApiResult};

/// The subprotocols served.
const PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "portforward.k8s.io"];

pub fn serve(pod: Value, query: &Query, upgrade: Option<WebSocketUpgrade>) -> ApiResult<Response> {
    let ports = query
        .all("ports")
        .flat_map(|ports| ports.split(','))
        .map(|port| {
            port.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ApiError::bad_request(format!("invalid port {port:?}: must be 1-65535"))
            })
        })
        .collect::<ApiResult<Vec<u16>>>()?;
    if ports.is_empty() {
        return Err(ApiError::bad_request("query parameter \"port\" is required"));
    }
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} has no IP yet: it is not running",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            ))
        })?;
    let (upgrade, _) = super::upgrade(upgrade, PROTOCOLS)?;
    Ok(upgrade.on_upgrade(move |socket| relay(socket, ip, ports)))
}

/// Connects to every port and relays until the client closes.
async fn relay(socket: WebSocket, ip: IpAddr, ports: Vec<u16>) {
    let (mut to_client, mut from_client) = socket.split();
    let (output, mut outgoing) = mpsc::channel::<Message>(16);
    let mut writers = Vec::new();
    for (index, port) in ports.into_iter().enumerate() {
        let (data, error) = (2 * index as u8, 2 * index as u8 + 1);
        let prefix = port.to_le_bytes();
        for channel in [data, error] {
            let first = Message::Binary(super::channel::frame(channel, &prefix));
            if to_client.send(first).await.is_err() {
                return;
            }
        }
        match TcpStream::connect((ip, port)).await {
            Ok(stream) => {
                let (mut read, write) = stream.into_split();
                writers.push(Some(write));
                let output = output.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 32 * 1024];
                    while let Ok(n) = read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        let message = Message::Binary(super::channel::frame(data, &buffer[..n]));
                        if output.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(cause) => {
                writers.push(None);
                let text = format!("error forwarding port {port} to pod at {ip}: {cause}");
                let _ = output
                    .send(Message::Binary(super::channel::frame(error, text.as_bytes())))
                    .await;
            }
        }
    }
    drop(output);
    loop {
        tokio::select! {
            Some(message) = outgoing.recv() => {
                if to_client.send(message).await.is_err() {
                    return;
                }
            }
            message = from_client.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&channel, payload)) = data.split_first() else { continue };
                    let writer = writers.get_mut(usize::from(channel / 2)).and_then(Option::as_mut);
                    if let (0, Some(writer)) = (channel % 2, writer) {
                        if writer.write_all(payload).await.is_err() {
                            writers[usize::from(channel / 2)] = None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
