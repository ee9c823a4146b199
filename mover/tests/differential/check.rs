//! The differential checker: what a tree holds, entry by entry, and every
//! way a destination differs from its source, as readable lines (path,
//! field, source value, destination value).

use crate::common::{is_root, xattrs};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Holes are compared at this granularity (tmpfs allocates pages).
const PAGE: u64 = 4096;

/// What an entry is, with what makes two entries of a kind equal.
#[derive(PartialEq, Eq)]
enum Kind {
    File { size: u64, hash: blake3::Hash },
    Dir,
    Symlink(Vec<u8>),
    Fifo,
    CharDevice(u64),
    BlockDevice(u64),
    Socket,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File { size, hash } => {
                write!(f, "file of {size} bytes, blake3 {}", &hash.to_hex()[..16])
            }
            Kind::Dir => write!(f, "directory"),
            Kind::Symlink(target) => write!(f, "symlink to \"{}\"", target.escape_ascii()),
            Kind::Fifo => write!(f, "fifo"),
            Kind::CharDevice(dev) => write!(f, "char device {dev:#x}"),
            Kind::BlockDevice(dev) => write!(f, "block device {dev:#x}"),
            Kind::Socket => write!(f, "socket"),
        }
    }
}

struct Record {
    kind: Kind,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    inode: u64,
    /// Byte ranges holding data, for a file with holes.
    data: Option<Vec<(u64, u64)>>,
}

/// Every entry below a root (the root itself as the empty path), by path
/// bytes.
pub struct Snapshot(BTreeMap<Vec<u8>, Record>);

impl Snapshot {
    pub fn of(root: &Path) -> Snapshot {
        let records = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.expect("walk"))
            .map(|e| {
                let rel = e.path().strip_prefix(root).expect("below root");
                (rel.as_os_str().as_bytes().to_vec(), record(e.path()))
            })
            .collect();
        Snapshot(records)
    }

    /// Paths sharing each non-directory's inode: its link group.
    fn link_groups(&self) -> HashMap<u64, Vec<&[u8]>> {
        let mut groups: HashMap<u64, Vec<&[u8]>> = HashMap::new();
        for (path, r) in &self.0 {
            if r.kind != Kind::Dir {
                groups.entry(r.inode).or_default().push(path);
            }
        }
        groups
    }
}

/// One line an entry: path, what it is, mode, owner, mtime, inode.
impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, r) in &self.0 {
            writeln!(
                f,
                "  {} {:?} mode {:o} owner {:?} mtime {:?} inode {}",
                show(path),
                r.kind,
                r.mode,
                r.owner,
                r.mtime,
                r.inode
            )?;
        }
        Ok(())
    }
}

