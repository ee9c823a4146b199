//! Direct image migration end to end: the `orchestrator` binary, given a
//! plan with both clusters' registries, against emulated clusters whose
//! ImageStreams point into a real source registry (Debian's
//! docker-registry on loopback), copying into a second real registry.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use common::images::{push_image, random_bytes, Format};
use common::process::{LocalRegistry, Options};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use kube_emulator::ClusterPair;
use orchestrator::dim::image_stream_resource;
use orchestrator::registry::{Credentials, Reference, Trust};
use serde_json::{json, Value};

/// How the emulated clusters' ImageStreams name their internal registry.
const INTERNAL: &str = "image-registry.openshift-image-registry.svc:5000";
const EXTERNAL: &str =
    "quay.io/example/base@sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

async fn namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// An ImageStream whose `status.tags` hold `tags` (tag, references newest
/// first), as the internal registry would have recorded pushes.
async fn image_stream(client: &kube::Client, ns: &str, name: &str, tags: &[(&str, Vec<String>)]) {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &image_stream_resource());
    let stream = DynamicObject::new(name, &image_stream_resource())
        .within(ns)
        .data(json!({"spec": {"lookupPolicy": {"local": false}}}));
    api.create(&PostParams::default(), &stream).await.unwrap();
    let status_tags: Vec<Value> = tags
        .iter()
        .map(|(tag, items)| {
            json!({"tag": tag, "items": items.iter().map(|r| json!({
                "dockerImageReference": r,
                "image": r.split('@').nth(1),
                "created": "2026-11-01T00:00:00Z",
                "generation": 1,
            })).collect::<Vec<_>>()})
        })
        .collect();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "dockerImageRepository": format!("{INTERNAL}/{ns}/{name}"),
            "tags": status_tags,
        }})),
    )
    .await
    .unwrap();
}

