//! The sender stays inside its source while an application changes it. A
//! directory swapped for a symlink to outside the source, between the walk
//! listing it and the sender reading below it, never makes the sender read
//! or send anything from where the symlink points; a file replaced by
//! another under the same name is reported as vanished, never sent.
//!
//! The test plays the receiver, over a real TLS connection to the library's
//! sender, so it decides when the sender reads: the swap always happens
//! after the walk listed the object and before the sender opens it. No
//! timing is involved.

mod common;

use common::set_mtime;
use futures_util::StreamExt;
use mover::compress::Compress;
use mover::failure::Failure;
use mover::progress::Counters;
use mover::send::{SendConfig, SendReport};
use mover::wire::frame::{Codec, FrameError};
use mover::wire::message::{
    AbortReason, FileId, ReceiverStats, SyncOptions, ToReceiver, ToSender, XattrPolicy,
};
use mover::wire::PROTOCOL_VERSION;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Encoder, FramedRead};

/// Longest the sender may stay silent before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(20);

/// How many listed files the sender lets await an answer (its window):
/// after that many, the walk waits for answers before listing more.
const SENDER_WINDOW: usize = 4096;

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// The receiving end, played by the test.
struct FakeReceiver {
    reader: FramedRead<ReadHalf<Tls>, Codec<ToReceiver, ToSender>>,
    writer: WriteHalf<Tls>,
    sender: JoinHandle<Result<SendReport, Failure>>,
    /// Every entry listed so far, by path, with its file id.
    listed: BTreeMap<String, FileId>,
    /// Directories the sender said it could not list completely.
    kept: Vec<String>,
}

