//! What real disks, sources and fleets do to a volume migration: a full
//! destination, unreadable and changing source files, many volumes at once.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Names of `.mover-*` temporaries below `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mover-"))
        .collect()
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_destination_fails_permanently_and_keeps_what_it_had() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&dst)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!(
            "NOTE: not checked here: a full destination (cannot mount a small tmpfs; needs root)"
        );
        return;
    }
    let _mount = Mount(dst.clone());
    for name in ["keep-a", "keep-b"] {
        fs::write(src.join(name), random_bytes(1024 * 1024, 7)).unwrap();
    }
    sync_ok(&src, &dst, &[]);
    fs::write(src.join("big"), random_bytes(20 * 1024 * 1024, 8)).unwrap();
    fs::write(src.join("keep-a"), random_bytes(1024 * 1024, 9)).unwrap();

    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", &dst)], &[]);
    let started = Instant::now();
    let out = send(
        &pki,
        "app",
        &src,
        port,
        "data",
        &["--retries", "3", "--retry-delay", "0.1"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 1, "a full disk is permanent: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no space left on data/big"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("retrying"),
        "retried a full disk: {}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Everything the destination had is intact; nothing half-written.
    assert_eq!(
        fs::read(dst.join("keep-b")).unwrap(),
        random_bytes(1024 * 1024, 7)
    );
    let keep_a = fs::read(dst.join("keep-a")).unwrap();
    assert!(keep_a == random_bytes(1024 * 1024, 7) || keep_a == random_bytes(1024 * 1024, 9));
    assert!(!dst.join("big").exists());
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

#[test]
fn unreadable_source_entries_are_reported_counted_and_protected() {
    if !is_root() {
        println!("NOTE: not checked here: unreadable sources (needs root to run the sender as another user)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("private")).unwrap();
    fs::create_dir_all(src.join("public")).unwrap();
    fs::create_dir_all(dst.join("private")).unwrap();
    fs::write(src.join("ok.txt"), b"fine").unwrap();
    fs::write(src.join("public/file"), b"public").unwrap();
    fs::write(src.join("private/inner"), b"hidden").unwrap();
    fs::write(src.join("secret"), b"no reading").unwrap();
    fs::write(dst.join("private/old-file"), b"must survive").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();

    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    share_pki(&pki);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", &dst)], &[]);
    let out = as_nobody(&send(&pki, "app", &src, port, "data", &[]));
    assert_eq!(code(&out), 23, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("secret") && err.contains("private"), "{err}");
    let summary = summary(&out);
    assert_eq!(summary["errors"], 2, "{summary}");
    assert_eq!(
        summary["problems"].as_array().unwrap().len(),
        2,
        "{summary}"
    );
    assert_eq!(fs::read(dst.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(fs::read(dst.join("public/file")).unwrap(), b"public");
    // A directory that could not be listed proves nothing about what it
    // holds: the destination's copy of its contents is kept.
    assert_eq!(
        fs::read(dst.join("private/old-file")).unwrap(),
        b"must survive"
    );
    assert!(!dst.join("secret").exists());
}

#[test]
fn file_changing_while_read_is_reported_as_vanished() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("steady"), random_bytes(100_000, 1)).unwrap();
    // Large, so reading it takes long enough for the writer to get in.
    fs::write(src.join("growing.log"), random_bytes(64 * 1024 * 1024, 2)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appended = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, appended, path) = (stop.clone(), appended.clone(), src.join("growing.log"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.write_all(b"another line of log\n").unwrap();
                appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    while appended.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A file that changes while it is read must be reported; one that
    // happened not to change in that window (a starved writer thread) may
    // sync cleanly. Either way nothing else is affected.
    let mut reported = None;
    for _ in 0..5 {
        let out = sync_json(&src, &dst, &[]);
        match code(&out) {
            24 => {
                reported = Some(out);
                break;
            }
            0 => continue,
            other => panic!("exit {other}: {}", stderr(&out)),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let out = reported.expect("a file appended to throughout was never reported as changed");
    assert!(stderr(&out).contains("growing.log"), "{}", stderr(&out));
    let summary = summary(&out);
    assert!(summary["vanished"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(
        fs::read(dst.join("steady")).unwrap(),
        random_bytes(100_000, 1)
    );
    assert!(
        leftovers(&dst).is_empty(),
        "left behind: {:?}",
        leftovers(&dst)
    );
}

#[test]
fn sixteen_volumes_sync_concurrently_into_one_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let names: Vec<String> = (0..16).map(|i| format!("vol{i}")).collect();
    let clients: Vec<String> = names.iter().map(|n| format!("c-{n}={n}")).collect();
    certs(
        &pki,
        &clients.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut volumes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (src, dst) = (
            tmp.path().join(format!("src-{name}")),
            tmp.path().join(format!("dst-{name}")),
        );
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        for f in 0..40 {
            fs::write(
                src.join(format!("sub/f{f}")),
                random_bytes(1000 + f * 500 + i, (i * 100 + f) as u64),
            )
            .unwrap();
        }
        fs::write(src.join("big"), random_bytes(2 * 1024 * 1024, i as u64)).unwrap();
        volumes.push((name.clone(), src, dst));
    }
    let port = free_port();
    let served: Vec<(&str, &Path)> = volumes
        .iter()
        .map(|(n, _, d)| (n.as_str(), d.as_path()))
        .collect();
    let mut receiver = receive(&pki, port, &served, &["--exit-when-done"]);
    let senders: Vec<_> = volumes
        .iter()
        .map(|(name, src, _)| {
            send(
                &pki,
                &format!("c-{name}"),
                src,
                port,
                name,
                &["--retries", "3", "--retry-delay", "0.2"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for sender in senders {
        let out = sender.wait_with_output().unwrap();
        let log = pki.with_file_name(format!("receiver-{port}.log"));
        assert_eq!(
            code(&out),
            0,
            "{}\nreceiver's log:\n{}",
            stderr(&out),
            fs::read_to_string(log).unwrap_or_default()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "receiver did not exit after all 16 volumes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, src, dst) in &volumes {
        assert_same_tree(src, dst);
    }
}

/// With `--exit-when-done`, the session that syncs the last volume must not
/// take the receiver down under another session still running: here a
/// second, throttled sync of a volume already synced once.
#[test]
fn exit_when_done_waits_for_sessions_still_running() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["c-a=a", "c-b=b"]);
    let dirs: Vec<PathBuf> = ["src-a", "dst-a", "src-b", "dst-b"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    let [src_a, dst_a, src_b, dst_b] = [&dirs[0], &dirs[1], &dirs[2], &dirs[3]];
    fs::write(src_a.join("first"), b"one").unwrap();
    fs::write(src_b.join("b"), random_bytes(100_000, 2)).unwrap();
    let port = free_port();
    let log = pki.with_file_name(format!("receiver-{port}.log"));
    let mut receiver = receive(
        &pki,
        port,
        &[("a", dst_a), ("b", dst_b)],
        &["--exit-when-done"],
    );
    let out = send(&pki, "c-a", src_a, port, "a", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Two seconds of transfer at 1 MB/s, so volume b's sync ends first.
    fs::write(src_a.join("slow"), random_bytes(2_000_000, 1)).unwrap();
    let slow = send(&pki, "c-a", src_a, port, "a", &["--bwlimit", "1M"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("syncing volume a")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the second sync never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = send(&pki, "c-b", src_b, port, "b", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        0,
        "{}\nreceiver's log:\n{}",
        stderr(&out),
        fs::read_to_string(&log).unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "receiver did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_same_tree(src_a, dst_a);
    assert_same_tree(src_b, dst_b);
}
