//! The image copy engine against real registries (Debian's
//! `docker-registry`, distribution 2.x) on loopback: what arrives, what
//! moves, what is refused, and how it authenticates.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::fault_proxy::{Fault, FaultProxy};
use common::images::{push_image, push_index, random_bytes, Format};
use common::pki::Pki;
use common::process::{Auth, LocalRegistry, Options};
use common::token_server::{TokenServer, ISSUER, SERVICE};
use common::{client, init};
use orchestrator::registry::{
    copy_image, Content, CopyReport, Credentials, Digest, ErrorKind, ImageProgress, Mismatch,
    Reference, Registry, Trust,
};

fn r(s: &str) -> Reference {
    s.parse().expect("a valid reference")
}

fn plain(reg: &LocalRegistry) -> Registry {
    client(&reg.url, Credentials::Anonymous, Trust::Platform)
}

fn basic(user: &str, password: &str) -> Credentials {
    Credentials::Basic {
        username: user.into(),
        password: password.into(),
    }
}

/// Copies, collecting every progress report.
async fn copy(
    src: &Registry,
    from: &str,
    dst: &Registry,
    to: &str,
) -> (
    Result<CopyReport, orchestrator::registry::Error>,
    Vec<ImageProgress>,
) {
    let seen = Mutex::new(Vec::new());
    let res = copy_image(src, &r(from), dst, &r(to), &|p| {
        seen.lock().unwrap().push(p)
    })
    .await;
    (res, seen.into_inner().unwrap())
}

