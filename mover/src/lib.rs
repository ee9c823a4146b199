//! `mover`: a native, TLS-secured, rsync-style delta transfer of directory
//! trees between a sender and a receiver. See `shared/DESIGN.md` for the
//! architecture; each module's doc says which part of it lives there.

pub mod entry;
