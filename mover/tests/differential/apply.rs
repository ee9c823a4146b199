//! Carries out a [`Plan`](super::plan::Plan)'s operations on a real source
//! tree. An operation that does not fit the tree as it is (nothing to pick,
//! a name already taken, a rename into its own subtree) does nothing: plans
//! stay valid whatever shrinking removes from them.

use super::plan::{Acl, Content, Name, Node, Op, Pick, FIXED_NAMES, MOVER_PREFIXES, XATTR_NAMES};
use crate::common::{is_root, random_bytes, set_mtime};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Block size of sparse layouts: a block holds data or is a hole.
const BLOCK: u64 = 64 * 1024;

/// Which of the two phases an operation belongs to. Mtimes set in the
/// mutation phase have odd nanoseconds and those of the build phase even
/// ones, so a mutation never gives a changed file back the exact mtime of
/// the synced version: the mover, like rsync, rightly skips a file whose
/// size and mtime are unchanged.
#[derive(Clone, Copy)]
pub enum Phase {
    Build,
    Mutate,
}

/// A source tree under construction; `scratch` is a directory on the same
/// filesystem, outside the tree, for files on their way in.
pub struct Tree<'a> {
    pub root: &'a Path,
    pub scratch: &'a Path,
}

impl Tree<'_> {
    pub fn apply(&self, ops: &[Op], phase: Phase) {
        for op in ops {
            // Failures are the "does not fit" case of the module doc.
            let _ = self.apply_one(op, phase);
        }
    }

    fn apply_one(&self, op: &Op, phase: Phase) -> io::Result<()> {
        match op {
            Op::Create { parent, name, node } => {
                let parent = self.pick(*parent, Select::Dir).ok_or_else(nothing)?;
                let path = parent.join(self.name(&parent, name));
                if fs::symlink_metadata(&path).is_ok() {
                    return Ok(());
                }
                self.create(&path, node)
            }
            Op::Remove(at) => remove(&self.pick(*at, Select::NotRoot).ok_or_else(nothing)?),
            Op::Rename { from, parent, name } => {
                let from = self.pick(*from, Select::NotRoot).ok_or_else(nothing)?;
                let parent = self.pick(*parent, Select::Dir).ok_or_else(nothing)?;
                if parent.starts_with(&from) {
                    return Ok(());
                }
                fs::rename(&from, parent.join(self.name(&parent, name)))
            }
            Op::Replace { at, node } => {
                let at = self.pick(*at, Select::NotRoot).ok_or_else(nothing)?;
                // Resolve a link target before the entry goes: it may be it.
                if let Node::HardLink(target) = node {
                    let target = self.pick(*target, Select::File).ok_or_else(nothing)?;
                    let staged = self.scratch.join("link");
                    fs::hard_link(target, &staged)?;
                    remove(&at)?;
                    return fs::rename(staged, at);
                }
                remove(&at)?;
                self.create(&at, node)
            }
            Op::Rewrite {
                file,
                offset,
                len,
                seed,
            } => {
                let path = self.pick(*file, Select::File).ok_or_else(nothing)?;
                let f = fs::OpenOptions::new().write(true).open(&path)?;
                let offset = u64::from(*offset) % (f.metadata()?.len() + 1);
                f.write_all_at(&random_bytes(*len as usize, *seed), offset)?;
                new_mtime(&path, phase)
            }
            Op::Truncate { file, len } => {
                let path = self.pick(*file, Select::File).ok_or_else(nothing)?;
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(u64::from(*len))?;
                new_mtime(&path, phase)
            }
            Op::PunchHole { file, offset, len } => {
                let path = self.pick(*file, Select::File).ok_or_else(nothing)?;
                let f = fs::OpenOptions::new().write(true).open(&path)?;
                let offset = (u64::from(*offset) % (f.metadata()?.len() + 1)) / 4096 * 4096;
                let len = u64::from(*len).div_ceil(4096) * 4096;
                use rustix::fs::FallocateFlags as F;
                rustix::fs::fallocate(&f, F::PUNCH_HOLE | F::KEEP_SIZE, offset, len)?;
                new_mtime(&path, phase)
            }
            Op::Densify(file) => {
                let path = self.pick(*file, Select::File).ok_or_else(nothing)?;
                densify(&path)
            }
            Op::Split(file) => {
                let path = self.pick(*file, Select::File).ok_or_else(nothing)?;
                if fs::metadata(&path)?.nlink() < 2 {
                    return Ok(());
                }
                let staged = self.scratch.join("split");
                fs::copy(&path, &staged)?;
                fs::rename(staged, path)
            }
            Op::Chmod(at, mode) => {
                let path = self.pick(*at, Select::Any).ok_or_else(nothing)?;
                let meta = fs::symlink_metadata(&path)?;
                if meta.is_symlink() {
                    return Ok(());
                }
                // Without root, the owner must still be able to read and
                // walk the source and write the copy.
                let floor = match (is_root(), meta.is_dir()) {
                    (true, _) => 0,
                    (false, true) => 0o700,
                    (false, false) => 0o600,
                };
                fs::set_permissions(&path, fs::Permissions::from_mode(u32::from(*mode) | floor))
            }
            Op::Chown(at, uid, gid) => {
                let path = self.pick(*at, Select::Any).ok_or_else(nothing)?;
                if !is_root() {
                    return Ok(());
                }
                std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))
            }
            Op::Touch(at, sec, nsec) => {
                let path = self.pick(*at, Select::Any).ok_or_else(nothing)?;
                set_mtime(&path, *sec, i64::from(phase_nsec(*nsec, phase)));
                Ok(())
            }
            Op::SetXattr(at, name, value) => {
                let path = self.pick(*at, Select::NotSymlink).ok_or_else(nothing)?;
                let name = XATTR_NAMES[name % XATTR_NAMES.len()];
                Ok(rustix::fs::lsetxattr(
                    &path,
                    name,
                    value,
                    rustix::fs::XattrFlags::empty(),
                )?)
            }
            Op::RemoveXattr(at, name) => {
                let path = self.pick(*at, Select::NotSymlink).ok_or_else(nothing)?;
                Ok(rustix::fs::lremovexattr(
                    &path,
                    XATTR_NAMES[name % XATTR_NAMES.len()],
                )?)
            }
            Op::SetAcl { at, acl, default } => {
                let path = self.pick(*at, acl_target(*default)).ok_or_else(nothing)?;
                let mode = fs::symlink_metadata(&path)?.mode();
                let value = encode_acl(acl, mode);
                let name = acl_xattr(*default);
                Ok(rustix::fs::lsetxattr(
                    &path,
                    name,
                    &value,
                    rustix::fs::XattrFlags::empty(),
                )?)
            }
            Op::RemoveAcl { at, default } => {
                let path = self.pick(*at, acl_target(*default)).ok_or_else(nothing)?;
                Ok(rustix::fs::lremovexattr(&path, acl_xattr(*default))?)
            }
        }
    }

    fn create(&self, path: &Path, node: &Node) -> io::Result<()> {
        match node {
            Node::File(content) => write_content(path, content),
            Node::Dir => fs::create_dir(path),
            Node::Chain(depth) => {
                let mut dir = path.to_path_buf();
                for _ in 0..*depth {
                    fs::create_dir(&dir)?;
                    dir.push("deeper");
                }
                fs::write(dir.with_file_name("leaf"), b"bottom")
            }
            Node::Symlink(target) => std::os::unix::fs::symlink(OsStr::from_bytes(target), path),
            Node::Fifo => mknod(path, rustix::fs::FileType::Fifo, 0),
            Node::Device(major, minor) if is_root() => mknod(
                path,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::makedev(*major, *minor),
            ),
            Node::Device(..) => mknod(path, rustix::fs::FileType::Fifo, 0),
            Node::HardLink(target) => {
                let target = self.pick(*target, Select::File).ok_or_else(nothing)?;
                fs::hard_link(target, path)
            }
        }
    }

    /// The name `name` stands for in directory `parent`.
    fn name(&self, parent: &Path, name: &Name) -> PathBuf {
        let sibling = |pick: Pick| -> Vec<u8> {
            let mut names: Vec<Vec<u8>> = fs::read_dir(parent)
                .map(|dir| {
                    dir.filter_map(|e| e.ok())
                        .map(|e| e.file_name().as_bytes().to_vec())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            match names.len() {
                0 => b"data".to_vec(),
                n => names.swap_remove(usize::from(pick.0) % n),
            }
        };
        let mut bytes = match name {
            Name::Fixed(i) => FIXED_NAMES[i % FIXED_NAMES.len()].as_bytes().to_vec(),
            Name::Bytes(bytes) => bytes.clone(),
            Name::SiblingWith(of, suffix) => [sibling(*of), suffix.clone()].concat(),
            Name::MoverPrefixOf(prefix, of) => {
                let prefix = MOVER_PREFIXES[prefix % MOVER_PREFIXES.len()].as_bytes();
                [prefix.to_vec(), sibling(*of)].concat()
            }
            Name::Longest(byte) => vec![*byte; 255],
        };
        bytes.retain(|&b| b != 0 && b != b'/');
        bytes.truncate(255);
        if bytes.is_empty() || bytes == b"." || bytes == b".." {
            bytes.push(b'x');
        }
        PathBuf::from(OsStr::from_bytes(&bytes))
    }

    /// The entry `pick` chooses among those `select` admits, in name order.
    fn pick(&self, pick: Pick, select: Select) -> Option<PathBuf> {
        let candidates: Vec<PathBuf> = walkdir::WalkDir::new(self.root)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| select.admits(e.depth(), e.file_type()))
            .map(|e| e.into_path())
            .collect();
        match candidates.len() {
            0 => None,
            n => Some(candidates[usize::from(pick.0) % n].clone()),
        }
    }
}

