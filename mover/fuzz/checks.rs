//! The checks behind every fuzz target, shared by the `cargo fuzz` targets in
//! `fuzz_targets/` and by `tests/fuzz_corpus.rs`, which replays the committed
//! corpus under plain `cargo test` so that a regression fails CI.
//!
//! Each check takes arbitrary bytes and panics if, and only if, it finds a
//! bug: decoders must refuse garbage with an error (never a panic), and what
//! they accept must satisfy the invariants the rest of `mover` relies on.
//!
//! Included with `#[path = ...] mod checks;`, so it may only use crates that
//! both `mover` (for its integration tests) and `mover-fuzz` depend on.

#![allow(dead_code)]

use bytes::BytesMut;
use mover::delta;
use mover::entry::{
    Entry, Kind, RelPath, MAX_FILE_SIZE, MAX_NAME_LEN, MAX_PATH_LEN, MAX_XATTRS, MAX_XATTR_VALUE,
};
use mover::wire::frame::{self, Codec, Message, MAX_FRAME};
use mover::wire::message::{ToReceiver, ToSender};
use std::fmt::Debug;
use std::path::Component;
use tokio_util::codec::Decoder;

/// A check: panics on a bug, returns on anything else.
pub type Check = fn(&[u8]);

/// Every target: its name (the directory under `corpus/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decoder", frame_decoder),
    ("entry_decoder", entry_decoder),
    ("delta_apply", delta_apply),
    ("delta_roundtrip", delta_roundtrip),
    ("delta_diff", delta_diff),
];

// ---------------------------------------------------------------------------
// frame_decoder: both directions' frame codecs on arbitrary bytes.

/// Decodes `data` as a stream of frames in both directions.
pub fn frame_decoder(data: &[u8]) {
    decode_stream::<ToReceiver, ToSender>(data, check_to_receiver);
    decode_stream::<ToSender, ToReceiver>(data, check_to_sender);
}

/// What decoding a whole stream produced: the messages (as their `Debug`
/// text, since the message types have no `PartialEq`) and whether it ended
/// in an error.
#[derive(Debug, PartialEq)]
struct Decoded {
    messages: Vec<String>,
    error: bool,
}

fn decode_stream<In: Message + Debug, Out>(data: &[u8], check: fn(&In)) {
    // All at once, as when a large read brought in everything.
    let whole = {
        let mut codec = Codec::<In, Out>::default();
        let mut src = BytesMut::from(data);
        let mut decoded = Decoded {
            messages: Vec::new(),
            error: false,
        };
        loop {
            let before = src.len();
            match codec.decode(&mut src) {
                Ok(Some(msg)) => {
                    assert!(src.len() < before, "a message consumed no input");
                    check(&msg);
                    round_trip::<In, Out>(&msg);
                    decoded.messages.push(format!("{msg:?}"));
                }
                Ok(None) => {
                    assert_eq!(src.len(), before, "`None` consumed input");
                    assert!(!frame_complete(&src), "`None` with a whole frame buffered");
                    break;
                }
                Err(e) => {
                    let _ = e.to_string();
                    decoded.error = true;
                    break;
                }
            }
        }
        // What a reader does at end of stream: leftover bytes are an error.
        if !decoded.error {
            let leftover = !src.is_empty();
            match codec.decode_eof(&mut src) {
                Ok(None) => assert!(!leftover, "leftover bytes accepted at end of stream"),
                Ok(Some(_)) => panic!("decode_eof produced a message decode did not"),
                Err(_) => assert!(leftover, "decode_eof failed on an empty buffer"),
            }
        }
        decoded
    };

    // One byte at a time, as when the network delivers a trickle: the same
    // messages must come out, and the same error (if any) at the end.
    let mut codec = Codec::<In, Out>::default();
    let mut src = BytesMut::new();
    let mut trickle = Decoded {
        messages: Vec::new(),
        error: false,
    };
    'feed: for &byte in data {
        src.extend_from_slice(&[byte]);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(msg)) => trickle.messages.push(format!("{msg:?}")),
                Ok(None) => break,
                Err(_) => {
                    trickle.error = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(whole, trickle, "decoding depends on how the input is split");
}

/// True if `src` starts with a frame whose whole body is present.
fn frame_complete(src: &[u8]) -> bool {
    src.len() >= 4 && src.len() - 4 >= u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
}

