//! Shared helpers for the end-to-end tests in `tests/`: the project's
//! container images, Docker networks and containers that clean up after
//! themselves, and directory-tree snapshots to compare copies with.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

pub mod browser;
pub mod controller;
pub mod migration;

/// The tag `images/build` gives the mover image.
pub const MOVER_IMAGE: &str = "mover:dev";
/// The tag `images/build` gives the orchestrator image.
pub const ORCHESTRATOR_IMAGE: &str = "orchestrator:dev";
/// The user the images run as unless told otherwise (distroless's `nonroot`).
pub const IMAGE_UID: u32 = 65532;

/// The repository root (this crate lives in `tests/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace's target directory (`CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// A release binary of the workspace, as `images/build` (run by
/// [`build_images`]) leaves it.
pub fn release_binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("release").join(name);
    if !path.is_file() {
        bail!("{} is missing: images/build builds it", path.display());
    }
    Ok(path)
}

/// Makes sure `mover:dev` and `orchestrator:dev` are built from the current
/// sources, by running `images/build` once per test process.
///
/// `scripts/test` runs `images/build` before `cargo test`, so here it only
/// confirms that nothing changed (cargo and Docker's cache make that take
/// seconds); run alone (`cargo test -p e2e`) it builds the release binaries
/// first, which takes minutes. A nested `cargo build` does not wait on the
/// `cargo test` that started it: cargo releases the target directory's lock
/// once the test binaries are built, before it runs them.
pub fn build_images() -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| run_images_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn run_images_build() -> Result<()> {
    let script = repo_root().join("images/build");
    let out = Command::new(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tags = String::from_utf8_lossy(&out.stdout);
    for tag in [MOVER_IMAGE, ORCHESTRATOR_IMAGE] {
        if !tags.lines().any(|line| line == tag) {
            bail!("images/build succeeded but did not report {tag}; it printed:\n{tags}");
        }
    }
    Ok(())
}

/// The version of workspace package `name`, as `cargo metadata` reports it.
pub fn crate_version(name: &str) -> Result<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata's output")?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("cargo metadata lists no package {name} with a version"))
}

/// A loopback port nobody listens on now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A name no other test, process or earlier run uses: `prefix-PID-N-NANOS`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `docker run` arguments: `-v HOST:SPEC` for each (host path, container
/// path with options) pair, then the words of `rest` (split on whitespace).
pub fn run_args(mounts: &[(&Path, &str)], rest: &str) -> Vec<String> {
    mounts
        .iter()
        .flat_map(|(host, spec)| ["-v".to_owned(), format!("{}:{spec}", host.display())])
        .chain(rest.split_whitespace().map(str::to_owned))
        .collect()
}

/// Runs `docker ARGS` and returns its output, whatever its exit status.
pub fn docker<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    Command::new("docker")
        .args(&args)
        .output()
        .with_context(|| format!("running docker {args:?} (is Docker installed?)"))
}

