//! Extended attributes and POSIX ACLs through the real `mover sync`: what
//! `--xattrs` copies, that attributes removed at the source are removed at
//! the destination even when the file is otherwise unchanged, that the
//! namespaces a sync does not copy stay the destination's, and that an
//! unchanged file costs no metadata write.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `security.capability` for `cap_net_raw+ep` (VFS_CAP_REVISION_2), what
/// `setcap` writes when it is not installed.
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    let len = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// `setfattr -x`.
fn remove(path: &Path, name: &str) {
    rustix::fs::lremovexattr(path, name).unwrap();
}

/// Runs a tool on `path`; false when it is missing.
fn tool(name: &str, args: &[&str], path: &Path) -> bool {
    match Command::new(name).args(args).arg(path).status() {
        Ok(status) => {
            assert!(status.success(), "{name} {args:?} {}", path.display());
            true
        }
        Err(_) => false,
    }
}

fn set_capability(path: &Path) {
    if !tool("setcap", &["cap_net_raw+ep"], path) {
        assert!(set_xattr(path, "security.capability", &CAP_NET_RAW));
    }
}

/// `setcap -r`.
fn remove_capability(path: &Path) {
    if !tool("setcap", &["-r"], path) {
        remove(path, "security.capability");
    }
}

/// A file holding the attribute `name`.
fn file_with(path: &Path, name: &str, value: &[u8]) {
    fs::write(path, b"data").unwrap();
    assert!(set_xattr(path, name, value), "{name} on {}", path.display());
}

fn ctime(path: &Path) -> (i64, i64) {
    let md = fs::symlink_metadata(path).unwrap();
    (md.ctime(), md.ctime_nsec())
}

/// A temporary directory, and a source and a destination in it.
type Scene = (tempfile::TempDir, PathBuf, PathBuf);

/// A [`Scene`]; `None` (and a note) where `user.` attributes are not
/// supported.
fn scene() -> Option<Scene> {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let probe = src.join("probe");
    fs::write(&probe, b"").unwrap();
    let supported = set_xattr(&probe, "user.probe", b"1");
    fs::remove_file(&probe).unwrap();
    if !supported {
        println!("NOTE: user xattrs unsupported here; not checked");
        return None;
    }
    Some((tmp, src, dst))
}

/// [`scene`] when running as root, which `what` needs.
fn root_scene(what: &str) -> Option<Scene> {
    if !is_root() {
        println!("NOTE: {what} needs root; not checked");
        return None;
    }
    scene()
}

