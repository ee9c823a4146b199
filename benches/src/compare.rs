//! Tree comparison: is the destination an exact copy of the source?
//!
//! Compared: the set of names, entry types, permission bits (with
//! setuid/setgid/sticky), uid and gid, mtimes to the nanosecond (files and
//! directories, the root included), file contents byte for byte, symlink
//! targets, device numbers, and hard-link structure (files linked together in
//! the source are linked together in the destination and to nothing else).
//! Not compared: atimes, ctimes, symlink mtimes, xattrs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Differences found (at most `limit` kept) and how many entries were
/// compared.
pub struct Report {
    pub diffs: Vec<String>,
    pub total_diffs: usize,
    pub entries: u64,
}

impl Report {
    pub fn equal(&self) -> bool {
        self.total_diffs == 0
    }
}

struct Cmp {
    limit: usize,
    report: Report,
    /// Source (dev, ino) of multiply-linked files -> destination (dev, ino).
    links: HashMap<(u64, u64), (u64, u64)>,
    /// Destination (dev, ino) -> source (dev, ino).
    links_back: HashMap<(u64, u64), (u64, u64)>,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
}

pub fn compare(src: &Path, dst: &Path, limit: usize) -> Result<Report> {
    let mut c = Cmp {
        limit,
        report: Report {
            diffs: Vec::new(),
            total_diffs: 0,
            entries: 0,
        },
        links: HashMap::new(),
        links_back: HashMap::new(),
        buf_a: vec![0; 1 << 20],
        buf_b: vec![0; 1 << 20],
    };
    let ms = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
    let md = match fs::symlink_metadata(dst) {
        Ok(m) => m,
        Err(e) => {
            c.diff(format!("destination {}: {e}", dst.display()));
            return Ok(c.report);
        }
    };
    c.entry(src, dst, ".", &ms, &md)?;
    Ok(c.report)
}

impl Cmp {
    fn diff(&mut self, d: String) {
        self.report.total_diffs += 1;
        if self.report.diffs.len() < self.limit {
            self.report.diffs.push(d);
        }
    }

    fn entry(&mut self, a: &Path, b: &Path, rel: &str, ma: &Metadata, mb: &Metadata) -> Result<()> {
        self.report.entries += 1;
        let (ta, tb) = (ma.file_type(), mb.file_type());
        let kind = |t: fs::FileType| {
            if t.is_dir() {
                "directory"
            } else if t.is_file() {
                "file"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_socket() {
                "socket"
            } else if t.is_block_device() {
                "block device"
            } else {
                "char device"
            }
        };
        if kind(ta) != kind(tb) {
            self.diff(format!(
                "{rel}: {} in source, {} in destination",
                kind(ta),
                kind(tb)
            ));
            return Ok(());
        }
        if ma.uid() != mb.uid() || ma.gid() != mb.gid() {
            self.diff(format!(
                "{rel}: owner {}:{} vs {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        if ta.is_symlink() {
            let (la, lb) = (fs::read_link(a)?, fs::read_link(b)?);
            if la != lb {
                self.diff(format!("{rel}: symlink to {la:?} vs {lb:?}"));
            }
            return Ok(());
        }
        if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            self.diff(format!(
                "{rel}: mode {:o} vs {:o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            self.diff(format!(
                "{rel}: mtime {}.{:09} vs {}.{:09}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        if ta.is_dir() {
            return self.dir(a, b, rel);
        }
        if ta.is_block_device() || ta.is_char_device() {
            if ma.rdev() != mb.rdev() {
                self.diff(format!("{rel}: device {:x} vs {:x}", ma.rdev(), mb.rdev()));
            }
            return Ok(());
        }
        if !ta.is_file() {
            return Ok(());
        }
        if ma.nlink() > 1 || mb.nlink() > 1 {
            self.link(rel, ma, mb);
        }
        if ma.len() != mb.len() {
            self.diff(format!("{rel}: size {} vs {}", ma.len(), mb.len()));
            return Ok(());
        }
        if !self.same_content(a, b)? {
            self.diff(format!("{rel}: contents differ"));
        }
        Ok(())
    }

    fn link(&mut self, rel: &str, ma: &Metadata, mb: &Metadata) {
        let (ia, ib) = ((ma.dev(), ma.ino()), (mb.dev(), mb.ino()));
        if ma.nlink() != mb.nlink() {
            self.diff(format!("{rel}: {} links vs {}", ma.nlink(), mb.nlink()));
        }
        match (
            self.links.get(&ia).copied(),
            self.links_back.get(&ib).copied(),
        ) {
            (None, None) => {
                self.links.insert(ia, ib);
                self.links_back.insert(ib, ia);
            }
            (Some(x), Some(y)) if x == ib && y == ia => {}
            _ => self.diff(format!("{rel}: hard links differ from the source's")),
        }
    }

    fn same_content(&mut self, a: &Path, b: &Path) -> Result<bool> {
        let mut fa = File::open(a).with_context(|| format!("open {}", a.display()))?;
        let mut fb = File::open(b).with_context(|| format!("open {}", b.display()))?;
        loop {
            let n = read_full(&mut fa, &mut self.buf_a)?;
            let m = read_full(&mut fb, &mut self.buf_b)?;
            if n != m || self.buf_a[..n] != self.buf_b[..m] {
                return Ok(false);
            }
            if n == 0 {
                return Ok(true);
            }
        }
    }

    fn dir(&mut self, a: &Path, b: &Path, rel: &str) -> Result<()> {
        let list = |p: &Path| -> Result<Vec<OsString>> {
            let mut v = fs::read_dir(p)
                .with_context(|| format!("list {}", p.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()?;
            v.sort();
            Ok(v)
        };
        let (la, lb) = (list(a)?, list(b)?);
        let (mut i, mut j) = (0, 0);
        while i < la.len() || j < lb.len() {
            let child = |n: &OsString| {
                if rel == "." {
                    n.to_string_lossy().into_owned()
                } else {
                    format!("{rel}/{}", n.to_string_lossy())
                }
            };
            if j >= lb.len() || (i < la.len() && la[i] < lb[j]) {
                let c = child(&la[i]);
                self.diff(format!("{c}: missing in destination"));
                i += 1;
            } else if i >= la.len() || lb[j] < la[i] {
                let c = child(&lb[j]);
                if rel != "." || !is_mover_work_area(&b.join(&lb[j])) {
                    self.diff(format!("{c}: not in source"));
                }
                j += 1;
            } else {
                let (pa, pb) = (a.join(&la[i]), b.join(&lb[j]));
                let ma = fs::symlink_metadata(&pa)?;
                let mb = fs::symlink_metadata(&pb)?;
                self.entry(&pa, &pb, &child(&la[i]), &ma, &mb)?;
                i += 1;
                j += 1;
            }
        }
        Ok(())
    }
}

/// A directory in the destination root that the mover's receiver kept as
/// its work area (`--keep-hash-cache`, as the bench's receiver runs): its
/// marker file `id` names the directory's own inode, which no copy of a
/// source directory can do. Anything else is compared.
fn is_mover_work_area(path: &Path) -> bool {
    let (Ok(md), Ok(marker)) = (fs::symlink_metadata(path), fs::read(path.join("id"))) else {
        return false;
    };
    md.is_dir()
        && marker
            == format!(
                "mover work area of this volume: {}:{}\n",
                md.dev(),
                md.ino()
            )
            .into_bytes()
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}
