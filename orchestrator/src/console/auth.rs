//! Who is asking, and with which rights: the user's own bearer token of
//! the host cluster (`kubectl create token`, `oc whoami -t`).
//!
//! `POST /api/login` asks the host's API server who the token belongs to
//! (a SelfSubjectReview, `kubectl auth whoami`): a token it refuses is
//! refused here. An accepted one goes into an HttpOnly, SameSite=Strict
//! cookie (Secure when the request came over HTTPS through a Route or an
//! Ingress), so page scripts never read it and other sites cannot send it.
//! The console keeps nothing else: any replica serves any user, and the
//! API server checks the token on every request, so a revoked or expired
//! token stops working at once.
//!
//! Requests that change something must carry `X-Console: 1`. A form on
//! another site cannot set a custom header, and a script there may not
//! without a CORS preflight this server never grants: a second guard
//! against cross-site requests beside SameSite.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cookie::{Cookie, SameSite};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::error::ApiError;
use super::Console;

/// The cookie holding the user's token.
pub const COOKIE: &str = "mover-console-token";
/// The header every mutating request must carry.
pub const CSRF_HEADER: &str = "x-console";

/// Most users' clients kept at once; past it the cache starts over (a
/// client is cheap to build, only its connections are worth keeping).
const MAX_CLIENTS: usize = 256;

/// Users' clients by their token's hash: a client keeps its connections
/// to the API server, so a user's requests do not each pay a handshake.
pub struct Sessions {
    host_config: kube::Config,
    clients: Mutex<HashMap<[u8; 32], kube::Client>>,
}

impl Sessions {
    pub fn new(host_config: kube::Config) -> Self {
        Sessions {
            host_config,
            clients: Mutex::default(),
        }
    }

    /// The client acting as the holder of `token`: the host's address and
    /// trust, with no credential but the token.
    pub fn client(&self, token: &str) -> Result<kube::Client, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.host_config.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        let client =
            crate::client::build(config, &crate::client::Options::default()).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("building a client for the host cluster: {e}"),
                )
            })?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The logged-in user of a request: a client with their rights.
pub struct User {
    pub client: kube::Client,
}

impl FromRequestParts<Console> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, ApiError> {
        let token = token(&parts.headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not logged in: log in with a token",
            )
        })?;
        Ok(User {
            client: console.inner.sessions.client(&token)?,
        })
    }
}

/// The token in the request's session cookie.
fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| {
            cookie.name() == COOKIE && !cookie.value().is_empty() && is_token68(cookie.value())
        })
        .map(|cookie| cookie.value().to_string())
}

/// What the page calls a user whose name the API server does not tell.
const UNNAMED: &str = "(unnamed user)";

/// Who the API server says `client`'s token belongs to. An API server
/// older than Kubernetes 1.28 (OpenShift 4.14) has no SelfSubjectReview;
/// a SelfSubjectAccessReview, which every server answers, still proves
/// the token valid (a refused one is a 401), though it names nobody.
async fn whoami(client: kube::Client) -> Result<String, kube::Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    match review {
        Ok(review) => Ok(review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| UNNAMED.to_string())),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let review: SelfSubjectAccessReview = serde_json::from_value(json!({
                "spec": {"resourceAttributes": {
                    "group": "mover.io", "resource": "migrations", "verb": "list"}}
            }))
            .map_err(kube::Error::SerdeError)?;
            Api::<SelfSubjectAccessReview>::all(client)
                .create(&PostParams::default(), &review)
                .await?;
            Ok(UNNAMED.to_string())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /api/login`: checks the token with the host's API server and
/// sets the session cookie.
pub async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Json(login): Json<Login>,
) -> Result<Response, ApiError> {
    let token = login.token.trim();
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "paste a token of the host cluster (kubectl create token NAME, oc whoami -t)",
        ));
    }
    if !is_token68(token) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this is not a bearer token: it may hold only letters, digits and - . _ ~ + / =",
        ));
    }
    let client = console.inner.sessions.client(token)?;
    let user = whoami(client).await.map_err(|e| match e {
        kube::Error::Api(status) if status.code == 401 => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the host cluster does not accept this token",
        ),
        e => ApiError::kube("checking the token", e),
    })?;
    let cookie = set_cookie(&session_cookie(token.to_string(), &headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(json!({"user": user}))).into_response())
}

/// `POST /api/logout`: clears the session cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    let mut removal = session_cookie(String::new(), &headers);
    removal.make_removal();
    (
        [(header::SET_COOKIE, set_cookie(&removal))],
        Json(json!({})),
    )
        .into_response()
}

/// `GET /api/session`: who is logged in, or `null` (not an error: the
/// page asks before it knows, and shows the login form).
pub async fn session(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some(token) = token(&headers) else {
        return Json(json!({"user": null})).into_response();
    };
    let client = match console.inner.sessions.client(&token) {
        Ok(client) => client,
        Err(e) => return e.into_response(),
    };
    match whoami(client).await {
        Ok(user) => Json(json!({"user": user})).into_response(),
        Err(kube::Error::Api(status)) if status.code == 401 => {
            Json(json!({"user": null})).into_response()
        }
        Err(e) => ApiError::kube("checking the session", e).into_response(),
    }
}

/// The session cookie for `token`, Secure when the request came over
/// HTTPS (a Route or Ingress terminating TLS says so in
/// `X-Forwarded-Proto`).
fn session_cookie(token: String, headers: &HeaderMap) -> Cookie<'static> {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    Cookie::build((COOKIE, token))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(https)
        .build()
}

/// The `Set-Cookie` header of `cookie`.
fn set_cookie(cookie: &Cookie<'_>) -> HeaderValue {
    // A token's characters are checked at login ([`is_token68`]): none
    // needs quoting in a cookie or is invalid in a header.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether `token` has a bearer token's syntax (RFC 6750 `b64token`), the
/// characters a cookie value may carry unquoted.
fn is_token68(token: &str) -> bool {
    token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
}

/// Refuses a mutating request without [`CSRF_HEADER`].
pub async fn csrf_guard(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if safe || request.headers().get(CSRF_HEADER).is_some_and(|v| v == "1") {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "a request that changes something must carry the header X-Console: 1",
        )
        .into_response()
    }
}
