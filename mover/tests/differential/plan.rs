//! What one differential case does, as plain data that proptest generates
//! and shrinks: operations that build a source tree, operations that mutate
//! it between the two syncs, and where (if at all) the connection is cut.
//!
//! Operations never name a path: they pick among the entries that exist
//! when they run (an index taken modulo the count), so any subsequence of a
//! plan is still a valid plan and shrinking never produces a broken case.

use proptest::collection::vec;
use proptest::prelude::*;

/// An index into the entries of the kind an operation wants (all entries,
/// directories, regular files) as they are when it runs, modulo their count.
#[derive(Clone, Copy, Debug)]
pub struct Pick(pub u16);

/// A name for a new entry, resolved in its parent directory when it runs.
#[derive(Clone, Debug)]
pub enum Name {
    /// One of [`FIXED_NAMES`]: the mover's own names and prefixes of
    /// each other.
    Fixed(usize),
    /// Arbitrary bytes (no NUL, no `/`): bytes sorting below `/`, non-UTF-8.
    Bytes(Vec<u8>),
    /// A sibling's name with a suffix, so the two share a prefix
    /// (`data`, `data-old`, `data.bak`, `data\x01`).
    SiblingWith(Pick, Vec<u8>),
    /// One of the mover's own prefixes in front of a sibling's name
    /// (`.mover-partial.data` beside `data`).
    MoverPrefixOf(usize, Pick),
    /// The longest name a filesystem takes, made of one byte.
    Longest(u8),
}

/// Names that collide with what the mover uses itself or with each other.
pub const FIXED_NAMES: &[&str] = &[
    ".mover-work",
    ".mover-work.1",
    ".mover-work.3",
    ".mover-work.64",
    ".mover-work.65",
    ".mover-work.x",
    ".mover-tmp.x",
    ".mover-tmp.",
    ".mover-partial.",
    ".mover-partial.data",
    ".mover-",
    "data",
    "data-old",
    "data.bak",
    "data!",
    "data0",
    "dat",
    "f",
];

/// The mover's own prefixes, for [`Name::MoverPrefixOf`].
pub const MOVER_PREFIXES: &[&str] = &[".mover-partial.", ".mover-tmp.", ".mover-work."];

/// File content: `len` bytes from `seed`; a sparse file has data in some
/// 64 KiB blocks only and holes elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Content {
    pub len: u32,
    pub seed: u64,
    pub sparse: bool,
}

/// A POSIX ACL: named users and groups with their permissions, beside the
/// owner/group/other entries the kernel keeps in the mode.
#[derive(Clone, Debug)]
pub struct Acl {
    pub users: Vec<(u32, u8)>,
    pub groups: Vec<(u32, u8)>,
    pub mask: u8,
}

/// What a new entry is.
#[derive(Clone, Debug)]
pub enum Node {
    File(Content),
    Dir,
    /// Nested directories this deep, with a file at the bottom.
    Chain(u8),
    Symlink(Vec<u8>),
    Fifo,
    /// A character device (a FIFO when not root).
    Device(u32, u32),
    /// Another name for an existing regular file.
    HardLink(Pick),
}

/// One change to the source tree.
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        parent: Pick,
        name: Name,
        node: Node,
    },
    Remove(Pick),
    /// Moves an entry under another directory (or the same) with a new name.
    Rename {
        from: Pick,
        parent: Pick,
        name: Name,
    },
    /// The entry becomes something else under the same name: a type change
    /// (or a link group formed or split).
    Replace {
        at: Pick,
        node: Node,
    },
    /// Writes `len` bytes at `offset` (modulo the size, so it may extend the
    /// file) and gives the file a new mtime.
    Rewrite {
        file: Pick,
        offset: u32,
        len: u32,
        seed: u64,
    },
    Truncate {
        file: Pick,
        len: u32,
    },
    /// Punches a hole (4 KiB aligned) and gives the file a new mtime.
    PunchHole {
        file: Pick,
        offset: u32,
        len: u32,
    },
    /// Writes every byte back, filling the holes with allocated zeros.
    Densify(Pick),
    /// Gives a name its own copy of its content, leaving its link group.
    Split(Pick),
    Chmod(Pick, u16),
    Chown(Pick, u32, u32),
    Touch(Pick, i64, u32),
    SetXattr(Pick, usize, Vec<u8>),
    RemoveXattr(Pick, usize),
    /// Sets the access ACL, or on a directory with `default` its default ACL.
    SetAcl {
        at: Pick,
        acl: Acl,
        default: bool,
    },
    RemoveAcl {
        at: Pick,
        default: bool,
    },
}

/// `user.*` attribute names ([`Op::SetXattr`] and [`Op::RemoveXattr`]).
pub const XATTR_NAMES: &[&str] = &["user.a", "user.mover", "user.\u{1}low", "user.checksum"];

/// Where the transfer of one sync is cut: after a share (per mille) of an
/// estimate of the bytes the sender sends, then `mover send --retries`.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    pub on_first_sync: bool,
    pub permille: u16,
}