impl FakeReceiver {
    /// Starts the library's sender on `source` and accepts its connection
    /// and Hello.
    async fn start(source: &Path) -> FakeReceiver {
        let (server_tls, client_tls) = mover::tls::ephemeral(&["v".to_string()]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = SendConfig {
            source: source.to_path_buf(),
            volume: "v".to_string(),
            options: SyncOptions {
                delete: false,
                xattrs: XattrPolicy::User,
                ..SyncOptions::default()
            },
            idle_timeout: READ_LIMIT,
            keepalive: Duration::from_secs(5),
            compress: Compress::Off,
            itemize: Default::default(),
            block: false,
            streams: 1,
        };
        let sender = tokio::spawn(async move {
            let counters = Arc::new(Counters::default());
            let stream =
                mover::net::connect(&addr, "localhost", client_tls, counters.clone(), READ_LIMIT)
                    .await?;
            mover::send::run(stream, None, config, counters).await
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(server_tls)
            .accept(tcp)
            .await
            .unwrap();
        let (read, writer) = tokio::io::split(tls);
        let mut receiver = FakeReceiver {
            reader: FramedRead::new(read, Codec::default()),
            writer,
            sender,
            listed: BTreeMap::new(),
            kept: Vec::new(),
        };
        match receiver.next().await {
            ToReceiver::Hello { .. } => {}
            other => panic!("expected Hello, got {other:?}"),
        }
        receiver
            .send(ToSender::Welcome {
                protocol: PROTOCOL_VERSION,
                features: mover::wire::hello::Features::ours(),
            })
            .await;
        receiver
    }

    async fn send(&mut self, msg: ToSender) {
        let mut buf = bytes::BytesMut::new();
        Codec::<ToReceiver, ToSender>::default()
            .encode(msg, &mut buf)
            .unwrap();
        self.writer.write_all(&buf).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next message other than a keepalive.
    async fn next(&mut self) -> ToReceiver {
        loop {
            let item = tokio::time::timeout(READ_LIMIT, self.reader.next())
                .await
                .expect("the sender went silent");
            match item {
                Some(Ok(ToReceiver::Keepalive)) => continue,
                Some(Ok(msg)) => return msg,
                Some(Err(FrameError::Io(e))) => panic!("the sender hung up: {e}"),
                other => panic!("bad frame from the sender: {other:?}"),
            }
        }
    }

    /// Reads the list until `files` regular files have been listed in all,
    /// or to its end (then returns true).
    async fn list_until(&mut self, files: usize) -> bool {
        while self.listed.values().filter(|&&id| id != 0).count() < files {
            match self.next().await {
                ToReceiver::Entry { id, entry } => {
                    self.listed.insert(entry.path.to_string(), id);
                }
                ToReceiver::KeepContents { dir } => self.kept.push(dir.to_string()),
                ToReceiver::EndOfList => return true,
                other => panic!("expected the file list, got {other:?}"),
            }
        }
        false
    }

    /// Asks for the file `id` whole and returns every byte of data the
    /// sender sent for it, and whether it finished the file (`FileEnd`)
    /// rather than giving up on it as vanished.
    async fn fetch(&mut self, id: FileId) -> (Vec<u8>, bool) {
        self.send(ToSender::Need { id, base: None }).await;
        match self.next().await {
            ToReceiver::FileBegin { id: began } => assert_eq!(began, id),
            other => panic!("expected FileBegin {id}, got {other:?}"),
        }
        let mut data = Vec::new();
        loop {
            match self.next().await {
                ToReceiver::Literal { data: chunk } => data.extend_from_slice(&chunk),
                ToReceiver::Hole { len } => data.resize(data.len() + len as usize, 0),
                ToReceiver::FileEnd { .. } => {
                    self.send(ToSender::FileDone { id }).await;
                    return (data, true);
                }
                ToReceiver::FileAbort { reason } => {
                    assert_eq!(reason, AbortReason::Vanished);
                    let message = "vanished at the source".to_string();
                    self.send(ToSender::FileFailed { id, message }).await;
                    return (data, false);
                }
                other => panic!("expected data for file {id}, got {other:?}"),
            }
        }
    }

    /// Ends the session and returns the sender's report.
    async fn finish(mut self) -> SendReport {
        let stats = ReceiverStats::default();
        self.send(ToSender::Finished { stats }).await;
        self.sender
            .await
            .unwrap()
            .unwrap_or_else(|f| panic!("sender failed: {f}"))
    }
}

/// Writes `content` at `path` with a fixed mtime, so that a file put in
/// its place with the same size and mtime looks unchanged by those.
fn write_file(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    set_mtime(path, 1_600_000_000, 0);
}

const PUBLIC: &[u8] = b"public bytes of the source..";
const SECRET: &[u8] = b"SECRET bytes from elsewhere!";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `a` is swapped for a symlink to a directory outside the source, and
/// `c` for another directory, after the walk listed `a/b/f` and `c/g` and
/// before the sender reads them: neither is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_below_a_swapped_directory_are_not_read() {
    assert_eq!(PUBLIC.len(), SECRET.len());
    let tmp = tempfile::tempdir().unwrap();
    let (src, outside) = (tmp.path().join("src"), tmp.path().join("outside"));
    write_file(&src.join("a/b/f"), PUBLIC);
    write_file(&src.join("c/g"), PUBLIC);
    write_file(&src.join("h"), PUBLIC);
    write_file(&outside.join("b/f"), SECRET);
    write_file(&tmp.path().join("impostor/g"), SECRET);

    let mut receiver = FakeReceiver::start(&src).await;
    assert!(receiver.list_until(usize::MAX).await);
    fs::rename(src.join("a"), tmp.path().join("a-moved")).unwrap();
    symlink(&outside, src.join("a")).unwrap();
    fs::rename(src.join("c"), tmp.path().join("c-moved")).unwrap();
    fs::rename(tmp.path().join("impostor"), src.join("c")).unwrap();
    // What reading by full path would now find.
    assert_eq!(fs::read(src.join("a/b/f")).unwrap(), SECRET);
    assert_eq!(fs::read(src.join("c/g")).unwrap(), SECRET);

    for (path, finished) in [("a/b/f", false), ("c/g", false), ("h", true)] {
        let id = receiver.listed[path];
        let (data, done) = receiver.fetch(id).await;
        assert!(!contains(&data, SECRET), "{path}: the secret was sent");
        assert_eq!(done, finished, "{path}");
        if done {
            assert_eq!(data, PUBLIC);
        }
    }
    let report = receiver.finish().await;
    assert_eq!(report.counters.vanished, 2, "{:?}", report.problems);
    for path in ["a/b/f", "c/g"] {
        assert!(
            report.problems.iter().any(|p| p.contains(path)),
            "{path} not reported: {:?}",
            report.problems
        );
    }
}

/// A directory whose descriptor the walk closed (the branch is deeper than
/// the descriptors it keeps open) has an ancestor swapped for a symlink to
/// outside the source before the walk comes back to it: the walk does not
/// list, and the sender does not read, what lies there; it reports the
/// directory and has the receiver keep its contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_directory_is_not_reached_through_a_swapped_ancestor() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, outside) = (tmp.path().join("src"), tmp.path().join("outside"));
    // src/d1/.../d40: the walk keeps 32 descriptors, so by d40 the levels
    // d1..d9 are closed. d9 has `zz` after `d10`: listing it needs d9
    // opened again. The secret waits at the same path below `outside`.
    let chain: Vec<String> = (1..=40).map(|i| format!("d{i}")).collect();
    let deepest = src.join(chain.join("/"));
    fs::create_dir_all(&deepest).unwrap();
    for i in 0..=SENDER_WINDOW {
        fs::write(deepest.join(format!("f{i:05}")), b"").unwrap();
    }
    let d9 = chain[..9].join("/");
    write_file(&src.join(&d9).join("zz"), PUBLIC);
    write_file(&outside.join(chain[2..9].join("/")).join("zz"), SECRET);

    let mut receiver = FakeReceiver::start(&src).await;
    // The walk now waits for answers before listing the last file of d40.
    assert!(!receiver.list_until(SENDER_WINDOW).await);
    let d2 = src.join(chain[..2].join("/"));
    fs::rename(&d2, tmp.path().join("d2-moved")).unwrap();
    symlink(&outside, &d2).unwrap();
    let answered: Vec<FileId> = receiver
        .listed
        .values()
        .copied()
        .filter(|&id| id != 0)
        .collect();
    for id in answered {
        receiver.send(ToSender::Have { id }).await;
    }
    assert!(receiver.list_until(usize::MAX).await);

    let zz = format!("{d9}/zz");
    assert!(
        !receiver.listed.contains_key(&zz),
        "{zz} was listed from outside the source"
    );
    assert_eq!(receiver.kept, std::slice::from_ref(&d9));
    let last = receiver.listed[&format!("{}/f{SENDER_WINDOW:05}", chain.join("/"))];
    receiver.send(ToSender::Have { id: last }).await;
    let report = receiver.finish().await;
    assert_eq!(report.counters.vanished, 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains(&d9) && report.problems[0].contains("cannot open again"),
        "{:?}",
        report.problems
    );
}
