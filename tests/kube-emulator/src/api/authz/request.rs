//! What a request asks for, in RBAC's terms (the real server's
//! `RequestInfo`): the verb from the method (`get`/`list`/`watch` for GET,
//! `delete`/`deletecollection` for DELETE), the API group, resource,
//! subresource, namespace and name from the path, or the path itself for
//! requests outside the resource tree (`/api`, `/version`, `/healthz`);
//! and the 403 the real server answers when it is not allowed.

use std::collections::HashMap;

use axum::http::Method;

use super::super::error::ApiError;
use super::{Attributes, UserInfo};

/// A request's authorization attributes, owned.
#[derive(Debug, Default)]
pub struct RequestInfo {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set only for non-resource requests.
    pub path: String,
}

/// Subresources of a namespace object (`/api/v1/namespaces/x/status`), as
/// opposed to resources in a namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Parses a request to `path` (split in `segments`, decoded).
    pub fn parse(
        method: &Method,
        path: &str,
        segments: &[&str],
        query: &HashMap<String, String>,
    ) -> Self {
        let rest = match segments {
            ["api", _version, rest @ ..] => Some(("", rest)),
            ["apis", group, _version, rest @ ..] => Some((*group, rest)),
            _ => None,
        };
        let Some((group, rest)) = rest.filter(|(_, rest)| !rest.is_empty()) else {
            return Self {
                verb: method.as_str().to_ascii_lowercase(),
                path: path.to_string(),
                ..Self::default()
            };
        };
        let mut namespace = String::new();
        let mut parts = rest;
        if let ["namespaces", name, more @ ..] = rest {
            namespace = name.to_string();
            if !more.is_empty() && !NAMESPACE_SUBRESOURCES.contains(&more[0]) {
                parts = more;
            }
        }
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_string();
        let mut name = part(1);
        if name.is_empty() {
            // a list or watch of one object by name is authorized as one
            name = query
                .get("fieldSelector")
                .and_then(|selector| selector.strip_prefix("metadata.name="))
                .filter(|name| !name.contains(','))
                .unwrap_or_default()
                .to_string();
        }
        let named = parts.len() > 1;
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match *method {
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "",
        };
        // Connecting to a pod's streams is `create` whichever upgrade
        // carries it (a WebSocket upgrade is a GET), as with the real
        // server's AuthorizePodWebsocketUpgradeCreatePermission.
        let streaming = group.is_empty()
            && parts.first() == Some(&"pods")
            && matches!(parts.get(2), Some(&("exec" | "attach" | "portforward")));
        let verb = if streaming { "create" } else { verb };
        Self {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: part(0),
            subresource: part(2),
            namespace,
            name,
            path: String::new(),
        }
    }

    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            verb: &self.verb,
            group: &self.group,
            resource: &self.resource,
            subresource: &self.subresource,
            namespace: &self.namespace,
            name: &self.name,
            path: &self.path,
        }
    }
}

/// The 403 the real server answers when `user` may not do what
/// `attributes` say: `pods is forbidden: User "x" cannot list resource
/// "pods" in API group "" in the namespace "shop"`, the object's name
/// quoted when the request names one, `at the cluster scope` without a
/// namespace, `forbidden: User "x" cannot get path "/api"` outside the
/// resource tree; `reason` (why no rule applied) is appended.
pub fn forbidden(user: &UserInfo, attributes: &Attributes<'_>, reason: &str) -> ApiError {
    let who = format!("User {:?} cannot {}", user.name, attributes.verb);
    let mut why = if !attributes.is_resource_request() {
        format!("{who} path {:?}", attributes.path)
    } else {
        let resource = if attributes.subresource.is_empty() {
            attributes.resource.to_string()
        } else {
            format!("{}/{}", attributes.resource, attributes.subresource)
        };
        let scope = if attributes.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", attributes.namespace)
        };
        format!(
            "{who} resource {resource:?} in API group {:?} {scope}",
            attributes.group
        )
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    if attributes.is_resource_request() {
        ApiError::forbidden_on(attributes.group, attributes.resource, attributes.name, &why)
    } else {
        ApiError::forbidden_on("", "", "", &why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let query = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RequestInfo::parse(&method, path, &segments, &query)
    }

    #[test]
    fn verbs_and_targets_follow_the_real_request_info() {
        let list = info(Method::GET, "/api/v1/namespaces/shop/pods", &[]);
        assert_eq!(
            (list.verb.as_str(), list.namespace.as_str()),
            ("list", "shop")
        );
        let watch = info(Method::GET, "/api/v1/pods", &[("watch", "true")]);
        assert_eq!(
            (watch.verb.as_str(), watch.namespace.as_str()),
            ("watch", "")
        );
        let log = info(Method::GET, "/api/v1/namespaces/shop/pods/web/log", &[]);
        assert_eq!(
            (
                log.verb.as_str(),
                log.resource.as_str(),
                log.subresource.as_str(),
                log.name.as_str()
            ),
            ("get", "pods", "log", "web")
        );
        let namespace = info(Method::DELETE, "/api/v1/namespaces/shop", &[]);
        assert_eq!(
            (
                namespace.verb.as_str(),
                namespace.resource.as_str(),
                namespace.namespace.as_str(),
                namespace.name.as_str()
            ),
            ("delete", "namespaces", "shop", "shop")
        );
        let finalize = info(Method::PUT, "/api/v1/namespaces/shop/finalize", &[]);
        assert_eq!(
            (finalize.resource.as_str(), finalize.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let collection = info(
            Method::DELETE,
            "/apis/apps/v1/namespaces/shop/deployments",
            &[],
        );
        assert_eq!(
            (collection.verb.as_str(), collection.group.as_str()),
            ("deletecollection", "apps")
        );
        let one = info(
            Method::GET,
            "/api/v1/namespaces/shop/pods",
            &[("watch", "1"), ("fieldSelector", "metadata.name=web")],
        );
        assert_eq!((one.verb.as_str(), one.name.as_str()), ("watch", "web"));
        let discovery = info(Method::GET, "/apis/apps/v1", &[]);
        assert_eq!(
            (discovery.verb.as_str(), discovery.path.as_str()),
            ("get", "/apis/apps/v1")
        );
    }

    #[test]
    fn refusals_read_like_the_real_server() {
        let user = UserInfo {
            name: "developer".into(),
            uid: String::new(),
            groups: vec![],
        };
        let list = info(Method::GET, "/api/v1/namespaces/shop/pods", &[]);
        assert_eq!(
            forbidden(&user, &list.attributes(), "").message,
            r#"pods is forbidden: User "developer" cannot list resource "pods" in API group "" in the namespace "shop""#
        );
        let node = info(Method::GET, "/api/v1/nodes/n1", &[]);
        assert_eq!(
            forbidden(&user, &node.attributes(), "").message,
            r#"nodes "n1" is forbidden: User "developer" cannot get resource "nodes" in API group "" at the cluster scope"#
        );
        let path = info(Method::GET, "/api", &[]);
        assert_eq!(
            forbidden(&user, &path.attributes(), "").message,
            r#"forbidden: User "developer" cannot get path "/api""#
        );
    }
}
