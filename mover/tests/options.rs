//! `--checksum` and `--dry-run` end to end, with the real binary over real
//! TLS: what each finds, what each writes (or does not), and what it sends.

mod common;

use common::*;
use mover::entry::Kind;
use mover::wire::frame::Codec;
use mover::wire::hello::Features;
use mover::wire::message::{SyncOptions, ToReceiver, ToSender};
use mover::wire::PROTOCOL_VERSION;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio_util::codec::FramedRead;

/// Overwrites `len` bytes at `at` in `path`, keeping its size and mtime:
/// the change only a content comparison can find.
fn hidden_edit(path: &Path, at: usize, len: usize) {
    let md = fs::metadata(path).unwrap();
    let mut data = fs::read(path).unwrap();
    for b in &mut data[at..at + len] {
        *b = !*b;
    }
    fs::write(path, &data).unwrap();
    set_mtime(path, md.mtime(), md.mtime_nsec());
}

fn counter(summary: &serde_json::Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

#[test]
fn checksum_finds_a_change_that_size_and_mtime_hide() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("data"), random_bytes(100_000, 7)).unwrap();
    fs::write(src.join("small"), b"same size").unwrap();
    sync_ok(&src, &dst, &[]);
    hidden_edit(&src.join("data"), 50_000, 10);
    hidden_edit(&src.join("small"), 0, 4);

    let plain = sync_ok(&src, &dst, &[]);
    assert_eq!(counter(&plain, "files_sent"), 0);
    let missed = differences(&src, &dst);
    assert_eq!(
        missed,
        ["data: content differs", "small: content differs"],
        "without --checksum both edits stay unseen"
    );

    let checked = sync_ok(&src, &dst, &["--checksum"]);
    assert_same_tree(&src, &dst);
    assert_eq!(counter(&checked, "files_sent"), 2);
    assert_eq!(counter(&checked, "files_written"), 2);
}

/// Inode, ctime and mtime of every regular file and directory in `root`:
/// what any rewrite or metadata change would disturb (a `chmod` or `chown`
/// that changes nothing still moves the ctime).
fn identities(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, i64, i64)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() || e.file_type().is_dir())
        .map(|e| {
            let md = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let id = (
                md.ino(),
                md.ctime(),
                md.ctime_nsec(),
                md.mtime(),
                md.mtime_nsec(),
            );
            (rel, id)
        })
        .collect()
}

#[test]
fn checksum_over_an_unchanged_tree_rewrites_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("big"), random_bytes(6 * 1024 * 1024 + 5, 1)).unwrap();
    for i in 0..20u64 {
        fs::write(
            src.join(format!("dir/f{i}")),
            random_bytes(1000 + i as usize * 997, i),
        )
        .unwrap();
    }
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("private"), b"secret").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("big", src.join("link")).unwrap();
    fs::hard_link(src.join("big"), src.join("dir/big-again")).unwrap();
    sync_ok(&src, &dst, &[]);
    let before = identities(&dst);
    sync_ok(&src, &dst, &[]);
    assert_eq!(identities(&dst), before, "a plain resync touched something");

    let summary = sync_ok(&src, &dst, &["--checksum"]);
    assert_same_tree(&src, &dst);
    assert_eq!(identities(&dst), before, "a file was rewritten or touched");
    let file_bytes: u64 = (6 * 1024 * 1024 + 5) + (0..20).map(|i| 1000 + i * 997).sum::<u64>() + 6;
    assert_eq!(counter(&summary, "files_sent"), 0);
    assert_eq!(counter(&summary, "files_written"), 0);
    assert_eq!(counter(&summary, "bytes_sent"), 0);
    assert_eq!(counter(&summary, "bytes_matched"), file_bytes);
    // Entries, segment hashes and handshakes: a few KiB against 6 MiB.
    let wire = counter(&summary, "wire_bytes");
    assert!(wire < 64 * 1024, "{wire} bytes on the wire");
}

#[test]
fn checksum_sends_only_the_changed_block_of_a_big_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let size = 16 * 1024 * 1024;
    fs::write(src.join("big"), random_bytes(size, 3)).unwrap();
    sync_ok(&src, &dst, &[]);
    hidden_edit(&src.join("big"), size / 2 + 1234, 100);

    let summary = sync_ok(&src, &dst, &["--checksum"]);
    assert_same_tree(&src, &dst);
    assert_eq!(counter(&summary, "files_sent"), 1);
    let sent = counter(&summary, "bytes_sent");
    assert!(0 < sent && sent < 64 * 1024, "{sent} bytes sent");
    assert!(counter(&summary, "bytes_matched") > size as u64 - 64 * 1024);
    let wire = counter(&summary, "wire_bytes");
    assert!(wire < 256 * 1024, "{wire} bytes on the wire");
}

