//! Bearer tokens: the static ones tests mint (`Authenticator::token_for`)
//! and ServiceAccount tokens from TokenRequests
//! (`POST .../serviceaccounts/NAME/token`, what `kubectl create token`
//! and the kubelet's projected volumes ask for).
//!
//! A ServiceAccount token is bound to the ServiceAccount object (its uid)
//! and expires: it stops authenticating once the pair's clock passes its
//! expiration or the ServiceAccount is deleted (a new one of the same
//! name has another uid), as a real bound token does.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use super::super::authz::UserInfo;
use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::ResourceType;
use super::Authenticator;

/// The shortest and longest lifetimes a TokenRequest may ask for, and
/// what it gets when it names none.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;
const DEFAULT_SECONDS: i64 = 3600;
/// The audience tokens are for when a request names none (the API
/// server's own, `--api-audiences`).
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token authenticates as.
#[derive(Clone, Debug)]
pub(super) enum Grant {
    Static(UserInfo),
    ServiceAccount {
        namespace: String,
        name: String,
        uid: String,
        expires: Timestamp,
    },
}

impl Grant {
    /// The user, if the grant is still valid at `now`.
    pub(super) fn user(&self, state: &State, now: &Timestamp) -> Option<UserInfo> {
        match self {
            Grant::Static(user) => Some(user.clone()),
            Grant::ServiceAccount {
                namespace,
                name,
                uid,
                expires,
            } => {
                let account = state.get(&service_accounts(state)?, namespace, name).ok()?;
                let current = account["metadata"]["uid"].as_str() == Some(uid.as_str());
                (current && now < expires).then(|| service_account_user(namespace, name, uid))
            }
        }
    }
}

/// The user a ServiceAccount's tokens authenticate as.
pub fn service_account_user(namespace: &str, name: &str, uid: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        uid: uid.to_string(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ],
    }
}

fn service_accounts(state: &State) -> Option<ResourceType> {
    state.catalog.find("", "v1", "serviceaccounts").cloned()
}

/// A fresh random token.
pub(super) fn new_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..48)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// Answers a TokenRequest for the ServiceAccount `namespace/name`: the
/// TokenRequest with `status.token` and `status.expirationTimestamp`.
pub fn token_request(
    authenticator: &Authenticator,
    state: &State,
    namespace: &str,
    name: &str,
    mut request: Value,
) -> ApiResult<Value> {
    if !request.is_object() {
        return Err(ApiError::bad_request("the body must be a TokenRequest"));
    }
    let invalid = |why: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: {why}"),
        )
    };
    let seconds = match &request["spec"]["expirationSeconds"] {
        Value::Null => DEFAULT_SECONDS,
        value => value.as_i64().ok_or_else(|| {
            invalid(format!(
                "spec.expirationSeconds: Invalid value: {value}: must be an integer"
            ))
        })?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(format!("spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes")));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid(format!("spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")));
    }
    let rt = service_accounts(state).ok_or_else(ApiError::no_such_path)?;
    let account = state.get(&rt, namespace, name)?;
    let uid = account["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let expires = authenticator
        .shared
        .clock
        .now()
        .checked_add(SignedDuration::from_secs(seconds))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let token = new_token();
    authenticator.grants().insert(
        token.clone(),
        Grant::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            expires,
        },
    );
    if request["spec"]["audiences"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        request["spec"]["audiences"] = json!([API_AUDIENCE]);
    }
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": super::super::meta::now()});
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(request)
}
