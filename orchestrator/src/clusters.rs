//! Connections to the source and destination clusters.

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::plan::ClusterRef;

/// One side of the migration: a client and a name for messages.
#[derive(Clone)]
pub struct Cluster {
    /// `source` or `destination`.
    pub side: &'static str,
    /// The kubeconfig context, or "(current context)".
    pub context: String,
    pub client: kube::Client,
}

impl Cluster {
    /// Connects (lazily: nothing is sent yet) to the cluster `reference`
    /// names. Fails when the kubeconfig cannot be read or has no such
    /// context.
    pub async fn connect(side: &'static str, reference: &ClusterRef) -> anyhow::Result<Self> {
        let kubeconfig = match &reference.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).with_context(|| {
                format!("{side} cluster: reading kubeconfig {}", path.display())
            })?,
            None => Kubeconfig::read().with_context(|| {
                format!("{side} cluster: reading the kubeconfig ($KUBECONFIG or ~/.kube/config)")
            })?,
        };
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
        let client = kube::Client::try_from(config)
            .with_context(|| format!("{side} cluster: context {context:?}"))?;
        Ok(Self {
            side,
            context,
            client,
        })
    }

    /// "the source cluster (context "x")", for messages.
    pub fn describe(&self) -> String {
        format!("the {} cluster (context {:?})", self.side, self.context)
    }
}
