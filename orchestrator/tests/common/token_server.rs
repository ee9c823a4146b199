//! A token server for the registry token flow: answers
//! `GET /token?service=..&scope=..` (basic-authenticated) with an ES256 JWT
//! that a registry configured with `auth: token` accepts (its x5c
//! certificate chains to the registry's root bundle). It records every
//! request so tests can see the flow happen.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::pki::Pki;

pub const SERVICE: &str = "registry-tests";
pub const ISSUER: &str = "registry-tests-issuer";

/// Who may get tokens: a user name (None: any) and its password.
pub type Account = (Option<String>, String);

/// One token request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub user: Option<String>,
    pub scopes: Vec<String>,
}

struct Inner {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    accounts: Vec<Account>,
    seen: Mutex<Vec<Seen>>,
}

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// The CA the registry must trust for tokens.
    pub root_pem: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(accounts: Vec<Account>) -> TokenServer {
        let pki = Pki::new();
        let leaf = pki.leaf(&["token-signer"]);
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf.key_der,
            &SystemRandom::new(),
        )
        .expect("an ECDSA P-256 key");
        let inner = Arc::new(Inner {
            key,
            cert_der: leaf.cert_der,
            accounts,
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/token", get(token))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token server");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            root_pem: pki.ca_pem,
            inner,
            task,
        }
    }

    /// A token for `scopes` (`repository:NAME:ACTIONS`), as the server
    /// would issue it: for tests that hand a token over directly.
    pub fn mint(&self, subject: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        mint(&self.inner, subject, &scopes)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn mint(inner: &Inner, subject: &str, scopes: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (ty, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": ty,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&inner.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.join(" ")),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = inner
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("sign the token");
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

/// The user of a valid basic Authorization header; Err when absent or wrong.
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<String, ()> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or(())?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (user, pass) = decoded.split_once(':').ok_or(())?;
    let ok = inner
        .accounts
        .iter()
        .any(|(u, p)| u.as_deref().is_none_or(|u| u == user) && p == pass);
    if ok {
        Ok(user.to_string())
    } else {
        Err(())
    }
}

async fn token(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let url = reqwest::Url::parse(&format!("http://x/?{}", query.unwrap_or_default()))
        .expect("a query string");
    let mut scopes = Vec::new();
    let mut service = None;
    for (k, v) in url.query_pairs() {
        match &*k {
            "scope" => scopes.extend(v.split(' ').map(str::to_string)),
            "service" => service = Some(v.into_owned()),
            _ => {}
        }
    }
    let user = authenticate(&inner, &headers).ok();
    inner.seen.lock().unwrap().push(Seen {
        user: user.clone(),
        scopes: scopes.clone(),
    });
    let Some(user) = user else {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    };
    if service.as_deref() != Some(SERVICE) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let token = mint(&inner, &user, &scopes);
    axum::Json(serde_json::json!({ "token": token, "expires_in": 300 })).into_response()
}
