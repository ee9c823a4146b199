//! What a transfer moves: one [`Entry`] per filesystem object, with the path
//! relative to the volume root and the metadata the destination must end up
//! with.
//!
//! Entries cross the network, so everything here that a receiver reads is
//! validated on construction ([`RelPath::parse`], [`Entry::validate`]): a
//! hostile sender can name nothing outside the volume and cannot make the
//! receiver allocate without bound.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest path we accept from the network, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single path component (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Largest extended attribute value Linux stores.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Most extended attributes one entry may carry.
pub const MAX_XATTRS: usize = 128;

/// A path beneath a volume root: `/`-separated components, none empty, `.`,
/// `..`, or containing NUL. The empty path is the root itself.
///
/// Stored as raw bytes because Unix file names need not be UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "serde_bytes::ByteBuf", into = "serde_bytes::ByteBuf")]
pub struct RelPath(Vec<u8>);

/// Why a path from the network was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is absolute")]
    Absolute,
    #[error("path has an empty component")]
    EmptyComponent,
    #[error("path has a `.` or `..` component")]
    DotComponent,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path component is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
}

impl RelPath {
    /// The volume root.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Validates raw bytes as a confined relative path.
    pub fn parse(bytes: &[u8]) -> Result<Self, PathError> {
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if bytes[0] == b'/' {
            return Err(PathError::Absolute);
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul);
        }
        for component in bytes.split(|&b| b == b'/') {
            validate_name(component)?;
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// Appends one validated component.
    pub fn join(&self, name: &[u8]) -> Result<Self, PathError> {
        validate_name(name)?;
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name);
        if bytes.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        Ok(RelPath(bytes))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Components from the root down.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// The parent directory and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (RelPath(self.0[..i].to_vec()), &self.0[i + 1..]),
            None => (RelPath::root(), &self.0[..]),
        })
    }

    /// Orders paths the way the sender's walk lists them: depth-first, a
    /// directory before its contents, names within a directory bytewise.
    /// That is component by component, not bytewise on the whole path:
    /// `data/f` comes before `data-old` although `-` sorts below `/`.
    pub fn walk_cmp(&self, other: &RelPath) -> std::cmp::Ordering {
        self.components().cmp(other.components())
    }

    /// True when `self` is `other` or lies beneath it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    /// The path as an OS path relative to a root, for local filesystem calls.
    pub fn to_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

fn validate_name(name: &[u8]) -> Result<(), PathError> {
    match name {
        [] => Err(PathError::EmptyComponent),
        b"." | b".." => Err(PathError::DotComponent),
        _ if name.len() > MAX_NAME_LEN => Err(PathError::NameTooLong),
        _ if name.contains(&0) => Err(PathError::Nul),
        _ if name.contains(&b'/') => Err(PathError::EmptyComponent),
        _ => Ok(()),
    }
}

impl TryFrom<serde_bytes::ByteBuf> for RelPath {
    type Error = PathError;
    fn try_from(buf: serde_bytes::ByteBuf) -> Result<Self, PathError> {
        RelPath::parse(&buf).inspect_err(|e| {
            let msg = format!("path {:?}: {e}", String::from_utf8_lossy(&buf));
            LAST_REFUSED_PATH.with(|last| *last.borrow_mut() = Some(msg));
        })
    }
}

