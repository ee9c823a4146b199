//! Helpers for tests that run pods on emulated clusters.
//!
//! No image can be pulled, so pods run a tiny image built here from the
//! host's static busybox (Debian's busybox-static), once per process.

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
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs /\n",
    )?;
    let context_dir = context.path().to_string_lossy().into_owned();
    docker::docker(["build", "--quiet", "--tag", BUSYBOX_IMAGE, &context_dir]).await?;
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
