//! Hostile or wrong input against the real `mover receive` binary: bad
//! certificates, paths that try to leave the volume, symlinks planted in the
//! destination, oversized frames, silent peers, and data that lies about its
//! size. Each test asserts a clear error naming what was wrong, and that the
//! destination (and everything around it) is exactly as it was: nothing
//! written outside the volume, no temporary files left behind.
//!
//! Protocol-level attacks use a raw client built from the library's TLS
//! setup and its own frame encoder, so it follows any change of the wire
//! format. Since `RelPath` refuses `..` and absolute paths at construction,
//! a hostile path is sent by encoding a real message with a valid stand-in
//! path of the same length and patching the stand-in's bytes in the frame
//! (`patched_frames_carry_the_hostile_path` checks that this works).

mod common;

use bytes::BytesMut;
use common::peer::*;
use common::*;
use futures_util::StreamExt;
use mover::entry::{Kind, RelPath};
use mover::wire::frame::{Codec, FrameError};
use mover::wire::message::{ToReceiver, ToSender};
use mover::wire::PROTOCOL_VERSION;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{Decoder, FramedRead};

/// Longest any single read from the receiver may take.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// Longest a whole raw-client conversation may take.
const TEST_LIMIT: Duration = Duration::from_secs(20);
/// Longest one run of the `mover` binary (certs, send) may take.
const RUN_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Running the binary with a time limit.

/// Runs `mover args...`, killing it (and failing the test) if it has not
/// finished within [`RUN_LIMIT`]. Output goes through anonymous files, so a
/// chatty child can never block on a full pipe.
fn run_bounded<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut child = mover()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()))
        .spawn()
        .expect("spawn mover");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mover {:?} did not finish within {RUN_LIMIT:?}",
                display(args)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read_all = |f: &mut fs::File| {
        let mut buf = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

fn display<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// `mover certs --out DIR --server-san localhost --client c1=vol1 --client c2=vol2`.
fn make_certs(dir: &Path) {
    let out = run_bounded(&[
        OsStr::new("certs"),
        OsStr::new("--out"),
        dir.as_os_str(),
        OsStr::new("--server-san"),
        OsStr::new("localhost"),
        OsStr::new("--client"),
        OsStr::new("c1=vol1"),
        OsStr::new("--client"),
        OsStr::new("c2=vol2"),
    ]);
    assert_eq!(code(&out), 0, "mover certs failed: {}", stderr(&out));
    for f in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "c1.crt",
        "c1.key",
    ] {
        assert!(dir.join(f).is_file(), "mover certs wrote no {f}");
    }
}

