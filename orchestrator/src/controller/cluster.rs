//! The `MigrationCluster` resource: a cluster the controller migrates from
//! or to, registered as MTC registers a MigCluster. The host cluster (the
//! one the controller runs in) is reached with the controller's own
//! service account; any other through a Secret in the resource's
//! namespace holding a `kubeconfig`, or a `token` (with `ca.crt`, or the
//! spec's `caBundle`) for the spec's `url`.
//!
//! The reconciler connects with those credentials and says in the status
//! what it found: whether the cluster answers (`Ready`, or why not, in the
//! cluster's own words), its Kubernetes version, whether it is OpenShift,
//! whether Velero is installed, and its internal registry's exposed route.
//! It looks again every minute (every 15 s while not ready), and at once
//! when the resource or its Secret changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::controller::Action;
use kube::{Api, CustomResource, Resource as _, ResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::conditions::{set_condition, Condition};
use super::Context;
use crate::client;

/// A cluster to migrate from or to.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "mover.io",
    version = "v1alpha1",
    kind = "MigrationCluster",
    namespaced,
    status = "MigrationClusterStatus",
    shortname = "mcluster",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"OpenShift","type":"boolean","jsonPath":".status.openShift"}"#,
    printcolumn = r#"{"name":"Velero","type":"boolean","jsonPath":".status.velero"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationClusterSpec {
    /// The cluster the controller runs in: reached with the controller's
    /// own service account, no Secret.
    #[serde(default)]
    pub is_host_cluster: bool,
    /// The API server's URL, for a Secret holding a `token`.
    #[serde(default)]
    pub url: Option<String>,
    /// A Secret in this resource's namespace with the credentials: key
    /// `kubeconfig` (its current context is used), or `token` and
    /// optionally `ca.crt`.
    #[serde(default)]
    pub secret_ref: Option<SecretRef>,
    /// The CA (PEM) that signed the API server's certificate, when the
    /// Secret has no `ca.crt`.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// The internal registry's exposed route (`host[:port]`), when the
    /// cluster does not say (OpenShift's `default-route`).
    #[serde(default)]
    pub exposed_registry_path: Option<String>,
}

/// A Secret named in the resource's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
}

/// What the controller found when it last connected.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationClusterStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    #[serde(default)]
    pub open_shift: Option<bool>,
    #[serde(default)]
    pub velero: Option<bool>,
    #[serde(default)]
    pub registry_path: Option<String>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// Why a cluster cannot be used, as a condition reason and a message.
#[derive(Debug)]
pub(crate) struct NotReady {
    reason: &'static str,
    message: String,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl NotReady {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        NotReady {
            reason,
            message: message.into(),
        }
    }
}

/// A client for the cluster `spec` describes: the host's own client, or
/// one built from the Secret it names in `namespace`.
pub(crate) async fn connect(
    spec: &MigrationClusterSpec,
    namespace: &str,
    host: &kube::Client,
) -> Result<kube::Client, NotReady> {
    if spec.is_host_cluster {
        return Ok(host.clone());
    }
    let Some(secret_ref) = &spec.secret_ref else {
        return Err(NotReady::new(
            "InvalidSpec",
            "spec.secretRef is required unless spec.isHostCluster is true",
        ));
    };
    let secret = Api::<Secret>::namespaced(host.clone(), namespace)
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| {
            NotReady::new(
                "SecretNotReadable",
                format!("reading Secret {namespace}/{}: {e}", secret_ref.name),
            )
        })?
        .ok_or_else(|| {
            NotReady::new(
                "SecretNotFound",
                format!("Secret {namespace}/{} not found", secret_ref.name),
            )
        })?;
    let config = config_from_secret(spec, &secret, namespace).await?;
    client::build(config, &probe_options())
        .map_err(|e| NotReady::new("InvalidCredentials", e.to_string()))
}

/// The kube configuration a cluster's Secret gives.
async fn config_from_secret(
    spec: &MigrationClusterSpec,
    secret: &Secret,
    namespace: &str,
) -> Result<kube::Config, NotReady> {
    let name = format!("Secret {namespace}/{}", secret.name_any());
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<Option<String>, NotReady> {
        data.get(key)
            .map(|bytes| {
                String::from_utf8(bytes.0.clone()).map_err(|_| {
                    NotReady::new("InvalidCredentials", format!("{name}: {key} is not UTF-8"))
                })
            })
            .transpose()
    };
    if let Some(kubeconfig) = text("kubeconfig")? {
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig)
            .map_err(|e| NotReady::new("InvalidCredentials", format!("{name}: kubeconfig: {e}")))?;
        return kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| NotReady::new("InvalidCredentials", format!("{name}: kubeconfig: {e}")));
    }
    let Some(token) = text("token")? else {
        return Err(NotReady::new(
            "InvalidCredentials",
            format!("{name} has neither a kubeconfig nor a token key"),
        ));
    };
    let Some(url) = &spec.url else {
        return Err(NotReady::new(
            "InvalidSpec",
            "spec.url is required with a token Secret",
        ));
    };
    let url = url
        .parse()
        .map_err(|e| NotReady::new("InvalidSpec", format!("spec.url {url:?}: {e}")))?;
    let mut config = kube::Config::new(url);
    config.auth_info.token = Some(token.trim().to_string().into());
    if let Some(pem) = text("ca.crt")?.or_else(|| spec.ca_bundle.clone()) {
        let certs = pem_certificates(&pem)
            .map_err(|why| NotReady::new("InvalidCredentials", format!("{name}: the CA: {why}")))?;
        config.root_cert = Some(certs);
    }
    Ok(config)
}

