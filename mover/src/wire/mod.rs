//! The protocol between a sender and a receiver: what the messages are
//! ([`message`]), how they are framed on the TLS stream ([`frame`]), and the
//! read/write loops both ends share ([`io`]).

pub mod frame;
pub mod io;
pub mod message;

/// Bumped whenever a message changes shape or meaning; peers refuse a
/// mismatch at hello. 2: a changed file's end-to-end hash is over its
/// segment hashes.
pub const PROTOCOL_VERSION: u32 = 2;

/// TLS ALPN protocol name, so a mover never talks to something else on 443.
pub const ALPN: &[u8] = b"mover/1";
