//! `pods/{name}/exec`: the command runs in the container through the
//! kubelet (`PodStreams::exec`, `docker exec`), its stdout and stderr go
//! to the client on their channels, the client's stdin to the command,
//! and its exit code ends the stream as a `Status` on the error channel.
//! A terminal (`tty=true`) is not allocated: the command runs with pipes,
//! as it does for `kubectl exec` without `-t`.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Child;
use tokio::sync::mpsc;

use super::channel::{self, FromClient};
use super::Query;
use crate::api::error::{ApiError, ApiResult};
use crate::api::{logs, Server};
use crate::context::Exec;

/// Checks the request, starts the command and upgrades to the channel
/// protocol. Nothing runs unless the request is a usable upgrade.
pub async fn serve(
    server: Arc<Server>,
    pod: Value,
    query: &Query,
    upgrade: Option<WebSocketUpgrade>,
) -> ApiResult<Response> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let command: Vec<String> = query.all("command").map(str::to_string).collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (stdin, stdout, stderr) = (
        query.flag("stdin"),
        query.flag("stdout"),
        query.flag("stderr"),
    );
    if !(stdin || stdout || stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let container = logs::container(&pod, name, query.first("container"))?;
    super::require_running(&pod, &container)?;
    let (upgrade, protocol) = super::upgrade(upgrade, channel::PROTOCOLS)?;
    let Some(kubelet) = server.kubelet.clone() else {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("no kubelet runs containers for pod {name} in this cluster"),
        ));
    };
    let exec = Exec {
        container,
        command: command.clone(),
        stdin,
    };
    let child = kubelet
        .exec(namespace, name, exec)
        .await
        .map_err(|error| ApiError::internal(format!("{error:#}")))?;
    let close_signal = protocol == channel::V5;
    Ok(upgrade.on_upgrade(move |socket| relay(socket, child, command, close_signal)))
}

/// Relays between the WebSocket and the command until the command's
/// output ends, then sends its exit status and closes. A client that goes
/// away kills the command (the child is killed on drop).
async fn relay(socket: WebSocket, mut child: Child, command: Vec<String>, close_signal: bool) {
    let (mut to_client, mut from_client) = socket.split();
    let (output, mut outgoing) = mpsc::channel::<Message>(16);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(pump(stdout, channel::STDOUT, output.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(pump(stderr, channel::STDERR, output.clone()));
    }
    drop(output);
    // Stdin goes through its own task so that a command slow to read its
    // input never stops its output from being relayed.
    let (input, mut incoming) = mpsc::unbounded_channel::<Option<bytes::Bytes>>();
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            while let Some(Some(data)) = incoming.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: the command reads its end.
        });
    }
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => {
                    if to_client.send(message).await.is_err() {
                        return;
                    }
                }
                // stdout and stderr have both ended.
                None => break,
            },
            message = from_client.next() => match message {
                Some(Ok(Message::Binary(data))) => match channel::parse(&data) {
                    FromClient::Stdin(data) => {
                        let _ = input.send(Some(bytes::Bytes::copy_from_slice(data)));
                    }
                    FromClient::Closed(channel::STDIN) if close_signal => {
                        let _ = input.send(None);
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let code = match child.wait().await {
        Ok(status) => status.code().or_else(|| {
            use std::os::unix::process::ExitStatusExt as _;
            status.signal().map(|signal| 128 + signal)
        }),
        Err(_) => None,
    };
    let status = channel::exit_status(&command, code);
    let status = serde_json::to_vec(&status).unwrap_or_default();
    let _ = to_client
        .send(Message::Binary(channel::frame(channel::ERROR, &status)))
        .await;
    let _ = to_client.send(super::normal_closure()).await;
}

/// Sends what `reader` yields as messages on `stream` until it ends.
async fn pump(mut reader: impl AsyncRead + Unpin, stream: u8, output: mpsc::Sender<Message>) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let message = Message::Binary(channel::frame(stream, &buffer[..n]));
                if output.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}
