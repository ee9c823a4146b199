//! The container images, built here by `images/build` (FROM scratch out of
//! the release binaries), run under the Docker engine: each reports its
//! crate's version, and a mover receiver and sender in two containers sync a
//! tree across a Docker network, as non-root by default.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use e2e::{
    build_images, chown_tree, crate_version, docker_ok, logs, not_owned_by, run_args, snapshot,
    unique_name, wait_for_exit, DockerNetwork, IMAGE_UID, MOVER_IMAGE, ORCHESTRATOR_IMAGE,
};

/// `docker run --rm IMAGE --version` prints `NAME VERSION` with the crate's
/// version, so the image runs the binary built from this workspace.
fn assert_image_version(image: &str, name: &str) -> Result<()> {
    build_images()?;
    let printed = docker_ok(["run", "--rm", image, "--version"])?;
    let expected = format!("{name} {}", crate_version(name)?);
    ensure!(
        printed == expected,
        "{image} --version printed {printed:?}, expected {expected:?}"
    );
    let user = docker_ok(["image", "inspect", "--format", "{{.Config.User}}", image])?;
    ensure!(
        user == format!("{IMAGE_UID}:{IMAGE_UID}"),
        "{image} runs as {user:?} by default, not the non-root {IMAGE_UID}:{IMAGE_UID}"
    );
    Ok(())
}

#[test]
fn mover_image_reports_its_version_and_runs_as_nonroot() -> Result<()> {
    assert_image_version(MOVER_IMAGE, "mover")
}

#[test]
fn orchestrator_image_reports_its_version_and_runs_as_nonroot() -> Result<()> {
    assert_image_version(ORCHESTRATOR_IMAGE, "orchestrator")
}

/// The name the receiver's certificate is issued for, as a route host would
/// be; the sender connects to the container's name and sends this as SNI.
const SERVER_NAME: &str = "mover.apps.destination.test";

/// A small tree with what a volume holds: files of several sizes and modes,
/// an empty file, nested and empty directories, and a relative symlink.
fn make_source_tree(root: &Path) -> Result<()> {
    fs::create_dir_all(root.join("sub/deeper"))?;
    fs::create_dir(root.join("empty"))?;
    fs::write(root.join("hello.txt"), "hello from the source volume\n")?;
    fs::write(root.join("empty.dat"), b"")?;
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("sub/deeper/data.bin"), big)?;
    fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho run\n")?;
    fs::set_permissions(root.join("sub/run.sh"), fs::Permissions::from_mode(0o750))?;
    fs::write(root.join("sub/private"), "only the owner reads this\n")?;
    fs::set_permissions(root.join("sub/private"), fs::Permissions::from_mode(0o600))?;
    symlink("sub/deeper/data.bin", root.join("link-to-data"))?;
    Ok(())
}

#[test]
fn receiver_and_sender_containers_sync_a_tree_over_a_docker_network() -> Result<()> {
    build_images()?;
    let work = tempfile::tempdir()?;
    let (pki, source, dest) = (
        work.path().join("pki"),
        work.path().join("src"),
        work.path().join("dst"),
    );

    // The containers run as 65532: like a user bind-mounting host
    // directories, give it the certificates' directory and the destination
    // to write and the source to read.
    fs::create_dir(&pki)?;
    make_source_tree(&source)?;
    fs::create_dir(&dest)?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))?;
    for dir in [&pki, &source, &dest] {
        chown_tree(dir, IMAGE_UID, IMAGE_UID)?;
    }

    let network = DockerNetwork::create("mover-e2e")?;
    // A server certificate for SERVER_NAME and a client one for volume "data".
    let certs = network.run(
        &unique_name("mover-e2e-certs"),
        &run_args(
            &[(&pki, "/pki")],
            &format!(
                "{MOVER_IMAGE} certs --out /pki --server-san {SERVER_NAME} --client sender=data"
            ),
        ),
    )?;
    ensure!(
        certs.status.success(),
        "mover certs failed ({}): {}",
        certs.status,
        String::from_utf8_lossy(&certs.stderr)
    );

    let receiver = unique_name("mover-e2e-receiver");
    network.start(
        &receiver,
        &run_args(
            &[(&pki, "/pki:ro"), (&dest, "/data")],
            &format!(
                "{MOVER_IMAGE} receive --listen 0.0.0.0:8443 --volume data=/data \
                 --cert /pki/server.crt --key /pki/server.key --ca /pki/ca.crt --exit-when-done"
            ),
        ),
    )?;
    // Retries cover the moment before the receiver listens.
    let sender = network.run(
        &unique_name("mover-e2e-sender"),
        &run_args(
            &[(&pki, "/pki:ro"), (&source, "/src:ro")],
            &format!(
                "{MOVER_IMAGE} send /src --connect {receiver}:8443 --server-name {SERVER_NAME} \
                 --volume data --cert /pki/sender.crt --key /pki/sender.key --ca /pki/ca.crt \
                 --retries 10 --retry-delay 0.2 --progress none"
            ),
        ),
    )?;
    ensure!(
        sender.status.success(),
        "the sender container failed ({}):\n{}{}\nreceiver logs:\n{}",
        sender.status,
        String::from_utf8_lossy(&sender.stdout),
        String::from_utf8_lossy(&sender.stderr),
        logs(&receiver)
    );
    let code = wait_for_exit(&receiver, 120)?;
    ensure!(
        code == 0,
        "the receiver exited with {code}:\n{}",
        logs(&receiver)
    );

    let (want, got) = (snapshot(&source)?, snapshot(&dest)?);
    ensure!(
        got == want,
        "the destination differs from the source:\nsource: {want:#?}\ndestination: {got:#?}"
    );
    ensure!(!want.is_empty(), "the source tree is empty");
    // Written by the receiver's default user, not root.
    let foreign =
        not_owned_by(&dest, IMAGE_UID).context("checking ownership in the destination")?;
    ensure!(foreign.is_empty(), "not owned by {IMAGE_UID}: {foreign:?}");
    Ok(())
}
