//! Readiness probes: a container with a `readinessProbe` is Ready only
//! once its probe has passed (successThreshold times in a row) after
//! initialDelaySeconds, and stops being Ready after failureThreshold
//! failures in a row; probes run every periodSeconds and time out after
//! timeoutSeconds. `exec` runs in the container (`docker exec`);
//! `httpGet` (HTTP only) and `tcpSocket` connect to the pod's IP, which
//! the host reaches on the cluster's Docker network. Liveness and
//! startup probes are not run.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::docker;

/// The readiness of one container instance.
#[derive(Debug, Default)]
pub(super) struct Readiness {
    pub ready: bool,
    successes: i32,
    failures: i32,
    /// When the next probe is due; `None` without a probe or container.
    pub next_at: Option<Instant>,
}

impl Readiness {
    /// A container (re)started: not ready, first probe after the delay.
    pub(super) fn started(&mut self, container: &Container) {
        *self = Readiness::default();
        if let Some(probe) = &container.readiness_probe {
            let delay = u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
            self.next_at = Some(Instant::now() + Duration::from_secs(delay));
        }
    }

    /// The container stopped.
    pub(super) fn stopped(&mut self) {
        *self = Readiness::default();
    }

    /// Records a probe's outcome and schedules the next one.
    pub(super) fn record(&mut self, probe: &Probe, passed: bool) {
        if passed {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= probe.success_threshold.unwrap_or(1) {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= probe.failure_threshold.unwrap_or(3) {
                self.ready = false;
            }
        }
        let period = u64::try_from(probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10);
        self.next_at = Some(Instant::now() + Duration::from_secs(period));
    }
}

/// Whether a container counts as ready while it runs.
pub(super) fn is_ready(container: &Container, readiness: &Readiness) -> bool {
    container.readiness_probe.is_none() || readiness.ready
}

/// Runs `probe` once against the container `id` of a pod at `pod_ip`.
pub(super) async fn run(
    container: &Container,
    probe: &Probe,
    id: &str,
    pod_ip: Option<&str>,
) -> bool {
    let timeout =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    let attempt = async {
        if let Some(exec) = &probe.exec {
            let mut args = vec!["exec".to_string(), id.to_string()];
            args.extend(exec.command.iter().flatten().cloned());
            return docker::docker(args).await.is_ok();
        }
        let Some(ip) = pod_ip else { return false };
        if let Some(http) = &probe.http_get {
            let Some(port) = port_number(container, &http.port) else {
                return false;
            };
            let host = http.host.clone().unwrap_or_else(|| ip.to_string());
            let path = http.path.clone().unwrap_or_else(|| "/".to_string());
            return http_ok(&host, port, &path).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let Some(port) = port_number(container, &tcp.port) else {
                return false;
            };
            let host = tcp.host.clone().unwrap_or_else(|| ip.to_string());
            return tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .is_ok();
        }
        false
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port_number(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// A GET that answers with a status from 200 to 399, as the kubelet's
/// HTTP probe requires.
async fn http_ok(host: &str, port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}
