//! A userspace delay proxy: round-trip latency for the two-node mode.
//!
//! The kernel this runs on has no netem, so `tc` cannot delay packets; the
//! bench puts this proxy between the two sides instead (`bench delay-proxy`,
//! started in the receiving node's namespace on its CPU, see
//! [`crate::run`]). It accepts connections and forwards each to the real
//! server, holding every chunk of bytes, in each direction, until `delay`
//! after it was read: one way costs `delay` more, a request and its answer
//! `2 * delay`.
//!
//! What it models is the time an application waits on a round trip. It
//! does not limit bandwidth: each direction is a queue, so many chunks are
//! in flight at once (up to [`QUEUE`], far more than a delay's worth at the
//! links the bench runs) and a stream flows at the link's rate, only later.
//! It is not a WAN for TCP itself: each side's TCP talks to the proxy
//! across a link without added delay, so congestion windows and slow start
//! never see the round trip.
//!
//! Order is kept (one queue per direction, written by one thread) and so is
//! a half-close: when one side shuts down its writing end, the other side
//! sees the end of the stream `delay` later, after every byte before it,
//! which is how rsync, stunnel and mover end a session.
//!
//! With a window (`--window-kib`), each connection and direction may have
//! at most that many bytes in flight, as one TCP connection may have at
//! most its window unacknowledged: a byte counts from when the proxy reads
//! it until its acknowledgment would be back, `delay` after it was
//! delivered (the ACK's way back), so each byte holds its room for the
//! whole round trip and one connection moves at most a window per RTT,
//! whatever the link. While the window is full the proxy reads nothing
//! more from that side (its socket buffers fill and TCP pushes back on the
//! sender). What this does not model: slow start, losses and congestion
//! control (the window is fixed from the first byte, as a connection whose
//! window has fully opened), nor that connections share one queue at the
//! bottleneck; several connections each get a window of their own, which
//! is why they help.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction before reading stops (and TCP pushes back):
/// at the 1 to 5 ms one-way delays the bench uses, a delay's worth of a
/// saturated link is a few MiB, well within this many chunks even when
/// reads return single packets.
const QUEUE: usize = 8192;

/// What a direction's reader hands its writer.
enum Item {
    /// Bytes read at `due - delay`, to be written at `due`.
    Data(Instant, Vec<u8>),
    /// The end of the stream (read returned 0) at `due - delay`.
    End(Instant),
    /// The read failed (a reset): end both connections now.
    Failed,
}

/// One direction's window: the bytes in flight and when the delivered ones
/// are acknowledged (free their room again).
struct Window {
    /// Most bytes in flight.
    size: usize,
    state: Mutex<Flight>,
    /// Signalled when the writer has delivered a chunk.
    delivered: Condvar,
}

#[derive(Default)]
struct Flight {
    /// Bytes read and not yet acknowledged (delivered bytes count until
    /// their acknowledgment is due).
    bytes: usize,
    /// Delivered chunks: when each is acknowledged, and its size; in order.
    acks: VecDeque<(Instant, usize)>,
    /// The writer has stopped: nothing more will be delivered.
    closed: bool,
    /// The most `bytes` ever was (for the tests).
    #[cfg(test)]
    peak: usize,
}

impl Window {
    fn new(size: usize) -> Window {
        Window {
            size,
            state: Mutex::new(Flight::default()),
            delivered: Condvar::new(),
        }
    }

    /// Wait until the window has room, and take up to `want` bytes of it;
    /// returns how many were taken (at least 1), or None once the writer
    /// has stopped. Only the reader calls it, so room taken cannot be lost
    /// to anyone else.
    fn take(&self, want: usize) -> Option<usize> {
        let mut f = self.state.lock().unwrap();
        loop {
            if f.closed {
                return None;
            }
            let now = Instant::now();
            while let Some(&(due, n)) = f.acks.front() {
                if due > now {
                    break;
                }
                f.bytes -= n;
                f.acks.pop_front();
            }
            if f.bytes < self.size {
                let n = want.min(self.size - f.bytes);
                f.bytes += n;
                #[cfg(test)]
                {
                    f.peak = f.peak.max(f.bytes);
                }
                return Some(n);
            }
            f = match f.acks.front() {
                // The oldest delivered chunk frees its room at `due`.
                Some(&(due, _)) => self.delivered.wait_timeout(f, due - now).unwrap().0,
                // Nothing delivered yet: wait for the writer.
                None => self.delivered.wait(f).unwrap(),
            };
        }
    }

    /// Give back room taken and not used (a read shorter than taken).
    fn give_back(&self, n: usize) {
        self.state.lock().unwrap().bytes -= n;
    }

    /// `n` bytes were delivered now: their room is free once `ack` is due.
    fn delivered(&self, ack: Instant, n: usize) {
        self.state.lock().unwrap().acks.push_back((ack, n));
        self.delivered.notify_one();
    }

    /// The writer stopped: wake the reader for good.
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.delivered.notify_one();
    }
}

/// Accept connections on `listener` forever, forwarding each to `to` with
/// `delay` added in each direction and, with `window`, at most that many
/// bytes in flight per connection and direction.
pub fn serve(
    listener: TcpListener,
    to: SocketAddr,
    delay: Duration,
    window: Option<usize>,
) -> Result<()> {
    loop {
        let (client, _) = listener.accept().context("accept")?;
        let server = match TcpStream::connect(to) {
            Ok(s) => s,
            Err(e) => {
                // Refusing the one client is enough; the proxy keeps serving.
                eprintln!("delay-proxy: connect {to}: {e}");
                continue;
            }
        };
        // Chunks go out as soon as they are due, not when Nagle allows.
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let new_window = || window.map(|w| Arc::new(Window::new(w)));
        pipe(
            client.try_clone()?,
            server.try_clone()?,
            delay,
            new_window(),
        )?;
        pipe(server, client, delay, new_window())?;
    }
}

