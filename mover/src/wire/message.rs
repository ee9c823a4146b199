//! Every message a sender and a receiver exchange.
//!
//! One TLS connection syncs one volume. The sender streams the file list
//! ([`ToReceiver::Entry`]) without waiting; the receiver answers each regular
//! file with [`ToSender::Have`] or [`ToSender::Need`] as soon as it has looked
//! at its own copy, so the two sides' scans overlap. File contents then flow
//! one file at a time as a `FileBegin`, data ops, `FileEnd` run; a changed file
//! takes one extra round trip (segment hashes out, signatures of only the
//! differing segments back) before its data is sent.

use super::frame::Message;
use super::hello::Features;
use crate::entry::{Entry, RelPath};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A sender-assigned number for each regular file in the list.
pub type FileId = u64;

/// A blake3 hash truncated to 128 bits: ample to tell segments apart, and
/// the full 256-bit hash guards the whole file anyway.
pub type SegmentHash = [u8; 16];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOptions {
    /// Delete destination entries the source does not have.
    pub delete: bool,
    /// Which extended attributes the sender reads and sends, and so which
    /// ones the receiver owns: it sets them, and removes those the source
    /// lacks. Every other attribute belongs to the destination system.
    pub xattrs: XattrPolicy,
    /// Compare files whose size and mtime match by content too: the
    /// receiver offers its copy as a base, both ends hash their copies at
    /// once, and an identical file is answered with
    /// [`ToReceiver::Unchanged`] instead of being rebuilt.
    pub checksum: bool,
    /// Write nothing: the receiver answers every file with `Have` and
    /// reports what a sync would change ([`ToSender::Change`]).
    pub dry_run: bool,
}

/// Which extended attributes a sync copies.
///
/// `security.*` (SELinux labels, file capabilities) and `trusted.*` are
/// the destination system's by default: a label is the destination's
/// policy, and copying them costs every unchanged file reads and writes
/// for attributes the destination relabels anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum XattrPolicy {
    /// Nothing: the destination's attributes are left as they are.
    None,
    /// `user.*` attributes and POSIX ACLs.
    #[default]
    User,
    /// Every attribute the sender can read, `security.*` and `trusted.*`
    /// included (setting the privileged ones needs a root receiver).
    All,
}

impl XattrPolicy {
    /// Whether the attribute `name` is copied (and owned by the receiver).
    pub fn covers(self, name: &[u8]) -> bool {
        match self {
            XattrPolicy::None => false,
            XattrPolicy::User => {
                name.starts_with(b"user.")
                    || name == b"system.posix_acl_access"
                    || name == b"system.posix_acl_default"
            }
            XattrPolicy::All => true,
        }
    }
}

impl SyncOptions {
    /// Refuses combinations a session cannot honour.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.checksum && self.dry_run {
            // A dry run sends no file data, and so compares no content.
            return Err("--checksum cannot be combined with --dry-run");
        }
        Ok(())
    }

    /// The [`Features`] a receiver must offer to honour these options, with
    /// the command-line flag each one serves.
    pub fn required_features(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            (self.checksum, Features::CHECKSUM, "--checksum"),
            (self.dry_run, Features::DRY_RUN, "--dry-run"),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, feature, flag)| (feature, flag))
    }
}

