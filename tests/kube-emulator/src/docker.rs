//! The Docker engine, driven through the `docker` command line.
//!
//! Every call goes through one place that turns a failed command into an
//! error carrying docker's own stderr, and an unreachable daemon into an
//! error saying that Docker must be running, so a test that fails for want
//! of Docker says so instead of failing somewhere downstream.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::{Output, Stdio};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use serde::Deserialize;

/// Label on every Docker object of one emulator process.
pub const INSTANCE_LABEL: &str = "kube-emu.instance";
/// Label on containers naming the Docker network (so the cluster) they
/// belong to, so a cluster's containers are found even if they never got
/// as far as joining the network.
pub const NETWORK_LABEL: &str = "kube-emu.network";

/// A `docker` command that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "the `docker` command was not found ({0}): Docker must be installed and running \
         (the emulated clusters run pods as Docker containers)"
    )]
    NotInstalled(std::io::Error),
    #[error(
        "Docker must be running (the emulated clusters run pods as Docker containers): \
         `docker {command}` could not reach the daemon: {stderr}"
    )]
    NotRunning { command: String, stderr: String },
    #[error("`docker {command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

impl DockerError {
    /// Whether docker said the object named in the command does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("No such") || stderr.contains("not found"))
    }
}

/// Runs `docker args...` and returns its stdout.
pub async fn docker<I, S>(args: I) -> Result<String, DockerError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let output = tokio::process::Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    outcome(&args, output)
}

/// [`docker`] for `Drop` implementations, which cannot await.
fn docker_blocking(args: &[&str]) -> Result<String, DockerError> {
    let output = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output();
    let args: Vec<OsString> = args.iter().map(Into::into).collect();
    outcome(&args, output)
}

fn outcome(args: &[OsString], output: std::io::Result<Output>) -> Result<String, DockerError> {
    let output = output.map_err(DockerError::NotInstalled)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let command = args
        .iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.contains("Cannot connect to the Docker daemon")
        || stderr.contains("Is the docker daemon running")
    {
        Err(DockerError::NotRunning { command, stderr })
    } else {
        Err(DockerError::Failed { command, stderr })
    }
}

/// Fails unless the Docker daemon answers.
pub async fn check() -> Result<(), DockerError> {
    docker(["version", "--format", "{{.Server.Version}}"])
        .await
        .map(drop)
}

/// Creates the bridge network `name` labelled with the emulator instance
/// and returns its gateway IP (the host's address on it).
pub async fn create_network(name: &str, instance: &str) -> anyhow::Result<IpAddr> {
    let label = format!("{INSTANCE_LABEL}={instance}");
    docker(["network", "create", "--label", &label, name])
        .await
        .map_err(|error| match error {
            DockerError::Failed { ref stderr, .. } if stderr.contains("address pool") => {
                anyhow::Error::new(error).context(format!(
                    "no free address range for a new Docker network; networks left behind by \
                     earlier runs can be listed with `docker network ls --filter label={INSTANCE_LABEL}`"
                ))
            }
            error => error.into(),
        })?;
    let gateway = docker([
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        name,
    ])
    .await?;
    gateway
        .split_whitespace()
        .find_map(|ip| ip.parse::<IpAddr>().ok().filter(IpAddr::is_ipv4))
        .with_context(|| {
            format!("Docker network {name} has no IPv4 gateway (inspect gave {gateway:?})")
        })
}

/// Removes every container of this instance on `network`, then the
/// network. Called from `Drop`, so it is synchronous and best effort:
/// failures are reported on stderr.
pub fn remove_cluster_objects(instance: &str, network: &str) {
    // A container whose `docker run` was in flight when the cluster's tasks
    // were aborted can appear after the first sweep and keep the network
    // busy: sweep again before retrying.
    for attempt in 1..=5 {
        remove_containers_blocking(instance, network);
        match docker_blocking(&["network", "rm", network]) {
            Ok(_) => return,
            Err(error) if error.is_not_found() => return,
            Err(error) if attempt == 5 => {
                eprintln!("kube-emulator: removing Docker network {network}: {error}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200 * attempt)),
        }
    }
}

/// Removes the instance's containers labelled with, or attached to,
/// `network`.
fn remove_containers_blocking(instance: &str, network: &str) {
    let instance = format!("label={INSTANCE_LABEL}={instance}");
    let mut containers = Vec::new();
    for filter in [
        format!("label={NETWORK_LABEL}={network}"),
        format!("network={network}"),
    ] {
        let listed = docker_blocking(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &instance,
            "--filter",
            &filter,
        ]);
        match listed {
            Ok(ids) => containers.extend(ids.split_whitespace().map(String::from)),
            Err(error) => eprintln!("kube-emulator: listing the containers on {network}: {error}"),
        }
    }
    containers.sort();
    containers.dedup();
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "--volumes"];
        args.extend(containers.iter().map(String::as_str));
        if let Err(error) = docker_blocking(&args) {
            eprintln!("kube-emulator: removing the containers on {network}: {error}");
        }
    }
}

