//! A receiver that is not root, as the container image runs it (and as a
//! pod with `runAsNonRoot` must): it writes what it can, warns once for the
//! metadata it may not set, and never fails a sync over it.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

/// `mover sync` with both ends running as nobody (65534:65534).
fn sync_as_nobody(src: &Path, dst: &Path) -> Output {
    let mut sync = mover();
    sync.args(["sync", "--progress", "json"]).arg(src).arg(dst);
    as_nobody(&sync)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// The shape of an fsGroup volume: the root is root's, group-writable for
/// the pod's group, with a `lost+found` only root can enter.
#[test]
fn non_root_receiver_syncs_into_an_fsgroup_volume() {
    if !is_root() {
        println!("NOTE: not checked here: needs root to build the volume and switch users");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("ro/deeper")).unwrap();
    fs::write(src.join("ro/file"), b"first").unwrap();
    fs::write(src.join("ro/deeper/file"), b"deep").unwrap();
    fs::write(src.join("top"), b"top").unwrap();
    fs::set_permissions(src.join("ro/deeper"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    chown(&src, 65534, 65534);
    fs::create_dir_all(dst.join("lost+found")).unwrap();
    fs::set_permissions(dst.join("lost+found"), fs::Permissions::from_mode(0o700)).unwrap();
    chown(&dst, 0, 65534);
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o2775)).unwrap();
    let root_before = fs::metadata(&dst).unwrap();

    let out = sync_as_nobody(&src, &dst);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(dst.join("ro/file")).unwrap(), b"first");
    assert_eq!(fs::read(dst.join("ro/deeper/file")).unwrap(), b"deep");
    let ro = fs::metadata(dst.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert!(dst.join("lost+found").is_dir(), "lost+found is root's");
    let root_after = fs::metadata(&dst).unwrap();
    assert_eq!(root_after.uid(), 0);
    assert_eq!(
        root_after.mode(),
        root_before.mode(),
        "the root keeps its mode"
    );
    // One warning per kind of thing it could not do, not one per object.
    let err = stderr(&out);
    assert!(err.contains("lost+found"), "{err}");
    assert!(err.lines().count() < 10, "{err}");

    // A change inside the read-only directories: replaced there, and the
    // directories are read-only again afterwards.
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("ro/file"), b"second version").unwrap();
    fs::write(src.join("ro/new"), b"new").unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(src.join("ro/deeper"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(src.join("ro/deeper/file")).unwrap();
    fs::set_permissions(src.join("ro/deeper"), fs::Permissions::from_mode(0o555)).unwrap();
    for _ in 0..2 {
        let out = sync_as_nobody(&src, &dst);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(fs::read(dst.join("ro/file")).unwrap(), b"second version");
    assert_eq!(fs::read(dst.join("ro/new")).unwrap(), b"new");
    assert!(!dst.join("ro/deeper/file").exists());
    assert_eq!(fs::metadata(dst.join("ro")).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(
        fs::metadata(dst.join("ro/deeper")).unwrap().mode() & 0o7777,
        0o555
    );
    // Everything but what only root may set: owners, and the volume root's
    // own mode and times; and `lost+found`, which is root's.
    let differences: Vec<String> = differences(&src, &dst)
        .into_iter()
        .filter(|d| !d.contains(": owner ") && !d.starts_with(": ") && !d.starts_with("lost+found"))
        .collect();
    assert!(differences.is_empty(), "{differences:?}");
}

/// `--inplace` with a read-only file a non-root receiver may not open for
/// writing: replaced as usual, never a failure.
#[test]
fn non_root_inplace_replaces_read_only_files() {
    if !is_root() {
        println!("NOTE: not checked here: needs root to switch users");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    chown(&dst, 65534, 65534);
    let file = src.join("ro.bin");
    fs::write(&file, random_bytes(2 << 20, 3)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    let sync = |src: &Path, dst: &Path| {
        let mut cmd = mover();
        cmd.args(["sync", "--inplace", "--progress", "json"])
            .arg(src)
            .arg(dst);
        as_nobody(&cmd)
    };
    let out = sync(&src, &dst);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, random_bytes(2 << 20, 5)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    let out = sync(&src, &dst);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fs::read(dst.join("ro.bin")).unwrap(),
        fs::read(&file).unwrap()
    );
}
