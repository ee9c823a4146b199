//! Versions, capabilities and connection handling against the real `mover`
//! binary: peers one protocol version apart (emulated with hand-built
//! frames of the version-2 wire format) refuse each other at hello naming
//! both versions; a sender uses only the features its receiver offered;
//! idle connections cannot lock senders out; a silently dead sender does not
//! keep its volume busy; a peer that floods requests without reading
//! answers cannot grow the receiver.

mod common;

use bytes::BytesMut;
use common::peer::*;
use common::*;
use futures_util::StreamExt;
use mover::entry::Kind;
use mover::wire::frame::Codec;
use mover::wire::hello::Features;
use mover::wire::message::{ReceiverStats, ToReceiver, ToSender};
use mover::wire::PROTOCOL_VERSION;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Encoder, FramedRead};

/// Longest any one exchange or run in these tests may take.
const LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Certificates for client `c1` (volume `vol1`) in `dir/pki`.
fn pki(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    certs(&pki, &["c1=vol1"]);
    pki
}

fn receiver_log(pki: &Path, port: u16) -> String {
    fs::read_to_string(pki.with_file_name(format!("receiver-{port}.log"))).unwrap_or_default()
}

/// Waits for `child` at most [`LIMIT`], killing it (and failing) past that.
fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{what} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn spawn(mut cmd: std::process::Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// ---- a raw TLS peer ----

/// A TLS client of `pki`'s client `c1` offering the ALPN names `alpn`.
async fn connect(pki: &Path, addr: &str, alpn: &[&[u8]]) -> mover::net::ClientStream {
    let identity =
        mover::tls::Identity::from_files(&pki.join("c1.crt"), &pki.join("c1.key")).unwrap();
    let roots = mover::tls::load_ca_file(&pki.join("ca.crt")).unwrap();
    let mut config = (*mover::tls::client_config(&identity, roots).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    mover::net::connect(
        addr,
        "localhost",
        Arc::new(config),
        Arc::default(),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// A TLS server with `pki`'s receiver certificate offering `alpn`, for
/// emulated receivers; returns its listener and acceptor.
async fn tls_server(
    pki: &Path,
    alpn: &[&[u8]],
) -> (tokio::net::TcpListener, tokio_rustls::TlsAcceptor) {
    let identity =
        mover::tls::Identity::from_files(&pki.join("server.crt"), &pki.join("server.key")).unwrap();
    let roots = mover::tls::load_ca_file(&pki.join("ca.crt")).unwrap();
    let mut config = (*mover::tls::server_config(&identity, roots, Vec::new()).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One frame around a message body (tag 0: a postcard message).
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(0);
    frame.extend_from_slice(body);
    frame
}

/// The body of the next frame (after its tag byte).
async fn read_raw(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut len = [0u8; 4];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut len))
        .await
        .expect("a frame in time")
        .expect("a frame");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(body[0], 0, "a message frame");
    body.split_off(1)
}

/// postcard's string: a varint length (one byte below 128), then bytes.
fn v2_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 128);
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A version-2 `Hello { protocol: 2, volume, options: { delete: false } }`.
fn v2_hello(volume: &str) -> Vec<u8> {
    let mut body = vec![0, 2];
    body.extend(v2_string(volume));
    body.push(0);
    body
}

/// A version-2 `ToSender::Error { message, retryable }` (variant 8).
fn v2_error(message: &str, retryable: bool) -> Vec<u8> {
    let mut body = vec![8];
    body.extend(v2_string(message));
    body.push(u8::from(retryable));
    body
}

/// Reads a version-2 `Error` as an old sender would, skipping keepalives.
fn parse_v2_error(body: &[u8]) -> Option<(String, bool)> {
    let (&variant, rest) = body.split_first()?;
    if variant != 8 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let message = String::from_utf8(rest[..len as usize].to_vec()).ok()?;
    Some((message, rest[len as usize] == 1))
}

// ---- versions ----

/// A version-2 sender (legacy ALPN only, a v2 Hello) still completes TLS
/// and is refused in-band, in a message it can decode, naming both versions.
#[test]
fn old_sender_is_refused_at_hello_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &vol)], &[]);
    let (message, retryable) = runtime().block_on(async {
        let mut tls = connect(&pki, &format!("127.0.0.1:{port}"), &[b"mover/1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"mover/1"[..]));
        tls.write_all(&raw_frame(&v2_hello("vol1"))).await.unwrap();
        loop {
            let body = read_raw(&mut tls).await;
            if let Some(error) = parse_v2_error(&body) {
                break error;
            }
        }
    });
    assert!(
        message.contains(&format!(
            "speaks mover protocol 2, this receiver speaks {PROTOCOL_VERSION}"
        )) && message.starts_with("sender 127.0.0.1:"),
        "{message}"
    );
    assert!(!retryable, "another version will not go away: {message}");
    assert_eq!(fs::read_dir(&vol).unwrap().count(), 0);
}

/// A sender of a later version, whose Hello has fields this receiver does
/// not know, is refused the same way rather than as a malformed frame.
#[test]
fn newer_sender_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &vol)], &[]);
    let newer = PROTOCOL_VERSION + 1;
    let alpn = format!("mover/{newer}");
    let message = runtime().block_on(async {
        let mut tls = connect(
            &pki,
            &format!("127.0.0.1:{port}"),
            &[alpn.as_bytes(), b"mover/1"],
        )
        .await;
        tls.write_all(&raw_frame(&[0, newer as u8, 0xff, 0xff, 0xff]))
            .await
            .unwrap();
        let mut reader = FramedRead::new(tls, Codec::<ToSender, ToReceiver>::default());
        loop {
            match reader.next().await.expect("an answer").unwrap() {
                ToSender::Error { message, .. } => break message,
                ToSender::Keepalive => {}
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    });
    assert!(
        message.contains(&format!(
            "speaks mover protocol {newer}, this receiver speaks {PROTOCOL_VERSION}"
        )),
        "{message}"
    );
}

/// What an emulated receiver does with the connection of a real sender.
async fn emulated_receiver<F, Fut>(
    pki: &Path,
    alpn: &[&[u8]],
    serve: F,
) -> (u16, tokio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future + Send,
    Fut::Output: Send + 'static,
{
    let (listener, acceptor) = tls_server(pki, alpn).await;
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(acceptor.accept(tcp).await.unwrap()).await
    });
    (port, served)
}

