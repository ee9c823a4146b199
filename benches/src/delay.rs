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

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver};
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

/// Accept connections on `listener` forever, forwarding each to `to` with
/// `delay` added in each direction.
pub fn serve(listener: TcpListener, to: SocketAddr, delay: Duration) -> Result<()> {
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
        pipe(client.try_clone()?, server.try_clone()?, delay)?;
        pipe(server, client, delay)?;
    }
}

/// Forward `from` to `to` after `delay`: a reader thread stamps chunks and
/// queues them, a writer thread writes each when due.
fn pipe(from: TcpStream, to: TcpStream, delay: Duration) -> Result<()> {
    let (tx, rx) = sync_channel(QUEUE);
    let mut r = from.try_clone()?;
    thread::Builder::new()
        .name("delay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let item = match r.read(&mut buf) {
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
        .spawn(move || write_due(rx, from, to))
        .context("start a delay-proxy writer")?;
    Ok(())
}

/// Write each queued chunk once due; at the end of the stream shut down
/// the writing half of `to`. On any failure, end both connections so that
/// the other direction and both peers see it too.
fn write_due(rx: Receiver<Item>, from: TcpStream, mut to: TcpStream) {
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
            }
            Ok(Item::End(due)) => {
                wait(due);
                break to.shutdown(Shutdown::Write).is_ok();
            }
            Ok(Item::Failed) | Err(_) => break false,
        }
    };
    if !ok {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server through the proxy: the bytes come back unchanged and
    /// in order, the client's half-close reaches the server and the
    /// server's comes back, and the round trip took at least the two
    /// delays (a lower bound the proxy guarantees, not a timing guess).
    #[test]
    fn delays_round_trip_keeps_bytes_and_half_close() {
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
        thread::spawn(move || serve(proxy, echo_addr, delay));

        // Several chunks' worth, so ordering across chunks is checked.
        let data: Vec<u8> = (0..5 * CHUNK as u32 + 123)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut c = TcpStream::connect(proxy_addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
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
}
