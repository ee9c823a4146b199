//! `--streams N`: one session's data over N connections beside the first,
//! end to end through the real binaries: whole trees and resyncs compared
//! with their source, a data connection cut midway, and a block copy.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A tree with a large file (several data chunks, so segments spread over
/// every lane), many small ones, a hard link, a symlink and a private file.
fn tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("big"), random_bytes(12 << 20, seed)).unwrap();
    for i in 0..300u64 {
        let dir = if i % 3 == 0 { "sub/deeper" } else { "sub" };
        fs::write(
            root.join(format!("{dir}/f{i}")),
            random_bytes((i as usize * 211) % 9000, seed + i),
        )
        .unwrap();
    }
    fs::hard_link(root.join("sub/f1"), root.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("sub/f2", root.join("symlink")).unwrap();
    fs::write(root.join("private"), b"secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// Rewrites scattered parts of the big file, replaces and deletes small
/// ones: a resync with both deltas and new files.
fn change(root: &Path, round: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut big = fs::OpenOptions::new()
        .write(true)
        .open(root.join("big"))
        .unwrap();
    for at in [5_000u64, 3 << 20, 7 << 20, (12 << 20) - 100] {
        big.seek(SeekFrom::Start(at)).unwrap();
        big.write_all(&random_bytes(64, at + round)).unwrap();
    }
    for i in (round as usize..300).step_by(7) {
        let dir = if i % 3 == 0 { "sub/deeper" } else { "sub" };
        fs::remove_file(root.join(format!("{dir}/f{i}"))).unwrap();
    }
    fs::write(root.join("sub/new"), random_bytes(3 << 20, 99 + round)).unwrap();
}

/// The source, destination and certificates of a test directory.
fn paths(tmp: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let at = |name| tmp.path().join(name);
    (at("src"), at("dst"), at("pki"))
}

/// A source tree made from `seed` and a receiver serving an empty
/// destination as volume `data` to client `app`.
fn served(seed: u64) -> (tempfile::TempDir, u16, Receiver) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, pki) = paths(&tmp);
    tree(&src, seed);
    fs::create_dir_all(&dst).unwrap();
    certs(&pki, &["app=data"]);
    let port = free_port();
    let receiver = receive(&pki, port, &[("data", &dst)], &[]);
    (tmp, port, receiver)
}

/// `mover send` of `src` as client `app` to volume `data`, run to its end.
fn send_data(pki: &Path, src: &Path, port: u16, extra: &[&str]) -> std::process::Output {
    send(pki, "app", src, port, "data", extra).output().unwrap()
}

fn log_of(pki: &Path, port: u16) -> String {
    fs::read_to_string(pki.with_file_name(format!("receiver-{port}.log"))).unwrap_or_default()
}

#[test]
fn a_tree_and_its_resync_arrive_whole_over_several_connections() {
    let (tmp, port, _receiver) = served(1);
    let (src, dst, pki) = paths(&tmp);
    for (round, (streams, expected)) in [("4", 4), ("2", 2)].into_iter().enumerate() {
        let out = send_data(&pki, &src, port, &["--streams", streams]);
        assert_eq!(
            code(&out),
            0,
            "{}\nreceiver's log:\n{}",
            stderr(&out),
            log_of(&pki, port)
        );
        assert_same_tree(&src, &dst);
        let joined = format!("{expected} data connections joined the session for volume data");
        assert!(
            log_of(&pki, port).contains(&joined),
            "the receiver never said {joined:?}:\n{}",
            log_of(&pki, port)
        );
        change(&src, round as u64);
    }
    // And a no-change resync, where lanes carry almost nothing.
    let out = send_data(&pki, &src, port, &["--streams", "8"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &dst);
}

#[test]
fn local_sync_and_block_copy_take_streams_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 2);
    sync_ok(&src, &dst, &["--streams", "3"]);
    assert_same_tree(&src, &dst);
    change(&src, 0);
    sync_ok(&src, &dst, &["--streams", "3", "--checksum"]);
    assert_same_tree(&src, &dst);

    let (image, copy) = (tmp.path().join("disk.img"), tmp.path().join("copy.img"));
    let mut disk = random_bytes(6 << 20, 3);
    disk[1 << 20..2 << 20].fill(0);
    fs::write(&image, &disk).unwrap();
    sync_ok(&image, &copy, &["--block", "--streams", "2"]);
    assert!(fs::read(&copy).unwrap() == disk, "the block copy differs");
}

#[test]
fn a_data_connection_cut_midway_fails_the_attempt_and_the_retry_completes() {
    let (tmp, port, _receiver) = served(4);
    let (src, dst, pki) = paths(&tmp);
    // Connection 0 is the control connection; 1 is a data connection,
    // cut once 2 MB went through it.
    let (via, accepted) = proxy_cutting(port, 1, 2_000_000, None);
    let out = send(
        &pki,
        "app",
        &src,
        via,
        "data",
        &["--streams", "3", "--retries", "2", "--retry-delay", "0.1"],
    )
    .output()
    .unwrap();
    let said = stderr(&out);
    assert_eq!(
        code(&out),
        0,
        "{said}\nreceiver's log:\n{}",
        log_of(&pki, port)
    );
    assert!(
        said.contains("attempt 1 failed"),
        "no failed attempt: {said}"
    );
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 8,
        "the retry did not open its connections anew"
    );
    assert_same_tree(&src, &dst);
    let leftovers: Vec<_> = walkdir::WalkDir::new(&dst)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mover-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

#[test]
fn streams_beyond_the_limit_are_refused_by_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for bad in ["0", "9", "many"] {
        let out = mover()
            .arg("sync")
            .arg(&src)
            .arg(tmp.path().join("dst"))
            .args(["--streams", bad])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "--streams {bad} was accepted");
        assert!(stderr(&out).contains("--streams"), "{}", stderr(&out));
    }
}

#[test]
fn a_receiver_out_of_connection_slots_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, pki) = paths(&tmp);
    tree(&src, 5);
    let (slow_src, slow_dst) = (tmp.path().join("slow-src"), tmp.path().join("slow-dst"));
    for dir in [&dst, &slow_src, &slow_dst] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(slow_src.join("file"), random_bytes(4_000_000, 6)).unwrap();
    certs(&pki, &["app=data", "other=slow"]);
    let port = free_port();
    let _receiver = receive(
        &pki,
        port,
        &[("data", &dst), ("slow", &slow_dst)],
        &["--max-connections", "3"],
    );
    // A throttled sender holds one of the three slots for seconds.
    let slow = send(&pki, "other", &slow_src, port, "slow", &["--bwlimit", "1M"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_of(&pki, port).contains("syncing volume slow") {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow sync never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The control connection takes the second slot, the first data
    // connection the third; the second is refused, and hears why.
    let out = send_data(&pki, &src, port, &["--streams", "2"]);
    let said = stderr(&out);
    assert_eq!(code(&out), 75, "a full receiver is worth a retry: {said}");
    assert!(
        said.contains("data connection") && said.contains("already serves 3 connections"),
        "{said}"
    );
    let out = slow.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The slots free as the earlier sessions wind down.
    let out = send_data(
        &pki,
        &src,
        port,
        &["--streams", "2", "--retries", "5", "--retry-delay", "0.2"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &dst);
}
