//! Port-forward in the channel protocol (`portforward.k8s.io`,
//! `v4.channel.k8s.io`, as kube-rs speaks it): for the i-th port of the
//! query, channel 2i carries data and 2i+1 errors, and the first message
//! the server sends on each names the port (two bytes, little endian).
//! One TCP connection per port; the WebSocket closes when all have ended.

use std::net::IpAddr;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::super::channel::frame;

/// Connects to every port and relays until the client closes.
pub(super) async fn relay(socket: WebSocket, ip: IpAddr, ports: Vec<u16>) {
    let (mut to_client, mut from_client) = socket.split();
    let (output, mut outgoing) = mpsc::channel::<Message>(16);
    let mut writers = Vec::new();
    for (index, port) in ports.into_iter().enumerate() {
        let (data, error) = (2 * index as u8, 2 * index as u8 + 1);
        let prefix = port.to_le_bytes();
        for channel in [data, error] {
            let first = Message::Binary(frame(channel, &prefix));
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
                        let message = Message::Binary(frame(data, &buffer[..n]));
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
                    .send(Message::Binary(frame(error, text.as_bytes())))
                    .await;
            }
        }
    }
    drop(output);
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => {
                    if to_client.send(message).await.is_err() {
                        return;
                    }
                }
                // Every port's connection has ended (or never began):
                // the stream ends, as the kubelet's does.
                None => {
                    let _ = to_client.send(super::super::normal_closure()).await;
                    return;
                }
            },
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
