//! Adaptive zstd for file data.
//!
//! Compression pays only when the connection (or the receiver) is slower
//! than the sender, and only for data that shrinks. So in `auto` mode a
//! chunk is compressed only while the data thread spends most of its time
//! waiting for the connection to take what it has already produced (spare
//! CPU here, a bottleneck downstream), and after a chunk that did not shrink
//! the next ones of that file go raw without trying, for longer each time
//! (a disk image mixes compressed and plain regions). On a fast link the data thread is never
//! waiting and nothing is compressed; on a slow WAN link it waits almost
//! always, and text-like data crosses it at a fraction of its size.
//!
//! Once engaged, compressing may leave the thread hardly waiting at all: it
//! is then busy compressing, which still pays as long as it gets through
//! more data than the link took raw. So `auto` stops only when it neither
//! waits nor beats the rate it measured raw when it engaged.

use crate::wire::frame::DATA_CHUNK;
use std::time::{Duration, Instant};

/// When file data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compress {
    /// While the connection is the bottleneck, and only data that shrinks.
    #[default]
    Auto,
    /// Always (still skipping data that does not shrink).
    On,
    /// Never.
    Off,
}

/// zstd level: the fastest standard level; higher ones cost several times
/// the CPU for a few percent less on the wire.
const LEVEL: i32 = 1;
/// A chunk must shrink to at most 7/8 of its size to be sent compressed.
const WORTH_IT: (usize, usize) = (7, 8);
/// Chunks sent raw after the first that did not shrink, and at most.
const FIRST_BACKOFF: u32 = 2;
const MAX_BACKOFF: u32 = 64;
/// How often `auto` looks at how much the data thread waited.
const INTERVAL: Duration = Duration::from_millis(200);
/// Share of the last interval spent waiting above which `auto` starts
/// compressing, and below which it stops. Compressing takes time, so it
/// waits less once engaged; it stops only when it hardly waits at all (the
/// sender itself has become the limit).
const START_WAITING: f64 = 2.0 / 3.0;
const STOP_WAITING: f64 = 0.1;
/// How much faster than raw a busy compressor must get through data to
/// stay on.
const BEATS_RAW: f64 = 1.25;

pub struct Compressor {
    mode: Compress,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// Chunks of the current file to send raw without trying.
    skip: u32,
    /// What `skip` becomes after the next chunk that does not shrink.
    backoff: u32,
    /// Whether `auto` currently compresses.
    engaged: bool,
    since: Instant,
    waited_at_start: Duration,
    /// File bytes offered so far, and at the start of the interval.
    offered: u64,
    offered_at_start: u64,
    /// Bytes per second offered in the last interval before `auto`
    /// engaged: what the connection took raw.
    raw_rate: f64,
}

impl Compressor {
    pub fn new(mode: Compress) -> Self {
        Compressor {
            mode,
            zstd: None,
            skip: 0,
            backoff: FIRST_BACKOFF,
            engaged: mode == Compress::On,
            since: Instant::now(),
            waited_at_start: Duration::ZERO,
            offered: 0,
            offered_at_start: 0,
            raw_rate: 0.0,
        }
    }

    /// A new file starts: it gets its own chance to shrink.
    pub fn next_file(&mut self) {
        self.skip = 0;
        self.backoff = FIRST_BACKOFF;
    }