/// A client identity on disk.
#[derive(Clone)]
struct Creds {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Creds {
    /// Client `name` of the bundle in `dir`, trusting that bundle's CA.
    fn bundle(dir: &Path, name: &str) -> Creds {
        Creds {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        }
    }
}

// ---------------------------------------------------------------------------
// The receiver process.

/// A running `mover receive`, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The receiver's peak resident memory so far (VmHWM), in KiB.
    fn peak_rss_kb(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the receiver exited ({status}); its log:\n{}", self.log());
        }
    }

    /// Waits until the receiver's log contains `needle` (log lines can lag
    /// the connection being closed by a moment).
    fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if started.elapsed() > READ_LIMIT {
                panic!("the receiver never logged {needle:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// The scene: certificates, two volumes, and a directory outside them.

struct Fixture {
    tmp: tempfile::TempDir,
    /// `mover certs` bundle the receiver uses.
    certs: PathBuf,
    /// Holds the volumes and `outside`; snapshotted whole, so that anything
    /// written beside a volume shows up.
    world: PathBuf,
    vol1: PathBuf,
    vol2: PathBuf,
    /// A directory outside every volume, with one file `keep`.
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        make_certs(&certs);
        let world = tmp.path().join("world");
        let (vol1, vol2, outside) = (
            world.join("vol1"),
            world.join("vol2"),
            world.join("outside"),
        );
        fs::create_dir_all(vol1.join("dir/sub")).unwrap();
        fs::create_dir_all(&vol2).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(vol1.join("a.txt"), b"the old a\n").unwrap();
        fs::write(vol1.join("dir/data.bin"), random_bytes(100_000, 11)).unwrap();
        fs::write(vol1.join("dir/sub/deep"), b"deep").unwrap();
        symlink("a.txt", vol1.join("link")).unwrap();
        fs::write(vol2.join("other-volume"), b"vol2 data").unwrap();
        fs::write(outside.join("keep"), b"outside the volume; must stay").unwrap();
        for (path, sec) in [
            (vol1.join("a.txt"), 1_000_000_001),
            (vol1.join("dir/data.bin"), 1_000_000_002),
            (vol1.join("dir/sub"), 1_000_000_003),
            (vol1.join("dir"), 1_000_000_004),
            (vol1.clone(), 1_000_000_005),
            (outside.join("keep"), 1_000_000_006),
        ] {
            set_mtime(&path, sec, 42);
        }
        Fixture {
            tmp,
            certs,
            world,
            vol1,
            vol2,
            outside,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn c1(&self) -> Creds {
        Creds::bundle(&self.certs, "c1")
    }

    /// Starts `mover receive` on a free loopback port serving vol1 and vol2,
    /// and waits until it accepts connections. If another process took the
    /// port between our probe and the receiver's bind, tries another one.
    fn start(&self, extra: &[&str]) -> Receiver {
        for _ in 0..3 {
            if let Some(receiver) = self.try_start(free_port(), extra) {
                return receiver;
            }
        }
        panic!("the receiver could not bind a free port three times");
    }

    fn try_start(&self, port: u16, extra: &[&str]) -> Option<Receiver> {
        let log = self.tmp.path().join(format!("receiver-{port}.log"));
        let log_file = fs::File::create(&log).unwrap();
        let mut vol1 = OsStr::new("vol1=").to_os_string();
        vol1.push(&self.vol1);
        let mut vol2 = OsStr::new("vol2=").to_os_string();
        vol2.push(&self.vol2);
        let child = Command::new(env!("CARGO_BIN_EXE_mover"))
            .arg("receive")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--volume")
            .arg(vol1)
            .arg("--volume")
            .arg(vol2)
            .arg("--cert")
            .arg(self.certs.join("server.crt"))
            .arg("--key")
            .arg(self.certs.join("server.key"))
            .arg("--ca")
            .arg(self.certs.join("ca.crt"))
            .args(extra)
            .env("MOVER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn mover receive");
        let mut receiver = Receiver { child, port, log };
        let started = Instant::now();
        loop {
            if receiver.child.try_wait().unwrap().is_some() {
                let log = receiver.log();
                if log.contains("Address already in use") {
                    return None;
                }
                panic!("the receiver exited at start; its log:\n{log}");
            }
            let addr = receiver.addr().parse().unwrap();
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Some(receiver);
            }
            if started.elapsed() > READ_LIMIT {
                panic!("the receiver never listened; its log:\n{}", receiver.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mover send SRC` to `receiver` with the given identity.
    fn send(&self, receiver: &Receiver, src: &Path, volume: &str, creds: &Creds) -> Output {
        run_bounded(&[
            OsStr::new("send"),
            src.as_os_str(),
            OsStr::new("--connect"),
            OsStr::new(&receiver.addr()),
            OsStr::new("--server-name"),
            OsStr::new("localhost"),
            OsStr::new("--volume"),
            OsStr::new(volume),
            OsStr::new("--cert"),
            creds.cert.as_os_str(),
            OsStr::new("--key"),
            creds.key.as_os_str(),
            OsStr::new("--ca"),
            creds.ca.as_os_str(),
            OsStr::new("--progress"),
            OsStr::new("json"),
            OsStr::new("--idle-timeout"),
            OsStr::new("5"),
        ])
    }

    /// A small honest source tree.
    fn honest_source(&self) -> PathBuf {
        let src = self.path("src");
        fs::create_dir_all(src.join("nested")).unwrap();
        fs::write(src.join("a.txt"), b"the new a\n").unwrap();
        fs::write(src.join("nested/blob"), random_bytes(300_000, 5)).unwrap();
        src
    }

    /// An honest `mover send` of a fresh source into vol1 must succeed and
    /// leave vol1 equal to it: the receiver is still serving.
    fn assert_still_serves(&self, receiver: &mut Receiver) {
        receiver.assert_alive();
        let src = self.honest_source();
        let out = self.send(receiver, &src, "vol1", &self.c1());
        assert_eq!(
            code(&out),
            0,
            "an honest send after the attack failed: {}\nreceiver log:\n{}",
            stderr(&out),
            receiver.log()
        );
        assert_eq!(summary(&out)["files_sent"], 2);
        assert_same_tree(&src, &self.vol1);
        receiver.assert_alive();
    }
}

// ---------------------------------------------------------------------------
// Snapshots: everything observable about a tree, to prove it unchanged.

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
    content: Option<blake3::Hash>,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

type Snapshot = BTreeMap<PathBuf, Node>;

fn snapshot(root: &Path) -> Snapshot {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.expect("walk"))
        .map(|e| {
            let path = e.path();
            let md = fs::symlink_metadata(path).expect("lstat");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "special"
            };
            let node = Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                ino: md.ino(),
                nlink: md.nlink(),
                size: if ft.is_dir() { 0 } else { md.len() },
                mtime: (md.mtime(), md.mtime_nsec()),
                content: ft
                    .is_file()
                    .then(|| blake3::hash(&fs::read(path).expect("read"))),
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(path).expect("readlink")),
                xattrs: if ft.is_symlink() {
                    Vec::new()
                } else {
                    xattrs(path)
                },
            };
            (path.strip_prefix(root).unwrap().to_path_buf(), node)
        })
        .collect()
}

/// Asserts `root` is exactly as in `before`. With `dir_times_may_change`, a
/// directory's mtime may differ (a temporary file created and removed inside
/// it touches it); everything else must be identical.
fn assert_unchanged(root: &Path, before: &Snapshot, dir_times_may_change: bool) {
    let after = snapshot(root);
    let mut diffs = Vec::new();
    for (path, node) in &after {
        match before.get(path) {
            None => diffs.push(format!("{}: new {}", path.display(), node.kind)),
            Some(old) => {
                let mut old_cmp = old;
                let relaxed;
                if dir_times_may_change && node.kind == "dir" && old.kind == "dir" {
                    relaxed = Node {
                        mtime: node.mtime,
                        ..clone_node(old)
                    };
                    old_cmp = &relaxed;
                }
                if old_cmp != node {
                    diffs.push(format!(
                        "{}: changed\n  before {old:?}\n  after  {node:?}",
                        path.display()
                    ));
                }
            }
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            diffs.push(format!("{}: removed", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} changed:\n{}",
        root.display(),
        diffs.join("\n")
    );
    assert_no_temps(root);
}

fn clone_node(n: &Node) -> Node {
    Node {
        kind: n.kind,
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        ino: n.ino,
        nlink: n.nlink,
        size: n.size,
        mtime: n.mtime,
        content: n.content,
        link: n.link.clone(),
        xattrs: n.xattrs.clone(),
    }
}

/// Nothing of the mover's own (its work area, or a temporary made beside
/// its file) anywhere below `root`.
fn assert_no_temps(root: &Path) {
    let temps: Vec<_> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            name.starts_with(mover::dest::volume::TEMP_PREFIX)
                || name.starts_with(mover::dest::work::WORK_NAME)
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

// ---------------------------------------------------------------------------
// A raw protocol client.

/// The library's own codec: frames exactly as a real sender does.
type Wire = Codec<ToSender, ToReceiver>;

/// A valid path of the same length as `bad`: every `.` and a leading `/`
/// become `P`.
fn stand_in(bad: &[u8]) -> Vec<u8> {
    let mut path: Vec<u8> = bad
        .iter()
        .map(|&b| if b == b'.' || b == 0 { b'P' } else { b })
        .collect();
    if path.first() == Some(&b'/') {
        path[0] = b'P';
    }
    path
}

/// The frame of `msg`, which names `stand_in` exactly once, with that name
/// replaced by `bad` (of the same length, so no length prefix changes).
fn patched_frame(msg: ToReceiver, stand_in: &[u8], bad: &[u8]) -> Vec<u8> {
    assert_eq!(stand_in.len(), bad.len());
    let mut bytes = frame(msg);
    let hits: Vec<usize> = bytes
        .windows(stand_in.len())
        .enumerate()
        .filter(|(_, w)| *w == stand_in)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "stand-in {stand_in:?} in frame {bytes:?}");
    bytes[hits[0]..hits[0] + bad.len()].copy_from_slice(bad);
    bytes
}

/// The frame of an entry whose path is `bad`, which `RelPath` would refuse.
fn hostile_entry(id: u64, bad: &[u8], kind: Kind) -> Vec<u8> {
    let valid = stand_in(bad);
    patched_frame(entry(id, &valid, kind), &valid, bad)
}

fn root_entry() -> ToReceiver {
    entry(0, b"", Kind::Dir)
}

fn literal(data: &[u8]) -> ToReceiver {
    ToReceiver::Literal {
        data: data.to_vec().into(),
    }
}

fn file(size: u64) -> Kind {
    Kind::File {
        size,
        sparse: false,
    }
}

type Tls = mover::net::ClientStream;

/// What the receiver did next.
#[derive(Debug)]
enum Got {
    Msg(ToSender),
    /// The stream ended (cleanly or with a reset), and how.
    Closed(#[allow(dead_code)] String), // read through Debug in failures
}

struct RawClient {
    reader: FramedRead<ReadHalf<Tls>, Wire>,
    writer: WriteHalf<Tls>,
    /// The receiver's log, shown when the conversation goes wrong.
    log: PathBuf,
}

impl RawClient {
    async fn connect(receiver: &Receiver, creds: &Creds) -> RawClient {
        RawClient::connect_via(receiver, creds, &receiver.addr()).await
    }

    /// Connects to `addr` (the receiver, or something in front of it).
    async fn connect_via(receiver: &Receiver, creds: &Creds, addr: &str) -> RawClient {
        let identity = mover::tls::Identity::from_files(&creds.cert, &creds.key).unwrap();
        let roots = mover::tls::load_ca_file(&creds.ca).unwrap();
        let config = mover::tls::client_config(&identity, roots).unwrap();
        let stream = mover::net::connect(
            addr,
            "localhost",
            config,
            Arc::new(mover::progress::Counters::default()),
            READ_LIMIT,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connecting to the receiver: {e}; its log:\n{}",
                receiver.log()
            )
        });
        let (read, writer) = tokio::io::split(stream);
        RawClient {
            reader: FramedRead::new(read, Codec::default()),
            writer,
            log: receiver.log.clone(),
        }
    }

    /// Fails the test with `what` and the receiver's log.
    fn fail(&self, what: String) -> ! {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{what}; the receiver's log:\n{log}")
    }

    /// Connects, says Hello for `volume` and expects Welcome.
    async fn start(receiver: &Receiver, creds: &Creds, volume: &str) -> RawClient {
        RawClient::start_via(receiver, creds, volume, &receiver.addr()).await
    }

    async fn start_via(receiver: &Receiver, creds: &Creds, volume: &str, addr: &str) -> RawClient {
        let mut client = RawClient::connect_via(receiver, creds, addr).await;
        client.send(hello(volume)).await;
        match client.next().await {
            Got::Msg(ToSender::Welcome { protocol, .. }) => assert_eq!(protocol, PROTOCOL_VERSION),
            other => client.fail(format!("expected Welcome, got {other:?}")),
        }
        client
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        // A write can fail once the receiver has hung up; what it said
        // before hanging up is what the test checks.
        let _ = self.writer.write_all(bytes).await;
        let _ = self.writer.flush().await;
    }

    async fn send(&mut self, msg: ToReceiver) {
        self.send_bytes(&frame(msg)).await;
    }

    /// The next message other than a keepalive, or how the stream ended.
    async fn next(&mut self) -> Got {
        loop {
            let Ok(item) = tokio::time::timeout(READ_LIMIT, self.reader.next()).await else {
                self.fail(format!("the receiver said nothing for {READ_LIMIT:?}"))
            };
            return match item {
                Some(Ok(ToSender::Keepalive)) => continue,
                Some(Ok(msg)) => Got::Msg(msg),
                None => Got::Closed("end of stream".into()),
                Some(Err(FrameError::Io(e))) => Got::Closed(e.to_string()),
                Some(Err(e)) => self.fail(format!("the receiver sent a bad frame: {e}")),
            };
        }
    }

    /// Skips ordinary replies until the receiver's `Error`, then checks that
    /// the receiver closes the connection. Returns the error message, which
    /// must be marked permanent (a retry would meet the same peer).
    async fn expect_error(&mut self) -> String {
        let (message, retryable) = self.expect_any_error().await;
        assert!(!retryable, "a hostile peer's error is permanent: {message}");
        message
    }

    /// Like [`RawClient::expect_error`], returning whether it is retryable.
    async fn expect_any_error(&mut self) -> (String, bool) {
        let refusal = loop {
            match self.next().await {
                Got::Msg(ToSender::Error { message, retryable }) => break (message, retryable),
                Got::Msg(
                    ToSender::Need { .. }
                    | ToSender::BaseHashes { .. }
                    | ToSender::Have { .. }
                    | ToSender::SignaturesEnd { .. }
                    | ToSender::Signature { .. },
                ) => continue,
                other => self.fail(format!("expected the receiver to refuse, got {other:?}")),
            }
        };
        match self.next().await {
            Got::Closed(_) => {}
            other => self.fail(format!(
                "the receiver kept talking after its error: {other:?}"
            )),
        }
        refusal
    }
}

/// Runs an async test body on its own runtime, bounded by [`TEST_LIMIT`].
fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(TEST_LIMIT, body)
                .await
                .unwrap_or_else(|_| panic!("test did not finish within {TEST_LIMIT:?}"))
        })
}

fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn patched_frames_carry_the_hostile_path() {
    // Patching a stand-in for another valid path decodes to that path, with
    // everything else in the message intact.
    let bytes = patched_frame(entry(300, b"dir/xyz", file(12345)), b"xyz", b"abc");
    let mut buf = BytesMut::from(&bytes[..]);
    let decoded = Codec::<ToReceiver, ToSender>::default()
        .decode(&mut buf)
        .expect("decodes")
        .expect("one whole frame");
    match decoded {
        ToReceiver::Entry { id, entry } => {
            assert_eq!(id, 300);
            assert_eq!(entry.path.as_bytes(), b"dir/abc");
            assert_eq!(entry.kind, file(12345));
            assert_eq!(entry.meta, meta(0o644));
        }
        other => panic!("decoded {other:?}"),
    }
    assert!(buf.is_empty());

    // A hostile path is refused by the decoder itself: this is what the
    // receiver meets.
    for bad in [&b"../escape"[..], b"/etc/evil", b"a/../../b", b".."] {
        assert_eq!(stand_in(bad).len(), bad.len());
        let mut buf = BytesMut::from(&hostile_entry(1, bad, file(5))[..]);
        let decoded = Codec::<ToReceiver, ToSender>::default().decode(&mut buf);
        assert!(
            matches!(&decoded, Err(FrameError::BadPath(why)) if why.contains(&*String::from_utf8_lossy(bad))),
            "{:?} decoded as {decoded:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Writes a client certificate for vol1 from the fixture's CA, valid only
/// ten to nine days ago.
fn expired_client(fx: &Fixture) -> Creds {
    let ca = mover::certs::Authority::load(
        &fs::read_to_string(fx.certs.join("ca.crt")).unwrap(),
        &fs::read_to_string(fx.certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    let validity = mover::certs::Validity::new(start, start + time::Duration::days(1)).unwrap();
    let pem = ca.client("old", &["vol1".to_string()], validity).unwrap();
    let creds = Creds {
        cert: fx.path("old.crt"),
        key: fx.path("old.key"),
        ca: fx.certs.join("ca.crt"),
    };
    fs::write(&creds.cert, &pem.cert).unwrap();
    fs::write(&creds.key, &pem.key).unwrap();
    creds
}

/// A client certificate from another CA (with the right CA to check the
/// receiver by).
fn rogue_client(fx: &Fixture) -> Creds {
    let rogue = fx.path("rogue-certs");
    if !rogue.exists() {
        make_certs(&rogue);
    }
    Creds {
        ca: fx.certs.join("ca.crt"),
        ..Creds::bundle(&rogue, "c1")
    }
}

/// The sender learns that the receiver refused its certificate from a TLS
/// alert. The exit code should be 1 (retrying will not help), but today it
/// is 75: see `refused_client_certificate_is_a_permanent_failure`. Until
/// that is fixed, accept either failure code, never success.
fn assert_client_refused(out: &Output, alert: &str) {
    let err = stderr(out);
    assert!(matches!(code(out), 1 | 75), "exit {}: {err}", code(out));
    assert_contains(&err, &["received fatal alert", alert]);
}

/// Case 1: Certificates from another migration's CA are refused with an error
/// that says what is wrong, before anything is written.
#[test]
fn certificates_from_another_ca_are_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);
    let src = fx.honest_source();

    // The whole rogue bundle: the sender does not trust the receiver, and
    // says so with a permanent failure.
    let rogue = rogue_client(&fx);
    let out = fx.send(
        &receiver,
        &src,
        "vol1",
        &Creds::bundle(rogue.cert.parent().unwrap(), "c1"),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_contains(
        &err,
        &["TLS handshake", "invalid peer certificate", "UnknownIssuer"],
    );

    // A rogue client certificate: the receiver does not trust the sender.
    let out = fx.send(&receiver, &src, "vol1", &rogue);
    assert_client_refused(&out, "UnknownCA");
    receiver.wait_for_log("invalid peer certificate: UnknownIssuer");

    assert_unchanged(&fx.world, &before, false);
    receiver.assert_alive();
}

/// Case 2: An expired client certificate from the right CA is refused.
#[test]
fn expired_client_certificate_is_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);

    let out = fx.send(&receiver, &fx.honest_source(), "vol1", &expired_client(&fx));
    assert_client_refused(&out, "CertificateExpired");
    receiver.wait_for_log("invalid peer certificate: certificate expired");

    assert_unchanged(&fx.world, &before, false);
    receiver.assert_alive();
}

/// A client certificate the receiver refuses will be refused again: the
/// sender must exit 1, not 75 ("retry may help"), or an orchestrator
/// retries it with backoff for nothing. (The alert reaches the sender after
/// its side of the TLS 1.3 handshake is complete, on the first read.)
#[test]
fn refused_client_certificate_is_a_permanent_failure() {
    let fx = Fixture::new();
    let receiver = fx.start(&[]);
    let src = fx.honest_source();
    for creds in [rogue_client(&fx), expired_client(&fx)] {
        let out = fx.send(&receiver, &src, "vol1", &creds);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
    }
}

/// Case 3: A valid certificate that names another volume cannot write this one.
#[test]
fn certificate_for_another_volume_is_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);

    let c2 = Creds::bundle(&fx.certs, "c2");
    let out = fx.send(&receiver, &fx.honest_source(), "vol1", &c2);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_contains(
        &err,
        &[
            "the client certificate does not allow volume \"vol1\"",
            "vol2",
        ],
    );

    // Nor can any certificate name a volume the receiver does not serve.
    let out = fx.send(&receiver, &fx.honest_source(), "vol3", &fx.c1());
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_contains(&err, &["does not allow volume \"vol3\""]);

    assert_unchanged(&fx.world, &before, false);
    receiver.assert_alive();
}

/// Case 4: Paths that climb out of the volume or are absolute are refused when
/// the message is decoded, so nothing is created anywhere.
#[test]
fn escaping_and_absolute_paths_are_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);
    let absolute_in_world = fx.world.join("abs-evil");
    let absolute_in_world = absolute_in_world.as_os_str().as_bytes().to_vec();
    let bad_paths: [&[u8]; 6] = [
        b"nul\0inside",
        b"../escape",
        b"dir/../../escape",
        b"..",
        b"/etc/evil",
        &absolute_in_world,
    ];
    let etc_evil_existed = Path::new("/etc/evil").exists();

    for bad in bad_paths {
        let shown = String::from_utf8_lossy(bad);
        let message = block_on(async {
            let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
            client.send(root_entry()).await;
            client.send_bytes(&hostile_entry(1, bad, file(5))).await;
            client.expect_error().await
        });
        // The receiver names the peer and the refused path, escaped so a
        // hostile name cannot forge log lines.
        assert_contains(
            &message,
            &["protocol error from", "refused path", &format!("{shown:?}")],
        );
        assert!(!message.contains('\n'), "multi-line error: {message}");
        assert_unchanged(&fx.world, &before, false);
        assert!(!fx.tmp.path().join("escape").exists());
        assert!(!fx.world.join("escape").exists());
    }
    assert_eq!(Path::new("/etc/evil").exists(), etc_evil_existed);
    receiver.assert_alive();
    receiver.wait_for_log("refused path");
}

/// Case 4b: The refusal of an escaping path says what was wrong with it
/// (postcard drops the text of errors raised while decoding; the decoder
/// recovers it).
#[test]
fn escaping_path_error_names_the_problem() {
    let fx = Fixture::new();
    let receiver = fx.start(&[]);
    for (bad, expected) in [
        (&b"../escape"[..], "`.` or `..` component"),
        (b"/etc/evil", "path is absolute"),
    ] {
        let message = block_on(async {
            let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
            client.send(root_entry()).await;
            client.send_bytes(&hostile_entry(1, bad, file(5))).await;
            client.expect_error().await
        });
        assert_contains(&message, &[expected]);
    }
}

/// Case 5a: A symlink in the destination that points out of the volume is
/// replaced by the real directory the source has; nothing is written
/// through it.
#[test]
fn honest_sync_replaces_symlink_out_of_the_volume() {
    let fx = Fixture::new();
    symlink(&fx.outside, fx.vol1.join("evil")).unwrap();
    let outside_before = snapshot(&fx.outside);
    let vol2_before = snapshot(&fx.vol2);
    let receiver = fx.start(&[]);

    let src = fx.path("src");
    fs::create_dir_all(src.join("evil/deeper")).unwrap();
    fs::write(src.join("evil/keep"), b"the source's own keep").unwrap();
    fs::write(src.join("evil/pwned"), b"must land inside the volume").unwrap();
    fs::write(src.join("evil/deeper/more"), random_bytes(70_000, 3)).unwrap();
    let out = fx.send(&receiver, &src, "vol1", &fx.c1());
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    assert_unchanged(&fx.outside, &outside_before, false);
    assert_unchanged(&fx.vol2, &vol2_before, false);
    let evil = fs::symlink_metadata(fx.vol1.join("evil")).unwrap();
    assert!(evil.is_dir(), "evil is still a {:?}", evil.file_type());
    assert_same_tree(&src, &fx.vol1);
    let world: Vec<_> = fs::read_dir(&fx.world)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(world.len(), 3, "{world:?}");
}

/// Case 5b: A hostile sender names a file beneath the planted symlink without
/// listing the directory first, hoping the receiver follows the link.
#[test]
fn entry_beneath_planted_symlink_is_refused() {
    let fx = Fixture::new();
    symlink(&fx.outside, fx.vol1.join("evil")).unwrap();
    symlink(fx.outside.join("keep"), fx.vol1.join("evil-file")).unwrap();
    let before = snapshot(&fx.world);
    let receiver = fx.start(&[]);

    // A file below the link, without a directory entry for `evil`.
    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.send(entry(1, b"evil/pwned", file(5))).await;
        client.expect_error().await
    });
    assert_contains(
        &message,
        &["protocol error", "evil/pwned", "outside its directory evil"],
    );
    assert!(!fx.outside.join("pwned").exists());
    assert_unchanged(&fx.world, &before, false);

    // A hard link to a file through the symlink: it would make the outside
    // file part of the volume.
    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client
            .send(entry(
                1,
                b"zz-link",
                Kind::HardLink {
                    target: RelPath::parse(b"evil/keep").unwrap(),
                },
            ))
            .await;
        client.expect_error().await
    });
    assert_contains(&message, &["evil", "symlink, refusing to follow"]);
    assert!(!fx.vol1.join("zz-link").exists());
    assert_eq!(fs::metadata(fx.outside.join("keep")).unwrap().nlink(), 1);
    assert_unchanged(&fx.world, &before, false);

    // A file whose data would go through a symlink to an outside file: the
    // link is replaced, the outside file stays as it was.
    let stats = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.send(entry(1, b"evil-file", file(5))).await;
        match client.next().await {
            Got::Msg(ToSender::Need { id: 1, base: None }) => {}
            other => client.fail(format!("expected Need without base, got {other:?}")),
        }
        client.send(ToReceiver::FileBegin { id: 1 }).await;
        client.send(literal(b"pwned")).await;
        let hash = *blake3::hash(b"pwned").as_bytes();
        client.send(ToReceiver::FileEnd { hash }).await;
        match client.next().await {
            Got::Msg(ToSender::FileDone { id: 1 }) => {}
            other => client.fail(format!("expected FileDone, got {other:?}")),
        }
        client.send(ToReceiver::EndOfList).await;
        match client.next().await {
            Got::Msg(ToSender::Finished { stats }) => stats,
            other => client.fail(format!("expected Finished, got {other:?}")),
        }
    });
    assert_eq!(stats.files_written, 1);
    assert_unchanged(&fx.outside, &snapshot_of(&before, "outside"), false);
    let replaced = fs::symlink_metadata(fx.vol1.join("evil-file")).unwrap();
    assert!(replaced.is_file(), "{:?}", replaced.file_type());
    assert_eq!(fs::read(fx.vol1.join("evil-file")).unwrap(), b"pwned");
    assert_no_temps(&fx.world);
}

/// The part of a world snapshot below `dir`, re-rooted there.
fn snapshot_of(world: &Snapshot, dir: &str) -> Snapshot {
    world
        .iter()
        .filter_map(|(path, node)| {
            let rel = path.strip_prefix(dir).ok()?;
            Some((rel.to_path_buf(), clone_node(node)))
        })
        .collect()
}

/// Case 6: A frame announcing 4 GiB is refused before anything is allocated,
/// with an error naming the limit; the receiver goes on serving.
#[test]
fn oversized_frame_is_refused_and_receiver_survives() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);

    // Before Hello, and in the middle of a session.
    for after_hello in [false, true] {
        let message = block_on(async {
            let mut client = if after_hello {
                let mut c = RawClient::start(&receiver, &fx.c1(), "vol1").await;
                c.send(root_entry()).await;
                c
            } else {
                RawClient::connect(&receiver, &fx.c1()).await
            };
            client
                .send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5])
                .await;
            client.expect_error().await
        });
        assert_contains(
            &message,
            &["frame of 4294967295 bytes exceeds the 4194304-byte maximum"],
        );
        receiver.assert_alive();
    }
    receiver.wait_for_log("exceeds the 4194304-byte maximum");
    assert_unchanged(&fx.world, &before, false);
    fx.assert_still_serves(&mut receiver);
}

/// Case 7a: A peer that connects and never starts TLS (or stalls inside its
/// ClientHello) is dropped after the handshake timeout.
#[test]
fn silent_tcp_peer_is_dropped_after_handshake_timeout() {
    use std::io::Write;
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&["--handshake-timeout", "1"]);

    // Nothing at all, then a TLS record header that promises more.
    for opening in [&[][..], &[0x16, 0x03, 0x01, 0x01, 0x00][..]] {
        let mut tcp = std::net::TcpStream::connect(receiver.addr()).unwrap();
        tcp.set_read_timeout(Some(READ_LIMIT)).unwrap();
        tcp.write_all(opening).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("the receiver sent {:02x?} to a silent peer", &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the receiver kept a silent connection open for {READ_LIMIT:?}")
            }
            Err(_) => {} // reset: closed as well
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(8),
            "closed after {waited:?}, expected about 1s"
        );
    }
    receiver.wait_for_log("no TLS handshake within 1s");
    assert_unchanged(&fx.world, &before, false);
    fx.assert_still_serves(&mut receiver);
}

/// Case 7b: A peer that completes TLS but never says Hello is dropped after the
/// idle timeout, with an error saying so.
#[test]
fn tls_peer_without_hello_is_dropped_after_idle_timeout() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&["--idle-timeout", "2"]);

    let ((message, retryable), waited) = block_on(async {
        let mut client = RawClient::connect(&receiver, &fx.c1()).await;
        let started = Instant::now();
        let refusal = client.expect_any_error().await;
        (refusal, started.elapsed())
    });
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "closed after {waited:?}, expected about 2s"
    );
    // A silent peer may just be a slow network: retryable on the receiver
    // side, but the message must say what happened.
    assert_contains(&message, &["sent nothing for 2s (idle timeout)"]);
    assert!(retryable, "{message}");

    // The same silence in the middle of a session.
    let (message, _) = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.expect_any_error().await
    });
    assert_contains(&message, &["idle timeout"]);

    assert_unchanged(&fx.world, &before, false);
    fx.assert_still_serves(&mut receiver);
}

/// Case 8a: File data past the size the entry declared is refused; the old copy
/// of the file stays, and the temporary file is removed.
#[test]
fn data_past_declared_size_is_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let receiver = fx.start(&[]);

    // A new file, and one replacing a.txt (which has an old copy).
    for (name, id) in [(&b"new-file"[..], 1u64), (b"a.txt", 2)] {
        let message = block_on(async {
            let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
            client.send(root_entry()).await;
            client.send(entry(id, name, file(10))).await;
            loop {
                match client.next().await {
                    Got::Msg(ToSender::Need { id: got, .. }) if got == id => break,
                    Got::Msg(ToSender::BaseHashes { .. }) => {}
                    other => client.fail(format!("expected Need, got {other:?}")),
                }
            }
            client.send(ToReceiver::FileBegin { id }).await;
            client.send(literal(&[b'x'; 20])).await;
            client.expect_error().await
        });
        assert_contains(
            &message,
            &[
                &String::from_utf8_lossy(name),
                "data past the declared size of 10 bytes",
            ],
        );
        // The temporary was created in vol1 and removed again, which
        // touches vol1's mtime; nothing else may differ.
        assert_unchanged(&fx.world, &before, true);
    }
    assert!(!fx.vol1.join("new-file").exists());
    assert_eq!(fs::read(fx.vol1.join("a.txt")).unwrap(), b"the old a\n");
}

/// Case 8b: Absurd file sizes: 2^63 fails validation; 2^63-1 is a legal size,
/// and a file that ends short of it fails cleanly without the receiver
/// allocating anything like it.
#[test]
fn absurd_file_sizes_fail_cleanly() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let receiver = fx.start(&[]);

    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.send(entry(1, b"huge", file(1 << 63))).await;
        client.expect_error().await
    });
    assert_contains(
        &message,
        &[
            "entry huge",
            "file size 9223372036854775808 exceeds the largest supported size",
        ],
    );
    assert_unchanged(&fx.world, &before, false);

    let max = i64::MAX as u64;
    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.send(entry(1, b"huge", file(max))).await;
        match client.next().await {
            Got::Msg(ToSender::Need { id: 1, base: None }) => {}
            other => client.fail(format!("expected Need, got {other:?}")),
        }
        client.send(ToReceiver::FileBegin { id: 1 }).await;
        client.send(literal(b"tiny")).await;
        client.send(ToReceiver::FileEnd { hash: [0; 32] }).await;
        client.expect_error().await
    });
    assert_contains(
        &message,
        &["huge", &format!("file ended at 4 of {max} declared bytes")],
    );
    assert!(!fx.vol1.join("huge").exists());
    assert_unchanged(&fx.world, &before, true);

    // Peak memory of the receiver stayed small.
    let peak_kib = receiver.peak_rss_kb();
    assert!(
        peak_kib < 256 * 1024,
        "receiver peak RSS {peak_kib} KiB after absurd sizes"
    );
}

/// A peer that lists more files than the protocol's window allows, without
/// sending their data, is refused at the first one too many: what the
/// receiver holds per session does not depend on the peer's manners.
#[test]
fn files_beyond_the_pending_window_are_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let receiver = fx.start(&[]);
    let limit = mover::wire::MAX_PENDING_FILES as u64;
    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        for id in 1..=limit + 1 {
            let name = format!("f{id:06}");
            client.send(entry(id, name.as_bytes(), file(10))).await;
        }
        client.expect_error().await
    });
    assert_contains(
        &message,
        &[&format!(
            "more than {limit} files awaiting their data at once"
        )],
    );
    assert_unchanged(&fx.world, &before, true);
    fx.assert_still_serves(&mut { receiver });
}

/// A hole as long as the largest legal file makes the receiver hash 8 EiB of
/// zeros on its applier thread. Nothing interrupts it: the sender hanging up
/// only closes the channel the busy thread is not reading, so the session
/// never ends and the volume stays claimed ("busy") until the receiver is
/// restarted.
#[test]

fn giant_hole_does_not_wedge_the_volume() {
    let fx = Fixture::new();
    let mut receiver = fx.start(&[]);
    block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client
            .send(entry(
                1,
                b"huge",
                Kind::File {
                    size: i64::MAX as u64,
                    sparse: true,
                },
            ))
            .await;
        match client.next().await {
            Got::Msg(ToSender::Need { id: 1, base: None }) => {}
            other => client.fail(format!("expected Need, got {other:?}")),
        }
        client.send(ToReceiver::FileBegin { id: 1 }).await;
        client
            .send(ToReceiver::Hole {
                len: i64::MAX as u64,
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The hostile sender goes away.
    });
    std::thread::sleep(Duration::from_secs(1));
    fx.assert_still_serves(&mut receiver);
}

/// A file whose end-to-end hash does not match what arrived is never put in
/// place: the receiver asks for it again, whole, and a second mismatch
/// fails that file (keeping the old copy) without failing the session.
#[test]
fn content_check_failure_asks_for_the_whole_file_again() {
    let fx = Fixture::new();
    let receiver = fx.start(&[]);
    let content = b"the new a, ten";
    let good = *blake3::hash(content).as_bytes();
    let bad = [0u8; 32];
    block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client
            .send(entry(1, b"a.txt", file(content.len() as u64)))
            .await;
        client
            .send(entry(2, b"b.txt", file(content.len() as u64)))
            .await;
        client.send(ToReceiver::EndOfList).await;
        let mut needs = std::collections::HashMap::<u64, u32>::new();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        loop {
            match client.next().await {
                Got::Msg(ToSender::Need { id, .. }) => {
                    let attempt = needs.entry(id).or_default();
                    *attempt += 1;
                    // a.txt: bad once, then good. b.txt: bad every time.
                    let hash = if id == 1 && *attempt == 2 { good } else { bad };
                    client.send(ToReceiver::FileBegin { id }).await;
                    client.send(literal(content)).await;
                    client.send(ToReceiver::FileEnd { hash }).await;
                }
                Got::Msg(ToSender::BaseHashes { .. }) => {}
                Got::Msg(ToSender::FileDone { id }) => done.push(id),
                Got::Msg(ToSender::FileFailed { id, message }) => {
                    assert_contains(&message, &["content check failed"]);
                    failed.push(id);
                }
                Got::Msg(ToSender::Finished { .. }) => break,
                other => client.fail(format!("unexpected {other:?}")),
            }
        }
        assert_eq!(
            needs[&1], 2,
            "a.txt is asked for again after a failed check"
        );
        assert_eq!(needs[&2], 2, "b.txt is asked for twice, then failed");
        assert_eq!(done, vec![1]);
        assert_eq!(failed, vec![2]);
    });
    assert_eq!(fs::read(fx.vol1.join("a.txt")).unwrap(), content);
    assert!(
        !fx.vol1.join("b.txt").exists(),
        "a file that failed its check is never put in place"
    );
    assert_no_temps(&fx.vol1);
}

/// A revoked client certificate is refused once the receiver has the CA's
/// revocation list; the other clients keep working.
#[test]
fn revoked_client_certificate_is_refused() {
    let fx = Fixture::new();
    let ca = mover::certs::Authority::load(
        &fs::read_to_string(fx.certs.join("ca.crt")).unwrap(),
        &fs::read_to_string(fx.certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let c1 = Creds::bundle(&fx.certs, "c1");
    let c1_der = mover::tls::Identity::from_files(&c1.cert, &c1.key)
        .unwrap()
        .certs()[0]
        .clone();
    let crl = ca
        .crl(&[c1_der], 1, mover::certs::Validity::days(1))
        .unwrap();
    let crl_path = fx.path("revoked.crl");
    fs::write(&crl_path, crl).unwrap();
    let before = snapshot(&fx.vol1);
    let receiver = fx.start(&["--crl", crl_path.to_str().unwrap()]);

    let out = fx.send(&receiver, &fx.honest_source(), "vol1", &c1);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("revoked"),
        "{}",
        stderr(&out)
    );
    assert_unchanged(&fx.vol1, &before, false);
    let c2 = Creds::bundle(&fx.certs, "c2");
    let out = fx.send(&receiver, &fx.honest_source(), "vol2", &c2);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// A patch that would expand past the size the sender declared is refused
/// without writing it, and the old copy stays.
#[test]
fn patch_expanding_past_declared_size_is_refused() {
    let fx = Fixture::new();
    let receiver = fx.start(&[]);
    let old = fs::read(fx.vol1.join("a.txt")).unwrap();
    let message = block_on(async {
        let mut client = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        client.send(root_entry()).await;
        client.send(entry(1, b"a.txt", file(12))).await;
        let info = match client.next().await {
            Got::Msg(ToSender::Need {
                base: Some(info), ..
            }) => info,
            other => client.fail(format!("expected Need with a base, got {other:?}")),
        };
        let signature = mover::delta::signature(&old, info.segment_size);
        let mut patch = Vec::new();
        mover::delta::diff(signature, &[b'z'; 4096], &mut patch).unwrap();
        client.send(ToReceiver::FileBegin { id: 1 }).await;
        client.send(ToReceiver::PatchChunk { delta: patch }).await;
        client.send(ToReceiver::PatchEnd { segment: 0 }).await;
        client.expect_error().await
    });
    assert_contains(&message, &["a.txt"]);
    assert_eq!(fs::read(fx.vol1.join("a.txt")).unwrap(), old);
    let mut receiver = receiver;
    receiver.assert_alive();
}

/// A flood of connections that never finish a handshake takes at most
/// `--max-connections` slots, each for at most the handshake timeout; an
/// honest sender with retries gets through, and memory stays small.
#[test]
fn connection_flood_is_bounded_and_survived() {
    let fx = Fixture::new();
    let receiver = fx.start(&["--max-connections", "4", "--handshake-timeout", "1"]);
    let flood: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(receiver.addr()).ok())
        .collect();
    assert!(flood.len() >= 4);
    let src = fx.honest_source();
    let out = run_bounded(&[
        OsStr::new("send"),
        src.as_os_str(),
        OsStr::new("--connect"),
        OsStr::new(&receiver.addr()),
        OsStr::new("--server-name"),
        OsStr::new("localhost"),
        OsStr::new("--volume"),
        OsStr::new("vol1"),
        OsStr::new("--cert"),
        fx.c1().cert.as_os_str(),
        OsStr::new("--key"),
        fx.c1().key.as_os_str(),
        OsStr::new("--ca"),
        fx.c1().ca.as_os_str(),
        OsStr::new("--retries"),
        OsStr::new("8"),
        OsStr::new("--retry-delay"),
        OsStr::new("0.3"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    drop(flood);
    let mut receiver = receiver;
    receiver.assert_alive();
    let rss_kb = receiver.peak_rss_kb();
    assert!(
        rss_kb < 64 * 1024,
        "receiver grew to {rss_kb} KiB under a flood"
    );
}

/// A stand-in for a route or load balancer: forwards to `target` and cuts
/// any connection on which nothing moved, either way, for `idle`.
fn idle_cutting_proxy(target: String, idle: Duration) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Mutex;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let last = Arc::new(Mutex::new(Instant::now()));
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server.try_clone().unwrap(), client.try_clone().unwrap()),
            ] {
                let last = last.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        *last.lock().unwrap() = Instant::now();
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                if last.lock().unwrap().elapsed() > idle {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    return;
                }
            });
        }
    });
    addr
}

/// A sender that goes quiet for longer than the route's idle timeout (a
/// long scan of a slow tree) is not cut off: the receiver's keepalives
/// keep the route busy. With keepalives rarer than the route's timeout the
/// same session is cut, which shows the proxy really enforces it.
#[test]
fn keepalives_carry_a_quiet_session_through_an_idle_route() {
    let fx = Fixture::new();
    for (keepalive, survives) in [("0.2", true), ("30", false)] {
        let name = format!("late-file-{keepalive}");
        let receiver = fx.start(&["--idle-timeout", "60", "--keepalive", keepalive]);
        let route = idle_cutting_proxy(receiver.addr(), Duration::from_millis(1500));
        let outcome = block_on(async {
            let mut client = RawClient::start_via(&receiver, &fx.c1(), "vol1", &route).await;
            client.send(root_entry()).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.send(entry(1, name.as_bytes(), file(4))).await;
            client.send(ToReceiver::EndOfList).await;
            loop {
                match client.next().await {
                    Got::Msg(ToSender::Need { id: 1, .. }) => {
                        client.send(ToReceiver::FileBegin { id: 1 }).await;
                        client.send(literal(b"late")).await;
                        client
                            .send(ToReceiver::FileEnd {
                                hash: *blake3::hash(b"late").as_bytes(),
                            })
                            .await;
                    }
                    Got::Msg(ToSender::Finished { .. }) => return true,
                    Got::Closed(_) => return false,
                    Got::Msg(_) => {}
                }
            }
        });
        assert_eq!(outcome, survives, "keepalive every {keepalive}s");
        assert_eq!(fx.vol1.join(&name).exists(), survives);
    }
}

/// One sender per volume at a time: while the first proves itself alive, a
/// second one is told to retry (and gets in once the first is gone).
#[test]
fn second_sender_for_a_busy_volume_is_told_to_retry() {
    let fx = Fixture::new();
    let receiver = fx.start(&[]);
    block_on(async {
        let mut first = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        let mut second = RawClient::connect(&receiver, &fx.c1()).await;
        second.send(hello("vol1")).await;
        // The first sender is alive: it answers the probe the second causes.
        match first.next().await {
            Got::Msg(ToSender::Probe) => first.send(ToReceiver::Keepalive).await,
            other => first.fail(format!("expected a liveness probe, got {other:?}")),
        }
        let (message, retryable) = second.expect_any_error().await;
        assert!(retryable, "a busy volume is worth a retry: {message}");
        assert_contains(&message, &["vol1", "busy"]);
        drop(first);
    });
    // The receiver frees the volume once it sees the first session end.
    let src = fx.honest_source();
    let mut out = fx.send(&receiver, &src, "vol1", &fx.c1());
    for _ in 0..50 {
        if code(&out) != 75 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = fx.send(&receiver, &src, "vol1", &fx.c1());
    }
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `Join` for a session's data connections (`--streams`): refused unless
/// its token names a session still waiting, its lane is one that session
/// lacks, and its certificate allows that session's volume; and a joined
/// lane that breaks the segment rules fails the session, permanently,
/// writing nothing.
#[test]
fn data_connections_must_name_a_waiting_session_its_volume_and_a_free_lane() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);
    let c2 = Creds::bundle(&fx.certs, "c2");
    block_on(async {
        let token = [9u8; 32];
        let mut control = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        control.send(ToReceiver::Streams { count: 2, token }).await;
        let join = |creds: Creds, token: [u8; 32], lane: u32| {
            let receiver = &receiver;
            async move {
                let mut client = RawClient::connect(receiver, &creds).await;
                client.send(ToReceiver::Join { token, lane }).await;
                client
            }
        };
        for (creds, token, lane, reason) in [
            (c2.clone(), token, 0, "does not allow volume \"vol1\""),
            (fx.c1(), [7u8; 32], 0, "no session is waiting"),
            (fx.c1(), token, 2, "beyond the 2 the session asked for"),
        ] {
            let message = join(creds, token, lane).await.expect_error().await;
            assert_contains(&message, &[reason]);
        }
        let mut lanes = Vec::new();
        for lane in 0..2 {
            let mut client = join(fx.c1(), token, lane).await;
            match client.next().await {
                Got::Msg(ToSender::Welcome { .. }) => lanes.push(client),
                other => client.fail(format!("expected Welcome, got {other:?}")),
            }
            if lane == 0 {
                let message = join(fx.c1(), token, 0).await.expect_error().await;
                assert_contains(&message, &["data connection 0 has already joined"]);
            }
        }
        // Segment 0 claims 4 GiB.
        let mut huge = 0u64.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        lanes[1].send_bytes(&huge).await;
        let message = control.expect_error().await;
        assert_contains(
            &message,
            &["data connection 1", "segment of 4294967295 bytes exceeds"],
        );
    });
    receiver.assert_alive();
    assert_unchanged(&fx.world, &before, false);
}

/// A sender asking for data connections must ask for a sane number, with a
/// token of its own, and must wait for them before sending anything more.
#[test]
fn streams_requests_out_of_bounds_or_out_of_turn_are_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.world);
    let mut receiver = fx.start(&[]);
    let c2 = Creds::bundle(&fx.certs, "c2");
    block_on(async {
        let token = [5u8; 32];
        for count in [0, 1, 9, u32::MAX] {
            let mut control = RawClient::start(&receiver, &fx.c1(), "vol1").await;
            control.send(ToReceiver::Streams { count, token }).await;
            let message = control.expect_error().await;
            assert_contains(
                &message,
                &[&format!("asked for {count} data connections; 2 to 8")],
            );
        }
        let mut first = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        first.send(ToReceiver::Streams { count: 2, token }).await;
        receiver.wait_for_log("waiting for 2 data connections for volume vol1");
        let mut second = RawClient::start(&receiver, &c2, "vol2").await;
        second.send(ToReceiver::Streams { count: 2, token }).await;
        let message = second.expect_error().await;
        assert_contains(&message, &["named the token of another session"]);
        first.send(root_entry()).await;
        let message = first.expect_error().await;
        assert_contains(&message, &["before its data connections joined"]);
        // Streams and more in one breath.
        let mut eager = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        let mut both = frame(ToReceiver::Streams { count: 2, token });
        both.extend(frame(root_entry()));
        eager.send_bytes(&both).await;
        let message = eager.expect_error().await;
        assert_contains(&message, &["before its data connections joined"]);
        // Mid-session, Streams is no opening any more.
        let mut late = RawClient::start(&receiver, &fx.c1(), "vol1").await;
        late.send(root_entry()).await;
        late.send(ToReceiver::Streams { count: 2, token }).await;
        let message = late.expect_error().await;
        assert_contains(&message, &["Streams or Join in the middle of a session"]);
    });
    receiver.assert_alive();
    assert_unchanged(&fx.world, &before, false);
}
