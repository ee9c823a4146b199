//! The protocol between a sender and a receiver: what the messages are
//! ([`message`]), how they are framed on the TLS stream ([`frame`]), the
//! opening exchange that checks versions and agrees on features
//! ([`hello`]), the read/write loops both ends share ([`io`]), and the
//! striping of one session over several connections ([`stripes`]).

pub mod frame;
pub mod hello;
pub mod io;
pub mod message;
pub mod stripes;

/// Bumped whenever a message changes shape or meaning; a peer of another
/// version is refused at hello ([`hello`]). 2: a changed file's end-to-end
/// hash is over its segment hashes. 3: `Compressed` data, features and
/// work-area names in Hello/Welcome, liveness `Probe`. 4: block copies
/// (`block` in Hello, the `Block*` messages; [`crate::block`]). 5: segments
/// of 16 KiB and up (were 32), a changed file's signatures asked for in
/// several requests as the sender's scan finds them, and a file of 1 MiB or
/// more sent whole checked by its segment hashes ([`crate::delta::file_hasher`]).
pub const PROTOCOL_VERSION: u32 = 5;

/// Most regular files a sender may have listed whose answer it has not yet
/// seen through (`Have`, `FileDone`, `FileFailed`). The sender's window
/// keeps to it, and a receiver refuses a session that goes beyond, so what
/// a receiver holds per session is bounded by construction, not by the
/// peer's good manners.
pub const MAX_PENDING_FILES: usize = 4096;
