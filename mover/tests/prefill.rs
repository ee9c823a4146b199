//! Out-of-order assembly (`receive/prefill.rs`): a large changed file
//! replaced by a new copy gets that copy made from the old one once the
//! sender asks for signatures, while it still compares; only the changes are
//! then written into it. Whatever the change (scattered writes, shrinking,
//! growing, the old copy changed behind the mover's back), the result is the
//! source, and nothing is left in the work area. A file found unchanged or
//! only grown (no segment differs) is not copied ahead.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

const MIB: u64 = 1024 * 1024;
const MADE_AHEAD: &str = "written into a copy made ahead";

/// `mover sync` with the receiver's debug log on stderr.
fn sync_logged(src: &Path, dst: &Path, extra: &[&str]) -> Output {
    let mut cmd = mover();
    cmd.env("MOVER_LOG", "mover=debug")
        .arg("sync")
        .args([src.as_os_str(), dst.as_os_str()])
        .args(extra.iter().map(OsStr::new));
    let out = cmd.output().expect("spawn mover");
    assert_eq!(code(&out), 0, "mover sync failed: {}", stderr(&out));
    assert_same_tree(src, dst);
    assert!(
        !dst.join(".mover-work").exists(),
        "the work area is gone: {:?}",
        fs::read_dir(dst.join(".mover-work")).map(|d| d.count())
    );
    out
}

/// Whether the log says `name` was written into a copy made ahead.
fn made_ahead(out: &Output, name: &str) -> bool {
    stderr(out)
        .lines()
        .any(|l| l.contains(MADE_AHEAD) && l.contains(&format!("/{name}:")))
}

/// Overwrites 4 KiB at each of `count` places spread over `path`.
fn scatter(path: &Path, count: u64, seed: u64, mtime: i64) {
    let len = fs::metadata(path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    for i in 0..count {
        let at = (len - 4096) / count * i + (seed * 7919 + i * 104_729) % 4096;
        f.write_all_at(&random_bytes(4096, seed + i), at).unwrap();
    }
    set_mtime(path, mtime, 0);
}

fn resize(path: &Path, len: u64, seed: u64, mtime: i64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let old = f.metadata().unwrap().len();
    f.set_len(len).unwrap();
    if len > old {
        f.write_all_at(&random_bytes((len - old) as usize, seed), old)
            .unwrap();
    }
    set_mtime(path, mtime, 0);
}

#[test]
fn large_files_replaced_by_a_new_copy_come_out_as_the_source() {
    let tmp = memory_tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("big"), random_bytes(40 * MIB as usize, 1)).unwrap();
    fs::write(src.join("d/other"), random_bytes(24 * MIB as usize, 2)).unwrap();
    fs::write(src.join("small"), random_bytes(100_000, 3)).unwrap();
    // Sparse: mostly holes, never copied ahead (the copy would fill them).
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(32 * MIB).unwrap();
    for i in 0..4 {
        sparse
            .write_all_at(&random_bytes(8192, 10 + i), i * 7 * MIB)
            .unwrap();
    }
    drop(sparse);
    let out = sync_logged(&src, &dst, &[]);
    assert!(
        !stderr(&out).contains(MADE_AHEAD),
        "nothing to copy ahead of"
    );

    // Scattered changes, same size.
    scatter(&src.join("big"), 300, 4, 1_700_000_000);
    scatter(&src.join("d/other"), 3, 5, 1_700_000_000);
    let sparse = fs::OpenOptions::new()
        .write(true)
        .open(src.join("sparse"))
        .unwrap();
    sparse.write_all_at(b"changed", 9 * MIB).unwrap();
    drop(sparse);
    set_mtime(&src.join("sparse"), 1_700_000_000, 0);
    let out = sync_logged(&src, &dst, &[]);
    assert!(made_ahead(&out, "big"), "{}", stderr(&out));
    assert!(made_ahead(&out, "other"), "{}", stderr(&out));
    assert!(!made_ahead(&out, "sparse"), "{}", stderr(&out));

    // Shrunk (the copy made ahead is longer than the file) and changed;
    // only grown: no segment differs, nothing is asked for, and the old
    // segments are copied as the data comes.
    resize(&src.join("big"), 20 * MIB + 12_345, 6, 1_700_000_100);
    scatter(&src.join("big"), 10, 7, 1_700_000_100);
    resize(&src.join("d/other"), 30 * MIB + 1, 8, 1_700_000_100);
    let out = sync_logged(&src, &dst, &[]);
    assert!(made_ahead(&out, "big"), "{}", stderr(&out));
    assert!(!made_ahead(&out, "other"), "{}", stderr(&out));

    // Only touched: kept as it is, nothing copied.
    set_mtime(&src.join("d/other"), 1_700_000_150, 0);
    let out = sync_logged(&src, &dst, &[]);
    assert!(!stderr(&out).contains(MADE_AHEAD), "{}", stderr(&out));

    // The old copy changed behind the mover's back (same size and mtime),
    // the source too: whatever was copied ahead, the result is the source.
    let old = fs::metadata(dst.join("big")).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dst.join("big"))
        .unwrap();
    f.write_all_at(&random_bytes(4096, 9), 5 * MIB).unwrap();
    f.set_modified(old).unwrap();
    drop(f);
    scatter(&src.join("big"), 2, 10, 1_700_000_200);
    sync_logged(&src, &dst, &[]);

    // In place, nothing is copied ahead: the old copy is written itself.
    scatter(&src.join("big"), 50, 11, 1_700_000_300);
    let out = sync_logged(&src, &dst, &["--inplace"]);
    assert!(!stderr(&out).contains(MADE_AHEAD), "{}", stderr(&out));
}
