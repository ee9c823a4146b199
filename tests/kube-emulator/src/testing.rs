//! Helpers for tests that run pods on emulated clusters.
//!
//! Nothing is pulled from the Internet, so pods run a tiny image built here
//! from the host's static busybox (Debian's busybox-static), once per
//! process; [`LoopbackRegistry`] serves images for tests of pulls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use kube::runtime::watcher;
use kube::Api;

use crate::docker;

/// The tag of the busybox test image.
pub const BUSYBOX_IMAGE: &str = "kube-emu-busybox:test";

/// How long [`wait_for`] waits before giving up. Generous: it only bounds
/// a test that would otherwise hang, it is not a performance claim.
pub const WAIT_LIMIT: Duration = Duration::from_secs(90);

/// Builds (once per process) and returns the busybox test image: `FROM
/// scratch` with `/bin/busybox`, a link for every applet (`sh`, `cat`,
/// `sleep`, `nc`, ...) and a world-writable `/tmp`.
pub async fn busybox_image() -> anyhow::Result<&'static str> {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT.get_or_try_init(build_busybox_image).await?;
    Ok(BUSYBOX_IMAGE)
}

async fn build_busybox_image() -> anyhow::Result<()> {
    let busybox = find_busybox()?;
    let context = tempfile::tempdir().context("creating a build context")?;
    let bin = context.path().join("rootfs/bin");
    let tmp = context.path().join("rootfs/tmp");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    std::fs::copy(&busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let applets = tokio::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .await
        .with_context(|| format!("running {} --list", busybox.display()))?;
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    build_image(context.path(), "scratch", BUSYBOX_IMAGE).await?;
    // A dynamically linked busybox would fail here, in an image without
    // its libraries.
    docker::docker(["run", "--rm", BUSYBOX_IMAGE, "true"])
        .await
        .with_context(|| {
            format!(
                "{} does not run in an empty image: install Debian's busybox-static",
                busybox.display()
            )
        })?;
    Ok(())
}

/// Builds `tag` from `context`'s `rootfs` directory copied onto `from`.
async fn build_image(context: &Path, from: &str, tag: &str) -> anyhow::Result<()> {
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {from}\nCOPY rootfs /\n"),
    )?;
    let context_dir = context.to_string_lossy().into_owned();
    docker::docker(["build", "--quiet", "--tag", tag, &context_dir]).await?;
    Ok(())
}

/// The tag of the in-cluster client test image.
pub const INCLUSTER_CLIENT_IMAGE: &str = "kube-emu-incluster:test";

/// Builds (once per process) and returns the in-cluster client test
/// image: the busybox image plus `client`, the `kube-emu-incluster`
/// binary (a test's `CARGO_BIN_EXE_kube-emu-incluster`), at
/// `/bin/kube-emu-incluster`, with the shared libraries it loads (as
/// `ldd` lists them) at their host paths.
pub async fn incluster_client_image(client: &Path) -> anyhow::Result<&'static str> {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_try_init(|| build_incluster_client_image(client))
        .await?;
    Ok(INCLUSTER_CLIENT_IMAGE)
}

async fn build_incluster_client_image(client: &Path) -> anyhow::Result<()> {
    busybox_image().await?;
    let context = tempfile::tempdir().context("creating a build context")?;
    let rootfs = context.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy(client, rootfs.join("bin/kube-emu-incluster"))
        .with_context(|| format!("copying {}", client.display()))?;
    let ldd = tokio::process::Command::new("ldd")
        .arg(client)
        .output()
        .await
        .context("running ldd")?;
    let listing = String::from_utf8_lossy(&ldd.stdout);
    let libraries = listing
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from);
    for library in libraries {
        let target = rootfs.join(library.strip_prefix("/")?);
        std::fs::create_dir_all(target.parent().context("a library's directory")?)?;
        std::fs::copy(&library, &target)
            .with_context(|| format!("copying {}", library.display()))?;
    }
    build_image(context.path(), BUSYBOX_IMAGE, INCLUSTER_CLIENT_IMAGE).await
}

/// The host's busybox: on PATH, or in /bin.
fn find_busybox() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin")])
        .map(|dir| dir.join("busybox"))
        .find(|candidate| is_executable(candidate))
        .context("busybox was not found: install Debian's busybox-static (apt-get install busybox-static)")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Waits until the object `name` satisfies `condition` and returns it. On
/// giving up, the error names `what` was awaited and shows the object as
/// last seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(&K) -> bool,
) -> anyhow::Result<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
{
    let mut last: Option<K> = None;
    let mut changes = watcher::watch_object(api.clone(), name).boxed();
    let waited = tokio::time::timeout(WAIT_LIMIT, async {
        while let Some(change) = changes.next().await {
            match change {
                Ok(Some(object)) if condition(&object) => return Ok(object),
                Ok(object) => last = object,
                Err(error) => tracing::debug!("watching {name}: {error}"),
            }
        }
        anyhow::bail!("the watch of {name} ended")
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => {
            let seen = last.map_or_else(
                || "it was never seen".to_string(),
                |object| serde_yaml::to_string(&object).unwrap_or_else(|error| error.to_string()),
            );
            anyhow::bail!("{name}: gave up waiting for {what}; last seen:\n{seen}")
        }
    }
}

/// A plain-HTTP registry on loopback (Debian's `docker-registry`), for
/// tests of image pulls: Docker pulls from and pushes to 127.0.0.0/8
/// registries without TLS. Stopped when dropped.
pub struct LoopbackRegistry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`
    pub address: String,
    _dir: tempfile::TempDir,
}

impl LoopbackRegistry {
    pub fn start() -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let binary = Path::new("/usr/bin/docker-registry");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: apt-get install docker-registry",
            binary.display()
        );
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:0\n  secret: kube-emulator-tests\n",
                dir.path().join("storage").display()
            ),
        )?;
        let mut child = std::process::Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting docker-registry")?;
        let stderr = child.stderr.take().context("the registry's stderr")?;
        let (found, address) = std::sync::mpsc::channel();
        // Reads the log for the registry's whole life (a full pipe would
        // block it), passing on the address it reports.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(address) = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split(['"', ',', ' ']).next())
                {
                    let _ = found.send(address.to_string());
                }
            }
        });
        match address.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => Ok(Self {
                child,
                address,
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("docker-registry did not report its address")
            }
        }
    }

    /// Pushes local image `image` as `<registry>/<repository>:<tag>`,
    /// removes that local tag again (so that using it means pulling it),
    /// and returns the pushed manifest's digest (`sha256:...`).
    pub async fn push(&self, image: &str, repository: &str, tag: &str) -> anyhow::Result<String> {
        let target = format!("{}/{repository}:{tag}", self.address);
        docker::docker(["tag", image, &target]).await?;
        docker::docker(["push", "--quiet", &target]).await?;
        let digests = docker::docker([
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &target,
        ])
        .await?;
        let prefix = format!("{}/{repository}@", self.address);
        let digest = digests
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .with_context(|| format!("no digest of {target} in {digests:?}"))?
            .to_string();
        docker::docker(["rmi", &target]).await?;
        Ok(digest)
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
