//! `mover certs` + `mover receive` + `mover send` as separate processes, the
//! way the two ends run in two clusters.

mod common;

use common::*;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn two_volumes_from_two_senders_then_receiver_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["db=data", "web=www"]);
    let (data_src, www_src) = (tmp.path().join("data-src"), tmp.path().join("www-src"));
    let (data_dst, www_dst) = (tmp.path().join("data-dst"), tmp.path().join("www-dst"));
    for d in [&data_src, &www_src, &data_dst, &www_dst] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(data_src.join("table.db"), random_bytes(5 * 1024 * 1024, 11)).unwrap();
    for i in 0..200 {
        let dir = www_src.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i}.html")),
            random_bytes(i * 37, i as u64),
        )
        .unwrap();
    }
    fs::write(www_dst.join("stale.html"), b"old").unwrap();

    let port = free_port();
    let mut receiver = receive(
        &pki,
        port,
        &[("data", &data_dst), ("www", &www_dst)],
        &["--exit-when-done"],
    );
    // Both senders run at once; one addresses the receiver by IP but
    // presents the route host as SNI, as a sender behind a passthrough
    // route does.
    let www = send(&pki, "web", &www_src, port, "www", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = send(
        &pki,
        "db",
        &data_src,
        port,
        "data",
        &["--server-name", "route.apps.example.test"],
    )
    .output()
    .unwrap();
    let www = www.wait_with_output().unwrap();
    assert_eq!(code(&data), 0, "data sender: {}", stderr(&data));
    assert_eq!(code(&www), 0, "www sender: {}", stderr(&www));
    assert_eq!(summary(&www)["files_deleted"], 1);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = receiver.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "receiver did not exit after both volumes synced"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "receiver exit: {status}");
    assert_same_tree(&data_src, &data_dst);
    assert_same_tree(&www_src, &www_dst);
}

#[test]
fn exit_codes_distinguish_retryable_and_permanent_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, &["db=data"]);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();

    // Nobody listening: retrying may help.
    let refused = send(&pki, "db", &src, free_port(), "data", &[])
        .output()
        .unwrap();
    assert_eq!(code(&refused), 75, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("connecting to localhost"),
        "{}",
        stderr(&refused)
    );

    // A server name the certificate does not cover: retrying will not help.
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let port = free_port();
    let _receiver = receive(&pki, port, &[("data", &dst)], &[]);
    let wrong_name = send(
        &pki,
        "db",
        &src,
        port,
        "data",
        &["--server-name", "other.example.test"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&wrong_name), 1, "{}", stderr(&wrong_name));
    assert!(
        stderr(&wrong_name).contains("certificate"),
        "{}",
        stderr(&wrong_name)
    );

    // A source that is not a directory: permanent, and says which.
    let missing = send(&pki, "db", &tmp.path().join("nope"), port, "data", &[])
        .output()
        .unwrap();
    assert_eq!(code(&missing), 1, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
}
