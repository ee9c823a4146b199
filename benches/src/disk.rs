//! The block dataset: a disk image holding an ext4 filesystem full of
//! generated files, as a `volumeMode: Block` PVC of a VM holds one. The
//! image lives alone in the dataset's directory (`disk.img`), so the
//! harness handles it like any other dataset; only the tools' arguments
//! and the destination check differ (the image's bytes, not its metadata:
//! a device has no mtime to keep).
//!
//! The filesystem is made with `mkfs.ext4 -F -d FILES` on the image file
//! itself (no loop device), and the small change rewrites 1% of its files
//! with `debugfs -w`, which is what the filesystem itself would do: new
//! blocks for the new contents, and updated inodes, bitmaps and directory
//! blocks. It is undone by copying back a pristine image.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::compare::Report;
use crate::gen::{self, Layout, Mutation, Spec, Totals};

/// The image's name inside the source and destination directories.
pub const IMAGE: &str = "disk.img";

/// Size of the image: 4 GiB (a tiny 64 MiB one with --quick).
pub fn image_size(quick: bool) -> u64 {
    if quick {
        64 << 20
    } else {
        4 << 30
    }
}

/// The files the filesystem holds: about 640 MiB (4 MiB with --quick).
pub fn spec(quick: bool, seed: u64) -> Spec {
    let (large, files) = if quick {
        (2 << 20, 300)
    } else {
        (512 << 20, 20_000)
    };
    Spec {
        name: "disk".into(),
        large,
        files,
        links: true,
        seed,
    }
}

/// The pristine copy the small change is undone from.
fn pristine(src: &Path) -> PathBuf {
    src.with_file_name("disk-pristine.img")
}

/// Makes `src/disk.img`: the spec's files in an ext4 filesystem filling an
/// image of `size` bytes; keeps a pristine copy beside `src`.
pub fn generate(src: &Path, spec: &Spec, size: u64) -> Result<Totals> {
    let files = src.with_file_name("disk-files");
    gen::remove_tree(&files)?;
    let totals = gen::generate(&files, spec)?;
    fs::create_dir_all(src)?;
    let image = src.join(IMAGE);
    File::create(&image)?.set_len(size)?;
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-t", "ext4", "-d"])
        .arg(&files)
        .arg(&image))?;
    gen::remove_tree(&files)?;
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(pristine(src)))?;
    Ok(totals)
}

/// Rewrites the small files `mutation` rewrites (1% of them) inside the
/// image, with new contents of their version 1.
pub fn apply(src: &Path, l: &Layout, mutation: &Mutation, work: &Path) -> Result<()> {
    let contents = work.join("disk-change");
    gen::remove_tree(&contents)?;
    fs::create_dir_all(&contents)?;
    let mut script = String::new();
    let mut buf = Vec::new();
    for &i in &mutation.rewrite {
        l.file_content(i, 1, &mut buf);
        let local = contents.join(format!("f{i}"));
        fs::write(&local, &buf)?;
        let rel = l.file_rel(i);
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", &rel));
        let _ = writeln!(
            script,
            "cd /{dir}\nrm {name}\nwrite {} {name}\ncd /",
            local.display()
        );
    }
    let commands = work.join("disk-change.debugfs");
    fs::write(&commands, script)?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(src.join(IMAGE))
        .output()
        .context("run debugfs")?;
    let errors = String::from_utf8_lossy(&out.stderr);
    // debugfs exits 0 whatever a command did; its complaints name the command.
    let complaint = errors
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty());
    if !out.status.success() || complaint.is_some() {
        bail!("debugfs failed: {}", complaint.unwrap_or(&errors));
    }
    gen::remove_tree(&contents)
}

/// Undoes [`apply`].
pub fn revert(src: &Path) -> Result<()> {
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(pristine(src))
        .arg(src.join(IMAGE)))
}

pub fn describe(mutation: &Mutation) -> String {
    format!(
        "{} files (1%) rewritten inside the image with debugfs",
        mutation.rewrite.len()
    )
}

/// Removes the dataset's pristine copy.
pub fn remove(src: &Path) -> Result<()> {
    match fs::remove_file(pristine(src)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Whether `dst/disk.img` holds `src/disk.img`'s bytes, as a [`Report`].
pub fn compare(src: &Path, dst: &Path) -> Result<Report> {
    let (a, b) = (src.join(IMAGE), dst.join(IMAGE));
    let mut diffs = Vec::new();
    let (la, lb) = (fs::metadata(&a)?.len(), fs::metadata(&b).map(|m| m.len()));
    match lb {
        Err(e) => diffs.push(format!("{}: {e}", b.display())),
        Ok(lb) if lb != la => diffs.push(format!("size {la} vs {lb}")),
        Ok(_) => {
            let (mut fa, mut fb) = (File::open(&a)?, File::open(&b)?);
            let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
            let mut at = 0u64;
            while at < la {
                let n = (la - at).min(1 << 20) as usize;
                fa.read_exact(&mut ba[..n])?;
                fb.read_exact(&mut bb[..n])?;
                if ba[..n] != bb[..n] {
                    diffs.push(format!("bytes differ in the MiB at offset {at}"));
                    break;
                }
                at += n as u64;
            }
        }
    }
    Ok(Report {
        total_diffs: diffs.len(),
        diffs,
        entries: 1,
    })
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
