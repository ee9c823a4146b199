//! Authentication to a registry: HTTP basic, the registry token flow
//! (a 401 with `WWW-Authenticate: Bearer realm=...,service=...` sends the
//! client to a token server for a token scoped to the repositories it
//! needs) and a static bearer token (OpenShift's registry takes a
//! service-account token directly).
//!
//! The scheme is learned from the registry's first 401 and then used
//! up front, so that later requests do not each pay a 401 round trip.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::Url;

use super::error::ErrorKind;

/// What to authenticate with.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// Sent as HTTP basic to a registry that asks for basic, or to the
    /// token server of a registry that asks for a bearer token.
    Basic { username: String, password: String },
    /// Sent as `Authorization: Bearer` as is. If the registry answers with
    /// a token-flow challenge instead, the token is offered to the token
    /// server as a basic password, as `docker login -p <token>` does with
    /// OpenShift.
    Token(String),
}

impl fmt::Debug for Credentials {
    /// Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <password>)"),
            Credentials::Token(_) => f.write_str("Token(<token>)"),
        }
    }
}

/// The user name sent with a [`Credentials::Token`] to a token server;
/// OpenShift's ignores it.
const TOKEN_USER: &str = "serviceaccount";

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
    /// A scheme this client does not speak.
    Other(String),
}