/// The DER certificates of a PEM bundle.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        Err("no PEM certificate in it".into())
    } else {
        Ok(certs)
    }
}

/// A probe's client gives up soon: a cluster that does not answer is said
/// to be not ready within seconds (and looked at again shortly), and a
/// refused certificate is not worth minutes of retries.
fn probe_options() -> client::Options {
    client::Options {
        retry: client::retry::Bounds {
            attempts: 2,
            total: Duration::from_secs(5),
            ..client::retry::Bounds::default()
        },
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(15),
        ..client::Options::default()
    }
}

/// What a cluster says about itself.
struct Found {
    version: String,
    open_shift: bool,
    velero: bool,
    registry: Option<String>,
}

/// Asks the cluster its version, whether OpenShift's and Velero's API
/// groups are served, and (OpenShift) its registry's default route.
async fn probe(client: &kube::Client, spec: &MigrationClusterSpec) -> Result<Found, NotReady> {
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| NotReady::new("ConnectionFailed", e.to_string()))?;
    let groups = client
        .list_api_groups()
        .await
        .map_err(|e| NotReady::new("ConnectionFailed", e.to_string()))?;
    let served = |name: &str| groups.groups.iter().any(|g| g.name == name);
    let open_shift = served("security.openshift.io");
    let registry = match &spec.exposed_registry_path {
        Some(path) => Some(path.clone()),
        None if open_shift => default_route(client).await,
        None => None,
    };
    Ok(Found {
        version: version.git_version,
        open_shift,
        velero: served("velero.io"),
        registry,
    })
}

/// The host of OpenShift's registry route `default-route`, if exposed.
async fn default_route(client: &kube::Client) -> Option<String> {
    let resource = kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk(
        "route.openshift.io",
        "v1",
        "Route",
    ));
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "openshift-image-registry", &resource);
    let route = routes.get_opt("default-route").await.ok()??;
    route.data["spec"]["host"].as_str().map(String::from)
}

/// How often a ready cluster is looked at again; a cluster that is not
/// ready is looked at sooner.
const READY_RECHECK: Duration = Duration::from_secs(60);
const NOT_READY_RECHECK: Duration = Duration::from_secs(15);

/// One pass: connect, probe, say so in the status.
pub async fn reconcile(
    cluster: Arc<MigrationCluster>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let found = match connect(&cluster.spec, &namespace, &ctx.host).await {
        Ok(client) => probe(&client, &cluster.spec).await,
        Err(not_ready) => Err(not_ready),
    };
    let mut status = cluster.status.clone().unwrap_or_default();
    status.observed_generation = cluster.meta().generation;
    let ready = found.is_ok();
    match found {
        Ok(found) => {
            status.kubernetes_version = Some(found.version);
            status.open_shift = Some(found.open_shift);
            status.velero = Some(found.velero);
            status.registry_path = found.registry;
            set_condition(
                &mut status.conditions,
                Condition::new("Ready", true, "Connected", "the cluster answers"),
            );
        }
        Err(not_ready) => set_condition(
            &mut status.conditions,
            Condition::new("Ready", false, not_ready.reason, &not_ready.message),
        ),
    }
    if cluster.status.as_ref() != Some(&status) {
        Api::<MigrationCluster>::namespaced(ctx.host.clone(), &namespace)
            .patch_status(
                &cluster.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(Action::requeue(if ready {
        READY_RECHECK
    } else {
        NOT_READY_RECHECK
    }))
}

/// Whether `cluster` reads its credentials from Secret `name`.
pub fn uses_secret(cluster: &MigrationCluster, name: &str) -> bool {
    cluster
        .spec
        .secret_ref
        .as_ref()
        .is_some_and(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_secret_needs_a_url_and_a_kubeconfig_secret_does_not() {
        let secret = |key: &str, value: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("creds".into()),
                ..Default::default()
            },
            data: Some(
                [(
                    key.to_string(),
                    k8s_openapi::ByteString(value.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Secret::default()
        };
        let spec = MigrationClusterSpec::default();
        let error = config_from_secret(&spec, &secret("token", "abc"), "ns")
            .await
            .unwrap_err();
        assert_eq!(
            (error.reason, error.message.as_str()),
            ("InvalidSpec", "spec.url is required with a token Secret")
        );
        let spec = MigrationClusterSpec {
            url: Some("https://api.example:6443".into()),
            ..MigrationClusterSpec::default()
        };
        let config = config_from_secret(&spec, &secret("token", "abc\n"), "ns")
            .await
            .unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://api.example:6443/");
        let error = config_from_secret(&spec, &secret("password", "x"), "ns")
            .await
            .unwrap_err();
        assert_eq!(
            error.message,
            "Secret ns/creds has neither a kubeconfig nor a token key"
        );
        let error = config_from_secret(&spec, &secret("kubeconfig", "{oops"), "ns")
            .await
            .unwrap_err();
        assert!(
            error.message.starts_with("Secret ns/creds: kubeconfig:"),
            "{}",
            error.message
        );
    }

    #[test]
    fn pem_bundles_are_read_and_garbage_is_refused() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem).unwrap(), vec![vec![0, 1, 2, 3]]);
        assert!(pem_certificates("hello").is_err());
    }
}