/// Sender to receiver.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToReceiver {
    /// First message: which volume this connection writes. Stays variant
    /// 0 with `protocol` first in every version, so that a peer of any
    /// version can read who is talking before the rest ([`super::hello`]).
    Hello {
        protocol: u32,
        volume: String,
        options: SyncOptions,
        /// What this sender can do; the session uses what both can.
        features: Features,
        /// Which work-area names (indices of the `.mover-work` candidates)
        /// the source root lists, so the receiver picks one it does not.
        reserved: Vec<u32>,
        /// A block copy (protocol 4): the source device's size and the
        /// segments it is compared in. `None` for a tree sync.
        block: Option<BlockGeometry>,
    },
    /// One entry of the walk, in depth-first order with names sorted
    /// bytewise; a directory comes before its contents.
    Entry { id: FileId, entry: Entry },
    /// The sender could not list all of `dir` (unreadable entries below it):
    /// delete nothing there, since absence from the list proves nothing.
    KeepContents { dir: RelPath },
    /// The walk is complete.
    EndOfList,
    /// Ask for the rolling signatures of these differing segments of the
    /// receiver's copy of `id`.
    SignatureRequest { id: FileId, segments: Vec<u32> },
    /// File data for `id` follows until `FileEnd` or `FileAbort`.
    FileBegin { id: FileId },
    /// A run of zeros that the source stores as a hole.
    Hole { len: u64 },
    /// Append `count` segments of the receiver's current copy, unchanged.
    CopySegments { first: u32, count: u32 },
    /// Part of an rsync delta against one segment of the receiver's copy.
    PatchChunk {
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// The delta for `segment` is complete: apply it.
    PatchEnd { segment: u32 },
    /// The file is complete; `hash` is its end-to-end hash
    /// ([`crate::delta::FileHasher`]).
    FileEnd { hash: [u8; 32] },
    /// The source file could not be read after all; keep the old copy.
    FileAbort { reason: AbortReason },
    /// Nothing to say, but still alive (idle routes drop silent streams).
    Keepalive,
    /// Bytes to append, as one zstd frame of `len` bytes once decompressed
    /// (at most a data chunk).
    Compressed {
        len: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Every segment of the receiver's copy of `id` (announced with `Need`
    /// and a base) matches the source and the sizes agree: keep the copy,
    /// apply only the metadata, and report the file done.
    Unchanged { id: FileId },
    /// Block copies ([`crate::block`]): the source's hashes of segments
    /// `first` onwards, in order, for segments holding data.
    BlockHashes {
        first: u32,
        hashes: Vec<SegmentHash>,
    },
    /// Block copies: source segments `first..first + count` are all zeros.
    BlockZero { first: u32, count: u32 },
    /// Block copies: the new content of `segment` follows, as `PatchChunk`s
    /// and a `PatchEnd` (a delta against the receiver's segment) or as
    /// `Literal`/`Compressed` data adding up to the segment's length.
    BlockSegment { segment: u32, patch: bool },
    /// Block copies: every segment's hash has been sent; `hash` is the
    /// blake3 of the list of them ([`crate::delta::FileHasher`]).
    BlockEnd { hash: [u8; 32] },
    /// Right after `Welcome`, only to a receiver offering the `streams`
    /// feature: everything more this sender says comes over `count` data
    /// connections ([`super::stripes`]), each opening with `Join` and
    /// `token`, a fresh random secret of this session.
    Streams { count: u32, token: [u8; 32] },
    /// The first message of a data connection, instead of `Hello`: it
    /// joins the session whose `Streams` named `token`, as lane `lane`.
    /// Answered with `Welcome` (or `Error`) on that connection.
    Join { token: [u8; 32], lane: u32 },
    /// Bytes to append. Travels as a raw data frame, never through serde;
    /// it stays the last variant so skipping it shifts no other variant's
    /// index on the wire.
    #[serde(skip)]
    Literal { data: Bytes },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// The file disappeared or changed size between listing and reading.
    Vanished,
    /// The sender could not read it.
    Unreadable(String),
}

impl Message for ToReceiver {
    fn payload_len(&self) -> usize {
        match self {
            ToReceiver::Hello {
                volume,
                features,
                reserved,
                ..
            } => volume.len() + features.payload_len() + reserved.len() * 4,
            ToReceiver::BlockHashes { hashes, .. } => hashes.len() * 16,
            ToReceiver::Entry { entry, .. } => entry_len(entry),
            ToReceiver::KeepContents { dir } => dir.as_bytes().len(),
            ToReceiver::SignatureRequest { segments, .. } => segments.len() * 4,
            ToReceiver::PatchChunk { delta } => delta.len(),
            ToReceiver::FileAbort {
                reason: AbortReason::Unreadable(reason),
            } => reason.len(),
            ToReceiver::Compressed { data, .. } => data.len(),
            ToReceiver::Literal { data } => data.len(),
            ToReceiver::EndOfList
            | ToReceiver::FileBegin { .. }
            | ToReceiver::Hole { .. }
            | ToReceiver::CopySegments { .. }
            | ToReceiver::PatchEnd { .. }
            | ToReceiver::FileEnd { .. }
            | ToReceiver::FileAbort { .. }
            | ToReceiver::Unchanged { .. }
            | ToReceiver::BlockZero { .. }
            | ToReceiver::BlockSegment { .. }
            | ToReceiver::BlockEnd { .. }
            | ToReceiver::Streams { .. }
            | ToReceiver::Join { .. }
            | ToReceiver::Keepalive => 0,
        }
    }

    fn foreign_version(body: &[u8]) -> Option<u32> {
        super::hello::foreign_version(body)
    }

    fn data(&self) -> Option<&Bytes> {
        match self {
            ToReceiver::Literal { data } => Some(data),
            _ => None,
        }
    }

    fn from_data(data: Bytes) -> Option<Self> {
        Some(ToReceiver::Literal { data })
    }
}

/// The heap an entry holds: its path and extended attributes, each
/// attribute with its two buffers' bookkeeping.
fn entry_len(entry: &Entry) -> usize {
    let xattrs: usize = entry
        .meta
        .xattrs
        .iter()
        .map(|x| x.name.len() + x.value.len() + 2 * std::mem::size_of::<Vec<u8>>())
        .sum();
    entry.path.as_bytes().len() + xattrs
}

impl Message for ToSender {
    fn payload_len(&self) -> usize {
        match self {
            ToSender::Welcome { features, .. } => features.payload_len(),
            ToSender::BaseHashes { hashes, .. } => hashes.len() * 16,
            ToSender::Signature { signature, .. } => signature.len(),
            ToSender::FileFailed { message, .. } | ToSender::Error { message, .. } => message.len(),
            ToSender::Change { path, change } => path.as_bytes().len() + change.payload_len(),
            ToSender::BlockNeed { signature, .. } => signature.len(),
            ToSender::Have { .. }
            | ToSender::Need { .. }
            | ToSender::SignaturesEnd { .. }
            | ToSender::FileDone { .. }
            | ToSender::Finished { .. }
            | ToSender::Keepalive
            | ToSender::BlockCompared { .. }
            | ToSender::Probe => 0,
        }
    }

    fn foreign_version(body: &[u8]) -> Option<u32> {
        super::hello::foreign_version(body)
    }
}

/// Receiver to sender.
#[derive(Debug, Serialize, Deserialize)]
///
/// New variants go last: a peer of another version must still decode
/// `Error` at the index it knows, to show why it was refused.
pub enum ToSender {
    /// The answer to Hello: this receiver's version and what it can do.
    /// Variant 0 with `protocol` first, like Hello.
    Welcome {
        protocol: u32,
        features: Features,
    },
    /// The receiver's copy of `id` is current; nothing to send.
    Have {
        id: FileId,
    },
    /// Send `id`. With `base`, the receiver has an older copy: its segment
    /// hashes follow in `BaseHashes` messages.
    Need {
        id: FileId,
        base: Option<BaseInfo>,
    },
    /// Segment hashes of the receiver's copy, `first` onwards.
    BaseHashes {
        id: FileId,
        first: u32,
        hashes: Vec<SegmentHash>,
    },
    /// The rsync signature of one segment of the receiver's copy.
    Signature {
        id: FileId,
        segment: u32,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// All requested signatures for `id` have been sent.
    SignaturesEnd {
        id: FileId,
    },
    /// `id` is in place and verified.
    FileDone {
        id: FileId,
    },
    /// `id` could not be written; the old copy (if any) is untouched.
    FileFailed {
        id: FileId,
        message: String,
    },
    /// The session failed; `retryable` says whether reconnecting may help.
    Error {
        message: String,
        retryable: bool,
    },
    /// Everything is in place.
    Finished {
        stats: ReceiverStats,
    },
    Keepalive,
    /// Another connection wants this volume: answer with any message at
    /// once (a keepalive will do) to show this session's sender is alive.
    Probe,
    /// In a dry run: what a sync would do to `path`, one message per
    /// change, in walk order (deletions where the walk passes them).
    Change {
        path: RelPath,
        change: Change,
    },
    /// Block copies: send `segment`, as a delta against this rsync
    /// signature of the receiver's segment, or literally when `signature`
    /// is empty (the receiver's segment is zeros: nothing to diff against).
    BlockNeed {
        segment: u32,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Block copies: how far the receiver has compared, and what it found;
    /// the sender's scan keeps within a window of `tally.compared`.
    BlockCompared {
        tally: BlockTally,
    },
}

/// A block copy's source, as a sender announces it at Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockGeometry {
    /// Bytes to copy: the source device's (or image's) size.
    pub size: u64,
    /// Bytes per segment, a [`crate::delta::is_valid_segment_size`].
    pub segment_size: u32,
}

impl BlockGeometry {
    pub fn segment_count(&self) -> u64 {
        self.size.div_ceil(u64::from(self.segment_size))
    }

    /// Offset and length of segment `index` (the last may be short).
    pub fn segment(&self, index: u64) -> (u64, usize) {
        let start = index * u64::from(self.segment_size);
        let len = self
            .size
            .saturating_sub(start)
            .min(u64::from(self.segment_size));
        (start, len as usize)
    }
}

/// What a block copy's receiver has done so far; all counts are totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTally {
    /// Segments compared (`0..compared`).
    pub compared: u32,
    /// Segments found equal, and their bytes.
    pub matched: u64,
    pub matched_bytes: u64,
    /// Segments the receiver asked for and has written and verified.
    pub written: u64,
    /// Segments zeros in the source but not in the destination, which
    /// the receiver zeroed (or discarded) itself.
    pub zeroed: u64,
}

/// What an entry is, as a dry run names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryType {
    Dir,
    File,
    Symlink,
    /// A device, FIFO or socket (or, on the destination, anything else).
    Special,
}

