//! The images a pod's containers run. The kubelet pulls only from
//! registries on loopback (Docker allows them over plain HTTP) and from
//! registry hosts the test mapped to one with
//! `ClusterContext::set_registry_mirror` (as a cluster's nodes reach its
//! internal registry, `image-registry.openshift-image-registry.svc:5000`);
//! every other image must already be in the local Docker engine, since the
//! emulator never reaches the Internet.

use std::net::IpAddr;

use crate::context::ClusterContext;
use crate::docker;

/// A local image ready to run.
pub(super) struct Local {
    /// The reference `docker run` gets: the pod's own, or for a digest
    /// pulled through a mirror, the mirror's (a digest cannot be a tag).
    pub reference: String,
    pub id: String,
    /// How the kubelet got it, for its Events: `None` when it was
    /// already present.
    pub pulled: Option<Pulled>,
}

/// A pull that brought the image.
pub(super) struct Pulled {
    pub took: std::time::Duration,
    /// The image's size in bytes, as Docker reports it.
    pub size: u64,
}

/// Why there is no local image.
pub(super) enum Missing {
    /// Not here, and not from a registry the emulator pulls from.
    NeverPulled(String),
    /// The pull failed: the registry's message.
    PullFailed(String),
    Docker(docker::DockerError),
}

impl From<docker::DockerError> for Missing {
    fn from(error: docker::DockerError) -> Self {
        Missing::Docker(error)
    }
}

/// The local image for `image`, pulled first if it may be.
pub(super) async fn ensure(ctx: &ClusterContext, image: &str) -> Result<Local, Missing> {
    if let Some(id) = docker::image_id(image).await? {
        return Ok(Local {
            reference: image.to_string(),
            id,
            pulled: None,
        });
    }
    let Some(source) = pull_source(ctx, image) else {
        return Err(Missing::NeverPulled(format!(
            "image \"{image}\" is not on this machine and the emulator never pulls \
             images from other registries: build or load it into the local Docker engine"
        )));
    };
    let start = std::time::Instant::now();
    if let Err(error) = docker::docker(["pull", "--quiet", &source]).await {
        let message = match error {
            docker::DockerError::Failed { stderr, .. } => stderr,
            other => return Err(Missing::Docker(other)),
        };
        return Err(Missing::PullFailed(format!(
            "Failed to pull image \"{image}\": {message}"
        )));
    }
    let digest = image.contains('@');
    let reference = if digest || source == image {
        source.clone()
    } else {
        // The container runs what the pod named.
        docker::docker(["tag", &source, image]).await?;
        image.to_string()
    };
    let id = docker::image_id(&reference)
        .await?
        .ok_or_else(|| Missing::PullFailed(format!("{reference} vanished right after its pull")))?;
    let took = start.elapsed();
    let size = docker::docker(["image", "inspect", "--format", "{{.Size}}", &reference])
        .await?
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(Local {
        reference,
        id,
        pulled: Some(Pulled { took, size }),
    })
}

/// Where `image` is pulled from: the mirror of its registry host, or
/// itself when that host is on loopback; `None` when it is not pulled.
fn pull_source(ctx: &ClusterContext, image: &str) -> Option<String> {
    let (host, rest) = image.split_once('/')?;
    // Docker's rule: the first component names a registry when it has a
    // dot or a port, or is localhost.
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return None;
    }
    if let Some(mirror) = ctx.registry_mirror(host) {
        return Some(format!("{mirror}/{rest}"));
    }
    is_loopback(host).then(|| image.to_string())
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_registries() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.4.5"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }
}
