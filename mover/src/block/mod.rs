//! Block copies: the bytes of a block device (or of a disk image, a
//! regular file) copied into another device of at least the same size, or
//! into an image, for PVCs with `volumeMode: Block` (VM disks, raw-device
//! databases). `mover send --block`, a receiver volume that is a device
//! (or any path with `mover receive --block`), `mover sync --block`.
//!
//! The same delta engine as a tree sync's changed files, streamed over
//! the whole device:
//!
//! 1. At Hello the sender names the source's size and the segment size
//!    ([`crate::wire::message::BlockGeometry`]); the receiver opens its
//!    destination and refuses one that is smaller, naming both sizes.
//! 2. Both ends read their device once, front to back, at the same time
//!    ([`scan`]). The sender streams its segment hashes (`BlockHashes`;
//!    runs of zero segments as one `BlockZero`).
//! 3. The receiver compares each against its own segment as the two
//!    streams meet ([`write`]): an equal segment costs nothing more; a
//!    zero source segment is zeroed (discarded, or a hole punched in an
//!    image) only where the destination is not zeros already, without a
//!    byte of data on the wire; any other is asked for (`BlockNeed`) with
//!    the rsync signature of the destination's segment, and comes back as
//!    a delta or literally ([`send`]).
//! 4. Every written segment is checked against the source's hash before
//!    it is written in place (a device cannot be renamed over), and the
//!    list of all the source's hashes against the sender's end-to-end
//!    hash (`BlockEnd`). The receiver syncs the device, then `Finished`.
//!
//! Memory stays flat however large the device: neither side keeps a list
//! of segments. The sender's scan runs at most [`WINDOW`] segments ahead of
//! what the receiver reports compared (`BlockCompared`), and ahead of the
//! segments asked for and not yet written, so what either side holds for
//! segments in flight is bounded by the window (a receiver refuses a sender
//! that leaves more than [`MAX_PENDING`] asked-for segments unsent), and the
//! receiver reads its own device at most a few read buffers ahead.
//!
//! Resuming needs no state of its own: everything is written in place and
//! verified before it is written, so after a cut connection the retry's
//! comparison finds every segment already written equal, and sends only the
//! rest.

pub mod disk;
pub mod scan;
pub mod send;
pub mod write;

use crate::failure::Failure;

/// Bytes per segment: fine enough that a filesystem's scattered 4 KiB
/// writes leave most segments equal and that zero runs are found at a
/// useful granularity, coarse enough that a 100 GiB device's hashes
/// (16 bytes each) are 6 MiB on the wire. The rsync blocks inside a
/// differing segment are 8 KiB ([`crate::delta::signature`]).
pub const SEGMENT: u32 = 256 * 1024;

/// Segments the sender's scan may run ahead of the receiver's comparison
/// (1 GiB of device), and most asked-for segments it leaves unsent.
pub const WINDOW: u32 = 4096;

/// Most segments a receiver lets stay asked for and unsent; an honest
/// sender stays within twice [`WINDOW`].
pub const MAX_PENDING: usize = 4 * WINDOW as usize;

/// Fails unless `source` can be read as a block copy's source: checked
/// before connecting, so a typo costs no connection.
pub fn check_source(source: &std::path::Path) -> Result<(), Failure> {
    disk::Disk::source(source)
        .map(|_| ())
        .map_err(|e| Failure::permanent(format!("block source: {e}")))
}