/// The id of a local image, `None` if there is no such image here.
pub async fn image_id(image: &str) -> Result<Option<String>, DockerError> {
    match docker(["image", "inspect", "--format", "{{.Id}}", image]).await {
        Ok(id) => Ok(Some(id.trim().to_string())),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// The user a local image runs as by default (`USER` of its Dockerfile;
/// empty for root).
pub async fn image_user(image: &str) -> Result<String, DockerError> {
    Ok(
        docker(["image", "inspect", "--format", "{{.Config.User}}", image])
            .await?
            .trim()
            .to_string(),
    )
}

/// `docker run -d args...`: returns the new container's id.
pub async fn run_detached(args: Vec<String>) -> Result<String, DockerError> {
    let id = docker(
        ["run".to_string(), "-d".to_string()]
            .into_iter()
            .chain(args),
    )
    .await?;
    Ok(id.trim().to_string())
}

/// What `docker inspect` says about a container (the parts the kubelet
/// reports).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    pub state: ContainerState,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub running: bool,
    pub exit_code: i32,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Docker's own error starting the container, if any.
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    #[serde(default)]
    pub networks: HashMap<String, Endpoint>,
}

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
}

pub async fn inspect(container: &str) -> anyhow::Result<Container> {
    let json = docker(["container", "inspect", "--format", "{{json .}}", container]).await?;
    serde_json::from_str(&json)
        .with_context(|| format!("reading `docker inspect {container}`: {json}"))
}

/// Waits for a container to stop (at once if it has stopped already).
pub async fn wait(container: &str) -> Result<(), DockerError> {
    docker(["wait", container]).await.map(drop)
}

/// The ids of this instance's containers carrying all of `labels`
/// (`key=value`), newest first.
pub async fn containers(instance: &str, labels: &[String]) -> Result<Vec<String>, DockerError> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".to_string(),
        "--no-trunc".to_string(),
        "--filter".to_string(),
        format!("label={INSTANCE_LABEL}={instance}"),
    ];
    for label in labels {
        args.push("--filter".to_string());
        args.push(format!("label={label}"));
    }
    Ok(docker(args)
        .await?
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// Removes containers, running or not.
pub async fn remove(containers: &[String]) -> Result<(), DockerError> {
    if containers.is_empty() {
        return Ok(());
    }
    let args = ["rm", "-f"].into_iter().map(String::from);
    match docker(args.chain(containers.iter().cloned())).await {
        Err(error) if error.is_not_found() => Ok(()),
        result => result.map(drop),
    }
}

/// `docker logs` of a container as one byte stream, stdout and stderr
/// interleaved in the order docker writes them (both go to one pipe). With
/// `follow` the stream ends when the container stops. Dropping the stream
/// stops the `docker logs` process.
pub fn logs(
    container: &str,
    follow: bool,
    tail_lines: Option<u64>,
) -> anyhow::Result<BoxStream<'static, std::io::Result<Bytes>>> {
    let (reader, writer) = std::io::pipe().context("creating a pipe for docker logs")?;
    let mut command = tokio::process::Command::new("docker");
    command.arg("logs");
    if follow {
        command.arg("--follow");
    }
    if let Some(lines) = tail_lines {
        command.arg("--tail").arg(lines.to_string());
    }
    command
        .arg(container)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .context("duplicating the docker logs pipe")?,
        )
        .stderr(writer)
        .kill_on_drop(true);
    let child = command.spawn().map_err(DockerError::NotInstalled)?;
    // The command holds our copies of the pipe's write end: drop them so the
    // stream ends when `docker logs` does.
    drop(command);
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
        .context("reading the docker logs pipe")?;
    Ok(tokio_util::io::ReaderStream::new(reader)
        .map(move |chunk| {
            let _keep_running = &child;
            chunk
        })
        .boxed())
}

/// Starts `docker exec` of `command` in a running container, with stdout
/// and stderr piped and stdin piped when `stdin` (`-i`), null otherwise.
/// Its exit code is the command's (126 when it cannot be run, 127 when it
/// is not found). Dropping the child kills the `docker exec` client.
pub fn exec(
    container: &str,
    command: &[String],
    stdin: bool,
) -> Result<tokio::process::Child, DockerError> {
    let mut docker = tokio::process::Command::new("docker");
    docker.arg("exec");
    if stdin {
        docker.arg("-i");
    }
    docker
        .arg(container)
        .args(command)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    docker.spawn().map_err(DockerError::NotInstalled)
}