/// The frame `encode` produces for `msg`, data included.
fn encode_frame<M: Message + Debug>(msg: &M) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let data = frame::encode(msg, &mut buf)
        .unwrap_or_else(|e| panic!("decoded message does not re-encode: {e}: {msg:?}"));
    if let Some(data) = data {
        buf.extend_from_slice(data);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    assert_eq!(len, buf.len() - 4, "length prefix does not match the frame");
    assert!(len <= MAX_FRAME);
    buf.to_vec()
}

/// A decoded message re-encodes to a frame that decodes to the same message
/// and re-encodes to the same bytes.
fn round_trip<In: Message + Debug, Out>(msg: &In) {
    let bytes = encode_frame(msg);
    let mut src = BytesMut::from(&bytes[..]);
    let again = Codec::<In, Out>::default()
        .decode(&mut src)
        .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}: {msg:?}"))
        .expect("re-encoded frame is incomplete");
    assert!(src.is_empty(), "re-encoded frame has trailing bytes");
    assert_eq!(format!("{again:?}"), format!("{msg:?}"));
    assert_eq!(encode_frame(&again), bytes);
}

fn check_to_receiver(msg: &ToReceiver) {
    match msg {
        ToReceiver::Entry { entry, .. } => check_entry(entry),
        ToReceiver::KeepContents { dir } => check_rel_path(dir),
        ToReceiver::Literal { data } => assert!(data.len() < MAX_FRAME),
        ToReceiver::PatchChunk { delta } => assert!(delta.len() < MAX_FRAME),
        ToReceiver::Compressed { data, .. } => assert!(data.len() < MAX_FRAME),
        _ => {}
    }
}

fn check_to_sender(msg: &ToSender) {
    if let ToSender::Signature { signature, .. } = msg {
        assert!(signature.len() < MAX_FRAME);
    }
}

// ---------------------------------------------------------------------------
// entry_decoder: file-list entries and paths from arbitrary bytes.

/// Decodes `data` as a postcard `Entry` (and, separately, as a raw path).
pub fn entry_decoder(data: &[u8]) {
    if let Ok(path) = RelPath::parse(data) {
        assert_eq!(path.as_bytes(), data);
        check_rel_path(&path);
    }
    let Ok((entry, _rest)) = postcard::take_from_bytes::<Entry>(data) else {
        return;
    };
    check_entry(&entry);
    // Also as the receiver gets it: inside a frame.
    let msg = ToReceiver::Entry { id: 7, entry };
    round_trip::<ToReceiver, ToSender>(&msg);
}

