//! What a block copy reads and writes: a block device, or a regular file
//! holding a disk image. Everything the rest of [`super`] does goes through
//! [`Disk`], so the two kinds differ only here: how the size is read, how a
//! target is fitted to the source, and how a run of zeros is written.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Which kind of object a [`Disk`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A block device: fixed size, written in place, never resized.
    Device,
    /// A regular file holding a disk image: sized to the source, and kept
    /// sparse where the source is zeros.
    Image,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Device => "block device",
            Kind::Image => "disk image",
        })
    }
}

/// Why a path cannot be used for a block copy. Every variant names the
/// path, so a message read alone says what was wrong where.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is a directory, not a block device or disk image (a block copy writes one device; sync a directory without --block)", path.display())]
    Directory { path: PathBuf },
    #[error("{} is neither a block device nor a regular file", path.display())]
    Unsupported { path: PathBuf },
    #[error("{} is in use (mounted, or opened exclusively by another program); a block copy needs it to itself", path.display())]
    Busy { path: PathBuf },
    #[error("volume {volume}: the destination {} holds {have} bytes, fewer than the source's {need} bytes", path.display())]
    TooSmall {
        volume: String,
        path: PathBuf,
        have: u64,
        need: u64,
    },
}

/// An open block device or disk image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    kind: Kind,
}

impl Disk {
    /// Opens `path` for reading as a block copy's source. Symlinks are
    /// followed: devices are usually named by links (`/dev/disk/by-id/…`).
    pub fn source(path: &Path) -> Result<Disk, DiskError> {
        let kind = kind_of(path)?
            .ok_or_else(|| io_error(path, io::Error::from_raw_os_error(libc::ENOENT)))?;
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            kind,
        })
    }

    /// Opens `path` for writing as a block copy's destination. A device is
    /// opened exclusively (the kernel refuses while it is mounted); a
    /// missing path becomes an empty image, which [`Disk::fit`] sizes.
    pub fn target(path: &Path) -> Result<Disk, DiskError> {
        let kind = kind_of(path)?.unwrap_or(Kind::Image);
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match kind {
            // O_EXCL without O_CREAT: an exclusive open of a block device.
            Kind::Device => options.custom_flags(libc::O_EXCL),
            Kind::Image => options.create(true).mode(0o600),
        };
        let file = options.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => DiskError::Busy {
                path: path.to_path_buf(),
            },
            _ => io_error(path, e),
        })?;
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            kind,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The size now: a device's capacity, an image's length.
    pub fn size(&self) -> io::Result<u64> {
        match self.kind {
            // The size of a block device is where its end is.
            Kind::Device => {
                rustix::fs::seek(&self.file, rustix::fs::SeekFrom::End(0)).map_err(io::Error::from)
            }
            Kind::Image => Ok(self.file.metadata()?.len()),
        }
    }

    /// Makes this destination ready for `need` bytes: a device must hold at
    /// least that many (a larger one keeps its tail as it is); an image is
    /// made exactly that long, extended sparsely or cut.
    pub fn fit(&self, volume: &str, need: u64) -> Result<(), DiskError> {
        let have = self.size().map_err(|e| self.error(e))?;
        match self.kind {
            Kind::Device if have < need => Err(DiskError::TooSmall {
                volume: volume.to_string(),
                path: self.path.clone(),
                have,
                need,
            }),
            Kind::Device => Ok(()),
            Kind::Image if have == need => Ok(()),
            Kind::Image => self.file.set_len(need).map_err(|e| self.error(e)),
        }
    }

    /// Makes `len` bytes at `offset` read as zeros, as cheaply as the
    /// object allows: a hole punched in an image (it stays sparse), a
    /// discard on a device that guarantees zeros afterwards, the kernel's
    /// own zeroing, and only then written zeros.
    pub fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags as F};
        // On a block device PUNCH_HOLE is a discard that must read back as
        // zeros (the kernel refuses if the device cannot promise it), and
        // ZERO_RANGE is the kernel's write-zeroes (offloaded where it can).
        for flags in [F::PUNCH_HOLE | F::KEEP_SIZE, F::ZERO_RANGE | F::KEEP_SIZE] {
            match fallocate(&self.file, flags, offset, len) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {}
            }
        }
        let zeros = vec![0u8; super::SEGMENT as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a short read means the
    /// object shrank, reported as such.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "ends before offset {} (did it shrink?)",
                        offset + buf.len() as u64
                    ),
                )
            } else {
                e
            }
        })
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Makes everything written durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// `e` with this disk's path on it.
    pub fn error(&self, e: io::Error) -> DiskError {
        io_error(&self.path, e)
    }
}

fn io_error(path: &Path, source: io::Error) -> DiskError {
    DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `path` is, following symlinks; `None` if nothing is there.
pub fn kind_of(path: &Path) -> Result<Option<Kind>, DiskError> {
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => Err(DiskError::Directory {
            path: path.to_path_buf(),
        }),
        Ok(md) if md.file_type().is_block_device() => Ok(Some(Kind::Device)),
        Ok(md) if md.is_file() => Ok(Some(Kind::Image)),
        Ok(_) => Err(DiskError::Unsupported {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_fitted_and_devices_are_not_shrunk_or_grown() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new.img");
        let disk = Disk::target(&path).unwrap();
        assert_eq!(disk.kind(), Kind::Image);
        disk.fit("v", 5 << 20).unwrap();
        assert_eq!(disk.size().unwrap(), 5 << 20);
        disk.fit("v", 1 << 20).unwrap();
        assert_eq!(disk.size().unwrap(), 1 << 20);
        let err = DiskError::TooSmall {
            volume: "disk".into(),
            path: "/dev/xvdb".into(),
            have: 10,
            need: 20,
        };
        assert_eq!(
            err.to_string(),
            "volume disk: the destination /dev/xvdb holds 10 bytes, fewer than the source's 20 bytes"
        );
    }

    #[test]
    fn directories_and_other_objects_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Disk::source(tmp.path()).unwrap_err();
        assert!(matches!(err, DiskError::Directory { .. }), "{err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        assert!(matches!(
            Disk::target(tmp.path()).unwrap_err(),
            DiskError::Directory { .. }
        ));
        assert!(matches!(
            Disk::source(Path::new("/dev/null")).unwrap_err(),
            DiskError::Unsupported { .. }
        ));
        let missing = Disk::source(&tmp.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn zeroing_an_image_punches_a_hole() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let disk = Disk::target(&tmp.path().join("z.img")).unwrap();
        disk.write_at(&vec![7u8; 4 << 20], 0).unwrap();
        disk.sync().unwrap();
        disk.zero(1 << 20, 2 << 20).unwrap();
        let mut buf = vec![1u8; 4 << 20];
        disk.read_at(&mut buf, 0).unwrap();
        assert!(buf[..1 << 20].iter().all(|&b| b == 7));
        assert!(buf[1 << 20..3 << 20].iter().all(|&b| b == 0));
        assert!(buf[3 << 20..].iter().all(|&b| b == 7));
        let blocks = disk.file().metadata().unwrap().blocks();
        assert!(blocks * 512 < 4 << 20, "no hole: {blocks} blocks");
        let short = disk.read_at(&mut buf, 1 << 20).unwrap_err();
        assert!(short.to_string().contains("shrink"), "{short}");
    }
}
