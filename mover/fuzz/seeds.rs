//! The generated part of the seed corpus: valid frames of every message
//! kind, entries of every kind, and real deltas, all made with `mover`'s own
//! encoders so they follow any change of the wire format.
//!
//! `MOVER_WRITE_FUZZ_SEEDS=1 cargo test -p mover --test fuzz_corpus
//! generated_seeds_pass` writes them to `fuzz/corpus/<target>/seed-<name>`;
//! the regular test suite checks that they still pass every check. Inputs
//! the fuzzer found live beside them under content-hash names.

use crate::checks::{self, Edit, Fill};
use bytes::{Bytes, BytesMut};
use mover::delta;
use mover::entry::{Entry, Kind, Meta, RelPath, SpecialKind, Xattr};
use mover::wire::frame::{self, Message};
use mover::wire::hello::Features;
use mover::wire::message::{
    AbortReason, BaseInfo, ReceiverStats, SyncOptions, ToReceiver, ToSender, XattrPolicy,
};
use mover::wire::PROTOCOL_VERSION;

/// One seed: target, name (unique within the target), input.
pub type Seed = (&'static str, String, Vec<u8>);

pub fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    frame_seeds(&mut seeds);
    entry_seeds(&mut seeds);
    delta_seeds(&mut seeds);
    seeds
}

fn frame_of<M: Message>(msg: &M) -> Vec<u8> {
    let mut buf = BytesMut::new();
    if let Some(data) = frame::encode(msg, &mut buf).expect("seed message encodes") {
        buf.extend_from_slice(data);
    }
    buf.to_vec()
}

fn path(p: &[u8]) -> RelPath {
    RelPath::parse(p).expect("seed path")
}

fn meta(xattrs: Vec<Xattr>) -> Meta {
    Meta {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123_456_789,
        xattrs,
    }
}

