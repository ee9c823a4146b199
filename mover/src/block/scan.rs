//! Reading a disk once, front to back, as segments: each one's hash, and
//! whether it is all zeros. Both ends of a block copy run this at the same
//! time (the sender over its source, the receiver over its destination),
//! so the comparison costs one sequential read on each side.
//!
//! Zeros are found without hashing them, and in an image without reading
//! them: a segment inside a hole (`SEEK_DATA`) is known to be zeros, so a
//! mostly empty 100 GiB image scans in the time its data takes.

use super::disk::{Disk, Kind};
use crate::delta;
use crate::wire::frame::DATA_CHUNK;
use crate::wire::message::{BlockGeometry, SegmentHash};
use std::io;
use std::ops::ControlFlow;

/// One segment as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub index: u32,
    pub hash: SegmentHash,
    pub zero: bool,
}

/// The hashes of all-zero segments of a geometry: a full one and the
/// (possibly shorter) last one.
#[derive(Debug, Clone, Copy)]
pub struct ZeroHashes {
    full: SegmentHash,
    last: SegmentHash,
    count: u64,
}

impl ZeroHashes {
    pub fn new(geometry: BlockGeometry) -> Self {
        let zeros = vec![0u8; geometry.segment_size as usize];
        let count = geometry.segment_count();
        let (_, last_len) = geometry.segment(count.saturating_sub(1));
        ZeroHashes {
            full: delta::segment_hash(&zeros),
            last: delta::segment_hash(&zeros[..last_len]),
            count,
        }
    }

    /// The hash segment `index` has when it is all zeros.
    pub fn of(&self, index: u64) -> SegmentHash {
        if index + 1 == self.count {
            self.last
        } else {
            self.full
        }
    }
}

/// True when every byte of `data` is zero.
pub fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(16);
    let words_zero = words.by_ref().fold(0u128, |acc, w| {
        acc | u128::from_ne_bytes(w.try_into().unwrap_or([1; 16]))
    }) == 0;
    words_zero && words.remainder().iter().all(|&b| b == 0)
}

/// Reads the first `geometry.size` bytes of `disk` and calls `each` with
/// every segment in order, until it breaks. Fails if the disk cannot be
/// read or ends early (it shrank).
pub fn scan(
    disk: &Disk,
    geometry: BlockGeometry,
    mut each: impl FnMut(Segment) -> ControlFlow<()>,
) -> io::Result<()> {
    let seg = u64::from(geometry.segment_size);
    let count = geometry.segment_count();
    let zeros = ZeroHashes::new(geometry);
    // Whole segments per read, about a data chunk's worth.
    let per_read = (DATA_CHUNK as u64 / seg).max(1);
    let mut buf = vec![0u8; (per_read * seg) as usize];
    let mut index = 0u64;
    while index < count {
        // Segments inside a hole of an image are zeros: not read at all.
        let holes = match disk.kind() {
            Kind::Image => hole_segments(disk, geometry, index)?,
            Kind::Device => 0,
        };
        for _ in 0..holes {
            let zero = Segment {
                index: index as u32,
                hash: zeros.of(index),
                zero: true,
            };
            if each(zero).is_break() {
                return Ok(());
            }
            index += 1;
        }
        if index >= count {
            break;
        }
        let n = per_read.min(count - index);
        let (start, _) = geometry.segment(index);
        let len = (geometry.size - start).min(n * seg) as usize;
        disk.read_at(&mut buf[..len], start)?;
        for chunk in buf[..len].chunks(seg as usize) {
            let zero = is_zero(chunk);
            let hash = if zero {
                zeros.of(index)
            } else {
                delta::segment_hash(chunk)
            };
            let segment = Segment {
                index: index as u32,
                hash,
                zero,
            };
            if each(segment).is_break() {
                return Ok(());
            }
            index += 1;
        }
    }
    Ok(())
}

/// How many segments from `index` on lie wholly in a hole of an image (the
/// last segment counts when the hole runs to the end). A filesystem that
/// does not report holes reports none.
fn hole_segments(disk: &Disk, geometry: BlockGeometry, index: u64) -> io::Result<u64> {
    use rustix::fs::{seek, SeekFrom};
    let (start, _) = geometry.segment(index);
    let data = match seek(disk.file(), SeekFrom::Data(start)) {
        Ok(at) => at.min(geometry.size),
        Err(rustix::io::Errno::NXIO) => geometry.size,
        Err(e) => return Err(e.into()),
    };
    let count = geometry.segment_count();
    Ok(if data >= geometry.size {
        // No more data: a hole to the end, unless the image is shorter.
        let len = disk.size()?;
        if len < geometry.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "ends at offset {len}, before {} (did it shrink?)",
                    geometry.size
                ),
            ));
        }
        count - index
    } else {
        (data - start) / u64::from(geometry.segment_size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(disk: &Disk, geometry: BlockGeometry) -> Vec<Segment> {
        let mut all = Vec::new();
        scan(disk, geometry, |s| {
            all.push(s);
            ControlFlow::Continue(())
        })
        .unwrap();
        all
    }

    #[test]
    fn zeros_are_found_in_holes_and_in_data_alike() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.img");
        let seg = super::super::SEGMENT as usize;
        let size = 10 * seg + 1000;
        let disk = Disk::target(&path).unwrap();
        disk.fit("v", size as u64).unwrap();
        // Data in segment 2, written zeros in segment 5, data in the tail.
        disk.write_at(&[9u8; 100], 2 * seg as u64 + 7).unwrap();
        disk.write_at(&vec![0u8; seg], 5 * seg as u64).unwrap();
        disk.write_at(&[3u8; 10], 10 * seg as u64 + 5).unwrap();
        let geometry = BlockGeometry {
            size: size as u64,
            segment_size: seg as u32,
        };
        let all = scan_all(&disk, geometry);
        assert_eq!(all.len(), 11);
        let data: Vec<u32> = all.iter().filter(|s| !s.zero).map(|s| s.index).collect();
        assert_eq!(data, vec![2, 10]);
        let zeros = ZeroHashes::new(geometry);
        assert_eq!(all[0].hash, zeros.of(0));
        assert_eq!(all[5].hash, delta::segment_hash(&vec![0u8; seg]));
        let mut content = vec![0u8; seg];
        disk.read_at(&mut content, 2 * seg as u64).unwrap();
        assert_eq!(all[2].hash, delta::segment_hash(&content));
        assert_ne!(zeros.of(10), zeros.of(9), "the short tail has its own");

        // A scan can stop early, and a disk that is shorter than the
        // geometry fails, saying it shrank.
        let mut seen = 0;
        scan(&disk, geometry, |_| {
            seen += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(seen, 1);
        disk.fit("v", (3 * seg) as u64).unwrap();
        disk.write_at(&[1], (3 * seg - 1) as u64).unwrap();
        let err = scan(&disk, geometry, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(err.to_string().contains("shrink"), "{err}");
    }

    #[test]
    fn is_zero_checks_every_byte() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 33]));
        for at in [0, 15, 16, 31, 32] {
            let mut v = vec![0u8; 33];
            v[at] = 1;
            assert!(!is_zero(&v), "missed a byte at {at}");
        }
    }
}
