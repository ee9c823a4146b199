//! Listing a directory: its names, sorted bytewise, without `.` and `..`.
//!
//! Both ends list every directory of a volume on every sync, so this is
//! on the path of each no-change resync: `getdents64` straight on the
//! descriptor the caller holds, after rewinding it, rather than `Dir`'s
//! reopen (`openat(".")`, `fstat`, `fcntl`, `close`) per directory.

use rustix::fs::{self as rfs, SeekFrom};
use rustix::io::Errno;
use std::ffi::CString;
use std::os::fd::AsFd;

/// The names in the directory open as `dir`, sorted bytewise. Rewinds
/// `dir` first, so it may be listed again.
pub fn sorted_names(dir: impl AsFd) -> Result<Vec<CString>, Errno> {
    rfs::seek(&dir, SeekFrom::Start(0))?;
    // Any one entry fits (names are at most 255 bytes).
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut entries = rfs::RawDir::new(&dir, buf.spare_capacity_mut());
    let mut names = Vec::new();
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};

    #[test]
    fn names_are_sorted_bytewise_without_dot_entries_and_listed_again_alike() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["b", "a", "B", "a.b", "\u{e9}"] {
            std::fs::write(tmp.path().join(name), b"").unwrap();
        }
        for i in 0..2000 {
            std::fs::write(
                tmp.path().join(format!("many-{i:04}-{}", "x".repeat(200))),
                b"",
            )
            .unwrap();
        }
        let dir = rfs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let first = sorted_names(&dir).unwrap();
        let names: Vec<&[u8]> = first.iter().map(|n| n.to_bytes()).take(4).collect();
        assert_eq!(names, [&b"B"[..], b"a", b"a.b", b"b"]);
        assert!(first[4].to_bytes().starts_with(b"many-0000-"));
        assert_eq!(first.len(), 2005);
        assert_eq!(first.last().unwrap().to_bytes(), "\u{e9}".as_bytes());
        // The descriptor's position does not hide anything the second time.
        assert_eq!(sorted_names(&dir).unwrap(), first);
    }
}