/// One change a sync would make to one path ([`ToSender::Change`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The destination lacks it; `size` for a file.
    Create { kind: EntryType, size: u64 },
    /// The source lacks it (a directory goes with all it holds).
    Delete { kind: EntryType },
    /// A file's data is sent: its size or mtime differ.
    Content { old_size: u64, new_size: u64 },
    /// The destination has another type of entry under the name.
    Replace { old: EntryType, new: EntryType },
    /// A symlink gets another target, or a device another number.
    Target,
    /// Only metadata is set.
    Meta(MetaChange),
    /// The name becomes another name (hard link) for `target`.
    Link { target: RelPath },
    /// The destination has the file hard-linked with another listed file
    /// that the source keeps apart: it gets an inode of its own.
    Unlink,
}

impl Change {
    fn payload_len(&self) -> usize {
        match self {
            Change::Link { target } => target.as_bytes().len(),
            _ => 0,
        }
    }
}

/// Which metadata differ: `(destination, source)` pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaChange {
    pub mode: Option<(u32, u32)>,
    /// uid and gid; compared only by a receiver that can set them (root).
    pub owner: Option<((u32, u32), (u32, u32))>,
    pub mtime: bool,
}

impl MetaChange {
    pub fn is_empty(&self) -> bool {
        *self == MetaChange::default()
    }
}

/// What the receiver knows about its copy of a changed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseInfo {
    pub len: u64,
    pub segment_size: u32,
}

impl BaseInfo {
    pub fn segment_count(&self) -> u32 {
        self.len.div_ceil(u64::from(self.segment_size)) as u32
    }
}

/// Totals only the receiver can count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverStats {
    pub deleted: u64,
    pub files_written: u64,
    pub bytes_written: u64,
}