/// Everything observable about every entry below `root` (`root` itself as
/// ""): type, mode, owner, size, mtime, ctime, inode, content, symlink
/// target, and the first path of its hard-link group.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut leaders: HashMap<u64, PathBuf> = HashMap::new();
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let content = if md.is_file() {
                format!("{:?}", fs::read(e.path()).unwrap())
            } else if md.is_symlink() {
                format!("-> {:?}", fs::read_link(e.path()).unwrap())
            } else {
                String::new()
            };
            let leader = leaders.entry(md.ino()).or_insert_with(|| rel.clone());
            let state = format!(
                "{:?} {:o} {}:{} {} mtime {}.{} ctime {}.{} ino {} group {:?} {content}",
                md.file_type(),
                md.mode(),
                md.uid(),
                md.gid(),
                md.len(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec(),
                md.ino(),
                leader,
            );
            (rel, state)
        })
        .collect()
}

/// The state a sync is to change: the snapshot without what any write
/// disturbs (ctime and inode numbers).
fn visible(snapshot: &BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    snapshot
        .iter()
        .map(|(path, state)| {
            let cut = state.find(" ctime ").unwrap();
            let group = state.find(" group ").unwrap();
            (
                path.clone(),
                format!("{}{}", &state[..cut], &state[group..]),
            )
        })
        .collect()
}