thread_local! {
    /// Why the last path decoded on this thread was refused. postcard turns
    /// a custom decode error into a bare "deserialization error", so the
    /// frame decoder fetches the reason from here ([`take_refused_path`])
    /// to tell the peer exactly which path was wrong and why.
    static LAST_REFUSED_PATH: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The reason the last path decoded on this thread was refused, if any.
pub fn take_refused_path() -> Option<String> {
    LAST_REFUSED_PATH.with(|last| last.borrow_mut().take())
}

impl From<RelPath> for serde_bytes::ByteBuf {
    fn from(path: RelPath) -> Self {
        serde_bytes::ByteBuf::from(path.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            write!(f, "{}", String::from_utf8_lossy(&self.0))
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// One extended attribute (POSIX ACLs travel as the `system.posix_acl_*`
/// attributes, which is how Linux exposes them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Metadata every kind of entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub xattrs: Vec<Xattr>,
}

/// Device and special files, created with `mknod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    /// A regular file. `sparse` is set when the source occupies fewer blocks
    /// than its length, so the receiver keeps zero runs as holes.
    File {
        size: u64,
        sparse: bool,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A further name for a regular file listed earlier in the same transfer.
    HardLink {
        target: RelPath,
    },
    Special {
        kind: SpecialKind,
        rdev: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    pub meta: Meta,
}

/// Why an entry from the network was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("the volume root must be a directory")]
    RootNotDir,
    #[error("symlink target is empty, too long or contains NUL")]
    BadSymlinkTarget,
    #[error("hard link target is the root or the link itself")]
    BadLinkTarget,
    #[error("too many extended attributes ({0} > {MAX_XATTRS})")]
    TooManyXattrs(usize),
    #[error("extended attribute name is empty, too long or contains NUL")]
    BadXattrName,
    #[error("extended attribute value is longer than {MAX_XATTR_VALUE} bytes")]
    XattrTooLarge,
    #[error("file size {0} exceeds the largest supported size")]
    FileTooLarge(u64),
}

/// Largest file length accepted (the largest `off_t`).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

impl Entry {
    /// Checks everything [`RelPath`] parsing does not: field sizes and
    /// combinations that a receiver must never act on.
    pub fn validate(&self) -> Result<(), EntryError> {
        if self.path.is_root() && self.kind != Kind::Dir {
            return Err(EntryError::RootNotDir);
        }
        match &self.kind {
            Kind::Symlink { target }
                if target.is_empty() || target.len() > MAX_PATH_LEN || target.contains(&0) =>
            {
                return Err(EntryError::BadSymlinkTarget);
            }
            Kind::HardLink { target } if target.is_root() || *target == self.path => {
                return Err(EntryError::BadLinkTarget);
            }
            Kind::File { size, .. } if *size > MAX_FILE_SIZE => {
                return Err(EntryError::FileTooLarge(*size));
            }
            _ => {}
        }
        if self.meta.xattrs.len() > MAX_XATTRS {
            return Err(EntryError::TooManyXattrs(self.meta.xattrs.len()));
        }
        for x in &self.meta.xattrs {
            if x.name.is_empty() || x.name.len() > MAX_NAME_LEN || x.name.contains(&0) {
                return Err(EntryError::BadXattrName);
            }
            if x.value.len() > MAX_XATTR_VALUE {
                return Err(EntryError::XattrTooLarge);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_escapes() {
        assert_eq!(RelPath::parse(b"/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(RelPath::parse(b"a/../b"), Err(PathError::DotComponent));
        assert_eq!(RelPath::parse(b".."), Err(PathError::DotComponent));
        assert_eq!(RelPath::parse(b"a/./b"), Err(PathError::DotComponent));
        assert_eq!(RelPath::parse(b"a//b"), Err(PathError::EmptyComponent));
        assert_eq!(RelPath::parse(b"a/"), Err(PathError::EmptyComponent));
        assert_eq!(RelPath::parse(b"a\0b"), Err(PathError::Nul));
        assert_eq!(RelPath::parse(&[b'a'; 300]), Err(PathError::NameTooLong));
        assert!(RelPath::parse(b"a/b c/\xff").is_ok());
        assert!(RelPath::parse(b"").unwrap().is_root());
    }

    #[test]
    fn join_refuses_slash_in_name() {
        let p = RelPath::parse(b"a").unwrap();
        assert!(p.join(b"b/c").is_err());
        assert_eq!(p.join(b"b").unwrap().as_bytes(), b"a/b");
        assert_eq!(RelPath::root().join(b"x").unwrap().as_bytes(), b"x");
    }

    #[test]
    fn split_and_prefix() {
        let p = RelPath::parse(b"a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"a/b");
        assert_eq!(name, b"c");
        assert!(p.starts_with(&RelPath::parse(b"a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::parse(b"a/bc").unwrap()));
        assert!(!RelPath::parse(b"a/bc")
            .unwrap()
            .starts_with(&RelPath::parse(b"a/b").unwrap()));
        assert!(p.starts_with(&RelPath::root()));
    }

    #[test]
    fn walk_order_is_component_wise() {
        let p = |s: &str| RelPath::parse(s.as_bytes()).unwrap();
        use std::cmp::Ordering::*;
        assert_eq!(p("data/f").walk_cmp(&p("data-old")), Less);
        assert_eq!(p("data.bak").walk_cmp(&p("data/f")), Greater);
        assert_eq!(p("a").walk_cmp(&p("a/b")), Less);
        assert_eq!(p("a/b").walk_cmp(&p("a/b")), Equal);
        assert_eq!(p("").walk_cmp(&p("a")), Less);
        assert_eq!(p("a\x01/z").walk_cmp(&p("a/z")), Greater);
    }

    #[test]
    fn deserialize_validates() {
        let bytes = postcard::to_allocvec(&serde_bytes::ByteBuf::from(b"../x".to_vec())).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bytes).is_err());
    }
}