/// What holds for every entry the decoder accepts, valid or not.
fn check_entry(entry: &Entry) {
    check_rel_path(&entry.path);
    if let Kind::HardLink { target } = &entry.kind {
        check_rel_path(target);
    }
    let bytes = postcard::to_allocvec(entry).expect("entry encodes");
    let again: Entry = postcard::from_bytes(&bytes).expect("re-encoded entry decodes");
    assert_eq!(&again, entry);
    assert_eq!(postcard::to_allocvec(&again).unwrap(), bytes);
    match entry.validate() {
        Ok(()) => check_valid_entry(entry),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// What `Entry::validate` promises the receiver.
fn check_valid_entry(entry: &Entry) {
    if entry.path.is_root() {
        assert_eq!(entry.kind, Kind::Dir, "root accepted as a non-directory");
    }
    match &entry.kind {
        Kind::Symlink { target } => {
            assert!(!target.is_empty() && target.len() <= MAX_PATH_LEN && !target.contains(&0));
        }
        Kind::HardLink { target } => {
            assert!(!target.is_root(), "hard link to the root accepted");
            assert_ne!(target, &entry.path, "hard link to itself accepted");
        }
        Kind::File { size, .. } => assert!(*size <= MAX_FILE_SIZE),
        Kind::Dir | Kind::Special { .. } => {}
    }
    assert!(entry.meta.xattrs.len() <= MAX_XATTRS);
    for x in &entry.meta.xattrs {
        assert!(!x.name.is_empty() && x.name.len() <= MAX_NAME_LEN && !x.name.contains(&0));
        assert!(x.value.len() <= MAX_XATTR_VALUE);
    }
}

/// What every `RelPath` guarantees, however it was made: it names nothing
/// outside the volume, as bytes and as an OS path.
fn check_rel_path(path: &RelPath) {
    let bytes = path.as_bytes();
    assert!(bytes.len() <= MAX_PATH_LEN, "path of {} bytes", bytes.len());
    assert_eq!(
        RelPath::parse(bytes).as_ref(),
        Ok(path),
        "path does not re-parse"
    );
    let os = path.to_path();
    assert!(os.is_relative() && !os.has_root(), "absolute path {path:?}");
    if path.is_root() {
        assert!(bytes.is_empty());
        assert_eq!(path.components().count(), 0);
        assert!(path.split_last().is_none());
        assert_eq!(os.components().count(), 0);
        return;
    }
    assert_ne!(bytes[0], b'/', "absolute path {path:?}");
    assert!(!bytes.contains(&0), "NUL in {path:?}");
    let names: Vec<&[u8]> = bytes.split(|&b| b == b'/').collect();
    for name in &names {
        assert!(!name.is_empty(), "empty component in {path:?}");
        assert!(*name != b"." && *name != b"..", "dot component in {path:?}");
        assert!(name.len() <= MAX_NAME_LEN, "long component in {path:?}");
    }
    assert!(path.components().eq(names.iter().copied()));
    let os_names: Vec<_> = os.components().collect();
    assert_eq!(os_names.len(), names.len(), "{path:?} as an OS path");
    for c in os_names {
        assert!(matches!(c, Component::Normal(_)), "{c:?} in {path:?}");
    }
    let (parent, name) = path.split_last().expect("non-root path splits");
    assert_eq!(name, *names.last().unwrap());
    assert_eq!(&parent.join(name).expect("split parts rejoin"), path);
    assert!(path.starts_with(&parent) && path.starts_with(path));
    assert!(path.starts_with(&RelPath::root()));
    assert!(
        !parent.starts_with(path),
        "{parent:?} starts with its child"
    );
    let encoded = postcard::to_allocvec(path).unwrap();
    assert_eq!(&postcard::from_bytes::<RelPath>(&encoded).unwrap(), path);
}

// ---------------------------------------------------------------------------
// delta_apply: a peer's delta applied to a base segment, with a limit.

/// Largest output limit the target tries: more than any real segment.
const MAX_LIMIT: usize = 16 << 20;

/// The `delta_apply` input for these parts (inverse of [`delta_apply`]'s
/// parsing): limit and base length as little-endian `u32`s, base, delta.
pub fn delta_apply_input(base: &[u8], delta: &[u8], limit: u32) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + base.len() + delta.len());
    input.extend_from_slice(&limit.to_le_bytes());
    input.extend_from_slice(&(base.len() as u32).to_le_bytes());
    input.extend_from_slice(base);
    input.extend_from_slice(delta);
    input
}

/// Splits `data` into (limit, base, delta).
fn split_delta_apply(data: &[u8]) -> (usize, &[u8], &[u8]) {
    let mut r = Reader(data);
    let limit = r.u32() as usize % (MAX_LIMIT + 1);
    let base_len = r.u32() as usize;
    let base = r.take(base_len);
    (limit, base, r.0)
}

pub fn delta_apply(data: &[u8]) {
    let (limit, base, delta) = split_delta_apply(data);
    let mut out = Vec::new();
    let result = delta::apply(base, delta, &mut out, limit);
    assert!(
        out.len() <= limit,
        "wrote {} bytes past limit {limit}",
        out.len()
    );
    let expected = reference_apply(base, delta, limit);
    match result {
        Ok(()) => {
            assert_eq!(expected.as_ref(), Some(&out), "apply accepted a bad delta");
            // Exactly enough room still works; one byte less does not.
            let mut again = Vec::new();
            delta::apply(base, delta, &mut again, out.len()).expect("apply at exact limit");
            assert_eq!(again, out);
            if let Some(less) = out.len().checked_sub(1) {
                let mut short = Vec::new();
                assert!(delta::apply(base, delta, &mut short, less).is_err());
                assert!(short.len() <= less);
            }
        }
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(expected, None, "apply refused a good delta: {e}");
        }
    }
}

