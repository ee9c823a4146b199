//! `--inplace`: a changed file is updated where it is, only its changed
//! blocks written, for destinations nobody uses until the migration ends;
//! a file whose update was interrupted is never taken as done.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

/// Overwrites `len` bytes at `at` and gives the file a new mtime.
fn scribble(path: &Path, at: usize, len: usize, seed: u64, mtime: i64) {
    let mut data = fs::read(path).unwrap();
    data[at..at + len].copy_from_slice(&random_bytes(len, seed));
    fs::write(path, &data).unwrap();
    set_mtime(path, mtime, 7);
}

#[test]
fn inplace_resync_updates_the_file_where_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("db"), random_bytes(8 << 20, 1)).unwrap();
    fs::write(src.join("shrinks"), random_bytes(4 << 20, 2)).unwrap();
    fs::write(src.join("grows"), random_bytes(3 << 20, 3)).unwrap();
    fs::write(src.join("small"), random_bytes(100_000, 4)).unwrap();
    fs::hard_link(src.join("small"), src.join("small-link")).unwrap();
    sync_ok(&src, &dst, &[]);
    let before: Vec<u64> = ["db", "shrinks", "grows"]
        .iter()
        .map(|n| ino(&dst.join(n)))
        .collect();

    for (at, seed) in [(5, 10), (3 << 20, 11), ((8 << 20) - 4096, 12)] {
        scribble(&src.join("db"), at, 4096, seed, 1_700_000_000);
    }
    let mut shrunk = fs::read(src.join("shrinks")).unwrap();
    shrunk.truncate((3 << 20) + 123);
    shrunk[1000] ^= 0xff;
    fs::write(src.join("shrinks"), &shrunk).unwrap();
    let mut grown = fs::read(src.join("grows")).unwrap();
    grown.extend(random_bytes(1 << 20, 5));
    fs::write(src.join("grows"), &grown).unwrap();
    scribble(&src.join("small"), 10, 10, 13, 1_700_000_001);

    let summary = sync_ok(&src, &dst, &["--inplace"]);
    assert_same_tree(&src, &dst);
    let after: Vec<u64> = ["db", "shrinks", "grows"]
        .iter()
        .map(|n| ino(&dst.join(n)))
        .collect();
    assert_eq!(before, after, "large changed files keep their inode");
    assert!(
        summary["bytes_sent"].as_u64().unwrap() < (3 << 20),
        "only the changes travel: {summary}"
    );
    assert_eq!(
        ino(&dst.join("small")),
        ino(&dst.join("small-link")),
        "small and linked files are replaced as usual, links kept"
    );
    assert!(names(&dst).iter().all(|n| !n.starts_with(".mover-work")));
}

/// A receiver cut off while updating a file in place leaves it half old,
/// half new. Even with the source's size and mtime on it (as a coincidence
/// of clocks could give it), the next sync rewrites it: the work area's
/// journal says it was never finished.
#[test]
fn an_interrupted_inplace_update_is_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    let size = 48 << 20;
    fs::write(src.join("disk.img"), random_bytes(size, 20)).unwrap();
    sync_ok(&src, &dst, &[]);
    fs::write(src.join("disk.img"), random_bytes(size, 40)).unwrap();
    set_mtime(&src.join("disk.img"), 1_700_000_000, 3);

    let pki = tmp.path().join("pki");
    certs(&pki, &["app=data"]);
    let port = free_port();
    let receiver = receive(&pki, port, &[("data", &dst)], &["--inplace"]);
    let (proxy, _) = cutting_proxy(port, 20 << 20);
    let out = send(&pki, "app", &src, proxy, "data", &["--progress", "none"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(code(&out), 75, "the cut is worth a retry: {}", stderr(&out));
    drop(receiver);
    let torn = fs::read(dst.join("disk.img")).unwrap();
    assert_ne!(torn, fs::read(src.join("disk.img")).unwrap());
    set_mtime(&dst.join("disk.img"), 1_700_000_000, 3);

    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", &dst)], &["--inplace"]);
    let out = send(&pki, "app", &src, port, "data", &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &dst);
    assert!(names(&dst).iter().all(|n| !n.starts_with(".mover-work")));
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