/// Entries of every kind, valid and (for `validate`) invalid.
fn entries() -> Vec<(&'static str, Entry)> {
    let entry = |p: &[u8], kind: Kind| Entry {
        path: path(p),
        kind,
        meta: meta(Vec::new()),
    };
    let acl = Xattr {
        name: b"system.posix_acl_access".to_vec(),
        value: vec![2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
    };
    let mut with_xattrs = entry(
        b"dir/file",
        Kind::File {
            size: 12,
            sparse: false,
        },
    );
    with_xattrs.meta = meta(vec![
        acl,
        Xattr {
            name: b"user.comment".to_vec(),
            value: b"hello".to_vec(),
        },
    ]);
    let mut extremes = entry(
        b"max",
        Kind::File {
            size: i64::MAX as u64,
            sparse: true,
        },
    );
    extremes.meta = Meta {
        mode: 0o7777,
        uid: u32::MAX,
        gid: u32::MAX,
        mtime_sec: i64::MIN,
        mtime_nsec: 999_999_999,
        xattrs: Vec::new(),
    };
    let long_name = vec![b'n'; 255];
    let mut deep = Vec::new();
    while deep.len() + 256 <= 4096 {
        if !deep.is_empty() {
            deep.push(b'/');
        }
        deep.extend_from_slice(&long_name);
    }
    vec![
        ("root", entry(b"", Kind::Dir)),
        ("dir", entry(b"dir", Kind::Dir)),
        (
            "file",
            entry(
                b"dir/file.txt",
                Kind::File {
                    size: 4096,
                    sparse: false,
                },
            ),
        ),
        (
            "sparse",
            entry(
                b"disk.img",
                Kind::File {
                    size: 1 << 40,
                    sparse: true,
                },
            ),
        ),
        (
            "symlink",
            entry(
                b"link",
                Kind::Symlink {
                    target: b"../outside/target".to_vec(),
                },
            ),
        ),
        (
            "hardlink",
            entry(
                b"dir/alias",
                Kind::HardLink {
                    target: path(b"dir/file.txt"),
                },
            ),
        ),
        (
            "fifo",
            entry(
                b"fifo",
                Kind::Special {
                    kind: SpecialKind::Fifo,
                    rdev: 0,
                },
            ),
        ),
        (
            "socket",
            entry(
                b"sock",
                Kind::Special {
                    kind: SpecialKind::Socket,
                    rdev: 0,
                },
            ),
        ),
        (
            "chardev",
            entry(
                b"dev/null",
                Kind::Special {
                    kind: SpecialKind::CharDevice,
                    rdev: 0x103,
                },
            ),
        ),
        (
            "blockdev",
            entry(
                b"dev/sda",
                Kind::Special {
                    kind: SpecialKind::BlockDevice,
                    rdev: 0x800,
                },
            ),
        ),
        ("xattrs", with_xattrs),
        ("extremes", extremes),
        ("non-utf8", entry(b"caf\xe9/\xff\xfe name", Kind::Dir)),
        ("long-name", entry(&long_name, Kind::Dir)),
        ("deep-path", entry(&deep, Kind::Dir)),
        // Decodable but refused by `validate`.
        (
            "invalid-root-file",
            entry(
                b"",
                Kind::File {
                    size: 1,
                    sparse: false,
                },
            ),
        ),
        (
            "invalid-self-link",
            entry(b"a", Kind::HardLink { target: path(b"a") }),
        ),
        (
            "invalid-empty-symlink",
            entry(b"a", Kind::Symlink { target: Vec::new() }),
        ),
        (
            "invalid-huge-file",
            entry(
                b"a",
                Kind::File {
                    size: u64::MAX,
                    sparse: false,
                },
            ),
        ),
    ]
}

fn frame_seeds(seeds: &mut Vec<Seed>) {
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push(("frame_decoder", name.into(), bytes));
    let to_receiver: Vec<(&str, ToReceiver)> = vec![
        (
            "hello",
            ToReceiver::Hello {
                protocol: PROTOCOL_VERSION,
                volume: "data-0".into(),
                options: SyncOptions {
                    delete: true,
                    xattrs: XattrPolicy::User,
                    ..SyncOptions::default()
                },
                features: Features::ours(),
                reserved: vec![0, 3],
                block: None,
            },
        ),
        (
            "keep-contents",
            ToReceiver::KeepContents {
                dir: path(b"dir/unreadable"),
            },
        ),
        ("end-of-list", ToReceiver::EndOfList),
        (
            "signature-request",
            ToReceiver::SignatureRequest {
                id: 3,
                segments: vec![0, 1, 17, u32::MAX],
            },
        ),
        ("file-begin", ToReceiver::FileBegin { id: u64::MAX }),
        ("hole", ToReceiver::Hole { len: 1 << 30 }),
        (
            "copy-segments",
            ToReceiver::CopySegments {
                first: 2,
                count: 300,
            },
        ),
        (
            "patch-chunk",
            ToReceiver::PatchChunk {
                delta: vec![0x72, 0x73, 0x02, 0x36, 0x45, 0, 8, 0],
            },
        ),
        ("patch-end", ToReceiver::PatchEnd { segment: 5 }),
        ("file-end", ToReceiver::FileEnd { hash: [0xab; 32] }),
        (
            "file-abort-vanished",
            ToReceiver::FileAbort {
                reason: AbortReason::Vanished,
            },
        ),
        (
            "file-abort-unreadable",
            ToReceiver::FileAbort {
                reason: AbortReason::Unreadable("permission denied".into()),
            },
        ),
        ("keepalive", ToReceiver::Keepalive),
        (
            "literal",
            ToReceiver::Literal {
                data: Bytes::from_static(b"file contents\n"),
            },
        ),
        ("literal-empty", ToReceiver::Literal { data: Bytes::new() }),
    ];
    let mut stream = Vec::new();
    for (name, msg) in &to_receiver {
        let bytes = frame_of(msg);
        stream.extend_from_slice(&bytes);
        add(&format!("to-receiver-{name}"), bytes);
    }
    for (name, entry) in entries() {
        let bytes = frame_of(&ToReceiver::Entry { id: 1, entry });
        stream.extend_from_slice(&bytes);
        add(&format!("to-receiver-entry-{name}"), bytes);
    }
    add("to-receiver-stream", stream);

    let base = BaseInfo {
        len: 1 << 20,
        segment_size: delta::MIN_SEGMENT,
    };
    let to_sender: Vec<(&str, ToSender)> = vec![
        (
            "welcome",
            ToSender::Welcome {
                protocol: PROTOCOL_VERSION,
                features: Features::ours(),
            },
        ),
        ("have", ToSender::Have { id: 1 }),
        ("need", ToSender::Need { id: 2, base: None }),
        (
            "need-base",
            ToSender::Need {
                id: 2,
                base: Some(base),
            },
        ),
        (
            "base-hashes",
            ToSender::BaseHashes {
                id: 2,
                first: 0,
                hashes: vec![[1; 16], [2; 16], [3; 16]],
            },
        ),
        (
            "signature",
            ToSender::Signature {
                id: 2,
                segment: 1,
                signature: delta::signature(&[7; 5000], delta::MIN_SEGMENT),
            },
        ),
        ("signatures-end", ToSender::SignaturesEnd { id: 2 }),
        ("file-done", ToSender::FileDone { id: 2 }),
        (
            "file-failed",
            ToSender::FileFailed {
                id: 2,
                message: "no space left on device".into(),
            },
        ),
        (
            "error",
            ToSender::Error {
                message: "volume busy".into(),
                retryable: true,
            },
        ),
        (
            "finished",
            ToSender::Finished {
                stats: ReceiverStats {
                    deleted: 1,
                    files_written: 2,
                    bytes_written: 3,
                },
            },
        ),
        ("keepalive", ToSender::Keepalive),
    ];
    let mut stream = Vec::new();
    for (name, msg) in &to_sender {
        let bytes = frame_of(msg);
        stream.extend_from_slice(&bytes);
        add(&format!("to-sender-{name}"), bytes);
    }
    add("to-sender-stream", stream);

    // Malformed frames, each refused a different way.
    add("bad-too-large", vec![0xff, 0xff, 0xff, 0xff, 0]);
    add("bad-empty-frame", vec![0, 0, 0, 0]);
    add("bad-tag", vec![0, 0, 0, 2, 7, 0]);
    add("bad-truncated", vec![0, 0, 0, 9, 0, 1]);
    add(
        "bad-lying-inner-length",
        vec![0, 0, 0, 7, 0, 6, 0x80, 0x80, 0x80, 0x80, 0x20],
    );
    add("bad-variant", vec![0, 0, 0, 2, 0, 99]);
}

fn entry_seeds(seeds: &mut Vec<Seed>) {
    for (name, entry) in entries() {
        let bytes = postcard::to_allocvec(&entry).expect("seed entry encodes");
        seeds.push(("entry_decoder", format!("entry-{name}"), bytes));
    }
    for (name, raw) in [
        ("path-plain", &b"a/b/c"[..]),
        ("path-dotdot", b"a/../b"),
        ("path-absolute", b"/etc/passwd"),
        ("path-empty-component", b"a//b"),
        ("path-nul", b"a\0b"),
    ] {
        seeds.push(("entry_decoder", format!("raw-{name}"), raw.to_vec()));
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, mut state: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn delta_seeds(seeds: &mut Vec<Seed>) {
    let seg = delta::MIN_SEGMENT;
    let base = noise(20_000, 1);
    let mut changed = base.clone();
    changed[3000..3100].fill(0xaa);
    changed.splice(9000..9000, b"inserted text".iter().copied());
    changed.drain(15_000..15_500);
    let diff = |base: &[u8], new: &[u8]| {
        let mut patch = Vec::new();
        delta::diff(delta::signature(base, seg), new, &mut patch).unwrap();
        patch
    };
    let mut apply = |name: &str, base: &[u8], patch: &[u8], limit: usize| {
        let input = checks::delta_apply_input(base, patch, limit as u32);
        seeds.push(("delta_apply", name.into(), input));
    };
    let edited = diff(&base, &changed);
    apply("real-edit", &base, &edited, changed.len());
    apply("real-edit-short-limit", &base, &edited, changed.len() - 1);
    apply("real-identical", &base, &diff(&base, &base), base.len());
    apply(
        "real-all-new",
        &base[..100],
        &diff(&base[..100], &base),
        base.len(),
    );
    apply("real-empty-new", &base, &diff(&base, &[]), 0);
    apply("real-empty-base", &[], &diff(&[], &base[..300]), 300);
    // Every command encoding fast_rsync's diff never writes: long literal
    // lengths and every pair of copy offset/length widths.
    let small = b"0123456789abcdef".repeat(20);
    let mut hand = vec![0x72, 0x73, 0x02, 0x36];
    hand.extend_from_slice(&[0x41, 3, b'x', b'y', b'z']);
    hand.extend_from_slice(&[0x42, 0, 2, b'u', b'v']);
    hand.extend_from_slice(&[0x43, 0, 0, 0, 1, b'w']);
    hand.extend_from_slice(&[0x44, 0, 0, 0, 0, 0, 0, 0, 1, b'!']);
    for cmd in 0x45u8..=0x54 {
        let (offset_width, len_width) = (1 << ((cmd - 0x45) / 4), 1 << ((cmd - 0x45) % 4));
        hand.push(cmd);
        hand.extend_from_slice(&5u64.to_be_bytes()[8 - offset_width..]);
        hand.extend_from_slice(&3u64.to_be_bytes()[8 - len_width..]);
    }
    hand.push(0);
    apply("hand-all-commands", &small, &hand, 1000);
    let mut trailing = hand.clone();
    trailing.push(0);
    apply("bad-trailing-data", &small, &trailing, 1000);
    apply(
        "bad-copy-out-of-bounds",
        &small,
        &[0x72, 0x73, 0x02, 0x36, 0x45, 200, 200, 0],
        1000,
    );
    apply(
        "bad-copy-zero",
        &small,
        &[0x72, 0x73, 0x02, 0x36, 0x45, 0, 0, 0],
        1000,
    );
    apply(
        "bad-huge-literal",
        &small,
        &[
            0x72, 0x73, 0x02, 0x36, 0x44, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        1000,
    );
    apply("bad-magic", &small, &[0x72, 0x73, 0x01, 0x36, 0], 1000);

    let mut roundtrip =
        |name: &str, choice: u8, fill: Fill, len: u32, seed: u32, edits: &[Edit]| {
            let input = checks::delta_roundtrip_input(choice, fill, len, seed, edits);
            seeds.push(("delta_roundtrip", name.into(), input));
        };
    roundtrip("random-unchanged", 0, Fill::Random, 40_000, 7, &[]);
    roundtrip("random-unchanged-128k", 2, Fill::Random, 120_000, 8, &[]);
    let edits = [
        Edit::Copy {
            offset: 0,
            len: 10_000,
        },
        Edit::Literal(b"a change in the middle".to_vec()),
        Edit::Copy {
            offset: 12_000,
            len: 20_000,
        },
        Edit::Fill { byte: 0, len: 3000 },
        Edit::Copy {
            offset: 5000,
            len: 9000,
        },
    ];
    roundtrip("random-edited", 0, Fill::Random, 40_000, 9, &edits);
    roundtrip(
        "two-symbols-edited",
        1,
        Fill::TwoSymbols,
        40_000,
        10,
        &edits,
    );
    roundtrip("zeros-edited", 0, Fill::Zeros, 40_000, 0, &edits);
    roundtrip(
        "input-repeated",
        3,
        Fill::Input,
        30_000,
        0,
        &[
            Edit::Literal(b"abcdefgh".to_vec()),
            Edit::Repeat {
                back: 8,
                times: 200,
            },
            Edit::Copy {
                offset: 100,
                len: 4000,
            },
        ],
    );
    roundtrip(
        "empty-base",
        0,
        Fill::Random,
        0,
        1,
        &[Edit::Literal(b"all new".to_vec())],
    );

    let mut diff_seed = |name: &str, signature: &[u8], data: &[u8]| {
        let input = checks::delta_diff_input(signature, data);
        seeds.push(("delta_diff", name.into(), input));
    };
    let small_base = noise(6000, 3);
    let mut small_new = small_base.clone();
    small_new[100..120].fill(1);
    diff_seed(
        "real-signature",
        &delta::signature(&small_base, seg),
        &small_new,
    );
    diff_seed(
        "real-signature-empty-base",
        &delta::signature(&[], seg),
        b"data",
    );
    // Our signature's header: MD4 magic, block size, hash size.
    let mut tiny = vec![0x72, 0x73, 0x01, 0x36, 0, 0, 0, 4, 0, 0, 0, 8];
    let block = b"abcd";
    let own = delta::signature(block, seg);
    tiny.extend_from_slice(&own[12..]);
    diff_seed("tiny-blocks", &tiny, b"xxabcdabcdyy");
    // A real signature re-encoded with 4-byte hashes (the header allows 1
    // to 16): matching compares only that prefix of each block's MD4.
    let full = delta::signature(&small_base, seg);
    let mut short_hash = full[..12].to_vec();
    short_hash[8..12].copy_from_slice(&4u32.to_be_bytes());
    for block in full[12..].chunks(12) {
        short_hash.extend_from_slice(&block[..8]);
    }
    diff_seed("short-hash", &short_hash, &small_new);
    diff_seed(
        "bad-magic",
        &[0x72, 0x73, 0x01, 0x37, 0, 0, 8, 0, 0, 0, 0, 8],
        b"x",
    );
    diff_seed(
        "bad-hash-size",
        &[0x72, 0x73, 0x01, 0x36, 0, 0, 8, 0, 0, 0, 0, 17],
        b"x",
    );
}