/// Which entries an operation picks among.
#[derive(Clone, Copy)]
enum Select {
    /// Every entry, the root included.
    Any,
    NotRoot,
    NotSymlink,
    /// Directories, the root included.
    Dir,
    File,
}

impl Select {
    fn admits(self, depth: usize, ty: fs::FileType) -> bool {
        match self {
            Select::Any => true,
            Select::NotRoot => depth > 0,
            Select::NotSymlink => !ty.is_symlink(),
            Select::Dir => ty.is_dir(),
            Select::File => ty.is_file(),
        }
    }
}

fn nothing() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "nothing to pick")
}

fn remove(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn mknod(path: &Path, ty: rustix::fs::FileType, dev: u64) -> io::Result<()> {
    let mode = rustix::fs::Mode::from_raw_mode(0o644);
    Ok(rustix::fs::mknodat(rustix::fs::CWD, path, ty, mode, dev)?)
}

fn phase_nsec(nsec: u32, phase: Phase) -> u32 {
    nsec - nsec % 2
        + match phase {
            Phase::Build => 0,
            Phase::Mutate => 1,
        }
}

/// Gives a file whose content changed an mtime its synced copy cannot have.
fn new_mtime(path: &Path, phase: Phase) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    // Kept below a second: a current time's nanoseconds near 999,999,999
    // would otherwise pass it, and utimensat refuses that.
    let nsec = phase_nsec((meta.mtime_nsec() as u32 ^ 0x5a5a) % 1_000_000_000, phase);
    set_mtime(path, meta.mtime() + 7, i64::from(nsec));
    Ok(())
}