/// Runs a real `mover send` of `src` to `port` to the end.
async fn send_to(pki: &Path, src: &Path, port: u16, extra: &[&str]) -> Output {
    let mut cmd = send(pki, "c1", src, port, "vol1", extra);
    cmd.args(["--retries", "0"]);
    tokio::task::spawn_blocking(move || finish(spawn(cmd), "mover send"))
        .await
        .unwrap()
}

/// Runs a real `mover send` against an emulated version-2 receiver (legacy
/// ALPN only) that does `serve`; the sender must fail permanently. Returns
/// its stderr.
fn refused_by_old_receiver<F, Fut>(serve: F) -> String
where
    F: FnOnce(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let out = runtime().block_on(async {
        let (port, served) = emulated_receiver(&pki, &[b"mover/1"], serve).await;
        let out = send_to(&pki, &src, port, &[]).await;
        served.await.unwrap();
        out
    });
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    stderr(&out)
}

/// A version-2 receiver reads our Hello's first fields, sees our protocol
/// and refuses (as version 2 did, in its own words); the sender shows that
/// refusal as permanent, with both versions in it.
#[test]
fn sender_shows_an_old_receivers_refusal() {
    let err = refused_by_old_receiver(|mut tls| async move {
        let hello = read_raw(&mut tls).await;
        // Variant 0, our protocol, then the volume as version 2 reads it.
        assert_eq!(&hello[..2], &[0, PROTOCOL_VERSION as u8]);
        assert_eq!(&hello[2..7], &v2_string("vol1")[..]);
        let refusal = format!("127.0.0.1:1 speaks protocol {PROTOCOL_VERSION}, this receiver 2");
        tls.write_all(&raw_frame(&v2_error(&refusal, false)))
            .await
            .unwrap();
        tls.shutdown().await.unwrap();
    });
    let expected = format!(
        "the receiver refused the session: 127.0.0.1:1 speaks protocol {PROTOCOL_VERSION}, this receiver 2"
    );
    assert!(err.contains(&expected), "{err}");
}

/// A version-2 receiver's Welcome is recognised by its version alone.
#[test]
fn sender_refuses_an_old_receivers_welcome() {
    let err = refused_by_old_receiver(|mut tls| async move {
        read_raw(&mut tls).await;
        tls.write_all(&raw_frame(&[0, 2])).await.unwrap();
        // Until the sender hangs up.
        let _ = tls.read(&mut [0u8; 64]).await;
    });
    let expected =
        format!("receiver speaks mover protocol 2, this sender speaks {PROTOCOL_VERSION}");
    assert!(err.contains(&expected), "{err}");
}

