//! `mover`: a native, TLS-secured, rsync-style delta transfer of directory
//! trees between a sender and a receiver. See `shared/DESIGN.md` for the
//! architecture; each module's doc says which part of it lives there.

pub mod block;
pub mod certs;
pub mod compress;
pub mod delta;
pub mod dest;
pub mod entry;
pub mod failure;
pub mod limits;
pub mod listing;
pub mod net;
pub mod progress;
pub mod proxy;
pub mod receive;
pub mod send;
pub mod server;
mod sized;
pub mod source;
pub mod sync;
pub mod tls;
pub mod wire;
