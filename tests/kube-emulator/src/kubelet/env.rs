//! A container's environment: the `kubernetes` Service's variables, then
//! `envFrom` then `env` (later names win), with values from Secrets,
//! ConfigMaps and the pod's own fields, and `$(VAR)` references expanded
//! as the real kubelet does.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt as _;

use super::sources::{Kind, Sources};
use super::state::Waiting;

/// What a container's env can refer to besides Secrets and ConfigMaps.
pub(super) struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub host_ip: &'a str,
    /// The pod's IP when it is known before the container starts (it is
    /// not for the container that owns the pod's network: Docker assigns
    /// the address when that container starts).
    pub pod_ip: Option<&'a str>,
    /// Where the pod reaches the API server (see [`service_env`]).
    pub api_server: SocketAddr,
}

/// The environment of `container`, in order, as `(name, value)`.
pub(super) async fn resolve(
    container: &Container,
    facts: &PodFacts<'_>,
    sources: &mut Sources,
) -> Result<Vec<(String, String)>, Waiting> {
    let mut env = Environment(service_env(facts.api_server));
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let source = match (&from.secret_ref, &from.config_map_ref) {
            (Some(secret), _) => {
                sources
                    .get(Kind::Secret, &secret.name, secret.optional.unwrap_or(false))
                    .await?
            }
            (None, Some(config_map)) => {
                sources
                    .get(
                        Kind::ConfigMap,
                        &config_map.name,
                        config_map.optional.unwrap_or(false),
                    )
                    .await?
            }
            (None, None) => None,
        };
        for (key, value) in source.iter().flat_map(|source| source.data.iter()) {
            env.set(
                format!("{prefix}{key}"),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => expand(value, &env),
            (None, Some(from)) => {
                let (kind, name, key, optional) = if let Some(selector) = &from.secret_key_ref {
                    (
                        Kind::Secret,
                        &selector.name,
                        &selector.key,
                        selector.optional,
                    )
                } else if let Some(selector) = &from.config_map_key_ref {
                    (
                        Kind::ConfigMap,
                        &selector.name,
                        &selector.key,
                        selector.optional,
                    )
                } else if let Some(field) = &from.field_ref {
                    env.set(var.name.clone(), field_value(&field.field_path, facts)?);
                    continue;
                } else {
                    return Err(Waiting::config(format!(
                        "env var {}: only value, secretKeyRef, configMapKeyRef and fieldRef are \
                         supported by the emulator's kubelet",
                        var.name
                    )));
                };
                let optional = optional.unwrap_or(false);
                let Some(source) = sources.get(kind, name, optional).await? else {
                    continue;
                };
                match source.get(key) {
                    Ok(value) => String::from_utf8_lossy(value).into_owned(),
                    Err(_) if optional => continue,
                    Err(missing) => return Err(missing),
                }
            }
            (None, None) => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.0)
}

/// The variables the real kubelet gives every container for the
/// `default/kubernetes` Service (whatever `enableServiceLinks` says), which
/// kube-rs's and client-go's in-cluster configurations read. They name
/// the API server's own address on the cluster network rather than the
/// Service's IP and port, which nothing routes in the emulator. Other
/// Services get no variables: their ClusterIPs route nowhere either.
/// The container's own variables of the same names win.
fn service_env(api_server: SocketAddr) -> Vec<(String, String)> {
    let (host, port) = (api_server.ip().to_string(), api_server.port());
    let url = format!("tcp://{api_server}");
    let prefix = format!("KUBERNETES_PORT_{port}_TCP");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (prefix.clone(), url),
        (format!("{prefix}_PROTO"), "tcp".into()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_ADDR"), host),
    ]
}

/// Name/value pairs in the order first defined, a later value replacing
/// an earlier one of the same name.
#[derive(Default)]
pub(super) struct Environment(Vec<(String, String)>);

impl Environment {
    fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(existing, _)| *existing == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }
}

impl From<&[(String, String)]> for Environment {
    fn from(vars: &[(String, String)]) -> Self {
        Self(vars.to_vec())
    }
}

/// Kubernetes' `$(VAR)` expansion: a reference to a defined variable is
/// replaced by its value, an undefined one is left as written, and `$$`
/// stands for a literal `$`.
pub(super) fn expand(input: &str, env: &Environment) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            output.push('$');
            rest = escaped;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|reference| reference.split_once(')'))
        {
            match env.get(name) {
                Some(value) => output.push_str(value),
                None => {
                    output.push_str("$(");
                    output.push_str(name);
                    output.push(')');
                }
            }
            rest = tail;
        } else {
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
}

/// The content of a downward-API volume file: a field as in env, or
/// the pod's labels or annotations, one `key="value"` line each (sorted).
pub(super) fn volume_field(path: &str, facts: &PodFacts<'_>) -> Result<String, Waiting> {
    let map = match path {
        "metadata.labels" => facts.pod.labels(),
        "metadata.annotations" => facts.pod.annotations(),
        _ => return field_value(path, facts),
    };
    Ok(map
        .iter()
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The value of a downward-API `fieldRef`.
fn field_value(path: &str, facts: &PodFacts<'_>) -> Result<String, Waiting> {
    let pod = facts.pod;
    let spec = pod.spec.as_ref();
    let quoted_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    let value = match path {
        "metadata.name" => Some(pod.name_any()),
        "metadata.namespace" => pod.namespace(),
        "metadata.uid" => pod.uid(),
        "spec.nodeName" => spec.and_then(|spec| spec.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|spec| spec.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => Some(facts.host_ip.to_string()),
        "status.podIP" | "status.podIPs" => match facts.pod_ip {
            Some(ip) => Some(ip.to_string()),
            None => {
                return Err(Waiting::config(format!(
                    "fieldRef {path}: the emulator's kubelet cannot give the pod IP to the \
                     pod's first container (Docker assigns it when the container starts)"
                )))
            }
        },
        _ => {
            if let Some(key) = quoted_key("metadata.labels['") {
                pod.labels().get(&key).cloned()
            } else if let Some(key) = quoted_key("metadata.annotations['") {
                pod.annotations().get(&key).cloned()
            } else {
                return Err(Waiting::config(format!(
                    "fieldRef {path} is not supported by the emulator's kubelet"
                )));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment(
            vars.iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        )
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = env(&[("A", "one"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &env), "one-two");
        assert_eq!(expand("$(UNSET) stays", &env), "$(UNSET) stays");
        assert_eq!(expand("$$(A) is escaped", &env), "$(A) is escaped");
        assert_eq!(expand("cost: $5 and $", &env), "cost: $5 and $");
        assert_eq!(expand("$(A", &env), "$(A");
    }
}