/// The copy's error, which must name the registry.
fn expect_err<T: std::fmt::Debug>(
    res: Result<T, orchestrator::registry::Error>,
    registry: &str,
) -> orchestrator::registry::Error {
    let e = res.expect_err("the copy must fail");
    assert_eq!(e.registry, registry, "{e}");
    assert!(e.to_string().contains(registry), "{e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_image_arrives_blob_for_blob_with_progress() {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let (s, d) = (plain(&src), plain(&dst));
    // Chunked (3 MiB + a bit, with 1 MiB chunks), exactly one chunk, small,
    // one byte, and empty: every upload path.
    let layers = vec![
        random_bytes(1, (3 << 20) + 123),
        random_bytes(2, 1 << 20),
        random_bytes(3, 100_000),
        random_bytes(4, 1),
        Bytes::new(),
    ];
    let img = push_image(&s, "team/app", Some("v1"), &layers, "amd64", Format::Docker).await;

    let (res, progress) = copy(&s, "team/app:v1", &d, "team-b/app:v1").await;
    let report = res.expect("the copy succeeds");
    let total: u64 = layers.iter().map(|l| l.len() as u64).sum::<u64>()
        + std::fs::metadata(src.blob_file(&img.config)).unwrap().len();
    assert_eq!(report.digest, img.digest);
    assert_eq!(report.media_type, img.media_type);
    assert_eq!(
        (
            report.blobs,
            report.uploaded,
            report.mounted,
            report.existing
        ),
        (6, 6, 0, 0)
    );
    assert_eq!((report.bytes, report.bytes_uploaded), (total, total));
    assert_eq!(report.manifests, 1);
    assert!(!report.up_to_date);
    assert_eq!(report.source, format!("{}/team/app:v1", src.name()));
    assert_eq!(report.destination, format!("{}/team-b/app:v1", dst.name()));

    // The destination serves the same manifest, and holds every blob with
    // the content that was pushed, linked into the repository.
    let m = d.get_manifest(&r("team-b/app:v1")).await.unwrap();
    assert_eq!(m.digest, img.digest);
    for (digest, data) in img.layers.iter().zip(&layers) {
        assert_eq!(std::fs::read(dst.blob_file(digest)).unwrap(), data.as_ref());
        assert!(dst.layer_link("team-b/app", digest).exists());
    }
    assert!(d.blob_exists("team-b/app", &img.config).await.unwrap());

    // Progress: totals from the start, never past them, never backwards,
    // complete at the end.
    let last = *progress.last().expect("progress was reported");
    assert_eq!(
        last,
        ImageProgress {
            blobs_done: 6,
            blobs_total: 6,
            bytes_done: total,
            bytes_total: total
        }
    );
    for w in progress.windows(2) {
        assert!(w[0].bytes_done <= w[1].bytes_done && w[0].blobs_done <= w[1].blobs_done);
    }
    assert!(progress
        .iter()
        .all(|p| p.bytes_total == total && p.blobs_total == 6 && p.bytes_done <= total));
    assert_eq!(progress[0].bytes_done, 0);
}

async fn index_copies_every_platform(format: Format) {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let (s, d) = (plain(&src), plain(&dst));
    let base = random_bytes(10, 200_000);
    let platforms = [
        ("amd64", vec![base.clone(), random_bytes(11, 1_500_000)]),
        ("arm64", vec![base.clone(), random_bytes(12, 30_000)]),
        ("s390x", vec![random_bytes(13, 40_000)]),
    ];
    let index = push_index(&s, "team/multi", "v1", &platforms, format).await;

    let (res, progress) = copy(&s, "team/multi:v1", &d, "mirror/multi:latest").await;
    let report = res.expect("the copy succeeds");
    assert_eq!(report.digest, index.digest);
    assert_eq!(report.manifests, 4);
    // Base once, three own layers, three configs.
    assert_eq!((report.blobs, report.uploaded), (7, 7));
    assert_eq!(progress.last().unwrap().blobs_done, 7);

    let top = d.get_manifest(&r("mirror/multi:latest")).await.unwrap();
    assert_eq!(top.digest, index.digest);
    let Content::Index { manifests } = &top.content else {
        panic!("the destination tag is not an index")
    };
    assert_eq!(manifests.len(), 3);
    for img in &index.platforms {
        let by_digest = Reference::digest("mirror/multi", img.digest.clone()).unwrap();
        let m = d
            .get_manifest(&by_digest)
            .await
            .expect("every platform is there");
        assert_eq!(m.media_type, img.media_type);
        for b in img.blobs() {
            assert!(d.blob_exists("mirror/multi", &b).await.unwrap(), "{b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_index_copies_every_platform() {
    index_copies_every_platform(Format::Oci).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_manifest_list_copies_every_platform() {
    index_copies_every_platform(Format::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_tag_moves_only_new_blobs() {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let (s, d) = (plain(&src), plain(&dst));
    let layers: Vec<Bytes> = (20..23).map(|i| random_bytes(i, 300_000)).collect();
    push_image(&s, "team/app", Some("v1"), &layers, "amd64", Format::Oci).await;
    let (res, _) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    assert_eq!(res.unwrap().uploaded, 4);

    // The tag moves to an image with one more layer.
    let new_layer = random_bytes(23, 250_000);
    let mut layers2 = layers.clone();
    layers2.push(new_layer.clone());
    let v2 = push_image(&s, "team/app", Some("v1"), &layers2, "amd64", Format::Oci).await;
    let (res, _) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    let report = res.unwrap();
    let config_size = std::fs::metadata(src.blob_file(&v2.config)).unwrap().len();
    assert_eq!(report.digest, v2.digest);
    assert_eq!(
        (report.uploaded, report.existing, report.mounted),
        (2, 3, 0)
    );
    assert_eq!(report.bytes_uploaded, new_layer.len() as u64 + config_size);
    assert_eq!(
        d.manifest_digest(&r("team/app:v1")).await.unwrap(),
        Some(v2.digest.clone())
    );
    assert!(dst.blob_file(&v2.layers[3]).exists());

    // Copying again finds the tag up to date and writes nothing.
    let (res, progress) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    let report = res.unwrap();
    assert!(report.up_to_date);
    assert_eq!((report.uploaded, report.existing), (0, 5));
    assert_eq!(progress.last().unwrap().blobs_done, 5);

    // The blobs of the image a destination tag names are taken as present;
    // one removed from the repository since is found when the registry
    // refuses the manifest, and put back.
    let removed = &v2.layers[0];
    let url = format!("{}/v2/team/app/blobs/{removed}", dst.url);
    let resp = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 202, "{url}");
    assert!(!d.blob_exists("team/app", removed).await.unwrap());
    let mut layers3 = layers2.clone();
    layers3.push(random_bytes(24, 1000));
    let v3 = push_image(&s, "team/app", Some("v1"), &layers3, "amd64", Format::Oci).await;
    let (res, _) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    let report = res.unwrap();
    assert_eq!((report.uploaded, report.existing), (3, 3));
    assert!(d.blob_exists("team/app", removed).await.unwrap());
    assert_eq!(
        d.manifest_digest(&r("team/app:v1")).await.unwrap(),
        Some(v3.digest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_shared_by_two_repositories_is_mounted_not_uploaded() {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let (s, d) = (plain(&src), plain(&dst));
    let base: Vec<Bytes> = (30..32).map(|i| random_bytes(i, 400_000)).collect();
    let a = push_image(
        &s,
        "team-a/app",
        Some("v1"),
        &[base[0].clone(), base[1].clone(), random_bytes(32, 1000)],
        "amd64",
        Format::Docker,
    )
    .await;
    let b = push_image(
        &s,
        "team-b/app",
        Some("v1"),
        &[base[0].clone(), base[1].clone(), random_bytes(33, 1000)],
        "amd64",
        Format::Docker,
    )
    .await;
    assert_eq!(a.layers[..2], b.layers[..2]);

    let (res, _) = copy(&s, "team-a/app:v1", &d, "team-a/app:v1").await;
    assert_eq!(res.unwrap().uploaded, 4);
    let (res, _) = copy(&s, "team-b/app:v1", &d, "team-b/app:v1").await;
    let report = res.unwrap();
    assert_eq!(
        (report.mounted, report.uploaded, report.existing),
        (2, 2, 0)
    );
    assert_eq!(
        report.bytes_uploaded,
        1000 + std::fs::metadata(src.blob_file(&b.config)).unwrap().len()
    );
    for shared in &b.layers[..2] {
        assert!(dst.layer_link("team-b/app", shared).exists(), "{shared}");
        assert!(d.blob_exists("team-b/app", shared).await.unwrap());
    }

    // Within one registry every blob is mounted from the source repository.
    let (res, _) = copy(&s, "team-a/app:v1", &s, "team-c/app:v1").await;
    let report = res.unwrap();
    assert_eq!((report.mounted, report.uploaded), (4, 0));
    assert_eq!(
        s.manifest_digest(&r("team-c/app:v1")).await.unwrap(),
        Some(a.digest)
    );
}

/// Overwrites one byte of a blob in the registry's storage.
fn corrupt(reg: &LocalRegistry, d: &Digest, at_end: bool) {
    let path = reg.blob_file(d);
    let mut data = std::fs::read(&path).unwrap();
    let i = if at_end {
        data.len() - 1
    } else {
        data.len() / 2
    };
    data[i] ^= 0xff;
    std::fs::write(&path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_source_blob_is_refused_and_nothing_is_published() {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let (s, d) = (plain(&src), plain(&dst));
    // One corrupted small layer (one PUT), and in another image a large
    // one corrupted in its last byte (the last of three PATCH chunks).
    let small = push_image(
        &s,
        "team/app",
        Some("v1"),
        &[random_bytes(40, 2_500_000), random_bytes(41, 50_000)],
        "amd64",
        Format::Docker,
    )
    .await;
    let large = push_image(
        &s,
        "team/big",
        Some("v1"),
        &[random_bytes(42, (2 << 20) + 5)],
        "amd64",
        Format::Oci,
    )
    .await;
    corrupt(&src, &small.layers[1], false);
    corrupt(&src, &large.layers[0], true);

    for (repo, bad) in [
        ("team/app", &small.layers[1]),
        ("team/big", &large.layers[0]),
    ] {
        let (res, _) = copy(&s, &format!("{repo}:v1"), &d, &format!("{repo}:v1")).await;
        let e = expect_err(res, src.name());
        let msg = e.to_string();
        assert!(
            msg.contains(repo) && msg.contains(&bad.to_string()) && msg.contains("digest mismatch"),
            "{msg}"
        );
        match &e.kind {
            ErrorKind::Content(Mismatch::Digest { expected, .. }) => assert_eq!(expected, bad),
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert_eq!(e.repository.as_deref(), Some(repo));
        assert_eq!(
            d.manifest_digest(&r(&format!("{repo}:v1"))).await.unwrap(),
            None,
            "nothing may be published at the destination tag"
        );
        assert!(!d.blob_exists(repo, bad).await.unwrap());
        assert!(!dst.blob_file(bad).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_takes_basic_auth_and_refuses_others() {
    init();
    let src = LocalRegistry::start(Options::default());
    let dst = LocalRegistry::start(Options {
        auth: Auth::Htpasswd {
            user: "mover".into(),
            password: "s3cret pass".into(),
        },
        ..Options::default()
    });
    let s = plain(&src);
    let img = push_image(
        &s,
        "team/app",
        Some("v1"),
        &[random_bytes(50, 70_000)],
        "amd64",
        Format::Docker,
    )
    .await;

    let good = client(&dst.url, basic("mover", "s3cret pass"), Trust::Platform);
    good.check()
        .await
        .expect("preflight with the right password");
    let (res, _) = copy(&s, "team/app:v1", &good, "team/app:v1").await;
    assert_eq!(res.unwrap().uploaded, 2);
    assert_eq!(
        good.manifest_digest(&r("team/app:v1")).await.unwrap(),
        Some(img.digest)
    );

    let wrong = client(&dst.url, basic("mover", "nope"), Trust::Platform);
    let e = expect_err(wrong.check().await, dst.name());
    assert!(matches!(e.kind, ErrorKind::Unauthorized(_)), "{e}");
    assert!(
        e.to_string().contains("refused the username and password"),
        "{e}"
    );

    let anonymous = plain(&dst);
    let (res, _) = copy(&s, "team/app:v1", &anonymous, "team/other:v1").await;
    let e = expect_err(res, dst.name());
    assert!(matches!(e.kind, ErrorKind::Unauthorized(_)), "{e}");
    assert!(e.to_string().contains("team/other"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_static_tokens_and_scoped_mounts() {
    init();
    let tokens = TokenServer::start(vec![
        (Some("mover".into()), "pw".into()),
        // OpenShift-style: any user name, a service-account token as password.
        (None, "sa-token-123".into()),
    ])
    .await;
    let src = LocalRegistry::start(Options::default());
    let dst = LocalRegistry::start(Options {
        auth: Auth::Token {
            realm: tokens.realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            root_pem: tokens.root_pem.clone(),
        },
        ..Options::default()
    });
    let s = plain(&src);
    let base = random_bytes(60, 90_000);
    push_image(
        &s,
        "team/app",
        Some("v1"),
        &[base.clone(), random_bytes(61, 10)],
        "amd64",
        Format::Oci,
    )
    .await;
    push_image(
        &s,
        "team/two",
        Some("v1"),
        &[base.clone(), random_bytes(62, 10)],
        "amd64",
        Format::Oci,
    )
    .await;

    // The token flow with basic credentials at the token server; the
    // second image mounts the shared layer, which needs a token for both
    // repositories.
    let d = client(&dst.url, basic("mover", "pw"), Trust::Platform);
    d.check().await.expect("preflight through the token flow");
    let (res, _) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    assert_eq!(res.unwrap().uploaded, 3);
    let (res, _) = copy(&s, "team/two:v1", &d, "team/two:v1").await;
    let report = res.unwrap();
    assert_eq!((report.mounted, report.uploaded), (1, 2));
    let seen = tokens.requests();
    assert!(
        seen.iter().all(|t| t.user.as_deref() == Some("mover")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|t| t.scopes == ["repository:team/two:pull,push", "repository:team/app:pull"]),
        "{seen:?}"
    );

    // Wrong password: the token server's refusal is reported.
    let bad = client(&dst.url, basic("mover", "wrong"), Trust::Platform);
    let (res, _) = copy(&s, "team/app:v1", &bad, "team/three:v1").await;
    let e = expect_err(res, dst.name());
    assert!(
        e.to_string().contains("token server") && e.to_string().contains("401"),
        "{e}"
    );

    // A token handed over directly is sent as is: no token server visit.
    let before = tokens.requests().len();
    let jwt = tokens.mint("sa", &["repository:team/static:pull,push"]);
    let st = client(&dst.url, Credentials::Token(jwt), Trust::Platform);
    let (res, _) = copy(&s, "team/app:v1", &st, "team/static:v1").await;
    assert_eq!(res.unwrap().uploaded, 3);
    assert_eq!(tokens.requests().len(), before);
    // ... and it opens only what it was issued for.
    let (res, _) = copy(&s, "team/app:v1", &st, "team/elsewhere:v1").await;
    let e = expect_err(res, dst.name());
    assert!(e.to_string().contains("team/elsewhere"), "{e}");

    // A token the registry does not take itself (an OpenShift
    // service-account token) is offered to the token server as password.
    let sa = client(
        &dst.url,
        Credentials::Token("sa-token-123".into()),
        Trust::Platform,
    );
    let (res, _) = copy(&s, "team/app:v1", &sa, "team/sa:v1").await;
    assert_eq!(res.unwrap().uploaded, 3);
    assert!(tokens.requests()[before..]
        .iter()
        .any(|t| t.user.as_deref() == Some("serviceaccount")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_trusted_by_ca_bundle_or_explicitly_insecure() {
    init();
    let pki = Pki::new();
    let leaf = pki.leaf(&["127.0.0.1", "localhost"]);
    let reg = LocalRegistry::start(Options {
        tls: Some((leaf.cert_pem, leaf.key_pem)),
        ..Options::default()
    });
    assert!(reg.url.starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    let trusted = client(&reg.url, Credentials::Anonymous, Trust::CaBundle(ca));
    trusted
        .check()
        .await
        .expect("the CA bundle verifies the registry");
    push_image(
        &trusted,
        "team/app",
        Some("v1"),
        &[random_bytes(70, 5000)],
        "amd64",
        Format::Oci,
    )
    .await;

    let untrusted = client(&reg.url, Credentials::Anonymous, Trust::Platform);
    let e = expect_err(untrusted.check().await, reg.name());
    assert!(matches!(e.kind, ErrorKind::Tls(_)), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    let insecure = client(&reg.url, Credentials::Anonymous, Trust::Insecure);
    insecure.check().await.expect("insecure skips verification");
    assert!(insecure
        .manifest_digest(&r("team/app:v1"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_refusals_are_not() {
    init();
    let (src, dst) = (
        LocalRegistry::start(Options::default()),
        LocalRegistry::start(Options::default()),
    );
    let direct = plain(&src);
    let img = push_image(
        &direct,
        "team/app",
        Some("v1"),
        &[
            random_bytes(80, 600_000),
            random_bytes(81, (1 << 20) + 300_000),
        ],
        "amd64",
        Format::Docker,
    )
    .await;
    let broken = push_image(
        &direct,
        "team/broken",
        Some("v1"),
        &[random_bytes(82, 100)],
        "amd64",
        Format::Docker,
    )
    .await;
    let blob_path = |repo: &str, d: &Digest| format!("/v2/{repo}/blobs/{d}");
    let (l0, l1, lb) = (
        blob_path("team/app", &img.layers[0]),
        blob_path("team/app", &img.layers[1]),
        blob_path("team/broken", &broken.layers[0]),
    );
    let rule = {
        let (l0, l1, lb) = (l0.clone(), l1.clone(), lb.clone());
        move |method: &str, path: &str, n: usize| match (method, n) {
            ("GET", 1) if path == l0 => Fault::Status(503),
            ("GET", 1) if path == l1 => Fault::Cut,
            ("GET", 1) if path == "/v2/team/app/manifests/v1" => Fault::Status(429),
            ("GET", _) if path == lb => Fault::Status(503),
            _ => Fault::None,
        }
    };
    let src_proxy = FaultProxy::start(&src.url, Box::new(rule)).await;
    // The destination fails its first chunk upload and first manifest PUT.
    let patches = Arc::new(AtomicUsize::new(0));
    let seen_patches = patches.clone();
    let dst_rule = move |method: &str, path: &str, n: usize| match method {
        "PATCH" if seen_patches.fetch_add(1, Ordering::SeqCst) == 0 => Fault::Status(500),
        "PUT" if n == 1 && path == "/v2/team/app/manifests/v1" => Fault::Status(502),
        _ => Fault::None,
    };
    let dst_proxy = FaultProxy::start(&dst.url, Box::new(dst_rule)).await;
    let (s, d) = (
        client(&src_proxy.url, Credentials::Anonymous, Trust::Platform),
        client(&dst_proxy.url, Credentials::Anonymous, Trust::Platform),
    );

    let (res, _) = copy(&s, "team/app:v1", &d, "team/app:v1").await;
    let report = res.expect("transient failures are retried");
    assert_eq!(
        (report.uploaded, report.digest.clone()),
        (3, img.digest.clone())
    );
    assert_eq!(src_proxy.count("GET", &l0), 2, "503 retried once");
    assert_eq!(src_proxy.count("GET", &l1), 2, "cut body retried once");
    assert_eq!(
        src_proxy.count("GET", "/v2/team/app/manifests/v1"),
        2,
        "429 retried once"
    );
    assert_eq!(
        dst_proxy.count("PUT", "/v2/team/app/manifests/v1"),
        2,
        "502 retried once"
    );
    // The 1.3 MiB layer went in 1 MiB chunks: a failed PATCH, then two.
    assert_eq!(patches.load(Ordering::SeqCst), 3);
    let stored = std::fs::read(dst.blob_file(&img.layers[1])).unwrap();
    assert_eq!(Digest::of(&stored), img.layers[1]);

    // A refusal is final at once: a missing tag is asked for once.
    let (res, _) = copy(&s, "team/app:missing", &d, "team/app:missing").await;
    let e = expect_err(res, src_proxy.url.trim_start_matches("http://"));
    assert!(
        e.is_not_found() && e.to_string().contains("manifest missing"),
        "{e}"
    );
    assert_eq!(src_proxy.count("GET", "/v2/team/app/manifests/missing"), 1);

    // A failure that persists is given up on after the configured tries,
    // and named.
    let (res, _) = copy(&s, "team/broken:v1", &d, "team/broken:v1").await;
    let e = expect_err(res, src_proxy.url.trim_start_matches("http://"));
    assert!(
        e.to_string().contains("gave up after 4 attempts")
            && e.to_string().contains(&broken.layers[0].to_string()),
        "{e}"
    );
    assert_eq!(src_proxy.count("GET", &lb), 4);
    assert_eq!(d.manifest_digest(&r("team/broken:v1")).await.unwrap(), None);
}