/// A synced pair of trees, then one change of every kind on either side.
/// Returns the text lines a dry run must print, sorted.
fn every_kind_of_change(src: &Path, dst: &Path) -> Vec<String> {
    fs::create_dir_all(src.join("sub/deep")).unwrap();
    fs::create_dir_all(src.join("gone-dir/inner")).unwrap();
    fs::create_dir(src.join("typed")).unwrap();
    for name in [
        "same",
        "changed",
        "touched",
        "mode",
        "sub/deep/kept",
        "gone",
    ] {
        fs::write(src.join(name), format!("content of {name}\n")).unwrap();
    }
    fs::write(src.join("gone-dir/inner/x"), b"x").unwrap();
    fs::write(src.join("pair-a"), b"pair").unwrap();
    fs::write(src.join("pair-b"), b"pair").unwrap();
    // The same times, or whether the two were written within one clock
    // tick decides if the destination's pair-b (linked to pair-a below)
    // has pair-b's content and time, as the expected `unlink` says.
    for pair in ["pair-a", "pair-b"] {
        set_mtime(&src.join(pair), 1_600_000_000, 0);
    }
    fs::write(src.join("link-a"), b"linked").unwrap();
    fs::write(src.join("link-b"), b"linked").unwrap();
    symlink("same", src.join("symlink")).unwrap();
    sync_ok(src, dst, &[]);

    // The destination has what the source lacks, and links the source
    // keeps apart.
    fs::remove_file(src.join("gone")).unwrap();
    fs::remove_dir_all(src.join("gone-dir")).unwrap();
    fs::remove_file(dst.join("pair-b")).unwrap();
    fs::hard_link(dst.join("pair-a"), dst.join("pair-b")).unwrap();
    // The source has new entries, changed ones and new links.
    fs::write(src.join("new-file"), vec![7u8; 2048]).unwrap();
    fs::create_dir(src.join("new-dir")).unwrap();
    fs::write(src.join("new-dir/inner"), b"inner").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("new-fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::write(src.join("changed"), vec![1u8; 3000]).unwrap();
    let touched = fs::metadata(src.join("touched")).unwrap();
    set_mtime(&src.join("touched"), touched.mtime() - 100, 0);
    fs::set_permissions(src.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir(src.join("typed")).unwrap();
    fs::write(src.join("typed"), b"now a file").unwrap();
    fs::remove_file(src.join("symlink")).unwrap();
    symlink("changed", src.join("symlink")).unwrap();
    fs::remove_file(src.join("link-b")).unwrap();
    fs::hard_link(src.join("link-a"), src.join("link-b")).unwrap();
    // Directories: all times equal but one, so only that one shows.
    for dir in ["", "sub", "sub/deep"] {
        let md = fs::metadata(src.join(dir)).unwrap();
        set_mtime(&dst.join(dir), md.mtime(), md.mtime_nsec());
    }
    set_mtime(&dst.join("sub"), 1_000_000_000, 0);

    let mut lines: Vec<String> = [
        "content     changed (19 B -> 2.93 KiB)",
        "delete      gone",
        "delete      gone-dir/",
        "hardlink    link-b (=> link-a)",
        "meta        mode (mode 0644 -> 0600)",
        "meta        sub (mtime)",
        "new dir     new-dir/",
        "new file    new-dir/inner (5 B)",
        "new file    new-file (2.00 KiB)",
        "new special new-fifo",
        "replace     typed (dir -> file)",
        "target      symlink",
        "unlink      pair-b",
    ]
    .map(String::from)
    .to_vec();
    let touched = fs::metadata(src.join("touched")).unwrap().len();
    lines.push(format!("content     touched ({touched} B -> {touched} B)"));
    lines.sort();
    lines
}

fn sorted_lines(stdout: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn dry_run_lists_every_change_writes_nothing_and_the_sync_makes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let expected = every_kind_of_change(&src, &dst);
    let before = snapshot(&dst);

    let out = run(&[
        "sync".as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
        "--dry-run".as_ref(),
        "--progress".as_ref(),
        "none".as_ref(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let listed = sorted_lines(&out.stdout);
    assert_eq!(listed, expected);
    assert!(
        stderr(&out).contains("dry run, nothing changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        snapshot(&dst),
        before,
        "the dry run changed the destination"
    );

    // The same as JSON events, with a summary of what would happen.
    let out = sync_json(&src, &dst, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "change")
        .collect();
    let mut json: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["change"].to_string(), e["path"].to_string()))
        .collect();
    json.sort();
    assert_eq!(json.len(), expected.len(), "{json:?}");
    assert!(events.iter().any(|e| e["change"] == "content"
        && e["path"] == "changed"
        && e["old_size"] == 19
        && e["new_size"] == 3000));
    assert!(events
        .iter()
        .any(|e| e["change"] == "new" && e["kind"] == "special" && e["path"] == "new-fifo"));
    let summary = summary(&out);
    assert_eq!(summary["dry_run"], true);
    assert_eq!(counter(&summary, "files_deleted"), 2);
    // changed, touched, typed, new-file, new-dir/inner.
    assert_eq!(counter(&summary, "files_written"), 5);
    assert_eq!(counter(&summary, "files_sent"), 0);
    assert_eq!(counter(&summary, "bytes_sent"), 0);
    assert_eq!(
        snapshot(&dst),
        before,
        "the dry run changed the destination"
    );

    // The real sync changes exactly the listed paths (a deleted
    // directory's contents go with it).
    sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    let (old, new) = (visible(&before), visible(&snapshot(&dst)));
    let paths: BTreeSet<&PathBuf> = old.keys().chain(new.keys()).collect();
    let changed: BTreeSet<String> = paths
        .into_iter()
        .filter(|p| old.get(*p) != new.get(*p))
        .filter(|p| !p.starts_with("gone-dir") || *p == Path::new("gone-dir"))
        .map(|p| p.display().to_string())
        .collect();
    let listed: BTreeSet<String> = listed
        .iter()
        .map(|l| {
            let path = l[12..].split(" (").next().unwrap();
            path.trim_end_matches('/').to_string()
        })
        .collect();
    assert_eq!(changed, listed);
}

#[test]
fn send_dry_run_through_a_receiver_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["c1=vol1"]);
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/new"), b"new").unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("old"), b"old").unwrap();
    let before = snapshot(&dst);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &dst)], &[]);

    let out = send(&pki, "c1", &src, port, "vol1", &["--dry-run"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let changes: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "change")
        .map(|v| (v["change"].to_string(), v["path"].to_string()))
        .collect();
    let expected = [
        ("\"new\"", "\"a\""),
        ("\"new\"", "\"a/new\""),
        ("\"delete\"", "\"old\""),
    ];
    let mut changes = changes;
    changes.retain(|(c, _)| c != "\"meta\"");
    let mut expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect();
    expected.sort();
    changes.sort();
    assert_eq!(changes, expected);
    assert_eq!(snapshot(&dst), before);

    // Then the real thing, through the same receiver.
    let out = send(&pki, "c1", &src, port, "vol1", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &dst);
}

