//! File descriptors: trees that once took one descriptor per directory
//! level, per directory left with files in flight and per batched file,
//! synced under a limit far below their size; the soft limit raised to the
//! hard one; and a receiver whose limit is shared by two sessions.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Directories each holding one file: once a descriptor each while its
/// file was in flight.
const ONE_FILE_DIRS: usize = 2000;
/// Levels of a chain of directories: once a descriptor per level.
const DEPTH: usize = 200;
/// Files in one directory: once a descriptor each in a batch.
const FLAT_FILES: usize = 600;

/// A descriptor limit far below any of the counts above.
const LOW_LIMIT: u32 = 64;

/// Writes `dirs` one-file directories, a chain `depth` levels deep with a
/// file at the bottom and `flat` files in one directory below `root`.
fn tree(root: &Path, dirs: usize, depth: usize, flat: usize) {
    for i in 0..dirs {
        let dir = root.join("wide").join(format!("d{i:05}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), format!("file {i}\n")).unwrap();
    }
    let deep = (0..depth).fold(root.join("deep"), |path, _| path.join("d"));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), b"bottom\n").unwrap();
    fs::create_dir_all(root.join("flat")).unwrap();
    for i in 0..flat {
        fs::write(
            root.join("flat").join(format!("f{i:04}")),
            random_bytes(100, i as u64),
        )
        .unwrap();
    }
}

/// `mover ARGS` run under `prlimit --nofile=SOFT:HARD`, logging at info.
fn limited(soft: u32, hard: u32, args: &[&std::ffi::OsStr]) -> Output {
    Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mover"))
        .args(args)
        .env("MOVER_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run prlimit (util-linux)")
}

fn sync_limited(src: &Path, dst: &Path, soft: u32, hard: u32) -> Output {
    let args = ["sync".as_ref(), src.as_os_str(), dst.as_os_str()];
    limited(
        soft,
        hard,
        &[&args[..], &["--progress".as_ref(), "none".as_ref()]].concat(),
    )
}

/// Sets a running process's descriptor limit (soft and hard) to `limit`.
fn lower_limit(process: &Receiver, limit: u32) {
    let lowered = Command::new("prlimit")
        .arg(format!("--pid={}", process.0.id()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(lowered.success());
}

#[test]
fn a_sync_of_wide_deep_and_flat_trees_fits_in_64_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, ONE_FILE_DIRS, DEPTH, FLAT_FILES);
    let out = sync_limited(&src, &dst, LOW_LIMIT, LOW_LIMIT);
    assert_eq!(code(&out), 0, "mover sync failed: {}", stderr(&out));
    assert_same_tree(&src, &dst);
}

#[test]
fn the_soft_limit_is_raised_to_the_hard_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, ONE_FILE_DIRS, DEPTH, FLAT_FILES);
    let out = sync_limited(&src, &dst, LOW_LIMIT, 4096);
    assert_eq!(code(&out), 0, "mover sync failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("may open 4096 files at once"),
        "soft limit not raised: {}",
        stderr(&out)
    );
    assert_same_tree(&src, &dst);
}

#[test]
fn a_receiver_low_on_descriptors_serves_a_wide_tree_and_another_volume_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (wide, other) = (tmp.path().join("wide"), tmp.path().join("other"));
    tree(&wide, 3 * ONE_FILE_DIRS / 2, 0, 0);
    tree(&other, 0, DEPTH, FLAT_FILES);
    let (wide_dst, other_dst) = (tmp.path().join("wide-dst"), tmp.path().join("other-dst"));
    fs::create_dir_all(&wide_dst).unwrap();
    fs::create_dir_all(&other_dst).unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["a=wide", "b=other"]);
    let port = free_port();
    let receiver = receive(
        &pki,
        port,
        &[("wide", &wide_dst), ("other", &other_dst)],
        &[],
    );
    // Lowered before any session starts: the pool is sized by the first.
    lower_limit(&receiver, LOW_LIMIT);

    let senders = [("a", &wide, "wide"), ("b", &other, "other")].map(|(client, src, volume)| {
        send(&pki, client, src, port, volume, &["--progress", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mover send")
    });
    let [wide_out, other_out] = senders.map(|sender| sender.wait_with_output().unwrap());
    assert_eq!(code(&wide_out), 0, "wide: {}", stderr(&wide_out));
    assert_eq!(code(&other_out), 0, "other: {}", stderr(&other_out));
    assert_same_tree(&wide, &wide_dst);
    assert_same_tree(&other, &other_dst);
}

#[test]
fn running_out_on_the_receiver_is_retryable_and_names_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 0, DEPTH, 0);
    fs::create_dir_all(&dst).unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();
    let receiver = receive(&pki, port, &[("data", &dst)], &[]);
    // Room to accept and start a session, not to walk down a chain.
    lower_limit(&receiver, 16);
    let out = send(&pki, "app", &src, port, "data", &[]).output().unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("out of file descriptors: this process may open 16 files (`ulimit -n`"),
        "{}",
        stderr(&out)
    );
}
