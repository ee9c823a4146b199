//! Container logs for the API server's `GET pods/{name}/log`: the pod is
//! looked up in the API (for its uid and containers), its current Docker
//! container found by labels (`Current`, which `exec` shares), and
//! `docker logs` streamed.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::FutureExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt as _};

use super::container::CLUSTER_LABEL;
use super::{CONTAINER_NAME_LABEL, POD_UID_LABEL};
use crate::context::{ClusterContext, Exec, PodStreams};
use crate::docker;

/// The annotation naming the container `kubectl logs` picks by default.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

pub(super) struct ContainerLogs {
    ctx: Arc<ClusterContext>,
}

impl ContainerLogs {
    pub(super) fn new(ctx: Arc<ClusterContext>) -> Self {
        Self { ctx }
    }
}

impl PodStreams for ContainerLogs {
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        follow: bool,
        tail_lines: Option<u64>,
    ) -> BoxFuture<'static, anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>>> {
        let ctx = self.ctx.clone();
        let namespace = namespace.to_string();
        let name = pod.to_string();
        let container = container.map(str::to_string);
        async move {
            let current = Current::find(&ctx, &namespace, &name, container).await?;
            let Some(id) = current.id else {
                anyhow::bail!(
                    "container \"{}\" in pod \"{name}\" is waiting to start: {}",
                    current.name,
                    waiting_reason(&current.pod, &current.name)
                );
            };
            docker::logs(&id, follow, tail_lines)
        }
        .boxed()
    }

    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        exec: Exec,
    ) -> BoxFuture<'static, anyhow::Result<tokio::process::Child>> {
        super::exec::start(
            self.ctx.clone(),
            namespace.to_string(),
            pod.to_string(),
            exec,
        )
        .boxed()
    }
}

/// A container of a pod as Docker runs it now.
pub(super) struct Current {
    pub(super) pod: Pod,
    /// The container's name in the pod spec.
    pub(super) name: String,
    /// The Docker container of its current instance, if it was created.
    pub(super) id: Option<String>,
}

impl Current {
    /// Looks `pod` up in the API (for its uid and containers) and finds
    /// the newest Docker container of `container` (the pod's default one
    /// when `None`).
    pub(super) async fn find(
        ctx: &ClusterContext,
        namespace: &str,
        name: &str,
        container: Option<String>,
    ) -> anyhow::Result<Self> {
        let pod = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("getting pod {namespace}/{name}"))?;
        let container = container_name(&pod, container)?;
        let labels = [
            format!("{CLUSTER_LABEL}={}", ctx.name),
            format!("{POD_UID_LABEL}={}", pod.uid().unwrap_or_default()),
            format!("{CONTAINER_NAME_LABEL}={container}"),
        ];
        // Newest first: the current instance of a restarted container.
        let instances = docker::containers(&ctx.shared.instance, &labels).await?;
        Ok(Self {
            pod,
            name: container,
            id: instances.into_iter().next(),
        })
    }
}

/// The container a log request means: the one named, or the pod's
/// default, with the API server's messages when that is ambiguous or
/// wrong.
fn container_name(pod: &Pod, requested: Option<String>) -> anyhow::Result<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    let name = match requested {
        Some(name) => name,
        None => match pod.annotations().get(DEFAULT_CONTAINER_ANNOTATION) {
            Some(name) => name.clone(),
            None if containers.len() == 1 => containers[0].to_string(),
            None => anyhow::bail!(
                "a container name must be specified for pod {}, choose one of: [{}] or one of the init containers: [{}]",
                pod.name_any(),
                containers.join(" "),
                init.join(" ")
            ),
        },
    };
    if !containers.contains(&name.as_str()) && !init.contains(&name.as_str()) {
        anyhow::bail!("container {name} is not valid for pod {}", pod.name_any());
    }
    Ok(name)
}

/// The waiting reason the pod's status gives for `container`.
fn waiting_reason(pod: &Pod, container: &str) -> String {
    let status = pod.status.clone().unwrap_or_default();
    status
        .container_statuses
        .into_iter()
        .chain(status.init_container_statuses)
        .flatten()
        .find(|status| status.name == container)
        .and_then(|status| status.state?.waiting?.reason)
        .unwrap_or_else(|| "ContainerCreating".to_string())
}
