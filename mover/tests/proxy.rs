//! `mover send --proxy`: the sender reaches the receiver through an HTTP
//! CONNECT proxy (a small one the test runs on loopback), with and without
//! Basic credentials; the TLS server name stays the receiver's, and a
//! proxy's refusal is a clear error naming the proxy and its answer.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A CONNECT proxy on a free port. With `credentials` (`user:password`)
/// it wants `Proxy-Authorization: Basic` with them and answers 407
/// otherwise. Returns its port and the request heads it received.
fn connect_proxy(credentials: Option<&str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    use base64::Engine as _;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let wanted = credentials.map(|c| {
        format!(
            "proxy-authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let head = read_head(&mut client);
            seen.lock().unwrap().push(head.clone());
            let lower = head.to_ascii_lowercase();
            if let Some(wanted) = &wanted {
                if !lower
                    .lines()
                    .any(|l| l.trim() == wanted.to_ascii_lowercase())
                {
                    let _ = client.write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                          Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                    );
                    continue;
                }
            }
            let target = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let Ok(server) = TcpStream::connect(&target) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                continue;
            };
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pipe(client, server));
            thread::spawn(move || pipe(s2, c2));
        }
    });
    (port, heads)
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// A source tree, an empty destination and a receiver serving it.
struct Setup {
    tmp: tempfile::TempDir,
    port: u16,
    _receiver: Receiver,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        certs(&pki, &["db=data"]);
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("big.bin"), random_bytes(3 * 1024 * 1024, 5)).unwrap();
        fs::write(src.join("sub/small.txt"), b"through the proxy").unwrap();
        let port = free_port();
        let receiver = receive(&pki, port, &[("data", &dst)], &[]);
        Setup {
            tmp,
            port,
            _receiver: receiver,
        }
    }

    fn send(&self, extra: &[&str]) -> std::process::Command {
        let p = self.tmp.path();
        send(
            &p.join("pki"),
            "db",
            &p.join("src"),
            self.port,
            "data",
            extra,
        )
    }

    fn assert_copied(&self) {
        let p = self.tmp.path();
        assert_same_tree(&p.join("src"), &p.join("dst"));
    }
}

#[test]
fn sends_through_a_connect_proxy_keeping_the_receivers_server_name() {
    let setup = Setup::new();
    let (proxy, heads) = connect_proxy(None);
    // By IP with the route host as SNI: the proxy is asked for the IP,
    // the certificate is checked for the route host.
    let out = setup
        .send(&[
            "--server-name",
            "route.apps.example.test",
            "--proxy",
            &format!("http://127.0.0.1:{proxy}"),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "sender: {}", stderr(&out));
    setup.assert_copied();
    let heads = heads.lock().unwrap();
    let target = format!("127.0.0.1:{}", setup.port);
    assert_eq!(
        heads.as_slice(),
        [format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
        )]
    );
}

#[test]
fn sends_through_a_proxy_that_wants_basic_credentials() {
    let setup = Setup::new();
    let (proxy, heads) = connect_proxy(Some("mover:p@ss:word"));
    // From the environment, as a pod gets it from a Secret; `@` and `:`
    // in the password are percent-escaped in the URL.
    let out = setup
        .send(&[])
        .env(
            "MOVER_PROXY",
            format!("http://mover:p%40ss%3Aword@127.0.0.1:{proxy}"),
        )
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "sender: {}", stderr(&out));
    setup.assert_copied();
    assert!(
        heads.lock().unwrap()[0].contains("Proxy-Authorization: Basic bW92ZXI6cEBzczp3b3Jk\r\n"),
        "{:?}",
        heads.lock().unwrap()
    );
}

#[test]
fn a_proxy_refusing_the_sender_is_a_clear_error_that_retrying_will_not_fix() {
    let setup = Setup::new();
    let (proxy, heads) = connect_proxy(Some("mover:secret"));
    let target = format!("localhost:{}", setup.port);
    let refused = format!(
        "mover: proxy http://127.0.0.1:{proxy} refused CONNECT {target}: \
         HTTP/1.1 407 Proxy Authentication Required"
    );

    let out = setup
        .send(&[
            "--proxy",
            &format!("http://127.0.0.1:{proxy}"),
            "--retries",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "permanent: {}", stderr(&out));
    assert_line(
        &stderr(&out),
        &format!("{refused} (it wants credentials: --proxy http://USER:PASSWORD@HOST:PORT)"),
    );
    assert_eq!(heads.lock().unwrap().len(), 1, "not retried");

    let out = setup
        .send(&["--proxy", &format!("http://mover:wrong@127.0.0.1:{proxy}")])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "permanent: {}", stderr(&out));
    assert_line(
        &stderr(&out),
        &format!("{refused} (it refused the credentials given)"),
    );
    assert!(!stderr(&out).contains("wrong"), "no password in messages");
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn an_unusable_proxy_url_is_a_usage_error() {
    let setup = Setup::new();
    let out = setup
        .send(&["--proxy", "https://mover:secret@squid:3128"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_line(
        &stderr(&out),
        "mover: --proxy: proxy \"https://mover:***@squid:3128\": only http:// proxies are \
         supported (the tunnel carries TLS already), not https://",
    );
}

#[test]
fn a_proxy_that_cannot_be_reached_may_be_retried() {
    let setup = Setup::new();
    let closed = free_port();
    let out = setup
        .send(&["--proxy", &format!("http://127.0.0.1:{closed}")])
        .output()
        .unwrap();
    assert_eq!(code(&out), 75, "retryable: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("connecting to proxy http://127.0.0.1:{closed}: ")),
        "{}",
        stderr(&out)
    );
}
