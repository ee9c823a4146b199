//! OpenShift's SecurityContextConstraints admission, as
//! `apiserver-library-go`'s `sccadmission` runs it on pod creation: every
//! SCC, ordered by priority, then restrictiveness, then name, is tried in
//! turn; one the pod's service account or the requesting user may use
//! (named in its `users` or `groups`, or granted `use` through RBAC)
//! defaults the pod and validates it, and the first that validates wins
//! (the pod is annotated `openshift.io/scc: NAME`). When none does, the
//! pod is refused with every provider's reasons.

pub mod defaults;
mod field;
pub mod namespace;
mod provider;

use serde_json::{json, Value};

use super::super::authz::{self, Attributes, UserInfo};
use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::{Catalog, ResourceType};
use super::service_account_groups;
use field::FieldError;
use provider::Provider;

/// The annotation naming the SCC that admitted a pod.
const VALIDATED_SCC: &str = "openshift.io/scc";

/// Who an SCC was usable by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    ServiceAccount,
    User,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::ServiceAccount => "serviceaccount",
            Subject::User => "user",
        }
    }
}

/// Whether `user` may use the SCC: named in it, in one of its groups, or
/// allowed `use` of it in `namespace`.
fn may_use(state: &State, provider: &Provider, user: &UserInfo, namespace: &str) -> bool {
    provider.users.contains(&user.name)
        || user.groups.iter().any(|g| provider.groups.contains(g))
        || authz::allows(
            state,
            user,
            &Attributes {
                verb: "use",
                group: "security.openshift.io",
                resource: "securitycontextconstraints",
                namespace,
                name: &provider.name,
                ..Attributes::default()
            },
        )
}

/// Admits a new pod: defaulted and annotated by the first SCC that
/// validates it, or refused.
pub fn admit(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    pod: &mut Value,
    user: &UserInfo,
) -> ApiResult<()> {
    if !rt.is("", "pods") || old.is_some() || pod["spec"]["os"]["name"] == "windows" {
        return Ok(());
    }
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace_name = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let forbidden = |why: String| ApiError::forbidden_object(rt, &name, &why);
    let namespace = state
        .store
        .get(&Catalog::namespace_type().key(), "", &namespace_name)
        .cloned()
        .unwrap_or_default();
    for key in [namespace::UID_RANGE, namespace::MCS] {
        if !namespace["metadata"]["annotations"][key].is_string() {
            return Err(forbidden(format!(
                "error fetching namespace {namespace_name:?}: unable to find annotation {key}"
            )));
        }
    }
    let providers = providers(state, &namespace).map_err(&forbidden)?;
    if providers.is_empty() {
        return Err(forbidden(
            "no SecurityContextConstraintsProvider available to validate pod request".into(),
        ));
    }
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    let account_user = (!account.is_empty()).then(|| UserInfo {
        name: format!("system:serviceaccount:{namespace_name}:{account}"),
        uid: String::new(),
        groups: service_account_groups(&namespace_name),
    });
    let usable_by = |provider: &Provider| {
        if account_user
            .as_ref()
            .is_some_and(|sa| may_use(state, provider, sa, &namespace_name))
        {
            Some(Subject::ServiceAccount)
        } else if may_use(state, provider, user, &namespace_name) {
            Some(Subject::User)
        } else {
            None
        }
    };
    let mut errors: Vec<FieldError> = Vec::new();
    let mut denied = Vec::new();
    for provider in &providers {
        let Some(subject) = usable_by(provider) else {
            denied.push(provider.name.as_str());
            errors.push(field::forbidden(
                &format!("provider {:?}", provider.name),
                "not usable by user or serviceaccount",
            ));
            continue;
        };
        let mut candidate = pod.clone();
        let found = provider.assign(&mut candidate);
        if !found.is_empty() {
            errors.extend(found);
            continue;
        }
        if !candidate["metadata"]["annotations"].is_object() {
            candidate["metadata"]["annotations"] = json!({});
        }
        let annotations = &mut candidate["metadata"]["annotations"];
        annotations[VALIDATED_SCC] = json!(provider.name);
        annotations["security.openshift.io/validated-scc-subject-type"] = json!(subject.name());
        *pod = candidate;
        return Ok(());
    }
    let restricted_would_do = denied.contains(&"restricted")
        && providers.iter().any(|p| p.name == "restricted-v2")
        && providers
            .iter()
            .find(|p| p.name == "restricted")
            .is_some_and(|p| p.assign(&mut pod.clone()).is_empty());
    if restricted_would_do {
        errors.push(field::forbidden(
            "no access to scc/restricted",
            "the pod fails to validate against the `restricted-v2` security context constraint, but would validate successfully against the `restricted` security context constraint",
        ));
    }
    Err(forbidden(format!(
        "unable to validate against any security context constraint: {}",
        field::aggregate(&errors)
    )))
}

/// The providers of every SCC in `namespace`, in the order they are
/// tried.
fn providers(state: &State, namespace: &Value) -> Result<Vec<Provider>, String> {
    let sccs = Catalog::builtin("security.openshift.io", "securitycontextconstraints");
    let mut providers = Vec::new();
    let mut errors = Vec::new();
    for scc in state.store.list(&sccs.key(), None) {
        match Provider::new(scc, namespace) {
            Ok(provider) => providers.push(provider),
            Err(why) => errors.push(FieldError(why)),
        }
    }
    if !errors.is_empty() {
        return Err(field::aggregate(&errors));
    }
    providers.sort_by(|a, b| {
        b.priority()
            .cmp(&a.priority())
            .then(a.points().cmp(&b.points()))
            .then(a.name.cmp(&b.name))
    });
    Ok(providers)
}
