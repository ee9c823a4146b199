//! Who a cluster's clients are: kube-rs configurations trusting the
//! cluster's CA with a given credential, the kubeconfig the tests, kubectl
//! and the orchestrator use, Velero's ServiceAccount as `velero install`
//! creates it, and OpenShift's ingress configuration as its installer does.

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};

use super::Credentials;
use crate::api::{Authority, KeyPairPem};
use crate::velero::create_if_absent;

/// A kube-rs configuration for the API server at `api_url` (a cluster's,
/// or a proxy's in front of it) that trusts `authority` and authenticates
/// with `credentials`.
pub fn config(
    api_url: &str,
    authority: &Authority,
    credentials: &Credentials,
) -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::new(api_url.parse().context("API server URL")?);
    config.root_cert = Some(vec![authority.ca_der()]);
    match credentials {
        Credentials::Certificate(pem) => {
            config.auth_info.client_certificate_data = Some(base64(&pem.cert));
            config.auth_info.client_key_data = Some(base64(&pem.key).into());
        }
        Credentials::Token(token) => config.auth_info.token = Some(token.clone().into()),
        Credentials::Anonymous => {}
    }
    Ok(config)
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// One cluster of a kubeconfig: its users are `<name><suffix>` with their
/// certificates, each with a context of the same name.
pub struct KubeconfigCluster<'a> {
    pub name: &'a str,
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub users: Vec<(&'static str, &'a KeyPairPem)>,
}

/// A kubeconfig for `clusters`, the first one's first context current,
/// every context in namespace `default`.
pub fn kubeconfig(clusters: &[KubeconfigCluster<'_>]) -> String {
    let mut config = String::from("apiVersion: v1\nkind: Config\n");
    let current = clusters.first().map_or("", |c| c.name);
    config += &format!("current-context: {current}\nclusters:\n");
    for cluster in clusters {
        config += &format!(
            "- name: {}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            cluster.name,
            cluster.server,
            base64(cluster.ca_pem)
        );
    }
    config += "users:\n";
    for cluster in clusters {
        for (suffix, pem) in &cluster.users {
            config += &format!(
                "- name: {}{suffix}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                cluster.name,
                base64(&pem.cert),
                base64(&pem.key)
            );
        }
    }
    config += "contexts:\n";
    for cluster in clusters {
        for (suffix, _) in &cluster.users {
            config += &format!(
                "- name: {0}{suffix}\n  context:\n    cluster: {0}\n    user: {0}{suffix}\n    namespace: default\n",
                cluster.name
            );
        }
    }
    config
}

/// How long Velero's token lasts: the longest a TokenRequest may ask
/// for, so that tests moving the pair's clock on do not log Velero out
/// (a real pod's token is refreshed by the kubelet instead).
const VELERO_TOKEN_SECONDS: i64 = 1 << 32;

/// Creates Velero's namespace, its ServiceAccount `velero` and the
/// ClusterRoleBinding of it to `cluster-admin`, as `velero install` does,
/// and returns a token of that ServiceAccount (what Velero's pod would
/// mount).
pub async fn install_velero_account(
    admin: &kube::Client,
    namespace: &str,
) -> anyhow::Result<String> {
    let metadata = |name: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some([("component".to_string(), "velero".to_string())].into()),
        ..ObjectMeta::default()
    };
    let namespaces = Api::<Namespace>::all(admin.clone());
    create_if_absent(
        &namespaces,
        &Namespace {
            metadata: metadata(namespace, None),
            ..Namespace::default()
        },
    )
    .await?;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    create_if_absent(
        &accounts,
        &ServiceAccount {
            metadata: metadata("velero", Some(namespace)),
            ..ServiceAccount::default()
        },
    )
    .await?;
    let binding_name = if namespace == crate::velero::NAMESPACE {
        "velero".to_string()
    } else {
        format!("velero-{namespace}")
    };
    let bindings = Api::<ClusterRoleBinding>::all(admin.clone());
    create_if_absent(
        &bindings,
        &ClusterRoleBinding {
            metadata: metadata(&binding_name, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_string()),
                kind: "ClusterRole".to_string(),
                name: "cluster-admin".to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_string(),
                name: "velero".to_string(),
                namespace: Some(namespace.to_string()),
                api_group: None,
            }]),
        },
    )
    .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(VELERO_TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", "velero", &PostParams::default(), &request)
        .await
        .context("requesting Velero's token")?;
    issued
        .status
        .and_then(|status| status.token)
        .context("the TokenRequest came back without a token")
}

/// Creates `ingresses.config.openshift.io/cluster`, which an OpenShift
/// installer makes: its `spec.domain` is the apps domain the router makes
/// Route hosts in (`<route>-<namespace>.<domain>`), and what a client
/// reads to name a host itself (a long namespace makes the generated one
/// invalid).
pub async fn install_ingress_config(admin: &kube::Client, apps_domain: &str) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "config.openshift.io",
        "v1",
        "Ingress",
    ));
    let ingresses = Api::<DynamicObject>::all_with(admin.clone(), &resource);
    let mut config = DynamicObject::new("cluster", &resource);
    config.data = serde_json::json!({"spec": {"domain": apps_domain}});
    create_if_absent(&ingresses, &config).await
}
