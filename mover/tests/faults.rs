//! Faults a migration meets in real networks and how `mover send` copes:
//! connections cut mid-transfer (by a proxy in this test that forwards the
//! first connection only partway) and recovered with `--retries`, and slow
//! links, where file data goes compressed.

mod common;

use common::*;
use mover::dest::work::WorkArea;
use mover::entry::RelPath;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;

/// Forwards connections on a free port to `target`, client to server at no
/// more than `rate` bytes a second: a slow WAN link.
fn slow_proxy(target: u16, rate: u64) -> u16 {
    proxy(target, u64::MAX, Some(rate)).0
}

fn leftovers(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mover-"))
        .collect()
}

/// Taken by the tests that keep both cores busy and by the one that
/// measures a slow link: compression engages when the sender waits for the
/// link, which CPU contention from a test running beside it would mask.
static CPU_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_heavy() -> std::sync::MutexGuard<'static, ()> {
    CPU_HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `src` through a proxy that cuts the first connection after
/// `cut_after` bytes, with retries; returns the final summary.
fn send_through_cut(src: &Path, dst: &Path, cut_after: u64) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", dst)], &[]);
    let (proxy, accepted) = cutting_proxy(port, cut_after);
    let out = send(
        &pki,
        "app",
        src,
        proxy,
        "data",
        &["--retries", "5", "--retry-delay", "0.1"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "sender: {}", stderr(&out));
    assert!(
        stderr(&out).contains("attempt 1 failed"),
        "{}",
        stderr(&out)
    );
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    summary(&out)
}

#[test]
fn cut_in_a_large_file_resumes_from_what_arrived() {
    let _serial = cpu_heavy();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let size = 96 * 1024 * 1024;
    fs::write(src.join("disk.img"), random_bytes(size, 21)).unwrap();

    let summary = send_through_cut(&src, &dst, 40 * 1024 * 1024);
    assert_same_tree(&src, &dst);
    assert!(summary["attempt"].as_u64().unwrap() >= 2, "{summary}");
    // The retry reused what had arrived instead of starting from byte 0.
    let reused = summary["bytes_matched"].as_u64().unwrap();
    assert!(
        reused >= 30 * 1024 * 1024,
        "only {reused} bytes reused: {summary}"
    );
    assert!(
        summary["bytes_sent"].as_u64().unwrap() < (size as u64) - 30 * 1024 * 1024,
        "{summary}"
    );
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

/// A cut while the receiver is still filling a long hole of a sparse file
/// keeps what arrived before it, like any other cut.
#[test]
fn cut_in_a_sparse_file_resumes_from_what_arrived() {
    let _serial = cpu_heavy();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let chunk = 24 * 1024 * 1024;
    let hole = 1u64 << 30;
    let file = fs::File::create(src.join("sparse.img")).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&random_bytes(chunk, 5), 0).unwrap();
    file.write_all_at(&random_bytes(chunk, 6), chunk as u64 + hole)
        .unwrap();
    drop(file);

    let summary = send_through_cut(&src, &dst, 30 * 1024 * 1024);
    assert_same_tree(&src, &dst);
    let reused = summary["bytes_matched"].as_u64().unwrap();
    assert!(
        reused >= chunk as u64,
        "the data before the hole was sent again: {summary}"
    );
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

/// A cut during a delta transfer (segments copied from the old copy) costs
/// the retry only the delta again.
#[test]
fn cut_in_a_delta_transfer_resends_only_the_delta() {
    let _serial = cpu_heavy();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    let size = 128 * 1024 * 1024;
    let mut data = random_bytes(size, 9);
    fs::write(src.join("db"), &data).unwrap();
    sync_ok(&src, &dst, &[]);
    // Scattered 4 KiB changes, 1% of the file, plus one large new region at
    // the end so that the cut lands while data still flows.
    for i in (0..size - 4096).step_by(400 * 1024) {
        data[i..i + 4096].copy_from_slice(&random_bytes(4096, i as u64));
    }
    data.extend(random_bytes(48 * 1024 * 1024, 10));
    fs::write(src.join("db"), &data).unwrap();

    let summary = send_through_cut(&src, &dst, 24 * 1024 * 1024);
    assert_same_tree(&src, &dst);
    assert!(
        summary["bytes_sent"].as_u64().unwrap() < 60 * 1024 * 1024,
        "the retry sent more than the delta: {summary}"
    );
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

#[test]
fn cut_among_many_small_files_does_not_resend_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&dst).unwrap();
    let files = 3000;
    for i in 0..files {
        let dir = src.join(format!("d{:02}", i % 40));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i:05}")), random_bytes(10_000, i as u64)).unwrap();
    }

    let summary = send_through_cut(&src, &dst, 15 * 1024 * 1024);
    assert_same_tree(&src, &dst);
    let resent = summary["files_sent"].as_u64().unwrap();
    assert!(
        resent < files as u64 * 3 / 4,
        "{resent} of {files} files sent again: {summary}"
    );
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