/// An independent reading of the librsync delta format: magic, then
/// literal and copy commands up to an end command, then nothing.
fn reference_apply(base: &[u8], delta: &[u8], limit: usize) -> Option<Vec<u8>> {
    fn be(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b))
    }
    let mut r = Reader(delta);
    if r.0.len() < 4 || be(r.take(4)) != 0x7273_0236 {
        return None;
    }
    let mut out = Vec::new();
    loop {
        let cmd = *r.0.first()?;
        r.take(1);
        let piece = match cmd {
            0 => break,
            1..=0x40 => r.exactly(usize::from(cmd))?,
            0x41..=0x44 => {
                let n = be(r.exactly(1 << (cmd - 0x41))?);
                r.exactly(usize::try_from(n).ok()?)?
            }
            0x45..=0x54 => {
                let offset = be(r.exactly(1 << ((cmd - 0x45) / 4))?);
                let len = be(r.exactly(1 << ((cmd - 0x45) % 4))?);
                if len == 0 {
                    return None;
                }
                let start = usize::try_from(offset).ok()?;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                base.get(start..end)?
            }
            _ => return None,
        };
        if out.len() + piece.len() > limit {
            return None;
        }
        out.extend_from_slice(piece);
    }
    r.0.is_empty().then_some(out)
}

// ---------------------------------------------------------------------------
// delta_roundtrip: our own signature, diff and apply reconstruct the data.

/// Segment sizes the round trip picks from (the smaller, faster ones).
const SEGMENT_SIZES: [u32; 4] = [
    delta::MIN_SEGMENT,
    delta::MIN_SEGMENT,
    128 * 1024,
    256 * 1024,
];

/// How the round-trip target fills its base.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// The input's edit bytes, cycled.
    Input = 0,
    /// Pseudo-random bytes: every block distinct.
    Random = 1,
    /// Pseudo-random `a`s and `b`s: many equal blocks and rolling-sum
    /// collisions.
    TwoSymbols = 2,
    Zeros = 3,
}

/// One edit building the new data.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Copy `len` bytes of the base from `offset` (both wrap to the base).
    Copy {
        offset: u32,
        len: u16,
    },
    Literal(Vec<u8>),
    Fill {
        byte: u8,
        len: u16,
    },
    /// Repeat the last `back` bytes written `times` times (run-length).
    Repeat {
        back: u16,
        times: u8,
    },
}

/// The `delta_roundtrip` input for these parameters (inverse of
/// [`delta_roundtrip`]'s parsing). No edits means "new = base".
pub fn delta_roundtrip_input(
    segment_choice: u8,
    fill: Fill,
    base_len: u32,
    seed: u32,
    edits: &[Edit],
) -> Vec<u8> {
    let mut input = vec![(segment_choice & 3) | (fill as u8) << 2];
    input.extend_from_slice(&base_len.to_le_bytes()[..3]);
    input.extend_from_slice(&seed.to_le_bytes());
    for edit in edits {
        match edit {
            Edit::Copy { offset, len } => {
                input.push(0);
                input.extend_from_slice(&offset.to_le_bytes());
                input.extend_from_slice(&len.to_le_bytes());
            }
            Edit::Literal(bytes) => {
                for chunk in bytes.chunks(255) {
                    input.push(1);
                    input.push(chunk.len() as u8);
                    input.extend_from_slice(chunk);
                }
            }
            Edit::Fill { byte, len } => {
                input.push(2);
                input.push(*byte);
                input.extend_from_slice(&len.to_le_bytes());
            }
            Edit::Repeat { back, times } => {
                input.push(3);
                input.extend_from_slice(&back.to_le_bytes());
                input.push(*times);
            }
        }
    }
    input
}