/// Runs `orchestrator migrate --plan PLAN` against both emulated clusters.
fn migrate(
    plan: &std::path::Path,
    kubeconfig: &std::path::Path,
    output: &[&str],
) -> std::process::Output {
    let kubeconfig = kubeconfig.to_str().unwrap();
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["migrate", "--plan", plan.to_str().unwrap()])
        .args(output)
        .args([
            "--source-kubeconfig",
            kubeconfig,
            "--source-context",
            "source",
        ])
        .args([
            "--destination-kubeconfig",
            kubeconfig,
            "--destination-context",
            "destination",
        ])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_streams_of_two_namespaces_move_to_the_destination_registry() {
    common::init();
    let source_registry = LocalRegistry::start(Options::default());
    let destination_registry = LocalRegistry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig()).unwrap();

    // Two versions of shop/app sharing a base layer, and blog/web.
    let src = common::client(
        &source_registry.url,
        Credentials::Anonymous,
        Trust::Platform,
    );
    let base: Bytes = random_bytes(1, 300_000);
    let v1 = push_image(
        &src,
        "shop/app",
        None,
        &[base.clone(), random_bytes(2, 50_000)],
        "amd64",
        Format::Oci,
    )
    .await;
    let v2 = push_image(
        &src,
        "shop/app",
        None,
        &[base, random_bytes(3, 60_000)],
        "amd64",
        Format::Docker,
    )
    .await;
    let web = push_image(
        &src,
        "blog/web",
        None,
        &[random_bytes(4, 80_000)],
        "amd64",
        Format::Oci,
    )
    .await;
    let internal =
        |repo: &str, digest: &orchestrator::registry::Digest| format!("{INTERNAL}/{repo}@{digest}");

    let source = pair.source.client.clone();
    namespace(&source, "shop").await;
    namespace(&source, "blog").await;
    image_stream(
        &source,
        "shop",
        "app",
        &[
            (
                "latest",
                vec![
                    internal("shop/app", &v2.digest),
                    internal("shop/app", &v1.digest),
                ],
            ),
            ("stable", vec![internal("shop/app", &v1.digest)]),
            ("upstream", vec![EXTERNAL.to_string()]),
        ],
    )
    .await;
    image_stream(
        &source,
        "blog",
        "web",
        &[("latest", vec![internal("blog/web", &web.digest)])],
    )
    .await;

    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: images\nnamespaces: [shop, 'blog:blog-new']\nimages:\n  \
             source: {{url: '{}', internalHosts: ['{INTERNAL}']}}\n  \
             destination: {{url: '{}', internalHosts: ['{INTERNAL}']}}\n",
            source_registry.url, destination_registry.url
        ),
    )
    .unwrap();
    let output = migrate(&plan, &kubeconfig, &["--output", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    assert_eq!(output.status.code(), Some(0), "{report:#}\n{stderr}");

    let images = report["images"].as_array().unwrap();
    let find = |ns: &str, stream: &str, tag: &str| -> Vec<&Value> {
        images
            .iter()
            .filter(|i| i["namespace"] == ns && i["image_stream"] == stream && i["tag"] == tag)
            .collect()
    };
    let latest = find("shop", "app", "latest");
    assert_eq!(latest.len(), 2, "{report:#}");
    assert!(latest.iter().all(|i| i["state"] == "copied"), "{report:#}");
    // Oldest first: v1 moves whole, v2 then finds the shared base there.
    assert_eq!(latest[0]["digest"], v1.digest.to_string());
    assert_eq!(latest[1]["digest"], v2.digest.to_string());
    assert_eq!(
        latest[1]["existing"], 1,
        "the shared base layer is not sent twice: {:#}",
        latest[1]
    );
    let upstream = find("shop", "app", "upstream");
    assert_eq!(
        upstream[0]["state"], "skipped",
        "external images are left alone"
    );
    assert_eq!(find("blog", "web", "latest")[0]["state"], "copied");
    assert!(stderr.contains("is external, skipped"), "{stderr}");

    // The destination registry holds the images under the mapped names.
    let dst = common::client(
        &destination_registry.url,
        Credentials::Anonymous,
        Trust::Platform,
    );
    for (repo, tag, digest) in [
        ("shop/app", "latest", &v2.digest),
        ("shop/app", "stable", &v1.digest),
        ("blog-new/web", "latest", &web.digest),
    ] {
        let found = dst
            .manifest_digest(&Reference::tag(repo, tag).unwrap())
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(digest), "{repo}:{tag}");
    }

    // The destination ImageStreams point at the copies (and at the
    // external image as before).
    let destination = pair.destination.client.clone();
    let streams = |ns: &str| {
        Api::<DynamicObject>::namespaced_with(destination.clone(), ns, &image_stream_resource())
    };
    let app = streams("shop").get("app").await.unwrap();
    let tags: BTreeMap<String, String> = app.data["spec"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["from"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(tags["latest"], internal("shop/app", &v2.digest));
    assert_eq!(tags["stable"], internal("shop/app", &v1.digest));
    assert_eq!(tags["upstream"], EXTERNAL);
    let web_stream = streams("blog-new").get("web").await.unwrap();
    assert_eq!(
        web_stream.data["spec"]["tags"][0]["from"]["name"],
        internal("blog-new/web", &web.digest)
    );

    // A second run finds everything in place: nothing is uploaded.
    let output = migrate(&plan, &kubeconfig, &["--output", "json"]);
    let again: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{again:#}");
    let copied: Vec<&Value> = again["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "copied")
        .collect();
    assert_eq!(copied.len(), 4, "{again:#}");
    assert!(copied.iter().all(|i| i["uploaded"] == 0), "{again:#}");
}

/// Preflight refuses a destination registry that does not answer, naming
/// it, before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_fails_preflight() {
    common::init();
    let source_registry = LocalRegistry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(&dir.path().join("state"), false)
        .await
        .unwrap();
    namespace(&pair.source.client, "shop").await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig()).unwrap();
    let plan = dir.path().join("plan.yaml");
    // Nothing listens on port 9 of loopback.
    std::fs::write(
        &plan,
        format!(
            "namespaces: [shop]\nimages:\n  source: {{url: '{}'}}\n  destination: {{url: 'http://127.0.0.1:9'}}\n",
            source_registry.url
        ),
    )
    .unwrap();
    let output = migrate(&plan, &kubeconfig, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("destination registry http://127.0.0.1:9 does not answer /v2/"),
        "{stderr}"
    );
    let destination = pair.destination.client.clone();
    assert!(Api::<Namespace>::all(destination)
        .get_opt("shop")
        .await
        .unwrap()
        .is_none());
}
