//! Bearer tokens: the static ones tests mint (`Authenticator::token_for`)
//! and ServiceAccount tokens from TokenRequests
//! (`POST .../serviceaccounts/NAME/token`, what `kubectl create token`
//! and the kubelet's projected volumes ask for).
//!
//! A ServiceAccount token is bound to the ServiceAccount object (its uid),
//! and to a pod when the request names one (`spec.boundObjectRef`, as the
//! kubelet's requests do), and expires: it stops authenticating once the
//! pair's clock passes its expiration or the ServiceAccount (or pod) is
//! deleted (a new one of the same name has another uid), as a real bound
//! token does. It authenticates to the API server only if the API
//! server's audience is among its audiences (the default).

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
        /// The pod the token is bound to (`spec.boundObjectRef`): its name
        /// and uid. The token dies with it.
        pod: Option<(String, String)>,
        /// Whether the API server is among the token's audiences; a token
        /// for another audience does not authenticate to it.
        for_api_server: bool,
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
                pod,
                for_api_server,
            } => {
                let account = state.get(&service_accounts(state)?, namespace, name).ok()?;
                let current = account["metadata"]["uid"].as_str() == Some(uid.as_str());
                let pod_alive = pod.as_ref().is_none_or(|(pod, pod_uid)| {
                    pods(state)
                        .and_then(|rt| state.get(&rt, namespace, pod).ok())
                        .is_some_and(|pod| pod["metadata"]["uid"].as_str() == Some(pod_uid))
                });
                (current && pod_alive && *for_api_server && now < expires)
                    .then(|| service_account_user(namespace, name, uid))
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

fn pods(state: &State) -> Option<ResourceType> {
    state.catalog.find("", "v1", "pods").cloned()
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
    let pod = bound_pod(
        state,
        namespace,
        name,
        &mut request["spec"]["boundObjectRef"],
    )?;
    let expires = authenticator
        .shared
        .clock
        .now()
        .checked_add(SignedDuration::from_secs(seconds))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if request["spec"]["audiences"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        request["spec"]["audiences"] = json!([API_AUDIENCE]);
    }
    let for_api_server = request["spec"]["audiences"]
        .as_array()
        .is_some_and(|audiences| audiences.iter().any(|a| a == API_AUDIENCE));
    let token = new_token();
    authenticator.grants().insert(
        token.clone(),
        Grant::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            expires,
            pod,
            for_api_server,
        },
    );
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

/// The pod a TokenRequest binds its token to (`spec.boundObjectRef`, with
/// its uid filled in), checked as the real API server checks it: a Pod
/// of the namespace, running as the ServiceAccount, with the uid given.
/// `None` for a token bound to the ServiceAccount alone.
fn bound_pod(
    state: &State,
    namespace: &str,
    account: &str,
    reference: &mut Value,
) -> ApiResult<Option<(String, String)>> {
    if reference.is_null() {
        return Ok(None);
    }
    let kind = reference["kind"].as_str().unwrap_or_default();
    if kind != "Pod" {
        return Err(ApiError::bad_request(format!(
            "cannot bind token to object of type {kind:?}: the emulator binds tokens to pods only"
        )));
    }
    let name = reference["name"].as_str().unwrap_or_default().to_string();
    let rt = pods(state).ok_or_else(ApiError::no_such_path)?;
    let pod = state.get(&rt, namespace, &name)?;
    let pod_uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match reference["uid"].as_str().filter(|uid| !uid.is_empty()) {
        Some(uid) if uid != pod_uid => {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "the UID in the bound object reference ({uid}) does not match the UID in \
                     record ({pod_uid}). The object might have been deleted and then recreated"
                ),
            ))
        }
        _ => reference["uid"] = json!(pod_uid),
    }
    let runs_as = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    if runs_as != account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different \
             serviceaccount name."
        )));
    }
    Ok(Some((name, pod_uid)))
}