/// Builds (segment size, fill, base, new) from `data`.
fn build_roundtrip(data: &[u8]) -> (u32, u8, Vec<u8>, Vec<u8>) {
    let mut r = Reader(data);
    let flags = r.u8();
    let segment_size = SEGMENT_SIZES[usize::from(flags & 3)];
    let fill = (flags >> 2) & 3;
    // Like the real thing, base and new are at most one segment long.
    let max = segment_size as usize;
    let base_len = (r.u24() as usize) % (max + 1);
    let mut rng = r.u32() | 1;
    let edits = r.0;
    let mut next = move || {
        // xorshift32: deterministic, and fast enough for 256 KiB per run.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let base: Vec<u8> = match fill {
        0 if !edits.is_empty() => edits.iter().copied().cycle().take(base_len).collect(),
        0 | 3 => vec![0; base_len],
        1 => (0..base_len).map(|_| next() as u8).collect(),
        _ => (0..base_len).map(|_| b'a' + (next() & 1) as u8).collect(),
    };
    if edits.is_empty() {
        return (segment_size, fill, base.clone(), base);
    }
    let mut new = Vec::new();
    let mut r = Reader(edits);
    while !r.0.is_empty() && new.len() < max {
        let room = max - new.len();
        match r.u8() % 4 {
            0 => {
                let offset = r.u32() as usize;
                let len = usize::from(r.u16());
                if !base.is_empty() {
                    let start = offset % base.len();
                    let end = (start + len).min(base.len());
                    new.extend_from_slice(&base[start..end][..(end - start).min(room)]);
                }
            }
            1 => {
                let len = usize::from(r.u8());
                let bytes = r.take(len);
                new.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            2 => {
                let byte = r.u8();
                let len = usize::from(r.u16()).min(room);
                new.resize(new.len() + len, byte);
            }
            _ => {
                let back = usize::from(r.u16()).min(new.len());
                let times = usize::from(r.u8());
                let start = new.len() - back;
                for _ in 0..times {
                    if back == 0 || new.len() + back > max {
                        break;
                    }
                    new.extend_from_within(start..start + back);
                }
            }
        }
    }
    (segment_size, fill, base, new)
}

pub fn delta_roundtrip(data: &[u8]) {
    let (segment_size, fill, base, new) = build_roundtrip(data);
    let signature = delta::signature(&base, segment_size);
    let mut patch = Vec::new();
    delta::diff(signature, &new, &mut patch).expect("diff against our own signature");
    let mut out = Vec::new();
    delta::apply(&base, &patch, &mut out, new.len()).expect("apply our own delta");
    assert!(out == new, "diff/apply round trip changed the data");
    if let Some(less) = new.len().checked_sub(1) {
        assert!(delta::apply(&base, &patch, &mut Vec::new(), less).is_err());
    }
    // Unchanged random data must cost next to nothing: one copy command,
    // plus the tail shorter than a block that only a literal can carry.
    let block = (segment_size / 32).max(2048) as usize;
    if fill == 1 && new == base {
        let bound = 4 + 17 + 9 + base.len() % block + 1;
        assert!(
            patch.len() <= bound,
            "{} byte delta for unchanged data",
            patch.len()
        );
    }
}

// ---------------------------------------------------------------------------
// delta_diff: the sender diffing against a signature the receiver sent.

/// The `delta_diff` input: signature length (little-endian `u32`),
/// signature, data.
pub fn delta_diff_input(signature: &[u8], data: &[u8]) -> Vec<u8> {
    let mut input = (signature.len() as u32).to_le_bytes().to_vec();
    input.extend_from_slice(signature);
    input.extend_from_slice(data);
    input
}

pub fn delta_diff(data: &[u8]) {
    let mut r = Reader(data);
    let len = r.u32() as usize;
    let signature = r.take(len).to_vec();
    let new = r.0;
    let header = signature.get(4..12).map(|h| {
        (
            u32::from_be_bytes(h[..4].try_into().unwrap()) as usize,
            u32::from_be_bytes(h[4..].try_into().unwrap()) as usize,
        )
    });
    let mut patch = Vec::new();
    if delta::diff(signature.clone(), new, &mut patch).is_err() {
        return;
    }
    // Whatever the signature said, the delta must be well-formed: against
    // a base as long as the signature's blocks it rebuilds `new`'s length,
    // and the literal bytes it carries are `new`'s own.
    let (block, hash_size) = header.expect("diff accepted a signature without a header");
    let blocks = (signature.len() - 12) / (4 + hash_size);
    let Some(base_len) = blocks.checked_mul(block).filter(|&n| n <= MAX_LIMIT) else {
        return;
    };
    let base = vec![0; base_len];
    let mut out = Vec::new();
    delta::apply(&base, &patch, &mut out, new.len()).expect("diff produced a bad delta");
    assert_eq!(out.len(), new.len());
    for (i, (&a, &b)) in out.iter().zip(new).enumerate() {
        assert!(a == b || a == 0, "byte {i} is neither new data nor copied");
    }
}

// ---------------------------------------------------------------------------

/// Reads fixed-size fields off the front of the input; past its end, every
/// field reads as zeros, so every input means something.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Up to `n` bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// Exactly `n` bytes, or `None` (consuming nothing) if fewer remain.
    fn exactly(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.0.len() >= n).then(|| self.take(n))
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0; N];
        let head = self.take(N);
        b[..head.len()].copy_from_slice(head);
        b
    }

    fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    fn u24(&mut self) -> u32 {
        let [a, b, c] = self.le();
        u32::from_le_bytes([a, b, c, 0])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }
}