/// Writes `content` a block at a time; a sparse layout leaves about two
/// blocks in three as holes.
fn write_content(path: &Path, content: &Content) -> io::Result<()> {
    let f = fs::File::create(path)?;
    let len = u64::from(content.len);
    f.set_len(len)?;
    for block in 0..len.div_ceil(BLOCK) {
        let seed = content.seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if content.sparse && !seed.is_multiple_of(3) {
            continue;
        }
        let at = block * BLOCK;
        f.write_all_at(&random_bytes((len - at).min(BLOCK) as usize, seed), at)?;
    }
    Ok(())
}

/// Writes every byte of a file back in place: holes become allocated zeros.
pub fn densify(path: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut at = 0;
    loop {
        let n = f.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(());
        }
        f.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
}

fn acl_target(default: bool) -> Select {
    if default {
        Select::Dir
    } else {
        Select::NotSymlink
    }
}

fn acl_xattr(default: bool) -> &'static str {
    if default {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    }
}

/// The kernel's xattr form of an ACL (version 2, entries sorted by tag and
/// id); owner, group and other come from `mode`.
pub fn encode_acl(acl: &Acl, mode: u32) -> Vec<u8> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;
    let named = |tag: u16, ids: &[(u32, u8)]| {
        let mut ids = ids.to_vec();
        ids.sort_by_key(|&(id, _)| id);
        ids.dedup_by_key(|&mut (id, _)| id);
        ids.into_iter()
            .map(move |(id, perm)| (tag, u16::from(perm & 7), id))
    };
    let perm = |shift: u32| ((mode >> shift) & 7) as u16;
    let mut entries = vec![(USER_OBJ, perm(6), NO_ID)];
    entries.extend(named(USER, &acl.users));
    entries.push((GROUP_OBJ, perm(3), NO_ID));
    entries.extend(named(GROUP, &acl.groups));
    if entries.len() > 2 {
        entries.push((MASK, u16::from(acl.mask & 7), NO_ID));
    }
    entries.push((OTHER, perm(0), NO_ID));
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}