/// `--bwlimit` paces what the sender writes: incompressible data takes
/// at least its size over the rate (a guarantee of the pacing, not a
/// speed measurement; a slow machine only takes longer), and arrives
/// intact. A rate that is not one is refused before connecting.
#[test]
fn bwlimit_paces_the_sender_and_bad_rates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["c1=vol1"]);
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("noise"), random_bytes(3 << 20, 7)).unwrap();
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &dst)], &[]);

    let started = std::time::Instant::now();
    let out = send(&pki, "c1", &src, port, "vol1", &["--bwlimit", "1M"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &dst);
    // 3 MiB at 1 MiB/s, less the first twentieth of a second's allowance.
    assert!(
        took >= std::time::Duration::from_millis(2900),
        "3 MiB went out in {took:?} under --bwlimit 1M"
    );

    for bad in ["0", "fast", "10X"] {
        let out = send(&pki, "c1", &src, port, "vol1", &["--bwlimit", bad])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--bwlimit"), "{}", stderr(&out));
    }
}

#[test]
fn bad_option_use_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("missing"));
    fs::create_dir(&src).unwrap();

    let out = sync_json(&src, &dst, &["--dry-run", "--checksum"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );

    let out = sync_json(&src, &dst, &["--dry-run"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "destination {} is not a directory (a dry run creates nothing)",
            dst.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!dst.exists(), "the dry run created the destination");
}

/// Connects to the receiver on `port` as client `c1`, says Hello for
/// `vol1` with `options`, sends `script` and returns the receiver's error.
async fn refusal(pki: &Path, port: u16, options: SyncOptions, script: Vec<ToReceiver>) -> String {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let identity = mover::tls::Identity::from_files(&pki.join("c1.crt"), &pki.join("c1.key"))
        .expect("client identity");
    let roots = mover::tls::load_ca_file(&pki.join("ca.crt")).expect("CA");
    let stream = mover::net::connect(
        &format!("localhost:{port}"),
        "localhost",
        mover::tls::client_config(&identity, roots).expect("TLS config"),
        Default::default(),
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("connect");
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read, Codec::<ToSender, ToReceiver>::default());
    let hello = ToReceiver::Hello {
        protocol: PROTOCOL_VERSION,
        volume: "vol1".into(),
        options,
        features: Features::ours(),
        reserved: Vec::new(),
        block: None,
    };
    for msg in std::iter::once(hello).chain(script) {
        write.write_all(&peer::frame(msg)).await.expect("write");
    }
    loop {
        match reader.next().await {
            Some(Ok(ToSender::Error { message, retryable })) => {
                assert!(!retryable, "{message}");
                return message;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

/// Messages that make no sense for the session's options are refused with
/// a protocol error naming them, and write nothing.
#[test]
fn receiver_refuses_messages_its_options_rule_out() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["c1=vol1"]);
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("f"), b"old").unwrap();
    let before = snapshot(&dst);
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &dst)], &[]);
    let listing = |extra: ToReceiver| {
        let file = Kind::File {
            size: 5,
            sparse: false,
        };
        vec![
            peer::entry(0, b"", Kind::Dir),
            peer::entry(1, b"new", file),
            extra,
        ]
    };
    let dry_run = SyncOptions {
        dry_run: true,
        ..SyncOptions::default()
    };
    let cases = [
        (
            SyncOptions::default(),
            listing(ToReceiver::Unchanged { id: 1 }),
            "Unchanged for file 1, which has no base",
        ),
        (
            SyncOptions::default(),
            listing(ToReceiver::Unchanged { id: 9 }),
            "Unchanged for file 9, not asked for",
        ),
        (
            dry_run,
            listing(ToReceiver::FileBegin { id: 1 }),
            "file data in a dry run",
        ),
        (
            dry_run,
            listing(ToReceiver::Unchanged { id: 1 }),
            "file data in a dry run",
        ),
        (
            SyncOptions {
                checksum: true,
                ..dry_run
            },
            Vec::new(),
            "--checksum cannot be combined with --dry-run",
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (options, script, expected) in cases {
        let message = runtime.block_on(refusal(&pki, port, options, script));
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
        assert!(message.contains("protocol error"), "{message}");
    }
    assert_eq!(snapshot(&dst), before);
}