/// A receiver that speaks the current protocol with `features`: accepts one
/// sync of a tree of regular files (asking for each whole) and counts the
/// `Compressed` messages it gets.
async fn count_compressed(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    features: Features,
) -> usize {
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = FramedRead::new(read, Codec::<ToReceiver, ToSender>::default());
    let mut codec = Codec::<ToReceiver, ToSender>::default();
    let mut answer = |msg: ToSender| {
        let mut buf = BytesMut::new();
        codec.encode(msg, &mut buf).unwrap();
        buf
    };
    let (mut compressed, mut open, mut listed) = (0, 0, false);
    while let Some(msg) = reader.next().await {
        let reply = match msg.unwrap() {
            ToReceiver::Hello { .. } => Some(ToSender::Welcome {
                protocol: PROTOCOL_VERSION,
                features: features.clone(),
            }),
            ToReceiver::Entry { id, entry } if entry.kind != Kind::Dir => {
                open += 1;
                Some(ToSender::Need { id, base: None })
            }
            ToReceiver::EndOfList => {
                listed = true;
                None
            }
            ToReceiver::Compressed { .. } => {
                compressed += 1;
                None
            }
            ToReceiver::FileEnd { .. } => {
                open -= 1;
                None
            }
            _ => None,
        };
        let done = listed && open == 0;
        for msg in reply.into_iter().chain(done.then(|| ToSender::Finished {
            stats: ReceiverStats::default(),
        })) {
            write.write_all(&answer(msg)).await.unwrap();
        }
        if done {
            break;
        }
    }
    write.shutdown().await.unwrap();
    compressed
}

/// `--compress on` compresses for a receiver that offers zstd, and never
/// for one that does not.
#[test]
fn sender_compresses_only_for_receivers_offering_zstd() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("text"), b"compressible ".repeat(300_000)).unwrap();
    let rt = runtime();
    for (features, expect_compressed) in [(Features::ours(), true), (Features::none(), false)] {
        let (out, compressed) = rt.block_on(async {
            let offered = features.clone();
            let (port, served) = emulated_receiver(&pki, &[mover::tls::ALPN], move |tls| {
                count_compressed(tls, offered)
            })
            .await;
            let out = send_to(&pki, &src, port, &["--compress", "on"]).await;
            (out, served.await.unwrap())
        });
        assert_eq!(code(&out), 0, "{features:?}: {}", stderr(&out));
        assert_eq!(
            compressed > 0,
            expect_compressed,
            "{features:?}: {compressed}"
        );
    }
}

// ---- connection slots ----

/// Idle TCP connections, more than the receiver serves at once and each
/// held for less than the handshake timeout, do not lock a sender out:
/// the oldest handshake makes room, and authenticated sessions have slots
/// of their own.
#[test]
fn idle_connections_do_not_lock_senders_out() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let (vol, src) = (tmp.path().join("vol"), tmp.path().join("src"));
    fs::create_dir(&vol).unwrap();
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let port = free_port();
    let _receiver = receive(
        &pki,
        port,
        &[("vol1", &vol)],
        &["--max-connections", "4", "--handshake-timeout", "60"],
    );
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut cmd = send(&pki, "c1", &src, port, "vol1", &["--retries", "0"]);
    let out = finish(spawn(std::mem::replace(&mut cmd, mover())), "mover send");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree(&src, &vol);
    drop(idle);
}

// ---- a silently dead sender ----

/// A TCP proxy that forwards until `limit` bytes went from client to
/// server, then stops forwarding either way without closing anything: a
/// connection that died silently. Sets `holed` once it does.
fn black_hole_after(target: u16, limit: u64, holed: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let client = listener.accept().unwrap().0;
        let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        for (mut from, mut to, counted) in [
            (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                true,
            ),
            (server, client, false),
        ] {
            let (sent, holed) = (sent.clone(), holed.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                while !holed.load(Ordering::Acquire) {
                    let Ok(n @ 1..) = from.read(&mut buf) else {
                        return;
                    };
                    if counted && sent.fetch_add(n as u64, Ordering::AcqRel) + n as u64 > limit {
                        holed.store(true, Ordering::Release);
                        break;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                // Hold both sockets open, forwarding nothing.
                std::thread::sleep(Duration::from_secs(600));
                drop((from, to));
            });
        }
    });
    port
}