#[test]
fn receiver_killed_mid_file_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let size = 160 * 1024 * 1024;
    fs::write(src.join("disk.img"), random_bytes(size, 33)).unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();

    let mut receiver = receive(&pki, port, &[("data", &dst)], &[]);
    let sender = send(&pki, "app", &src, port, "data", &["--progress", "none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = dst
        .join(mover::dest::work::WORK_NAME)
        .join(OsStr::from_bytes(&WorkArea::partial_name(
            &RelPath::parse(b"disk.img").unwrap(),
        )));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs::metadata(&partial).map_or(0, |m| m.len()) < 40 * 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer never got going"
        );
        thread::sleep(std::time::Duration::from_millis(2));
    }
    receiver.0.kill().unwrap();
    receiver.0.wait().unwrap();
    let out = sender.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        75,
        "a vanished receiver is worth a retry: {}",
        stderr(&out)
    );
    assert!(!dst.join("disk.img").exists(), "no torn file in place");

    let _receiver = receive(&pki, port, &[("data", &dst)], &[]);
    let out = send(&pki, "app", &src, port, "data", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = summary(&out);
    let reused = summary["bytes_matched"].as_u64().unwrap();
    assert!(
        reused >= 30 * 1024 * 1024,
        "only {reused} bytes reused: {summary}"
    );
    assert_same_tree(&src, &dst);
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

/// Over a slow link `--compress auto` (the default) finds the sender mostly
/// waiting and compresses: text-like data crosses at a fraction of its size,
/// data that does not shrink goes as it is, and everything arrives exact.
#[test]
fn slow_link_gets_compressed_data() {
    let _serial = cpu_heavy();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    // Larger than what the queues and socket buffers between the two hold
    // (about 20 MiB), which fill at link speed before the sender waits.
    let log: String = (0..3_000_000)
        .map(|i| {
            format!(
                "{i:08} GET /api/v1/items/{} 200 {}ms\n",
                i * 7 % 1000,
                i % 97
            )
        })
        .collect();
    fs::write(src.join("access.log"), &log).unwrap();
    fs::write(src.join("blob"), random_bytes(1024 * 1024, 5)).unwrap();

    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", &dst)], &[]);
    // Slow enough that the link stays the bottleneck even when the
    // machine's cores are busy with other tests (at 16 MiB/s a loaded
    // machine left the sender too little CPU to wait on it, and `auto`
    // rightly compressed less).
    let slow = slow_proxy(port, 8 * 1024 * 1024);
    let out = send(&pki, "app", &src, slow, "data", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "sender: {}", stderr(&out));
    assert_same_tree(&src, &dst);
    let summary = summary(&out);
    let (sent, wire) = (
        summary["bytes_sent"].as_u64().unwrap(),
        summary["wire_bytes"].as_u64().unwrap(),
    );
    assert!(sent > 100 * 1024 * 1024, "{summary}");
    assert!(wire < sent / 2, "{wire} wire bytes for {sent}: {summary}");
}