/// `setfattr -x`, `setfacl -b` and `setfacl -k` on the source between two
/// syncs, with no other change to the files: the second sync removes the
/// attributes and ACLs at the destination too.
#[test]
fn attributes_and_acls_removed_at_the_source_are_removed() {
    let Some((_tmp, src, dst)) = scene() else {
        return;
    };
    file_with(&src.join("f"), "user.a", b"1");
    fs::write(src.join("acl"), b"data").unwrap();
    fs::set_permissions(src.join("acl"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    let acls = tool("setfacl", &["-m", "u:1234:r"], &src.join("acl"))
        && tool("setfacl", &["-d", "-m", "u:1234:rx"], &src.join("d"));
    if !acls {
        println!("NOTE: setfacl missing; ACLs not checked");
    }
    sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert_eq!(get(&dst.join("f"), "user.a").unwrap(), b"1");
    let mode = fs::metadata(src.join("acl")).unwrap().mode();

    remove(&src.join("f"), "user.a");
    if acls {
        assert!(get(&dst.join("acl"), "system.posix_acl_access").is_some());
        tool("setfacl", &["-b"], &src.join("acl"));
        tool("setfacl", &["-k"], &src.join("d"));
        assert_eq!(fs::metadata(src.join("acl")).unwrap().mode(), mode);
    }
    sync_ok(&src, &dst, &[]);
    assert_same_tree(&src, &dst);
    assert_eq!(get(&dst.join("f"), "user.a"), None);
    assert_eq!(get(&dst.join("acl"), "system.posix_acl_access"), None);
    assert_eq!(get(&dst.join("d"), "system.posix_acl_default"), None);
}

/// Capabilities are copied, and removed again after `setcap -r`, only
/// with `--xattrs all`; by default the destination's are left alone.
#[test]
fn capabilities_are_copied_and_removed_only_with_xattrs_all() {
    let Some((_tmp, src, dst)) = root_scene("setting capabilities") else {
        return;
    };
    let bin = src.join("bin");
    fs::write(&bin, b"\x7fELF not really").unwrap();
    set_capability(&bin);
    let cap = get(&bin, "security.capability").expect("capability set");

    sync_ok(&src, &dst, &[]);
    assert_eq!(get(&dst.join("bin"), "security.capability"), None);
    // Unchanged file, now with the opt-in: the capability arrives.
    sync_ok(&src, &dst, &["--xattrs", "all"]);
    assert_eq!(get(&dst.join("bin"), "security.capability"), Some(cap));

    remove_capability(&bin);
    // Not the default's to remove.
    sync_ok(&src, &dst, &[]);
    assert!(get(&dst.join("bin"), "security.capability").is_some());
    sync_ok(&src, &dst, &["--xattrs", "all"]);
    assert_eq!(get(&dst.join("bin"), "security.capability"), None);
}

/// `trusted.*` (standing in for `security.selinux`, which needs SELinux)
/// is the destination's by default: not copied, and a destination's own
/// label stays; `--xattrs all` copies the source's and removes others.
#[test]
fn privileged_namespaces_are_copied_only_with_xattrs_all() {
    let Some((_tmp, src, dst)) = root_scene("trusted.*") else {
        return;
    };
    file_with(&src.join("f"), "trusted.label", b"source");
    assert!(set_xattr(&src.join("f"), "user.u", b"1"));
    sync_ok(&src, &dst, &[]);
    let f = dst.join("f");
    assert_eq!(get(&f, "trusted.label"), None);
    assert_eq!(get(&f, "user.u").unwrap(), b"1");

    assert!(set_xattr(&f, "trusted.mine", b"destination"));
    sync_ok(&src, &dst, &[]);
    assert_eq!(get(&f, "trusted.mine").unwrap(), b"destination");

    sync_ok(&src, &dst, &["--xattrs", "all"]);
    assert_eq!(get(&f, "trusted.label").unwrap(), b"source");
    assert_eq!(get(&f, "trusted.mine"), None);
    assert_eq!(get(&f, "user.u").unwrap(), b"1");
}

/// `--xattrs none` copies none and leaves the destination's as they are.
#[test]
fn xattrs_none_copies_nothing_and_removes_nothing() {
    let Some((_tmp, src, dst)) = scene() else {
        return;
    };
    file_with(&src.join("f"), "user.a", b"1");
    sync_ok(&src, &dst, &[]);
    remove(&src.join("f"), "user.a");
    file_with(&src.join("new"), "user.b", b"2");
    sync_ok(&src, &dst, &["--xattrs", "none"]);
    assert_eq!(get(&dst.join("f"), "user.a").unwrap(), b"1");
    assert_eq!(get(&dst.join("new"), "user.b"), None);
}

/// A second sync of files whose attributes did not change writes no
/// metadata: their change time stays as it was (a `chmod`, `utimensat` or
/// `setxattr` would move it).
#[test]
fn unchanged_files_with_attributes_cost_no_metadata_write() {
    let Some((_tmp, src, dst)) = scene() else {
        return;
    };
    file_with(&src.join("user"), "user.a", b"1");
    fs::write(src.join("labelled"), b"data").unwrap();
    if is_root() {
        assert!(set_xattr(&src.join("labelled"), "trusted.label", b"x"));
    }
    sync_ok(&src, &dst, &[]);
    let before = [ctime(&dst.join("user")), ctime(&dst.join("labelled"))];
    let second = sync_ok(&src, &dst, &[]);
    assert_eq!(second["files_sent"], 0, "{second}");
    assert_eq!(
        [ctime(&dst.join("user")), ctime(&dst.join("labelled"))],
        before
    );
}

#[test]
fn an_unknown_xattrs_value_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sync_json(
        tmp.path(),
        &tmp.path().join("dst"),
        &["--xattrs", "security"],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--xattrs") && err.contains("security") && err.contains("none, user, all"),
        "{err}"
    );
}
