//! `mover sync` end to end: the real binary, a real TLS connection on
//! loopback, real files; every item of the transfer semantics checked.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A source tree holding every kind of entry the mover must carry. Returns
/// notes on what this filesystem or user could not create (printed, so a
/// skipped check is visible in the test output).
fn build_rich_tree(src: &Path) -> Vec<String> {
    let mut skipped = Vec::new();
    fs::create_dir_all(src.join("dir/nested/deeper")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("small.txt"), b"hello\n").unwrap();
    fs::write(
        src.join("dir/random.bin"),
        random_bytes(3 * 1024 * 1024 + 17, 1),
    )
    .unwrap();
    fs::write(
        src.join("dir/nested/odd-size"),
        random_bytes(64 * 1024 + 1, 2),
    )
    .unwrap();
    fs::write(src.join("dir/nested/deeper/name with spaces \u{e9}"), b"x").unwrap();
    fs::write(src.join("other/\u{1F600}.txt"), b"emoji").unwrap();

    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("private"), b"secret").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();

    symlink("../small.txt", src.join("dir/rel-link")).unwrap();
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    symlink("does/not/exist", src.join("dangling")).unwrap();
    symlink("nested", src.join("dir/dir-link")).unwrap();

    fs::write(src.join("dir/hard-a"), random_bytes(10_000, 3)).unwrap();
    fs::hard_link(src.join("dir/hard-a"), src.join("other/hard-b")).unwrap();
    fs::hard_link(src.join("dir/hard-a"), src.join("hard-c")).unwrap();

    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if is_root() {
        let dev = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null-dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            dev,
        )
        .unwrap();
        std::os::unix::fs::lchown(src.join("dir/random.bin"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("abs-link"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::lchown(src.join("other"), Some(1000), Some(1000)).unwrap();
    } else {
        skipped.push("device files and ownership (not running as root)".to_string());
    }

    // Sparse: a hole, some data, a hole at the end.
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &random_bytes(100_000, 4), 20 * 1024 * 1024)
        .unwrap();
    drop(sparse);

    if !set_xattr(&src.join("small.txt"), "user.checksum", b"abc123")
        || !set_xattr(&src.join("dir"), "user.owner-team", b"storage")
    {
        skipped.push("user xattrs (not supported by this filesystem)".to_string());
    }
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:1234:rw", "-m", "g:5678:r"])
        .arg(src.join("private"))
        .status();
    let default_acl = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:1234:rwx"])
        .arg(src.join("other"))
        .status();
    if !matches!((acl, default_acl), (Ok(a), Ok(d)) if a.success() && d.success()) {
        skipped.push("POSIX ACLs (setfacl missing or unsupported)".to_string());
    }

    fs::set_permissions(src.join("dir/nested"), fs::Permissions::from_mode(0o750)).unwrap();
    // A read-only directory: its contents must still arrive.
    fs::set_permissions(
        src.join("dir/nested/deeper"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    set_mtime(&src.join("small.txt"), 1_000_000_000, 123_456_789);
    set_mtime(&src.join("dir/rel-link"), 1_100_000_000, 1);
    set_mtime(&src.join("dir/nested/deeper"), 1_200_000_000, 999_999_999);
    set_mtime(&src.join("dir"), 1_300_000_000, 5);
    set_mtime(src, 1_400_000_000, 7);
    for note in &skipped {
        println!("NOTE: not checked here: {note}");
    }
    skipped
}

#[test]
fn sync_copies_every_kind_of_entry_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);

    let first = sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert!(first["files_sent"].as_u64().unwrap() >= 10, "{first}");
    assert!(
        first["wire_bytes"].as_u64().unwrap() > 3 * 1024 * 1024,
        "{first}"
    );

    // The same sync again sends no file data at all.
    let second = sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert_eq!(second["files_sent"], 0, "{second}");
    assert_eq!(second["bytes_sent"], 0, "{second}");
    assert_eq!(second["files_deleted"], 0, "{second}");
}

/// Deeper than the walker keeps directories open: the levels it closed
/// are opened again on the way back, and every entry still arrives.
#[test]
fn tree_deeper_than_the_open_directory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut dir = src.clone();
    for depth in 0..50 {
        dir = dir.join(format!("d{depth}"));
        fs::create_dir_all(&dir).unwrap();
        // Files after the subdirectory in name order, listed on the way back.
        fs::write(dir.join(format!("z{depth}")), depth.to_string()).unwrap();
        fs::write(dir.join("a"), b"first").unwrap();
    }
    let summary = sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert_eq!(summary["files_sent"], 100, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
}

