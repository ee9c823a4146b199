//! Port-forward as kubectl 1.32 speaks it: SPDY/3.1 (`spdy`) tunnelled in
//! a WebSocket, whose binary messages are one byte stream. For each local
//! connection the client opens an error stream and a data stream with the
//! same `requestID` and `port` headers; the server accepts both, connects
//! to the pod's port and relays the data stream, and ends the error
//! stream (empty, or with the message of a failed connection) when the
//! connection is over, as the kubelet does.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::super::spdy::{self, Frame};

pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// What the client does on a connection's data stream.
enum FromClient {
    Data(Bytes),
    /// FIN: it sends no more.
    Fin,
}

/// A connection the client is opening: its streams so far.
#[derive(Default)]
struct Opening {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

pub(super) async fn relay(socket: WebSocket, ip: IpAddr) {
    let (mut to_client, mut from_client) = socket.split();
    // Frames from the connections' tasks.
    let (output, mut outgoing) = mpsc::channel::<Bytes>(16);
    let mut reader = spdy::Reader::default();
    let mut writer = spdy::Writer::default();
    let mut opening: HashMap<String, Opening> = HashMap::new();
    // The data streams being relayed, by stream id; dropping a sender
    // (RST_STREAM) ends its connection.
    let mut relaying: HashMap<u32, mpsc::UnboundedSender<FromClient>> = HashMap::new();
    loop {
        let bytes = tokio::select! {
            Some(frame) = outgoing.recv() => {
                if to_client.send(Message::Binary(frame)).await.is_err() {
                    return;
                }
                continue;
            }
            message = from_client.next() => match message {
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        reader.push(&bytes);
        loop {
            let frame = match reader.next() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!("port-forward to {ip}: {error}; closing the connection");
                    let _ = to_client.send(super::super::normal_closure()).await;
                    return;
                }
            };
            let reply = match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.clone())
                    };
                    let request = header("requestid").unwrap_or_default();
                    let entry = opening.entry(request.clone()).or_default();
                    entry.port = header("port").and_then(|p| p.parse().ok()).or(entry.port);
                    match header("streamtype").as_deref() {
                        Some("error") => entry.error = Some(stream),
                        Some("data") => entry.data = Some(stream),
                        _ => {}
                    }
                    let accepted = writer.syn_reply(stream);
                    if let Opening {
                        error: Some(error),
                        data: Some(data),
                        port,
                    } = *entry
                    {
                        opening.remove(&request);
                        let (sender, receiver) = mpsc::unbounded_channel();
                        relaying.insert(data, sender);
                        let streams = Streams { error, data };
                        tokio::spawn(forward(ip, port, streams, receiver, output.clone()));
                    }
                    Some(accepted)
                }
                Frame::Data { stream, fin, data } => {
                    if let Some(connection) = relaying.get(&stream) {
                        if !data.is_empty() {
                            let _ = connection.send(FromClient::Data(data));
                        }
                        if fin {
                            let _ = connection.send(FromClient::Fin);
                        }
                    }
                    None
                }
                Frame::RstStream { stream } => {
                    relaying.remove(&stream);
                    None
                }
                Frame::Ping(id) => Some(spdy::ping(id)),
                Frame::GoAway => return,
                Frame::Ignored => None,
            };
            if let Some(reply) = reply {
                if to_client.send(Message::Binary(reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Streams {
    error: u32,
    data: u32,
}

/// One forwarded connection, until the pod's side ends or the client
/// resets the data stream; then the error stream ends.
async fn forward(
    ip: IpAddr,
    port: Option<u16>,
    streams: Streams,
    mut from_client: mpsc::UnboundedReceiver<FromClient>,
    output: mpsc::Sender<Bytes>,
) {
    let connected = match port {
        Some(port) if port > 0 => TcpStream::connect((ip, port))
            .await
            .map_err(|error| format!("error forwarding port {port} to pod at {ip}: {error}")),
        _ => Err("invalid port: the port header must be 1-65535".to_string()),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(message) => {
            let _ = output
                .send(spdy::data(streams.error, message.as_bytes(), true))
                .await;
            let _ = output.send(spdy::data(streams.data, b"", true)).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let down = async {
        let mut buffer = vec![0u8; 32 * 1024];
        while let Ok(n) = from_pod.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            if output
                .send(spdy::data(streams.data, &buffer[..n], false))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = output.send(spdy::data(streams.data, b"", true)).await;
    };
    let up = async {
        while let Some(event) = from_client.recv().await {
            match event {
                FromClient::Data(data) => {
                    if to_pod.write_all(&data).await.is_err() {
                        break;
                    }
                }
                FromClient::Fin => {
                    let _ = to_pod.shutdown().await;
                }
            }
        }
        // The stream was reset (or the tunnel closed).
    };
    tokio::select! {
        () = down => {}
        () = up => {}
    }
    let _ = output.send(spdy::data(streams.error, b"", true)).await;
}
