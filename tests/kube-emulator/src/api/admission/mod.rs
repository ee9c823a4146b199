//! The admission chain every create and update of the main resource goes
//! through before it is stored (dry runs included, which run the whole
//! chain and store nothing), in the real API server's order: the mutating
//! plugins first (the ServiceAccount token mount, namespace security
//! annotations on OpenShift, LimitRange
//! defaulting, SecurityContextConstraints), then the validating ones (Pod
//! Security, ResourceQuota). Each plugin is switched by the cluster's
//! `Policy`; refusals carry the real server's messages, and warnings go
//! back to the client as `Warning` headers.

mod limit_ranger;
mod pod;
mod pod_security;
mod resource_quota;
mod scc;
mod service_account;

use serde_json::Value;

use super::authz::UserInfo;
use super::error::ApiResult;
use super::objects::State;
use super::resources::ResourceType;
use crate::policy::Flavour;

/// What the chain needs of a request beyond the object: who writes,
/// whether it is a dry run, and where the warnings for the client go.
#[derive(Debug)]
pub struct Write {
    pub user: UserInfo,
    pub dry_run: bool,
    /// Texts for the response's `Warning: 299` headers.
    pub warnings: Vec<String>,
}

impl Write {
    pub fn new(user: UserInfo, dry_run: bool) -> Self {
        Self {
            user,
            dry_run,
            warnings: Vec::new(),
        }
    }

    /// The cluster's own writes (its built-in objects at start).
    pub fn system() -> Self {
        Self::new(UserInfo::apiserver(), false)
    }
}

/// Admits `object` (a create when `old` is `None`, else an update of the
/// main resource), mutating it as the mutating plugins do, or refuses it.
pub fn admit(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
    write: &mut Write,
) -> ApiResult<()> {
    let policy = &state.policy;
    service_account::admit(state, rt, old, object);
    if policy.flavour == Flavour::OpenShift && rt.is_namespace() && old.is_none() {
        scc::namespace::allocate(state, object);
    }
    if policy.quotas {
        limit_ranger::admit(state, rt, old, object)?;
    }
    if policy.enforces_sccs() {
        scc::admit(state, rt, old, object, &write.user)?;
    }
    if policy.pod_security {
        pod_security::admit(state, rt, old, object, &mut write.warnings)?;
    }
    if policy.quotas {
        resource_quota::admit(state, rt, old, object)?;
    }
    Ok(())
}

/// Keeps what admission derives from stored objects current after a write
/// or removal in `namespace`: the ResourceQuotas' `status.used`.
pub fn after_write(state: &mut State, namespace: &str) {
    if state.policy.quotas && !namespace.is_empty() {
        resource_quota::refresh(state, namespace);
    }
}

/// The objects a fresh cluster of this flavour starts with for admission:
/// on OpenShift, the default SecurityContextConstraints and the RBAC that
/// lets every authenticated user use `restricted-v2`.
pub fn install_defaults(state: &mut State) {
    if state.policy.flavour == Flavour::OpenShift {
        scc::defaults::install(state);
    }
}

/// The groups of the service accounts of `namespace`, as the service
/// account authenticator reports them.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_string(),
    ]
}
