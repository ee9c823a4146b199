//! How data leaves the sender: literal chunks (zstd-compressed when that
//! pays, see [`crate::compress`]) and rsync patches of one segment, counted
//! as they go. A tree sync's data thread ([`super::data`]) and a block
//! copy ([`crate::block::send`]) both send through it.

use crate::compress::{Compress, Compressor};
use crate::delta;
use crate::progress::Counters;
use crate::wire::frame::DATA_CHUNK;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::ToReceiver;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Emitter {
    out: Outbox<ToReceiver>,
    compressor: Compressor,
    counters: Arc<Counters>,
}

impl Emitter {
    pub fn new(
        out: mpsc::Sender<Vec<ToReceiver>>,
        compress: Compress,
        counters: Arc<Counters>,
    ) -> Self {
        Emitter {
            out: Outbox::new(out),
            compressor: Compressor::new(compress),
            counters,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn send(&mut self, msg: ToReceiver) -> Result<(), Closed> {
        self.out.push(msg)
    }

    /// Hands over what is queued; see [`Outbox::flush`].
    pub fn flush(&mut self) -> Result<(), Closed> {
        self.out.flush()
    }

    /// A new file (or segment) starts: it gets its own chance to shrink.
    pub fn next_file(&mut self) {
        self.compressor.next_file();
    }

    /// Sends `data` literally, in chunks, counting it as sent.
    pub fn literal(&mut self, data: Vec<u8>) -> Result<(), Closed> {
        Counters::add(&self.counters.bytes_sent, data.len() as u64);
        if data.len() <= DATA_CHUNK {
            return self.chunk(data);
        }
        for chunk in data.chunks(DATA_CHUNK) {
            self.chunk(chunk.to_vec())?;
        }
        Ok(())
    }

    /// Sends one chunk of data (at most [`DATA_CHUNK`]), compressed when
    /// [`Compressor`] says it pays. The caller counts it.
    pub fn chunk(&mut self, data: Vec<u8>) -> Result<(), Closed> {
        self.compressor.observe(self.out.waited());
        match self.compressor.compress(&data) {
            Some(packed) => self.send(ToReceiver::Compressed {
                len: data.len() as u32,
                data: packed,
            }),
            None => self.send(ToReceiver::Literal { data: data.into() }),
        }
    }

    /// Sends `patch` (from [`smaller_patch`], rebuilding `of` bytes) as
    /// `PatchChunk`s followed by `end`.
    pub fn patch(&mut self, patch: &[u8], of: usize, end: ToReceiver) -> Result<(), Closed> {
        Counters::add(&self.counters.bytes_sent, patch.len() as u64);
        Counters::add(&self.counters.bytes_matched, (of - patch.len()) as u64);
        for chunk in patch.chunks(DATA_CHUNK) {
            self.send(ToReceiver::PatchChunk {
                delta: chunk.to_vec(),
            })?;
        }
        self.send(end)
    }
}

/// The rsync delta turning the segment `signature` describes into `data`,
/// if it is smaller than `data` (otherwise `data` goes literally).
pub fn smaller_patch(signature: Vec<u8>, data: &[u8]) -> Option<Vec<u8>> {
    let mut patch = Vec::new();
    (delta::diff(signature, data, &mut patch).is_ok() && patch.len() < data.len()).then_some(patch)
}