#[test]
fn changed_file_goes_as_small_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let mut data = random_bytes(64 * 1024 * 1024, 9);
    fs::write(src.join("big"), &data).unwrap();
    sync_ok(&src, &dst, &[]);

    // A few KiB changed in three places, plus an insertion that shifts the
    // rest of its segment.
    data[1_000_000..1_002_048].fill(0x55);
    data[33_333_333..33_334_333].fill(0xAA);
    data[60_000_000..60_000_100].copy_from_slice(&[7u8; 100]);
    data.splice(50_000_000..50_000_000, [1u8, 2, 3]);
    fs::write(src.join("big"), &data).unwrap();
    let summary = sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    // Most of it is the 14 MB after the insertion: each of its 16 KiB
    // segments costs its signature (32 blocks, 384 bytes) and the last
    // half-kilobyte block, which no longer matches whole (about 1.1 MB in
    // all, against 64 MiB sent whole).
    let wire = summary["wire_bytes"].as_u64().unwrap();
    assert!(
        wire < 3 * 1024 * 1024 / 2,
        "delta resync used {wire} wire bytes: {summary}"
    );
    assert_eq!(summary["files_sent"], 1, "{summary}");
    assert!(
        summary["bytes_matched"].as_u64().unwrap() > 60 * 1024 * 1024,
        "{summary}"
    );
}

/// A file that shrank or grew keeps what it shares with the old copy: the
/// common segments are copied, only the changed and the new bytes travel.
#[test]
fn shrunk_and_grown_files_reuse_the_common_part() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let old = random_bytes(8 * 1024 * 1024, 3);
    fs::write(src.join("shrinks"), &old).unwrap();
    fs::write(src.join("grows"), &old).unwrap();
    sync_ok(&src, &dst, &[]);

    let mut shrunk = old[..3 * 1024 * 1024 + 777].to_vec();
    shrunk[100_000] ^= 0xff;
    let mut grown = old.clone();
    grown.extend_from_slice(&random_bytes(1024 * 1024, 4));
    fs::write(src.join("shrinks"), &shrunk).unwrap();
    fs::write(src.join("grows"), &grown).unwrap();
    let summary = sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert_eq!(summary["files_sent"], 2, "{summary}");
    let sent = summary["bytes_sent"].as_u64().unwrap();
    // The new megabyte, plus about one segment around the changed byte
    // and the shrunk file's last partial segment.
    assert!(
        sent < 1024 * 1024 + 256 * 1024,
        "{sent} bytes sent: {summary}"
    );
    assert!(
        summary["bytes_matched"].as_u64().unwrap() > 10 * 1024 * 1024,
        "{summary}"
    );
}

#[test]
fn deletes_extraneous_entries_unless_told_not_to() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("keep/file"), b"1").unwrap();
    fs::create_dir_all(dst.join("keep/old-dir/sub")).unwrap();
    fs::write(dst.join("keep/old-dir/sub/f"), b"old").unwrap();
    fs::write(dst.join("stale"), b"old").unwrap();
    fs::write(dst.join("zzz-last"), b"old").unwrap();

    let kept = sync_ok(&src, &dst, &["--no-delete"]);
    assert_eq!(kept["files_deleted"], 0);
    assert!(dst.join("stale").exists() && dst.join("keep/old-dir/sub/f").exists());

    let deleted = sync_ok(&src, &dst, &[]);
    assert_eq!(deleted["files_deleted"], 3, "{deleted}");
    assert_same_tree(&src, &dst);
}

#[test]
fn replaces_entries_whose_type_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("was-file")).unwrap();
    fs::write(src.join("was-file/inner"), b"in").unwrap();
    fs::write(src.join("was-dir"), b"now a file").unwrap();
    symlink("target", src.join("was-dir-now-link")).unwrap();
    fs::write(src.join("was-link"), b"regular").unwrap();

    fs::create_dir_all(dst.join("was-dir/deep/deeper")).unwrap();
    fs::write(dst.join("was-dir/deep/deeper/f"), b"x").unwrap();
    fs::create_dir_all(dst.join("was-dir-now-link/x")).unwrap();
    fs::write(dst.join("was-file"), b"old file").unwrap();
    symlink("/etc/hostname", dst.join("was-link")).unwrap();

    sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
}