/// A whole case: build, sync, check, mutate, sync (perhaps cut), check.
#[derive(Clone, Debug)]
pub struct Plan {
    pub build: Vec<Op>,
    pub mutate: Vec<Op>,
    pub cut: Option<Cut>,
}

fn pick() -> impl Strategy<Value = Pick> {
    any::<u16>().prop_map(Pick)
}

fn name_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            3 => 0x01u8..=0x2e,
            3 => 0x30u8..=0x7e,
            1 => 0x80u8..=0xff,
        ],
        1..=max,
    )
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        4 => (0..FIXED_NAMES.len()).prop_map(Name::Fixed),
        4 => name_bytes(10).prop_map(Name::Bytes),
        3 => (pick(), prop_oneof![
            Just(b"-old".to_vec()),
            Just(b".bak".to_vec()),
            name_bytes(3),
        ])
            .prop_map(|(of, suffix)| Name::SiblingWith(of, suffix)),
        2 => (0..MOVER_PREFIXES.len(), pick()).prop_map(|(p, of)| Name::MoverPrefixOf(p, of)),
        1 => any::<u8>().prop_map(Name::Longest),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    let len = prop_oneof![
        2 => Just(0u32),
        6 => 1u32..4096,
        5 => 4096u32..300 * 1024,
        1 => 2 * 1024 * 1024u32..3 * 1024 * 1024,
    ];
    (len, any::<u64>(), prop::bool::weighted(0.3)).prop_map(|(len, seed, sparse)| Content {
        len,
        seed,
        sparse,
    })
}

fn symlink_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data".to_vec()),
        Just(b"../data-old".to_vec()),
        Just(b"/etc/passwd".to_vec()),
        Just(b".mover-work".to_vec()),
        Just(b"..".to_vec()),
        vec(1u8..=255, 1..40),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        8 => content().prop_map(Node::File),
        3 => Just(Node::Dir),
        1 => (1u8..24).prop_map(Node::Chain),
        2 => symlink_target().prop_map(Node::Symlink),
        1 => Just(Node::Fifo),
        1 => (0u32..300, 0u32..300).prop_map(|(ma, mi)| Node::Device(ma, mi)),
        3 => pick().prop_map(Node::HardLink),
    ]
}

fn acl() -> impl Strategy<Value = Acl> {
    let ids = || vec((0u32..70_000, 0u8..8), 0..3);
    (ids(), ids(), 0u8..8).prop_map(|(users, groups, mask)| Acl {
        users,
        groups,
        mask,
    })
}

/// Seconds since the epoch for an mtime: mostly recent, sometimes before
/// 1970 or far ahead.
fn seconds() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 1_000_000_000i64..1_900_000_000,
        1 => -2_000_000_000i64..0,
        1 => 4_000_000_000i64..8_000_000_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (pick(), name(), node()).prop_map(|(parent, name, node)| Op::Create { parent, name, node }),
        2 => pick().prop_map(Op::Remove),
        2 => (pick(), pick(), name()).prop_map(|(from, parent, name)| Op::Rename { from, parent, name }),
        3 => (pick(), node()).prop_map(|(at, node)| Op::Replace { at, node }),
        2 => (pick(), any::<u32>(), 1u32..70_000, any::<u64>())
            .prop_map(|(file, offset, len, seed)| Op::Rewrite { file, offset, len, seed }),
        1 => (pick(), 0u32..400_000).prop_map(|(file, len)| Op::Truncate { file, len }),
        1 => (pick(), any::<u32>(), 4096u32..200_000)
            .prop_map(|(file, offset, len)| Op::PunchHole { file, offset, len }),
        1 => pick().prop_map(Op::Densify),
        2 => pick().prop_map(Op::Split),
        2 => (pick(), 0u16..0o10000).prop_map(|(at, mode)| Op::Chmod(at, mode)),
        2 => (pick(), 0u32..70_000, 0u32..70_000).prop_map(|(at, u, g)| Op::Chown(at, u, g)),
        2 => (pick(), seconds(), 0u32..1_000_000_000).prop_map(|(at, s, ns)| Op::Touch(at, s, ns)),
        2 => (pick(), 0..XATTR_NAMES.len(), vec(any::<u8>(), 0..200))
            .prop_map(|(at, n, v)| Op::SetXattr(at, n, v)),
        1 => (pick(), 0..XATTR_NAMES.len()).prop_map(|(at, n)| Op::RemoveXattr(at, n)),
        1 => (pick(), acl(), any::<bool>()).prop_map(|(at, acl, default)| Op::SetAcl { at, acl, default }),
        1 => (pick(), any::<bool>()).prop_map(|(at, default)| Op::RemoveAcl { at, default }),
    ]
}

/// A case: a few dozen entries built, up to a couple of dozen changes, and
/// in about a third of the cases a cut connection.
pub fn plan() -> impl Strategy<Value = Plan> {
    let cut = (any::<bool>(), 0u16..1000).prop_map(|(on_first_sync, permille)| Cut {
        on_first_sync,
        permille,
    });
    (
        vec(op(), 1..40),
        vec(op(), 0..24),
        prop::option::weighted(0.3, cut),
    )
        .prop_map(|(build, mutate, cut)| Plan { build, mutate, cut })
}
