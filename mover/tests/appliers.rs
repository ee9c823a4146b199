//! `--appliers N`: the receiver's writer threads, which write small files
//! (1 MiB or less, held in memory once verified) and rename batches beside
//! the session. Every shape a writer can meet must come out as the source
//! has it, at any count: sizes on both sides of the 1 MiB line, private and
//! setuid modes, hard links, holes, types that change between syncs, and
//! files changed, grown, shrunk and removed by a resync.

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

const HELD_MAX: usize = 1024 * 1024;

/// Sizes around every edge a held file has.
const SIZES: [usize; 9] = [
    0,
    1,
    4095,
    4096,
    65_537,
    200_000,
    HELD_MAX - 1,
    HELD_MAX,
    HELD_MAX + 1,
];

fn build(src: &Path) {
    for d in 0..6 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..60 {
            let size = match f % 4 {
                0 => SIZES[(d * 60 + f) / 4 % SIZES.len()],
                _ => (f * 997 + d * 31) % 20_000,
            };
            let path = dir.join(format!("f{f:02}"));
            fs::write(&path, random_bytes(size, (d * 100 + f) as u64 + 1)).unwrap();
            set_mtime(&path, 1_700_000_000 + f as i64, (d * 1000 + f) as i64);
        }
    }
    fs::write(src.join("private"), b"secret").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("readonly"), b"read only").unwrap();
    fs::set_permissions(src.join("readonly"), fs::Permissions::from_mode(0o444)).unwrap();
    // A hard-link group of small files, across directories.
    fs::write(src.join("d0/linked"), b"one inode").unwrap();
    fs::hard_link(src.join("d0/linked"), src.join("d1/linked-too")).unwrap();
    fs::hard_link(src.join("d0/linked"), src.join("d5/linked-three")).unwrap();
    symlink("d0/f01", src.join("link")).unwrap();
    // A small sparse file: a hole, then data.
    let mut sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.seek(SeekFrom::Start(512 * 1024)).unwrap();
    sparse.write_all(b"after the hole").unwrap();
    // Types the resync changes.
    fs::write(src.join("becomes-dir"), b"a file for now").unwrap();
    fs::create_dir_all(src.join("becomes-file/inner")).unwrap();
    fs::write(src.join("becomes-file/inner/x"), b"x").unwrap();
}

fn mutate(src: &Path) {
    for d in 0..6 {
        let dir = src.join(format!("d{d}"));
        for f in (0..60).step_by(7) {
            let path = dir.join(format!("f{f:02}"));
            let len = fs::metadata(&path).unwrap().len() as usize;
            // Same size, other bytes; grown; shrunk; gone.
            match f % 4 {
                0 => fs::write(&path, random_bytes(len, 9_000 + f as u64)).unwrap(),
                1 => fs::write(&path, random_bytes(len + 3_000, 9_100 + f as u64)).unwrap(),
                2 => fs::write(&path, random_bytes(len / 2, 9_200 + f as u64)).unwrap(),
                _ => fs::remove_file(&path).unwrap(),
            }
        }
        fs::write(dir.join("new"), random_bytes(5_000 + d, 77)).unwrap();
    }
    fs::write(src.join("d1/linked-too"), b"the whole group changes").unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    fs::create_dir(src.join("becomes-dir")).unwrap();
    fs::write(src.join("becomes-dir/inside"), b"now a directory").unwrap();
    fs::remove_dir_all(src.join("becomes-file")).unwrap();
    fs::write(src.join("becomes-file"), b"now a file").unwrap();
}

fn no_work_area(dst: &Path) {
    let left: Vec<_> = fs::read_dir(dst)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mover-work"))
        .collect();
    assert!(left.is_empty(), "work area left behind: {left:?}");
}

#[test]
fn small_files_written_by_writer_threads_arrive_whole_and_resync() {
    for appliers in ["1", "3", "64"] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        build(&src);
        let args = ["--appliers", appliers];
        let first = sync_ok(&src, &dst, &args);
        assert_same_tree(&src, &dst);
        no_work_area(&dst);
        assert!(first["files_written"].as_u64().unwrap() > 360, "{first}");

        mutate(&src);
        let second = sync_ok(&src, &dst, &args);
        assert_same_tree(&src, &dst);
        no_work_area(&dst);
        let written = second["files_written"].as_u64().unwrap();
        assert!(
            (50..150).contains(&written),
            "--appliers {appliers}: {second}"
        );

        // Nothing left to do.
        let third = sync_ok(&src, &dst, &args);
        assert_eq!(third["files_written"], 0, "--appliers {appliers}: {third}");
    }
}

#[test]
fn appliers_out_of_range_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    for bad in ["0", "65", "many"] {
        let out = run(&[
            "sync".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
            "--appliers".as_ref(),
            bad.as_ref(),
        ]);
        assert_eq!(code(&out), 2, "--appliers {bad}");
        assert!(stderr(&out).contains("--appliers"), "{}", stderr(&out));
        assert!(!dst.exists());
    }
}