/// A sender whose connection goes silent mid-file keeps its volume only
/// until another sender comes: the receiver probes the first, which cannot
/// answer, stops its session, and lets the second one sync, long before
/// the (here ten-minute) idle timeout.
#[test]
fn dead_senders_volume_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let vol = tmp.path().join("vol");
    let (first_src, second_src) = (tmp.path().join("first"), tmp.path().join("second"));
    for dir in [&vol, &first_src, &second_src] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(first_src.join("big"), random_bytes(24 << 20, 7)).unwrap();
    fs::write(second_src.join("small"), b"the second sender's data").unwrap();
    let port = free_port();
    let _receiver = receive(&pki, port, &[("vol1", &vol)], &["--idle-timeout", "600"]);
    let holed = Arc::new(AtomicBool::new(false));
    let proxy = black_hole_after(port, 4 << 20, holed.clone());
    let mut first = spawn(send(
        &pki,
        "c1",
        &first_src,
        proxy,
        "vol1",
        &[
            "--retries",
            "0",
            "--idle-timeout",
            "600",
            "--compress",
            "off",
        ],
    ));
    let started = Instant::now();
    while !holed.load(Ordering::Acquire) {
        assert!(
            started.elapsed() < LIMIT,
            "the first sender never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Data the proxy passed before it went silent may still sit in the
    // receiver's socket; a session reading it is alive as far as anyone can
    // tell, and the newcomer is told the volume is busy, which is worth a
    // retry (as for any sender with `--retries`).
    let second = send(
        &pki,
        "c1",
        &second_src,
        port,
        "vol1",
        &["--retries", "5", "--retry-delay", "0.5"],
    );
    let out = finish(spawn(second), "the second mover send");
    let _ = first.kill();
    let _ = first.wait();
    let log = receiver_log(&pki, port);
    assert_eq!(code(&out), 0, "{}\nreceiver log:\n{log}", stderr(&out));
    assert!(log.contains("liveness probe"), "{log}");
    assert_same_tree(&second_src, &vol);
}

// ---- flooding without reading ----

/// A peer that asks for the signatures of a large base again and again and
/// streams file entries, never reading an answer, stalls its own session:
/// the receiver's memory stays bounded, and it serves others afterwards.
#[test]
fn flood_without_reading_answers_keeps_receiver_memory_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let vol = tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let base_len: u64 = 256 << 20;
    fs::File::create(vol.join("big"))
        .unwrap()
        .set_len(base_len)
        .unwrap();
    let port = free_port();
    let receiver = receive(&pki, port, &[("vol1", &vol)], &["--idle-timeout", "600"]);
    let segments = base_len.div_ceil(u64::from(mover::delta::MIN_SEGMENT)) as u32;
    let sent = runtime().block_on(async {
        let mut tls = connect(&pki, &format!("127.0.0.1:{port}"), &[mover::tls::ALPN]).await;
        let mut flood = frame(hello("vol1"));
        flood.extend(frame(entry(0, b"", Kind::Dir)));
        let size = base_len + 1;
        flood.extend(frame(entry(
            1,
            b"big",
            Kind::File {
                size,
                sparse: false,
            },
        )));
        tls.write_all(&flood).await.unwrap();
        let request = frame(ToReceiver::SignatureRequest {
            id: 1,
            segments: (0..segments).collect(),
        });
        let mut sent = 0u64;
        // Until the receiver stops taking them (or 256 MiB of requests).
        for n in 0..16_384u64 {
            let frame = if n < 8192 {
                request.clone()
            } else {
                frame(entry(
                    n,
                    format!("f{n:0>200}").as_bytes(),
                    Kind::File {
                        size: 1,
                        sparse: false,
                    },
                ))
            };
            match tokio::time::timeout(Duration::from_secs(3), tls.write_all(&frame)).await {
                Ok(Ok(())) => sent += frame.len() as u64,
                _ => break,
            }
        }
        sent
    });
    let status = fs::read_to_string(format!("/proc/{}/status", receiver.0.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kb < 160 * 1024,
        "the receiver grew to {peak_kb} KiB after {sent} bytes of requests"
    );
    // The flooder is gone; the receiver still serves.
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("after"), b"after the flood").unwrap();
    let mut cmd = send(
        &pki,
        "c1",
        &src,
        port,
        "vol1",
        &["--retries", "20", "--retry-delay", "0.5"],
    );
    let out = finish(spawn(std::mem::replace(&mut cmd, mover())), "mover send");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(vol.join("after")).unwrap(), b"after the flood");
}
