//! Messages a raw test peer sends, framed by the library's own codec so
//! they follow any change of the wire format.

use bytes::BytesMut;
use mover::entry::{Entry, Kind, Meta, RelPath};
use mover::wire::frame::Codec;
use mover::wire::hello::Features;
use mover::wire::message::{SyncOptions, ToReceiver, ToSender, XattrPolicy};
use mover::wire::PROTOCOL_VERSION;
use tokio_util::codec::Encoder;

/// `msg` framed for the wire, exactly as a real sender frames it.
pub fn frame(msg: ToReceiver) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Codec::<ToSender, ToReceiver>::default()
        .encode(msg, &mut buf)
        .expect("encode");
    buf.to_vec()
}

pub fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime_sec: 1_500_000_000,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    }
}

pub fn hello(volume: &str) -> ToReceiver {
    ToReceiver::Hello {
        protocol: PROTOCOL_VERSION,
        volume: volume.to_string(),
        // Never delete: whatever a test finds changed, the attack did it.
        options: SyncOptions {
            delete: false,
            xattrs: XattrPolicy::User,
            ..SyncOptions::default()
        },
        features: Features::ours(),
        reserved: Vec::new(),
        block: None,
    }
}

pub fn entry(id: u64, path: &[u8], kind: Kind) -> ToReceiver {
    let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
    ToReceiver::Entry {
        id,
        entry: Entry {
            path: RelPath::parse(path).expect("a valid path"),
            kind,
            meta: meta(mode),
        },
    }
}
