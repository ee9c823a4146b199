//! The pods' streaming subresources over WebSockets: `pods/{name}/exec`
//! (`exec`, in the channel protocol of `channel`) and
//! `pods/{name}/portforward` (`portforward`), as kubectl 1.32 and kube-rs
//! speak them. The real API server also accepts SPDY/3.1 upgrades, which
//! kubectl falls back to when a WebSocket upgrade is refused; this one
//! answers those with 400, naming the protocols it speaks.

pub mod channel;
pub mod exec;
pub mod portforward;
mod spdy;

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// The query of a streaming request, keeping repeated keys (`command=`
/// comes once per argument).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(uri: &axum::http::Uri) -> ApiResult<Self> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|query| Self(query.0))
            .map_err(|error| ApiError::bad_request(format!("invalid query: {error}")))
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean option: `true`/`1` is true, anything else (or nothing)
    /// false.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(|v| v == "true" || v == "1")
    }
}

/// The WebSocket upgrade of a streaming request, with the subprotocol
/// picked from `protocols` (the server's preference first); a request
/// that is not a WebSocket upgrade (a SPDY one), or offers none of them,
/// is refused with a message saying what would be understood.
pub fn upgrade(
    upgrade: Option<WebSocketUpgrade>,
    protocols: &'static [&'static str],
) -> ApiResult<(WebSocketUpgrade, &'static str)> {
    let wanted = || protocols.join(", ");
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request(format!(
            "Upgrade request required: this server streams over WebSockets only \
             (subprotocols {}), not SPDY",
            wanted()
        )));
    };
    let offered: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|p| p.to_str().ok().map(str::to_string))
        .collect();
    let Some(chosen) = protocols.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: no common WebSocket subprotocol: offered [{}], served [{}]",
            offered.join(", "),
            wanted()
        )));
    };
    Ok((upgrade.protocols([*chosen]), chosen))
}

/// Whether `container` of `pod` (as the API stores it) is running, with
/// the kubelet's error when it is not (`container not found ("name")`):
/// checked before any upgrade so that a refusal is an HTTP answer.
pub fn require_running(pod: &Value, container: &str) -> ApiResult<()> {
    let running = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|list| pod["status"][*list].as_array().into_iter().flatten())
        .any(|status| status["name"] == container && status["state"]["running"].is_object());
    if running {
        Ok(())
    } else {
        Err(ApiError::new(
            404,
            "NotFound",
            format!("unable to upgrade connection: container not found ({container:?})"),
        ))
    }
}

/// The close message ending a stream that is done: code 1000 (normal
/// closure), which client-go reads as the end of every stream; any other
/// code, or none, is an error to it.
pub fn normal_closure() -> Message {
    Message::Close(Some(CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}
