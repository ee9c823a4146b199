//! Transfer counters and how they are shown: a progress bar on a terminal,
//! or JSON lines (one `progress` event per interval and a final `summary`)
//! for the orchestrator, which reads them from the mover's log.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Live counters, updated from every stage of a send without locking.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries of every kind the walk found.
    pub files_examined: AtomicU64,
    /// Bytes of regular files the walk found.
    pub bytes_examined: AtomicU64,
    /// Regular files whose data went over the wire (whole or delta).
    pub files_sent: AtomicU64,
    /// File bytes sent literally (after delta, before TLS).
    pub bytes_sent: AtomicU64,
    /// File bytes the receiver reused from its own copy.
    pub bytes_matched: AtomicU64,
    /// Regular-file bytes dealt with: sent, reused, or already current. A
    /// file sent twice (after a failed check) counts twice.
    pub bytes_done: AtomicU64,
    /// Bytes on the TCP connection, both directions.
    pub wire_bytes: AtomicU64,
    /// Source files that vanished or changed while being read.
    pub vanished: AtomicU64,
    /// Entries that could not be read or written.
    pub errors: AtomicU64,
    /// Block copies ([`crate::block`]): segments compared so far, and of
    /// those: sent (as a delta or literally), found equal, and zeroed by
    /// the receiver (zeros in the source, not in the destination).
    pub segments_examined: AtomicU64,
    pub segments_sent: AtomicU64,
    pub segments_matched: AtomicU64,
    pub segments_zeroed: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A point-in-time copy of [`Counters`], as reported (and read back by
/// the orchestrator from a sender's JSON events).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Snapshot {
    pub files_examined: u64,
    pub bytes_examined: u64,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub bytes_matched: u64,
    pub bytes_done: u64,
    pub wire_bytes: u64,
    pub vanished: u64,
    pub errors: u64,
    pub segments_examined: u64,
    pub segments_sent: u64,
    pub segments_matched: u64,
    pub segments_zeroed: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            files_examined: self.files_examined.load(Relaxed),
            bytes_examined: self.bytes_examined.load(Relaxed),
            files_sent: self.files_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_matched: self.bytes_matched.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            wire_bytes: self.wire_bytes.load(Relaxed),
            vanished: self.vanished.load(Relaxed),
            errors: self.errors.load(Relaxed),
            segments_examined: self.segments_examined.load(Relaxed),
            segments_sent: self.segments_sent.load(Relaxed),
            segments_matched: self.segments_matched.load(Relaxed),
            segments_zeroed: self.segments_zeroed.load(Relaxed),
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// Always a bar (on stderr).
    Bar,
    /// JSON lines on stdout.
    Json,
    /// Nothing but the final summary.
    None,
}

#[derive(Serialize)]
struct ProgressEvent<'a> {
    event: &'static str,
    volume: &'a str,
    /// 1 for the first connection, counting up with `--retries`.
    attempt: u32,
    elapsed_secs: f64,
    rate_bytes_per_sec: f64,
    eta_secs: Option<f64>,
    #[serde(flatten)]
    counters: Snapshot,
}

/// Shows progress until dropped or [`Reporter::finish`]ed.
pub struct Reporter {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
    /// In JSON mode, what the last event needs.
    json: Option<(String, u32, Arc<Counters>, Instant)>,
}

impl Reporter {
    /// Starts reporting `counters` every `interval`.
    pub fn start(
        mode: Mode,
        volume: String,
        attempt: u32,
        counters: Arc<Counters>,
        interval: Duration,
    ) -> Reporter {
        let started = Instant::now();
        let use_bar = match mode {
            Mode::Bar => true,
            Mode::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
            Mode::Json | Mode::None => false,
        };
        let bar = use_bar.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let json = mode == Mode::Json;
        let last = json.then(|| (volume.clone(), attempt, counters.clone(), started));
        let task = (bar.is_some() || json).then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let snap = counters.snapshot();
                    if let Some(bar) = &bar {
                        bar.set_length(snap.bytes_examined);
                        bar.set_position(snap.bytes_done.min(snap.bytes_examined));
                        bar.set_message(if snap.segments_examined > 0 {
                            format!(
                                "{} segments sent, {} compared",
                                snap.segments_sent, snap.segments_examined
                            )
                        } else {
                            format!(
                                "{} files sent, {} entries",
                                snap.files_sent, snap.files_examined
                            )
                        });
                    }
                    if json {
                        println!("{}", progress_line(&volume, attempt, started, snap));
                    }
                }
            })
        });
        Reporter {
            task,
            bar,
            json: last,
        }
    }

    /// Stops reporting; in JSON mode emits one last `progress` event, so a
    /// consumer always sees the final counters in the same form.
    pub fn finish(mut self) {
        self.stop();
        if let Some((volume, attempt, counters, started)) = self.json.take() {
            println!(
                "{}",
                progress_line(&volume, attempt, started, counters.snapshot())
            );
        }
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One JSON progress line: counters with rate and ETA derived from them.
pub fn progress_line(volume: &str, attempt: u32, started: Instant, snap: Snapshot) -> String {
    let elapsed = started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        snap.bytes_done as f64 / elapsed
    } else {
        0.0
    };
    let remaining = snap.bytes_examined.saturating_sub(snap.bytes_done) as f64;
    let eta = (rate > 0.0).then(|| remaining / rate);
    serde_json::to_string(&ProgressEvent {
        event: "progress",
        volume,
        attempt,
        elapsed_secs: elapsed,
        rate_bytes_per_sec: rate,
        eta_secs: eta,
        counters: snap,
    })
    .unwrap_or_default()
}