/// Forward `from` to `to` after `delay`: a reader thread stamps chunks and
/// queues them, a writer thread writes each when due. With `window`, the
/// reader reads only what fits in it.
fn pipe(
    from: TcpStream,
    to: TcpStream,
    delay: Duration,
    window: Option<Arc<Window>>,
) -> Result<()> {
    let (tx, rx) = sync_channel(QUEUE);
    let mut r = from.try_clone()?;
    let w = window.clone();
    thread::Builder::new()
        .name("delay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let room = match &w {
                    None => CHUNK,
                    Some(w) => match w.take(CHUNK) {
                        Some(n) => n,
                        // The writer failed and has ended both connections.
                        None => return,
                    },
                };
                let read = r.read(&mut buf[..room]);
                if let Some(w) = &w {
                    w.give_back(room - read.as_ref().map_or(0, |&n| n));
                }
                let item = match read {
                    Ok(0) => Item::End(Instant::now() + delay),
                    Ok(n) => Item::Data(Instant::now() + delay, buf[..n].to_vec()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => Item::Failed,
                };
                let last = !matches!(item, Item::Data(..));
                if tx.send(item).is_err() || last {
                    return;
                }
            }
        })
        .context("start a delay-proxy reader")?;
    thread::Builder::new()
        .name("delay-write".into())
        .spawn(move || write_due(rx, from, to, delay, window))
        .context("start a delay-proxy writer")?;
    Ok(())
}

/// Write each queued chunk once due (and with a window, free its room
/// `delay` later, when its acknowledgment would be back); at the end of the
/// stream shut down the writing half of `to`. On any failure, end both
/// connections so that the other direction and both peers see it too.
fn write_due(
    rx: Receiver<Item>,
    from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    window: Option<Arc<Window>>,
) {
    let wait = |due: Instant| {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    };
    let ok = loop {
        match rx.recv() {
            Ok(Item::Data(due, bytes)) => {
                wait(due);
                if to.write_all(&bytes).is_err() {
                    break false;
                }
                if let Some(w) = &window {
                    w.delivered(Instant::now() + delay, bytes.len());
                }
            }
            Ok(Item::End(due)) => {
                wait(due);
                break to.shutdown(Shutdown::Write).is_ok();
            }
            Ok(Item::Failed) | Err(_) => break false,
        }
    };
    if let Some(w) = &window {
        w.close();
    }
    if !ok {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from offset to offset, so reordering shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    /// Send `data` through a proxy with `window` to an echo server and
    /// back: the bytes come back unchanged and in order, the client's
    /// half-close reaches the server and the server's comes back, and the
    /// round trip took at least the two delays (a lower bound the proxy
    /// guarantees, not a timing guess).
    fn echo_through(window: Option<usize>, data: &[u8]) {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            // Copies until the client's end of stream arrives, then ends its own.
            std::io::copy(&mut s, &mut w).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let delay = Duration::from_millis(20);
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        thread::spawn(move || serve(proxy, echo_addr, delay, window));

        let mut c = TcpStream::connect(proxy_addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let sent = data.to_vec();
        let t0 = Instant::now();
        let writer = thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut first = [0u8; 1];
        c.read_exact(&mut first).unwrap();
        let rtt = t0.elapsed();
        let mut back = first.to_vec();
        // Returns only once the server's half-close came through.
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(rtt >= 2 * delay, "first byte back after {rtt:?}");
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes changed or reordered");
    }

    #[test]
    fn delays_round_trip_keeps_bytes_and_half_close() {
        // Several chunks' worth, so ordering across chunks is checked.
        echo_through(None, &pattern(5 * CHUNK + 123));
    }

    /// The same with a window that is neither a chunk nor a multiple of
    /// one, so reads are cut short by it and by what is left of it.
    #[test]
    fn windowed_round_trip_keeps_bytes_and_half_close() {
        echo_through(Some(100_000), &pattern(5 * CHUNK + 123));
    }

    /// One direction with a window of W bytes and a one-way delay d: the
    /// proxy never has more than W bytes in flight (its own count), and
    /// since each byte holds its room from its read until d after its
    /// delivery (at least 2d), the byte at offset k*W cannot be read before
    /// k*2d, so X = 16*W bytes reach the far side no earlier than
    /// 15*2d + d = 31d. Both are guarantees, not timing guesses (sleeps
    /// never end early); without the window the transfer takes about d.
    #[test]
    fn window_caps_bytes_in_flight() {
        const W: usize = 16 * 1024;
        let delay = Duration::from_millis(10);
        let data = pattern(16 * W);

        // client -> (from) proxy (to) -> sink
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let received = thread::spawn(move || {
            let (mut s, _) = sink.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            (got, Instant::now())
        });
        let mut client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (from, _) = front.accept().unwrap();
        let to = TcpStream::connect(sink_addr).unwrap();
        let window = Arc::new(Window::new(W));
        pipe(from, to, delay, Some(window.clone())).unwrap();

        let t0 = Instant::now();
        client.write_all(&data).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let (got, end) = received.join().unwrap();
        let took = end - t0;
        assert!(got == data, "bytes changed, lost or reordered");
        let peak = window.state.lock().unwrap().peak;
        assert!(peak > 0 && peak <= W, "{peak} bytes in flight, window {W}");
        assert!(
            took >= 31 * delay,
            "{} bytes through a {W}-byte window in {took:?}, less than 31 one-way delays of {delay:?}",
            data.len()
        );
    }
}