fn record(path: &Path) -> Record {
    let meta = fs::symlink_metadata(path).expect("lstat");
    let ty = meta.file_type();
    let kind = if ty.is_file() {
        Kind::File {
            size: meta.len(),
            hash: blake3::Hasher::new()
                .update_reader(fs::File::open(path).expect("open"))
                .expect("read")
                .finalize(),
        }
    } else if ty.is_dir() {
        Kind::Dir
    } else if ty.is_symlink() {
        Kind::Symlink(
            fs::read_link(path)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    } else if ty.is_fifo() {
        Kind::Fifo
    } else if ty.is_char_device() {
        Kind::CharDevice(meta.rdev())
    } else if ty.is_block_device() {
        Kind::BlockDevice(meta.rdev())
    } else {
        Kind::Socket
    };
    let sparse = ty.is_file() && meta.blocks() * 512 < meta.len();
    Record {
        kind,
        mode: meta.mode() & 0o7777,
        owner: (meta.uid(), meta.gid()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        // Symlinks carry no user attributes; `security.*` is not copied.
        xattrs: if ty.is_symlink() {
            Vec::new()
        } else {
            xattrs(path)
                .into_iter()
                .filter(|(name, _)| !name.starts_with(b"trusted."))
                .collect()
        },
        inode: meta.ino(),
        data: sparse.then(|| data_ranges(path)),
    }
}

/// The ranges SEEK_DATA/SEEK_HOLE report as data.
fn data_ranges(path: &Path) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let f = fs::File::open(path).expect("open");
    let mut ranges = Vec::new();
    let mut at = 0;
    while let Ok(start) = seek(&f, SeekFrom::Data(at)) {
        let end = seek(&f, SeekFrom::Hole(start)).expect("SEEK_HOLE");
        ranges.push((start, end));
        at = end;
    }
    ranges
}

/// Whether every data range of `dst` lies within a data range of `src`
/// widened to whole pages: the copy fills no hole of its source (it may
/// have more holes, where the source has written zeros). The last page,
/// when only partly inside the file, may be written whole.
fn holes_kept(src: &[(u64, u64)], dst: &[(u64, u64)], size: u64) -> bool {
    let whole_pages = size / PAGE * PAGE;
    dst.iter()
        .map(|&(start, end)| (start, end.min(whole_pages)))
        .filter(|&(start, end)| start < end)
        .all(|(start, end)| {
            src.iter()
                .any(|&(s, e)| s / PAGE * PAGE <= start && end <= e.div_ceil(PAGE) * PAGE)
        })
}

/// Every difference between a source and its copy; empty when the copy is
/// exact. Owners are compared only as root (only root can set them).
pub fn differences(src: &Snapshot, dst: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let (src_groups, dst_groups) = (src.link_groups(), dst.link_groups());
    for path in dst.0.keys().filter(|p| !src.0.contains_key(*p)) {
        out.push(format!(
            "{}: only in destination ({:?})",
            show(path),
            dst.0[path].kind
        ));
    }
    for (path, s) in &src.0 {
        let at = show(path);
        let Some(d) = dst.0.get(path) else {
            out.push(format!(
                "{at}: missing in destination (source has {:?})",
                s.kind
            ));
            continue;
        };
        let mut field = |name: &str, a: &dyn fmt::Debug, b: &dyn fmt::Debug| {
            out.push(format!("{at}: {name}: source {a:?}, destination {b:?}"));
        };
        if s.kind != d.kind {
            field("content", &s.kind, &d.kind);
        }
        if !matches!(s.kind, Kind::Symlink(_)) && s.mode != d.mode {
            field(
                "mode",
                &format_args!("{:o}", s.mode),
                &format_args!("{:o}", d.mode),
            );
        }
        if is_root() && s.owner != d.owner {
            field("owner", &s.owner, &d.owner);
        }
        if s.mtime != d.mtime {
            field("mtime", &s.mtime, &d.mtime);
        }
        if s.xattrs != d.xattrs {
            field("xattrs", &Xattrs(&s.xattrs), &Xattrs(&d.xattrs));
        }
        if s.kind != Kind::Dir {
            let group = |groups: &HashMap<u64, Vec<&[u8]>>, inode| -> Vec<String> {
                groups[&inode].iter().map(|p| show(p)).collect()
            };
            let (sg, dg) = (group(&src_groups, s.inode), group(&dst_groups, d.inode));
            if sg != dg {
                field("link group", &sg, &dg);
            }
        }
        if let (Some(src_data), Kind::File { size, .. }) = (&s.data, &d.kind) {
            let dst_data = d.data.clone().unwrap_or_else(|| vec![(0, *size)]);
            if !holes_kept(src_data, &dst_data, *size) {
                field("data ranges (holes filled)", src_data, &d.data);
            }
        }
    }
    out
}

fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "(root)".to_string()
    } else {
        format!("\"{}\"", path.escape_ascii())
    }
}

struct Xattrs<'a>(&'a [(Vec<u8>, Vec<u8>)]);

impl fmt::Debug for Xattrs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(n, v)| (n.escape_ascii().to_string(), v.escape_ascii().to_string())),
            )
            .finish()
    }
}
