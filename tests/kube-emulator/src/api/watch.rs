//! `?watch=true`: a stream of newline-delimited JSON events (ADDED,
//! MODIFIED, DELETED, BOOKMARK, ERROR). A watch from a resourceVersion
//! replays the history after it, or — when the history no longer reaches
//! back that far — sends a 410 Gone ERROR event so that the client (e.g.
//! kube-runtime's watcher) relists.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::resources::ResourceType;
use super::selectors::Selectors;
use super::store::{Event, EventType, Since};
use super::Server;

/// How often an idle watch that allows bookmarks gets one, telling the
/// client how far the cluster's resourceVersion has moved.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// What a watch asked for.
pub struct WatchRequest {
    pub rt: ResourceType,
    pub version: String,
    /// `None`: all namespaces (or a cluster-scoped resource).
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// `None` or `"0"`: start with the current objects as ADDED events.
    pub resource_version: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the current objects, then a BOOKMARK
    /// marked `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
}

impl WatchRequest {
    fn wants(&self, object: &Value) -> bool {
        let namespace_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns));
        namespace_ok && self.selectors.matches(object)
    }

    fn frame(&self, kind: &str, object: &Value) -> Bytes {
        let mut object = object.clone();
        if object.get("kind").and_then(Value::as_str) != Some("Status") {
            super::conversion::from_storage(&self.rt, &mut object);
            object["apiVersion"] = json!(self.rt.api_version(&self.version));
        }
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.frame(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "metadata": metadata}),
        )
    }

    /// The frame an event makes for this watch, if any: with a selector, a
    /// change into the selection is ADDED and one out of it DELETED.
    fn event_frame(&self, event: &Event) -> Option<Bytes> {
        let now = self.wants(&event.object);
        let kind = match event.kind {
            EventType::Modified => {
                let before = event.previous.as_deref().is_some_and(|p| self.wants(p));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            kind if now => kind,
            _ => return None,
        };
        Some(self.frame(kind.as_str(), &event.object))
    }
}

/// Starts a watch and answers with its event stream.
pub fn watch(server: Arc<Server>, request: WatchRequest) -> ApiResult<Response> {
    let key = request.rt.key();
    let start = match request.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
        })?),
    };
    let mut changed = server.subscribe();
    let (mut cursor, first_frames) = {
        let state = server.lock();
        let mut frames = Vec::new();
        let cursor = match start {
            Some(rv) if !request.send_initial_events => match state.store.events_since(&key, rv) {
                Since::Events(events) => {
                    frames.extend(events.iter().filter_map(|e| request.event_frame(e)));
                    state.store.rv()
                }
                Since::Expired => {
                    let gone = ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        state.store.rv()
                    ));
                    frames.push(request.frame("ERROR", &gone.status()));
                    return Ok(stream_response(frames, None));
                }
            },
            _ => {
                let namespace = request.namespace.as_deref();
                frames.extend(
                    state
                        .store
                        .list(&key, namespace)
                        .filter(|o| request.selectors.matches(o))
                        .map(|o| request.frame("ADDED", o)),
                );
                if request.send_initial_events {
                    frames.push(request.bookmark(state.store.rv(), true));
                }
                state.store.rv()
            }
        };
        (cursor, frames)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        for frame in first_frames {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
        bookmarks.tick().await;
        let mut ended = false;
        loop {
            let frames = tokio::select! {
                _ = tx.closed() => return,
                _ = sleep_until(deadline) => {
                    // As the real server does, a watch that times out first
                    // tells the client how far it got.
                    ended = true;
                    if request.bookmarks {
                        vec![request.bookmark(cursor, false)]
                    } else {
                        Vec::new()
                    }
                }
                _ = bookmarks.tick(), if request.bookmarks => vec![request.bookmark(cursor, false)],
                changed = changed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let state = server.lock();
                    match state.store.events_since(&key, cursor) {
                        Since::Events(events) => {
                            cursor = state.store.rv();
                            events.iter().filter_map(|e| request.event_frame(e)).collect()
                        }
                        Since::Expired => {
                            let gone = ApiError::gone(format!("too old resource version: {cursor} ({})", state.store.rv()));
                            ended = true;
                            vec![request.frame("ERROR", &gone.status())]
                        }
                    }
                }
            };
            for frame in frames {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
        }
    });
    Ok(stream_response(Vec::new(), Some(rx)))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A streamed `application/json` response: `first`, then whatever `rx`
/// yields until it closes.
fn stream_response(first: Vec<Bytes>, rx: Option<mpsc::Receiver<Bytes>>) -> Response {
    let first =
        futures_util::stream::iter(first.into_iter().map(Ok::<_, std::convert::Infallible>));
    let rest = futures_util::stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        let frame = rx.recv().await?;
        Some((Ok(frame), Some(rx)))
    });
    use futures_util::StreamExt as _;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(first.chain(rest)))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
