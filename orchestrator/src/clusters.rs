//! Connections to the source and destination clusters: which
//! configuration a [`ClusterRef`] means, and a client built on it with the
//! timeouts and retries of [`crate::client`].

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::client;
use crate::plan::ClusterRef;

/// One side of the migration: a client and a name for messages.
#[derive(Clone)]
pub struct Cluster {
    /// `source` or `destination`.
    pub side: &'static str,
    /// The kubeconfig context, "(in-cluster service account)", or
    /// "(current context)".
    pub context: String,
    pub client: kube::Client,
}

/// What [`Cluster::context`] says when the pod's service account is used.
pub const IN_CLUSTER: &str = "(in-cluster service account)";

impl Cluster {
    /// [`Cluster::connect_with`] the default timeouts and retries.
    pub async fn connect(side: &'static str, reference: &ClusterRef) -> anyhow::Result<Self> {
        Self::connect_with(side, reference, &client::Options::default()).await
    }

    /// Connects (lazily: nothing is sent yet) to the cluster `reference`
    /// names:
    /// - a kubeconfig and/or a context: that kubeconfig (default
    ///   `$KUBECONFIG` or `~/.kube/config`) and that context (default its
    ///   current one);
    /// - neither: as `kube::Config::infer` does, the kubeconfig
    ///   (`$KUBECONFIG`, `~/.kube/config`) if there is one, else the
    ///   in-cluster service account (`KUBERNETES_SERVICE_HOST` and the
    ///   mounted token), which is how the orchestrator runs in a pod.
    ///
    /// Fails, naming the side, when no configuration can be read or the
    /// context does not exist.
    pub async fn connect_with(
        side: &'static str,
        reference: &ClusterRef,
        options: &client::Options,
    ) -> anyhow::Result<Self> {
        let (config, context) = Self::config(side, reference).await?;
        let client = client::build(config, options)
            .with_context(|| format!("{side} cluster: context {context:?}"))?;
        Ok(Self {
            side,
            context,
            client,
        })
    }

    /// The configuration [`Cluster::connect_with`] builds its client from,
    /// and the context's name (for callers that make other clients of the
    /// same cluster, such as the console's per-user ones).
    pub async fn config(
        side: &'static str,
        reference: &ClusterRef,
    ) -> anyhow::Result<(kube::Config, String)> {
        let (config, context) = match read_kubeconfig(reference.kubeconfig.as_deref()) {
            Ok(kubeconfig) => from_kubeconfig(side, kubeconfig, reference).await?,
            Err(e) if reference.kubeconfig.is_some() || reference.context.is_some() => {
                return Err(e.context(format!("{side} cluster")));
            }
            Err(kubeconfig_error) => {
                let config = kube::Config::incluster().map_err(|in_cluster| {
                    anyhow::anyhow!(
                        "{side} cluster: no kubeconfig ({kubeconfig_error:#}) and not \
                         running in a cluster ({in_cluster})"
                    )
                })?;
                (config, IN_CLUSTER.to_string())
            }
        };
        Ok((config, context))
    }

    /// "the source cluster (context "x")", for messages.
    pub fn describe(&self) -> String {
        format!("the {} cluster (context {:?})", self.side, self.context)
    }
}

/// Reads the kubeconfig `path` names, or the default one.
fn read_kubeconfig(path: Option<&std::path::Path>) -> anyhow::Result<Kubeconfig> {
    match path {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display())),
        None => {
            Kubeconfig::read().context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)")
        }
    }
}

/// The configuration of `reference`'s context in `kubeconfig` (its proxy
/// URL, exec or OIDC credentials included), and the context's name.
async fn from_kubeconfig(
    side: &str,
    kubeconfig: Kubeconfig,
    reference: &ClusterRef,
) -> anyhow::Result<(kube::Config, String)> {
    let options = KubeConfigOptions {
        context: reference.context.clone(),
        ..KubeConfigOptions::default()
    };
    let context = reference
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_else(|| "(current context)".into());
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("{side} cluster: kubeconfig context {context:?}"))?;
    Ok((config, context))
}
