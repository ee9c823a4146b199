//! Which RBAC rules apply to a user: the ClusterRoleBindings and, in a
//! namespace, the RoleBindings whose subjects name the user, one of its
//! groups or its ServiceAccount, and the rules of the roles they refer to
//! (an aggregated ClusterRole has the rules of the ClusterRoles its
//! `aggregationRule` selects, as the aggregation controller would write
//! them).

use serde_json::Value;

use super::super::objects::State;
use super::super::resources::TypeKey;
use super::rules::Rule;
use super::UserInfo;

pub const GROUP: &str = "rbac.authorization.k8s.io";

fn key(plural: &str) -> TypeKey {
    TypeKey {
        group: GROUP.to_string(),
        plural: plural.to_string(),
    }
}

/// How deep aggregated ClusterRoles may nest (the controller converges on
/// any depth; a cycle just stops here).
const MAX_AGGREGATION_DEPTH: usize = 8;

/// The rules a ClusterRole grants, aggregated ones included; `None` when
/// there is no such ClusterRole.
pub fn cluster_role_rules(state: &State, name: &str) -> Option<Vec<Rule>> {
    let role = state.store.get(&key("clusterroles"), "", name)?;
    Some(aggregated(state, role, MAX_AGGREGATION_DEPTH))
}

fn aggregated(state: &State, role: &Value, depth: usize) -> Vec<Rule> {
    let selectors = role["aggregationRule"]["clusterRoleSelectors"].as_array();
    let Some(selectors) = selectors.filter(|_| depth > 0) else {
        return Rule::all_of(role);
    };
    let selectors: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> = selectors
        .iter()
        .filter_map(|s| serde_json::from_value(s.clone()).ok())
        .collect();
    let own_name = &role["metadata"]["name"];
    let mut rules: Vec<Rule> = Vec::new();
    for other in state.store.list(&key("clusterroles"), None) {
        if &other["metadata"]["name"] == own_name {
            continue;
        }
        let labels =
            serde_json::from_value(other["metadata"]["labels"].clone()).unwrap_or_default();
        if selectors
            .iter()
            .any(|s| crate::controllers::selects(s, &labels))
        {
            for rule in aggregated(state, other, depth - 1) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    rules
}

/// The rules a binding's `roleRef` grants in the binding's namespace
/// (`""` for a ClusterRoleBinding), or why it grants none.
pub fn role_ref_rules(
    state: &State,
    role_ref: &Value,
    namespace: &str,
) -> Result<Vec<Rule>, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    match role_ref["kind"].as_str().unwrap_or_default() {
        "ClusterRole" => cluster_role_rules(state, name)
            .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io {name:?} not found")),
        "Role" if !namespace.is_empty() => state
            .store
            .get(&key("roles"), namespace, name)
            .map(Rule::all_of)
            .ok_or_else(|| format!("role.rbac.authorization.k8s.io {name:?} not found")),
        kind => Err(format!("unsupported role reference kind: {kind:?}")),
    }
}

/// Whether a binding subject names `user`; a ServiceAccount subject
/// without a namespace is in the binding's.
fn names(subject: &Value, user: &UserInfo, namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.is_member(name),
        "ServiceAccount" => {
            let account_namespace = subject["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(namespace);
            !account_namespace.is_empty()
                && user.name == format!("system:serviceaccount:{account_namespace}:{name}")
        }
        _ => false,
    }
}

/// How the real authorizer names where a permission comes from:
/// `ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`.
fn describe(binding: &Value, subject: &Value) -> String {
    let metadata = &binding["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    let namespace = metadata["namespace"].as_str().unwrap_or_default();
    let role_ref = &binding["roleRef"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let subject_name = match subject["kind"].as_str() {
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(namespace);
            format!("{}/{ns}", text(&subject["name"]))
        }
        _ => text(&subject["name"]),
    };
    let (kind, shown) = if namespace.is_empty() {
        ("ClusterRoleBinding", name.to_string())
    } else {
        ("RoleBinding", format!("{name}/{namespace}"))
    };
    format!(
        "{kind} {shown:?} of {} {:?} to {} {subject_name:?}",
        text(&role_ref["kind"]),
        text(&role_ref["name"]),
        text(&subject["kind"]),
    )
}

/// Calls `visit` with each rule that applies to `user` in `namespace`
/// (cluster-wide rules only when `namespace` is empty) and where it comes
/// from, until `visit` returns false. Bindings to missing roles are
/// passed over.
pub fn visit_rules(
    state: &State,
    user: &UserInfo,
    namespace: &str,
    mut visit: impl FnMut(&Rule, &dyn Fn() -> String) -> bool,
) {
    let cluster = state.store.list(&key("clusterrolebindings"), None);
    let local = (!namespace.is_empty())
        .then(|| state.store.list(&key("rolebindings"), Some(namespace)))
        .into_iter()
        .flatten();
    for binding in cluster.chain(local) {
        let binding_namespace = binding["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let subject = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| names(s, user, binding_namespace));
        let Some(subject) = subject else { continue };
        let Ok(rules) = role_ref_rules(state, &binding["roleRef"], binding_namespace) else {
            continue;
        };
        for rule in &rules {
            if !visit(rule, &|| describe(binding, subject)) {
                return;
            }
        }
    }
}

/// Every rule that applies to `user` in `namespace`.
pub fn rules_for(state: &State, user: &UserInfo, namespace: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    visit_rules(state, user, namespace, |rule, _| {
        rules.push(rule.clone());
        true
    });
    rules
}