    /// Updates the `auto` decision from `waited`, the total time the data
    /// thread has spent blocked on the connection so far.
    pub fn observe(&mut self, waited: Duration) {
        if self.mode != Compress::Auto {
            return;
        }
        let elapsed = self.since.elapsed();
        if elapsed < INTERVAL {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        let share = (waited - self.waited_at_start).as_secs_f64() / seconds;
        let rate = (self.offered - self.offered_at_start) as f64 / seconds;
        if !self.engaged {
            self.engaged = share > START_WAITING;
            self.raw_rate = rate;
        } else if share <= STOP_WAITING {
            // Busy compressing: worth it only while clearly faster than
            // raw (timing noise must not keep it on).
            self.engaged = rate > self.raw_rate * BEATS_RAW;
        }
        self.since = Instant::now();
        self.waited_at_start = waited;
        self.offered_at_start = self.offered;
    }

    /// The zstd frame for `data` if it should go compressed.
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        self.offered += data.len() as u64;
        if !self.engaged || data.len() < 4096 {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let zstd = match &mut self.zstd {
            Some(z) => z,
            None => self.zstd.insert(zstd::bulk::Compressor::new(LEVEL).ok()?),
        };
        let limit = data.len() * WORTH_IT.0 / WORTH_IT.1;
        let mut out = Vec::with_capacity(limit);
        // Fails when the frame would not fit in `limit`: not worth it.
        match zstd.compress_to_buffer(data, &mut out) {
            Ok(_) => {
                self.backoff = FIRST_BACKOFF;
                // The queues to the connection are bounded by the bytes
                // their messages hold, so a frame must not keep the room
                // reserved for the worst case: on a slow link, with chunks
                // shrinking to a third, that spare room was most of the
                // sender's memory.
                out.shrink_to_fit();
                Some(out)
            }
            Err(_) => {
                self.skip = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                None
            }
        }
    }
}

/// Decompresses one chunk the sender compressed, refusing frames that
/// expand past `len` (what the sender declared) or [`DATA_CHUNK`].
pub fn decompress(
    zstd: &mut zstd::bulk::Decompressor<'static>,
    data: &[u8],
    len: u32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let len = len as usize;
    if len > DATA_CHUNK {
        return Err(format!(
            "compressed chunk of {len} bytes exceeds the {DATA_CHUNK}-byte chunk size"
        ));
    }
    out.clear();
    out.reserve(len);
    match zstd.decompress_to_buffer(data, out) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(format!(
            "compressed chunk holds {n} bytes, {len} were declared"
        )),
        Err(e) => Err(format!("invalid compressed chunk: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn shrinking_data_round_trips_and_random_data_goes_raw() {
        let mut c = Compressor::new(Compress::On);
        let data = text(DATA_CHUNK);
        let packed = c.compress(&data).expect("text shrinks");
        assert!(packed.len() < data.len() / 10);
        // It holds what it carries, not the room reserved for the worst
        // case: queued frames are bounded by their lengths.
        assert!(packed.capacity() < data.len() / 10, "{}", packed.capacity());
        let mut z = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        decompress(&mut z, &packed, data.len() as u32, &mut out).unwrap();
        assert!(out == data);

        let mut state = 7u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8
            })
            .collect();
        assert!(c.compress(&random).is_none());
        // The next chunks of that file go raw without trying, then it tries
        // again; the next file gets its chance at once.
        for _ in 0..FIRST_BACKOFF {
            assert!(c.compress(&data).is_none());
        }
        assert!(c.compress(&data).is_some());
        assert!(c.compress(&random).is_none());
        c.next_file();
        assert!(c.compress(&data).is_some());
        assert!(Compressor::new(Compress::Off).compress(&data).is_none());
    }

    #[test]
    fn auto_compresses_only_while_mostly_waiting() {
        let mut c = Compressor::new(Compress::Auto);
        let data = text(65536);
        assert!(c.compress(&data).is_none(), "nothing observed yet");
        c.since -= INTERVAL * 2;
        c.observe(INTERVAL * 2 * 9 / 10);
        assert!(c.compress(&data).is_some(), "waiting 90% of the time");
        c.since -= INTERVAL * 2;
        c.observe(INTERVAL * 2 * 9 / 10 + INTERVAL * 2 / 2);
        assert!(c.compress(&data).is_some(), "still waiting half the time");
        c.since -= INTERVAL * 2;
        c.observe(INTERVAL * 2 * 14 / 10 + INTERVAL / 10);
        assert!(c.compress(&data).is_none(), "waiting 5% of the time");
        c.since -= INTERVAL * 2;
        c.observe(INTERVAL * 2 * 14 / 10 + INTERVAL / 10 + INTERVAL);
        assert!(c.compress(&data).is_none(), "waiting half the time");
    }

    #[test]
    fn auto_keeps_compressing_while_it_beats_the_raw_rate() {
        let mut c = Compressor::new(Compress::Auto);
        let data = text(65536);
        // Raw, waiting 90% of the time, one chunk per interval: engaged,
        // with the link's raw rate measured.
        c.compress(&data);
        c.since -= INTERVAL * 2;
        c.observe(INTERVAL * 2 * 9 / 10);
        let mut waited = INTERVAL * 2 * 9 / 10;
        // Compressing, hardly waiting, but getting through four chunks an
        // interval: it stays on.
        for _ in 0..4 {
            assert!(c.compress(&data).is_some());
        }
        c.since -= INTERVAL * 2;
        waited += INTERVAL / 100;
        c.observe(waited);
        assert!(c.compress(&data).is_some(), "busy but faster than raw");
        // Hardly waiting and no faster than raw (one chunk): it stops.
        c.since -= INTERVAL * 2;
        waited += INTERVAL / 100;
        c.observe(waited);
        assert!(c.compress(&data).is_none(), "busy and no faster than raw");
    }

    #[test]
    fn bad_frames_are_errors_not_allocations() {
        let mut z = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        let packed = zstd::bulk::compress(&text(10_000), 1).unwrap();
        let short = decompress(&mut z, &packed, 9_999, &mut out).unwrap_err();
        assert!(
            short.contains("10000 bytes") || short.contains("invalid"),
            "{short}"
        );
        assert!(decompress(&mut z, &packed, u32::MAX, &mut out)
            .unwrap_err()
            .contains("exceeds"));
        assert!(decompress(&mut z, b"not zstd", 100, &mut out)
            .unwrap_err()
            .contains("invalid"));
    }
}