/// Parses every challenge of a `WWW-Authenticate` value:
/// `scheme param="quoted, with commas", param=token, other-scheme ...`.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut current: Option<(String, HashMap<String, String>)> = None;
    let finish = |c: Option<(String, HashMap<String, String>)>, out: &mut Vec<Challenge>| {
        if let Some((scheme, mut params)) = c {
            out.push(match scheme.to_ascii_lowercase().as_str() {
                "basic" => Challenge::Basic,
                "bearer" => match params.remove("realm") {
                    Some(realm) => Challenge::Bearer {
                        realm,
                        service: params.remove("service"),
                    },
                    None => Challenge::Other("Bearer without realm".into()),
                },
                _ => Challenge::Other(scheme),
            });
        }
    };
    let b = value.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize, set: &[u8]| {
        while *i < b.len() && set.contains(&b[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && !b" \t,=\"".contains(&b[*i]) {
            *i += 1;
        }
        value[start..*i].to_string()
    };
    while i < b.len() {
        skip(&mut i, b" \t,");
        let word = token(&mut i);
        if word.is_empty() {
            // A stray '=' or '"': skip it rather than loop.
            i += 1;
            continue;
        }
        skip(&mut i, b" \t");
        if i < b.len() && b[i] == b'=' {
            i += 1;
            skip(&mut i, b" \t");
            let v = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch = value[i..].chars().next().unwrap_or('\u{fffd}');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some((_, params)) = current.as_mut() {
                params.insert(word.to_ascii_lowercase(), v);
            }
        } else {
            finish(current.take(), &mut out);
            current = Some((word, HashMap::new()));
        }
    }
    finish(current.take(), &mut out);
    out
}

/// The repositories and actions a request needs, as token-flow scopes
/// (`repository:team/app:pull,push`). Also the key of the token cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// No repository: the `/v2/` version check.
    pub fn none() -> Scope {
        Scope(Vec::new())
    }

    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }

    pub fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }

    /// Adds pull on another repository (the source of a blob mount).
    pub fn and_pull(mut self, repository: &str) -> Scope {
        self.0.push(format!("repository:{repository}:pull"));
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scheme {
    /// No 401 seen yet.
    Unknown,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

struct State {
    scheme: Scheme,
    tokens: HashMap<Scope, (String, Instant)>,
}

/// The authentication state of one registry.
pub struct Auth {
    credentials: Credentials,
    state: Mutex<State>,
}

impl Auth {
    pub fn new(credentials: Credentials) -> Auth {
        Auth {
            credentials,
            state: Mutex::new(State {
                scheme: Scheme::Unknown,
                tokens: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (user, pass) = match &self.credentials {
            Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
            Credentials::Token(t) => (TOKEN_USER, t.as_str()),
            Credentials::Anonymous => return None,
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {b64}")).ok()
    }

    /// The `Authorization` header for a request needing `scope`, fetching
    /// a token from the token server when the registry uses the token flow
    /// and no live token for this scope is cached.
    pub async fn header(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<HeaderValue>, ErrorKind> {
        let scheme = {
            let st = self.state();
            if let Some((tok, until)) = st.tokens.get(scope) {
                if Instant::now() < *until {
                    return Ok(bearer(tok));
                }
            }
            st.scheme.clone()
        };
        match scheme {
            Scheme::Unknown => Ok(match &self.credentials {
                Credentials::Token(t) => bearer(t),
                _ => None,
            }),
            Scheme::Basic => Ok(self.basic()),
            Scheme::Bearer { realm, service } => {
                let (tok, ttl) = self
                    .fetch_token(http, &realm, service.as_deref(), scope)
                    .await?;
                // Renew a little before the token server says it expires.
                let until = Instant::now() + ttl.mul_f64(0.9);
                self.state()
                    .tokens
                    .insert(scope.clone(), (tok.clone(), until));
                Ok(bearer(&tok))
            }
        }
    }

    /// Learns from a 401 how the registry wants to be authenticated; Ok
    /// means "authenticate as now known and send again".
    /// `sent_authorization` says whether the refused request carried
    /// credentials of the scheme now asked for: then they were wrong, and
    /// trying again would not help.
    pub fn challenged(
        &self,
        headers: &HeaderMap,
        scope: &Scope,
        sent_authorization: bool,
        message: &str,
    ) -> Result<(), ErrorKind> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        let mut st = self.state();
        if let Some((realm, service)) = bearer {
            let realm = Url::parse(&realm).map_err(|e| {
                ErrorKind::Protocol(format!("token realm {realm:?} is not a URL: {e}"))
            })?;
            let scheme = Scheme::Bearer { realm, service };
            let had_token = st.tokens.remove(scope).is_some();
            if st.scheme == scheme && had_token && sent_authorization {
                return Err(ErrorKind::Unauthorized(format!(
                    "the registry refused the token its token server issued: {message}"
                )));
            }
            st.scheme = scheme;
            return Ok(());
        }
        if challenges.contains(&Challenge::Basic) {
            let creds = match &self.credentials {
                Credentials::Basic { .. } => true,
                Credentials::Token(_) => {
                    return Err(ErrorKind::Unauthorized(
                        "the registry asks for a username and password (basic), and only a \
                         token was given"
                            .into(),
                    ))
                }
                Credentials::Anonymous => false,
            };
            if !creds {
                return Err(ErrorKind::Unauthorized(format!(
                    "the registry requires credentials and none were given: {message}"
                )));
            }
            if st.scheme == Scheme::Basic && sent_authorization {
                return Err(ErrorKind::Unauthorized(format!(
                    "the registry refused the username and password: {message}"
                )));
            }
            st.scheme = Scheme::Basic;
            return Ok(());
        }
        Err(ErrorKind::Unauthorized(format!(
            "HTTP 401 without a challenge this client can answer ({:?}): {message}",
            challenges
        )))
    }

    /// The token flow: GET realm?service=..&scope=.. with basic credentials
    /// when we have any; the answer holds `token` (or `access_token`) and
    /// optionally `expires_in` seconds (60 when absent, per the spec).
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &Url,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<(String, Duration), ErrorKind> {
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let mut req = http.get(url);
        if let Some(h) = self.basic() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(|e| {
            let kind = super::error::from_reqwest(&e);
            ErrorKind::Unauthorized(format!("token server {realm} unreachable: {kind}"))
        })?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        if !status.is_success() {
            return Err(ErrorKind::Unauthorized(format!(
                "token server {realm} answered HTTP {} for scope {:?}: {}",
                status.as_u16(),
                scope.0.join(" "),
                text.trim()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            ErrorKind::Protocol(format!(
                "token server {realm} sent no JSON token ({e}): {text}"
            ))
        })?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ErrorKind::Protocol(format!("token server {realm} sent no token: {text}"))
            })?;
        let ttl = Duration::from_secs(reply.expires_in.filter(|&s| s > 0).unwrap_or(60));
        Ok((token, ttl))
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            }]
        );
    }

    #[test]
    fn several_challenges_odd_spacing_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="Registry \"Realm\"", Bearer  realm = "https://a/t" , error="invalid_token", Negotiate"#,
        );
        assert_eq!(
            c,
            vec![
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "https://a/t".into(),
                    service: None
                },
                Challenge::Other("Negotiate".into()),
            ]
        );
        assert_eq!(parse_challenges("basic realm=x"), vec![Challenge::Basic]);
        assert_eq!(
            parse_challenges("Bearer service=x"),
            vec![Challenge::Other("Bearer without realm".into())]
        );
        assert_eq!(parse_challenges(""), vec![]);
        // Garbage never panics or loops.
        for junk in [
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "a=b=c,,=\"\\",
            "Bearer realm=\"ü\"",
        ] {
            let _ = parse_challenges(junk);
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_challenge_needs_basic_credentials_and_is_answered_once() {
        let s = Scope::none();
        let anon = Auth::new(Credentials::Anonymous);
        let e = anon
            .challenged(&headers("Basic realm=r"), &s, false, "m")
            .err()
            .unwrap();
        assert!(e.to_string().contains("none were given"), "{e}");
        let tok = Auth::new(Credentials::Token("t".into()));
        assert!(tok
            .challenged(&headers("Basic realm=r"), &s, true, "m")
            .is_err());
        let basic = Auth::new(Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        });
        assert!(basic
            .challenged(&headers("Basic realm=r"), &s, false, "m")
            .is_ok());
        assert_eq!(basic.basic().unwrap(), "Basic dTpw");
        let e = basic
            .challenged(&headers("Basic realm=r"), &s, true, "bad")
            .err()
            .unwrap();
        assert!(e.to_string().contains("refused the username"), "{e}");
        let e = basic
            .challenged(&HeaderMap::new(), &s, true, "m")
            .err()
            .unwrap();
        assert!(e.to_string().contains("without a challenge"), "{e}");
    }

    #[test]
    fn scopes_read_like_the_token_spec() {
        assert_eq!(
            Scope::push("team/app").and_pull("other/app").0,
            vec![
                "repository:team/app:pull,push".to_string(),
                "repository:other/app:pull".to_string()
            ]
        );
        assert_eq!(Scope::pull("a").0, vec!["repository:a:pull".to_string()]);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        assert!(!format!("{:?}", Credentials::Token("secret".into())).contains("secret"));
    }
}