/// Runs `docker ARGS`, failing with its stderr unless it exits 0; returns
/// its stdout, trimmed.
pub fn docker_ok<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = docker(&args)?;
    if !out.status.success() {
        bail!(
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A Docker network of its own for one test, and the containers the test
/// starts on it; dropping it removes both, also when the test failed.
pub struct DockerNetwork {
    name: String,
    containers: Mutex<Vec<String>>,
}

impl DockerNetwork {
    /// Creates a user-defined bridge network (whose DNS resolves container
    /// names) with a unique name starting with `prefix`.
    pub fn create(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        docker_ok(["network", "create", &name])?;
        Ok(Self {
            name,
            containers: Mutex::new(Vec::new()),
        })
    }

    /// Starts a detached container named `name` on this network with `args`
    /// (options, then image and command) and returns its name.
    pub fn start(&self, name: &str, args: &[String]) -> Result<String> {
        self.track(name);
        docker_ok(
            ["run", "--detach", "--name", name, "--network", &self.name]
                .map(str::to_owned)
                .iter()
                .chain(args),
        )?;
        Ok(name.to_owned())
    }

    /// Runs a container named `name` on this network to completion and
    /// returns its output (any exit status).
    pub fn run(&self, name: &str, args: &[String]) -> Result<Output> {
        self.track(name);
        docker(
            ["run", "--name", name, "--network", &self.name]
                .map(str::to_owned)
                .iter()
                .chain(args),
        )
    }

    fn track(&self, name: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(name.to_owned());
    }
}

impl Drop for DockerNetwork {
    fn drop(&mut self) {
        let containers = std::mem::take(
            self.containers
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !containers.is_empty() {
            let _ = docker(
                ["rm", "--force", "--volumes"]
                    .into_iter()
                    .map(str::to_owned)
                    .chain(containers),
            );
        }
        let _ = docker(["network", "rm", &self.name]);
    }
}

/// Waits for container `name` to exit and returns its exit code, or fails
/// (with its logs) if it is still running after `limit_secs`: a safety net
/// so that a broken peer fails the test instead of hanging it.
pub fn wait_for_exit(name: &str, limit_secs: u32) -> Result<i64> {
    let out = Command::new("timeout")
        .arg(limit_secs.to_string())
        .args(["docker", "wait", name])
        .output()
        .context("running timeout docker wait")?;
    if !out.status.success() {
        bail!(
            "container {name} did not exit within {limit_secs} s ({}); its logs:\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            logs(name)
        );
    }
    let code = String::from_utf8_lossy(&out.stdout);
    code.trim()
        .parse()
        .with_context(|| format!("docker wait {name} printed {code:?}, not an exit code"))
}

/// A container's stdout and stderr, for failure messages.
pub fn logs(name: &str) -> String {
    match docker(["logs", name]) {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(no logs: {e:#})"),
    }
}

/// One entry of a directory tree, as a copy must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, contents: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Every entry beneath `root` (not `root` itself), keyed by relative path,
/// with permission bits, file contents and symlink targets (links are not
/// followed). Meant for the small trees tests build.
pub fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, Node>> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs_read_dir(&dir)? {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("reading metadata of {}", path.display()))?;
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Symlink {
                    target: std::fs::read_link(&path)
                        .with_context(|| format!("reading link {}", path.display()))?,
                }
            } else if meta.is_dir() {
                pending.push(path.clone());
                Node::Dir { mode }
            } else if meta.is_file() {
                Node::File {
                    mode,
                    contents: std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                }
            } else {
                bail!(
                    "{} is neither a file, a directory nor a symlink",
                    path.display()
                );
            };
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            entries.insert(relative, node);
        }
    }
    Ok(entries)
}

fn fs_read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.with_context(|| format!("listing {}", dir.display())))
        .collect()
}

/// Paths beneath `root` (and `root`) not owned by `uid`.
pub fn not_owned_by(root: &Path, uid: u32) -> Result<Vec<PathBuf>> {
    let mut wrong = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        if meta.uid() != uid {
            wrong.push(path.clone());
        }
        if meta.is_dir() {
            pending.extend(fs_read_dir(&path)?.into_iter().map(|e| e.path()));
        }
    }
    Ok(wrong)
}

/// Gives `path` and everything beneath it to `uid:gid`, as a user does with
/// a host directory bind-mounted into a container that runs as that user.
/// Needs root (the test command runs as root).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).with_context(|| {
        format!(
            "giving {} to {uid}:{gid} for a container running as that user (needs root)",
            path.display()
        )
    })?;
    if meta.is_dir() {
        for entry in fs_read_dir(path)? {
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The host directory behind PVC `ns/name` of an emulated cluster (its
/// PV's hostPath), once the PVC is bound.
pub async fn volume_dir(client: &kube::Client, ns: &str, name: &str) -> Result<PathBuf> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pvcs: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), ns);
    for _ in 0..240 {
        let pvc = pvcs.get(name).await?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if let (true, Some(volume)) = (bound, pvc.spec.and_then(|s| s.volume_name)) {
            let pv = kube::Api::<PersistentVolume>::all(client.clone())
                .get(&volume)
                .await?;
            let path = pv
                .spec
                .and_then(|s| s.host_path)
                .map(|h| PathBuf::from(h.path))
                .context("PV without a hostPath")?;
            return Ok(path);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    anyhow::bail!("PVC {ns}/{name} was not bound")
}
