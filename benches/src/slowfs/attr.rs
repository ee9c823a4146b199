//! Conversions between the backing filesystem's stat and FUSE's types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use rustix::fs::{self as rfs, Dev, Stat, Timespec, UTIME_NOW, UTIME_OMIT};

/// A backing call's error as the same errno for the kernel.
pub fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// The FUSE type of a backing mode.
pub fn kind(mode: u32) -> FileType {
    match rfs::FileType::from_raw_mode(mode) {
        rfs::FileType::Directory => FileType::Directory,
        rfs::FileType::Symlink => FileType::Symlink,
        rfs::FileType::Fifo => FileType::NamedPipe,
        rfs::FileType::Socket => FileType::Socket,
        rfs::FileType::CharacterDevice => FileType::CharDevice,
        rfs::FileType::BlockDevice => FileType::BlockDevice,
        // Regular files, and nothing else can be in a directory.
        _ => FileType::RegularFile,
    }
}

/// The attributes of a backing object, as node `id`.
pub fn of(st: &Stat, id: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// A stat time (seconds may be negative, before 1970).
fn time(secs: i64, nsecs: u64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.min(999_999_999));
    let t = match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH.checked_add(Duration::from_secs(s)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// A time to set: a given one, now (UTIME_NOW) or unchanged (UTIME_OMIT).
pub fn timespec(t: Option<TimeOrNow>) -> Timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, UTIME_NOW),
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(e) => {
                // Before 1970: whole seconds down, nanoseconds up from there.
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, i64::from(d.subsec_nanos()));
                match n {
                    0 => (-s, 0),
                    n => (-s - 1, 1_000_000_000 - n),
                }
            }
        },
    };
    Timespec { tv_sec, tv_nsec }
}

/// A device number in FUSE's 32-bit encoding (the kernel's
/// `new_encode_dev`: 12 bits of major, 20 of minor).
fn encode_dev(dev: Dev) -> u32 {
    let (major, minor) = (rfs::major(dev), rfs::minor(dev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A device number from FUSE's 32-bit encoding (`new_decode_dev`).
pub fn decode_dev(rdev: u32) -> Dev {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    rfs::makedev(major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip() {
        for (major, minor) in [(1, 3), (8, 17), (259, 0x12345), (4095, 0xfffff)] {
            let dev = rfs::makedev(major, minor);
            assert_eq!(decode_dev(encode_dev(dev)), dev, "{major}:{minor}");
        }
    }

    #[test]
    fn times_round_trip_before_and_after_1970() {
        for (s, n) in [(1_600_000_000, 123_456_789), (-5, 250), (-1, 0), (0, 0)] {
            let t = time(s, n);
            let ts = timespec(Some(TimeOrNow::SpecificTime(t)));
            assert_eq!((ts.tv_sec, ts.tv_nsec), (s, n as i64));
        }
    }
}