#[test]
fn destination_file_is_always_old_or_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), vec![b'a'; 24 * 1024 * 1024]).unwrap();
    sync_ok(&src, &dst, &[]);
    fs::write(src.join("f"), vec![b'b'; 40 * 1024 * 1024]).unwrap();

    let target = dst.join("f");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let content = fs::read(&target).expect("destination file always exists");
                let old = content.len() == 24 * 1024 * 1024 && content.iter().all(|&b| b == b'a');
                let new = content.len() == 40 * 1024 * 1024 && content.iter().all(|&b| b == b'b');
                assert!(old || new, "torn file of {} bytes seen", content.len());
                reads += 1;
            }
            reads
        })
    };
    sync_ok(&src, &dst, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = watcher.join().expect("no torn file");
    assert!(reads > 0);
    assert_same_tree(&src, &dst);
    let leftovers: Vec<_> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
}

#[test]
fn json_progress_reports_counters_rate_and_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), random_bytes(2 * 1024 * 1024, 1)).unwrap();
    fs::write(src.join("b"), b"bb").unwrap();
    let out = sync_json(&src, &dst, &["--progress-interval", "0.05"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let last_progress = events
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .expect("a progress event");
    for key in [
        "files_examined",
        "bytes_examined",
        "bytes_done",
        "wire_bytes",
        "rate_bytes_per_sec",
        "elapsed_secs",
    ] {
        assert!(
            last_progress.get(key).is_some(),
            "progress event lacks {key}: {last_progress}"
        );
    }
    assert_eq!(last_progress["bytes_done"], 2 * 1024 * 1024 + 2);
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["files_examined"], 3);
    assert_eq!(summary["files_sent"], 2);
    assert_eq!(summary["bytes_sent"], 2 * 1024 * 1024 + 2);
    assert_eq!(summary["files_deleted"], 0);
    assert!(summary["duration_secs"].as_f64().unwrap() > 0.0);
    assert!(summary["wire_bytes"].as_u64().unwrap() > 2 * 1024 * 1024);
}

/// New files are created in the receiver's work area with what they can
/// get at creation, and then given only the metadata they lack
/// (`dest/fresh.rs`). Whatever shapes creation there (a setgid root the
/// work area inherits its group from, a default ACL it inherits, the
/// receiver's umask), every copy must come out exactly as its source.
#[test]
fn new_files_come_out_as_the_source_whatever_shapes_their_creation() {
    // user::rwx user:1234:rwx group::rwx mask::rwx other::r-x, as a
    // default ACL (version 2): new files inherit an access ACL (an xattr),
    // which the receiver must remove where the source has none.
    let mut default_acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 7, 1234),
        (0x04, 7, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        default_acl.extend(tag.to_le_bytes());
        default_acl.extend(perm.to_le_bytes());
        default_acl.extend(id.to_le_bytes());
    }
    let modes = [
        0o644, 0o600, 0o640, 0o755, 0o444, 0o000, 0o666, 0o777, 0o4755, 0o2750, 0o1644,
    ];
    for (setgid, acl, umask) in [
        (false, false, "022"),
        (true, false, "022"),
        (false, true, "022"),
        (false, false, "077"),
        (false, false, "000"),
    ] {
        let case = format!("setgid root {setgid}, default ACL {acl}, umask {umask}");
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir(&dst).unwrap();
        for (i, mode) in modes.iter().enumerate() {
            let path = src
                .join(if i % 2 == 0 { "sub" } else { "" })
                .join(format!("f{i}"));
            fs::write(&path, random_bytes(100 * i, i as u64)).unwrap();
            if is_root() {
                let (uid, gid) = [(0, 0), (1000, 2000), (0, 3000)][i % 3];
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let tagged = set_xattr(&src.join("f1"), "user.note", b"kept");
        if setgid {
            if is_root() {
                std::os::unix::fs::lchown(&dst, None, Some(3000)).unwrap();
            }
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o2775)).unwrap();
        }
        if acl && !set_xattr(&dst, "system.posix_acl_default", &default_acl) {
            eprintln!("{case}: skipped, this filesystem takes no ACLs");
            continue;
        }
        let out = Command::new("sh")
            .args(["-c", &format!("umask {umask} && exec \"$@\""), "sh"])
            .arg(env!("CARGO_BIN_EXE_mover"))
            .args([OsStr::new("sync"), src.as_os_str(), dst.as_os_str()])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{case}: {}", stderr(&out));
        let diffs = differences(&src, &dst);
        assert!(diffs.is_empty(), "{case}:\n{}", diffs.join("\n"));
        if tagged {
            assert_eq!(xattrs(&dst.join("f1")), xattrs(&src.join("f1")), "{case}");
        }
    }
}
