//! Authentication: who sent a request, as the API server's authenticator
//! chain decides it.
//!
//! In the order the real chain tries them:
//!
//! 1. a client certificate signed by the cluster's CA (`pki`): CommonName
//!    the user, Organizations the groups (kubeconfig users and the
//!    cluster's own components authenticate this way);
//! 2. a bearer token: a static one (`Authenticator::token_for`, as
//!    `--token-auth-file` lists them) or a ServiceAccount token from a
//!    TokenRequest (`tokens`), valid while its ServiceAccount (and the pod
//!    it is bound to, if any) exists, until it expires by the pair's
//!    clock, and only if it is for the API server's audience;
//! 3. neither: `system:anonymous` in `system:unauthenticated`.
//!
//! A bearer token that is not valid is refused (401) rather than treated
//! as anonymous. Every authenticated user is also in `system:authenticated`.
//! The TLS listener that verifies the certificates is `tls`.

pub mod pki;
pub mod tls;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{header, HeaderMap};

use super::authz::UserInfo;
use super::error::ApiError;
use super::objects::State;
use crate::context::Shared;

pub use tokens::token_request;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of requests without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";

/// One cluster's authenticators: its CA and the bearer tokens it accepts.
pub struct Authenticator {
    authority: Arc<pki::Authority>,
    /// The pair's clock, which ServiceAccount tokens expire by.
    shared: Arc<Shared>,
    tokens: Mutex<HashMap<String, tokens::Grant>>,
}

impl Authenticator {
    pub fn new(authority: Arc<pki::Authority>, shared: Arc<Shared>) -> Self {
        Self {
            authority,
            shared,
            tokens: Mutex::default(),
        }
    }

    pub fn authority(&self) -> &Arc<pki::Authority> {
        &self.authority
    }

    /// A new bearer token that authenticates as `user` in `groups` (and
    /// `system:authenticated`), valid as long as the cluster runs: what a
    /// line of the API server's `--token-auth-file` gives.
    pub fn token_for(&self, user: &str, groups: &[&str]) -> String {
        let token = tokens::new_token();
        let user = UserInfo {
            name: user.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        self.grants()
            .insert(token.clone(), tokens::Grant::Static(user));
        token
    }

    /// The user a request authenticates as, from the certificate its
    /// connection presented (`certificate_user`) or its bearer token; 401
    /// for a bearer token that is unknown, expired or whose ServiceAccount
    /// is gone.
    pub(in crate::api) fn authenticate(
        &self,
        state: &State,
        headers: &HeaderMap,
        certificate_user: Option<&UserInfo>,
    ) -> Result<UserInfo, ApiError> {
        let mut user = if let Some(user) = certificate_user {
            user.clone()
        } else if let Some(token) = bearer_token(headers) {
            let grant = self.grants().get(token).cloned();
            grant
                .and_then(|grant| grant.user(state, &self.shared.clock.now()))
                .ok_or_else(unauthorized)?
        } else {
            return Ok(UserInfo {
                name: ANONYMOUS.to_string(),
                uid: String::new(),
                groups: vec![UNAUTHENTICATED.to_string()],
            });
        };
        if !user.is_member(AUTHENTICATED) {
            user.groups.push(AUTHENTICATED.to_string());
        }
        Ok(user)
    }

    fn grants(&self) -> MutexGuard<'_, HashMap<String, tokens::Grant>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The token of an `Authorization: Bearer ...` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The real server's answer to credentials it does not accept.
fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}
