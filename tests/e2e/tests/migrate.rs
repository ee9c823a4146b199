//! `orchestrator migrate`, `plan` and `cleanup` end to end: the release
//! binary, run with a kubeconfig, against two emulated clusters whose pods
//! are real `mover:dev` containers reaching each other through the
//! emulated OpenShift router.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::Result;
use e2e::migration::{app_pod, assert_same_tree, make_pvc, pvc_report, start, Uses, APP_UID};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::Api;
use serde_json::json;

/// Writes `size` deterministic pseudo-random bytes (compressible in its
/// second half) to `path`, a megabyte at a time.
fn write_big_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        let n = chunk.len().min((size - written) as usize);
        if written < size / 2 {
            for word in chunk[..n].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
        } else {
            chunk[..n]
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 251) as u8);
        }
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.flush()?;
    Ok(())
}

/// `count` small files (0 to 4 KiB) spread over 100 directories.
fn write_small_files(root: &Path, count: usize) -> Result<()> {
    for i in 0..count {
        let dir = root.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&dir)?;
        let contents: Vec<u8> = (0..(i * 37) % 4096).map(|j| (i + j) as u8).collect();
        std::fs::write(dir.join(format!("f{i}.txt")), contents)?;
    }
    Ok(())
}

/// Transfer objects (pods, Secrets, Services, Routes) left in `ns`.
async fn transfer_leftovers(client: &kube::Client, ns: &str) -> Vec<String> {
    async fn names<K>(api: Api<K>, kind: &str) -> Vec<String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let selector = ListParams::default().labels("mover.io/transfer");
        let items = api
            .list(&selector)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        items
            .iter()
            .map(|o| format!("{kind} {}", o.meta().name.clone().unwrap_or_default()))
            .collect()
    }
    let mut left = names(Api::<Pod>::namespaced(client.clone(), ns), "pod").await;
    left.extend(names(Api::<Secret>::namespaced(client.clone(), ns), "secret").await);
    left.extend(names(Api::<Service>::namespaced(client.clone(), ns), "service").await);
    left.extend(
        names(
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &route()),
            "route",
        )
        .await,
    );
    left
}

fn route() -> ApiResource {
    orchestrator::manifests::route_resource()
}

/// The acceptance run: 2 namespaces (one renamed), 5 PVCs (a 1 GiB file,
/// 10,000 small files, links, an empty volume), endpoint route; as a stage
/// migration, then a change at the source, then a final migration that
/// copies only the change, then a rerun that copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stage_then_final_migration_of_two_namespaces() {
    let env = start().await.unwrap();
    let source = env.pair.source.client.clone();
    let db = make_pvc(&source, "shop", "db", &["ReadWriteOnce"])
        .await
        .unwrap();
    let media = make_pvc(&source, "shop", "media", &["ReadWriteMany"])
        .await
        .unwrap();
    let config = make_pvc(&source, "shop", "config", &["ReadWriteOnce"])
        .await
        .unwrap();
    let posts = make_pvc(&source, "blog", "posts", &["ReadWriteOnce"])
        .await
        .unwrap();
    let empty = make_pvc(&source, "blog", "empty", &["ReadWriteOnce"])
        .await
        .unwrap();
    write_big_file(&db.join("table.db"), 1 << 30, 7).unwrap();
    write_small_files(&media, 10_000).unwrap();
    // The config volume belongs to the application's user, and its
    // directory is private to it: only a sender running as that user (as
    // the orchestrator makes it, from the pod using the volume) can read it.
    std::fs::create_dir_all(config.join("conf.d")).unwrap();
    std::fs::write(config.join("conf.d/app.yaml"), "replicas: 3\n").unwrap();
    std::os::unix::fs::symlink("conf.d/app.yaml", config.join("current")).unwrap();
    std::fs::hard_link(config.join("conf.d/app.yaml"), config.join("app.yaml.bak")).unwrap();
    std::fs::set_permissions(
        config.join("conf.d"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    for entry in walkdir::WalkDir::new(&config).min_depth(1) {
        let path = entry.unwrap().into_path();
        std::os::unix::fs::lchown(&path, Some(APP_UID), Some(APP_UID)).unwrap();
    }
    app_pod(&source, "shop", "config", Uses::Mount)
        .await
        .unwrap();
    write_small_files(&posts, 50).unwrap();

    let (code, report) = env
        .migrate(&[
            "--namespace",
            "shop",
            "--namespace",
            "blog:blog-new",
            "--stage",
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["succeeded"], true);
    let destination = env.pair.destination.client.clone();
    for (ns, dest_ns, name, src) in [
        ("shop", "shop", "db", &db),
        ("shop", "shop", "media", &media),
        ("shop", "shop", "config", &config),
        ("blog", "blog-new", "posts", &posts),
        ("blog", "blog-new", "empty", &empty),
    ] {
        let entry = pvc_report(&report, ns, name);
        assert_eq!(entry["state"], "done", "{entry:#}");
        assert_eq!(entry["destination_namespace"], dest_ns);
        assert!(entry["duration_secs"].as_f64().unwrap() > 0.0, "{entry:#}");
        assert!(entry["attempts"].as_u64().unwrap() >= 1);
        let dest = e2e::volume_dir(&destination, dest_ns, name).await.unwrap();
        assert_same_tree(src, &dest);
        // A stage run's receiver keeps its hash cache where a volume has a
        // file large enough to be worth one (db's 1 GiB file).
        assert_eq!(
            mover::dest::work::is_kept_work_area(&dest.join(".mover-work")),
            name == "db",
            "{ns}/{name}: the stage run's work area"
        );
    }
    assert!(
        pvc_report(&report, "shop", "db")["bytes_examined"]
            .as_u64()
            .unwrap()
            >= 1 << 30
    );
    assert_eq!(
        pvc_report(&report, "shop", "media")["files_examined"]
            .as_u64()
            .unwrap(),
        10_000 + 100 + 1, // files, directories and the root
    );
    let dest_config = e2e::volume_dir(&destination, "shop", "config")
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(dest_config.join("app.yaml.bak"))
            .unwrap()
            .ino(),
        std::fs::metadata(dest_config.join("conf.d/app.yaml"))
            .unwrap()
            .ino(),
        "hard links stay links"
    );
    // The sender of the config volume ran as the application's user (it
    // would report the private directory unreadable otherwise).
    assert_eq!(pvc_report(&report, "shop", "config")["files_examined"], 5);
    let renamed = Api::<Namespace>::all(destination.clone())
        .get("blog-new")
        .await
        .unwrap();
    assert_eq!(renamed.metadata.annotations.unwrap()["team"], "storefront");
    for (client, ns) in [
        (&source, "shop"),
        (&source, "blog"),
        (&destination, "shop"),
        (&destination, "blog-new"),
    ] {
        assert_eq!(
            transfer_leftovers(client, ns).await,
            Vec::<String>::new(),
            "in {ns}"
        );
    }

    // The application changes 4 KiB of the big file and adds a file.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(db.join("table.db"))
            .unwrap();
        file.write_all_at(&[0xAB; 4096], 300 << 20).unwrap();
    }
    std::fs::write(posts.join("new-post.md"), "# hello\n").unwrap();
    let (code, report) = env
        .migrate(&["--namespace", "shop", "--namespace", "blog:blog-new"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{report:#}");
    let db_entry = pvc_report(&report, "shop", "db");
    let wire = db_entry["wire_bytes"].as_u64().unwrap();
    assert!(
        wire < 16 << 20,
        "the final copy of a 4 KiB change moved {wire} bytes: {db_entry:#}"
    );
    let db_copy = e2e::volume_dir(&destination, "shop", "db").await.unwrap();
    assert_same_tree(&db, &db_copy);
    assert!(
        !db_copy.join(".mover-work").exists(),
        "the final run leaves exactly the source's names"
    );
    assert_same_tree(
        &posts,
        &e2e::volume_dir(&destination, "blog-new", "posts")
            .await
            .unwrap(),
    );

    // A final run again: everything is done, nothing is copied.
    let (code, report) = env
        .migrate(&["--namespace", "shop", "--namespace", "blog:blog-new"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{report:#}");
    for pvc in report["pvcs"].as_array().unwrap() {
        assert_eq!(pvc["state"], "skipped", "{pvc:#}");
    }
}

/// One PVC holds a file its sender cannot read (its application runs as
/// uid 1000, so its sender does too, and the file is root's alone): the
/// others finish, the report names the PVC and the reason, and the exit
/// code says failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_pvc_does_not_stop_the_others() {
    let env = start().await.unwrap();
    let source = env.pair.source.client.clone();
    let good = make_pvc(&source, "app", "good", &["ReadWriteOnce"])
        .await
        .unwrap();
    let bad = make_pvc(&source, "app", "bad", &["ReadWriteOnce"])
        .await
        .unwrap();
    write_small_files(&good, 20).unwrap();
    std::fs::write(bad.join("readable.txt"), "fine\n").unwrap();
    std::fs::write(bad.join("secret.key"), "root only\n").unwrap();
    std::fs::set_permissions(
        bad.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    app_pod(&source, "app", "bad", Uses::Mount).await.unwrap();

    let (code, report) = env
        .migrate(&["--namespace", "app", "--retries", "1"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["succeeded"], false);
    assert_eq!(pvc_report(&report, "app", "good")["state"], "done");
    let bad_entry = pvc_report(&report, "app", "bad");
    assert_eq!(bad_entry["state"], "failed");
    let error = bad_entry["error"].as_str().unwrap();
    assert!(
        error.contains("secret.key"),
        "the reason names the file: {error}"
    );
    assert_eq!(bad_entry["attempts"], 1, "unreadable files are not retried");
    let destination = env.pair.destination.client.clone();
    assert_same_tree(
        &good,
        &e2e::volume_dir(&destination, "app", "good").await.unwrap(),
    );
    assert_eq!(
        transfer_leftovers(&source, "app").await,
        Vec::<String>::new()
    );
    assert_eq!(
        transfer_leftovers(&destination, "app").await,
        Vec::<String>::new()
    );
}

/// A Route the router never admits: the endpoint stage fails with a
/// message saying what to check, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_receiver_is_reported_with_what_to_check() {
    let env = start().await.unwrap();
    let source = env.pair.source.client.clone();
    let data = make_pvc(&source, "app", "data", &["ReadWriteOnce"])
        .await
        .unwrap();
    std::fs::write(data.join("a.txt"), "a\n").unwrap();
    // The destination namespace exists with a Route the router ignores;
    // the orchestrator's apply keeps that annotation.
    let destination = env.pair.destination.client.clone();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some("app".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(destination.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let mut ignored = DynamicObject::new("mover-receiver", &route()).within("app").data(json!({
        "spec": {"to": {"kind": "Service", "name": "mover-receiver"}, "tls": {"termination": "passthrough"}}
    }));
    ignored.metadata.annotations = Some(BTreeMap::from([(
        "emulator.kube-migrate/admit".to_string(),
        "false".to_string(),
    )]));
    Api::<DynamicObject>::namespaced_with(destination.clone(), "app", &route())
        .create(&PostParams::default(), &ignored)
        .await
        .unwrap();

    let (code, report) = env
        .migrate(&["--namespace", "app", "--endpoint-timeout", "5"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{report:#}");
    let error = pvc_report(&report, "app", "data")["error"]
        .as_str()
        .unwrap();
    assert!(
        error.contains("not admitted")
            || error.contains("waiting for mover-receiver to be admitted"),
        "{error}"
    );
    assert!(
        error.contains("status.ingress"),
        "the message says what to check: {error}"
    );
    assert_eq!(
        transfer_leftovers(&source, "app").await,
        Vec::<String>::new()
    );
    assert_eq!(
        transfer_leftovers(&destination, "app").await,
        Vec::<String>::new()
    );
}

/// `orchestrator plan` lists every problem at once and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_lists_every_problem() {
    let env = start().await.unwrap();
    let source = env.pair.source.client.clone();
    make_pvc(&source, "app", "data", &["ReadWriteOnce"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "name: broken\nnamespaces: [app, missing-ns]\npvcs: [app/data, app/ghost]\n\
         storageClassMapping: {standard: no-such-class}\n",
    )
    .unwrap();
    let output = env
        .orchestrator(&["plan", "--plan", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "namespace \"missing-ns\" does not exist",
        "PVC app/ghost does not exist",
        "storage class \"no-such-class\" does not exist",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let destination = env.pair.destination.client.clone();
    assert!(
        Api::<Namespace>::all(destination)
            .get_opt("app")
            .await
            .unwrap()
            .is_none(),
        "plan changed nothing"
    );

    // The same plan, fixed, prints what would be created and copied.
    std::fs::write(&plan, "name: fixed\nnamespaces: ['app:app2']\n").unwrap();
    let output = env
        .orchestrator(&["plan", "--plan", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("namespace app -> app2 (will be created)"),
        "{stdout}"
    );
    assert!(stdout.contains("pvc data"), "{stdout}");
}

/// `orchestrator cleanup` removes what a killed run left on both sides,
/// and never a destination PVC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_transfer_objects_and_keeps_pvcs() {
    let env = start().await.unwrap();
    let labels = BTreeMap::from([("mover.io/transfer".to_string(), "migration".to_string())]);
    for client in [&env.pair.source.client, &env.pair.destination.client] {
        make_pvc(client, "app", "data", &["ReadWriteOnce"])
            .await
            .unwrap();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("mover-sender-data".into()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        Api::<Secret>::namespaced(client.clone(), "app")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "mover-receiver", "labels": labels},
        "spec": {"ports": [{"port": 443}]},
    }))
    .unwrap();
    let destination = env.pair.destination.client.clone();
    Api::<Service>::namespaced(destination.clone(), "app")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let output = env
        .orchestrator(&["cleanup", "--namespace", "app"])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    for client in [&env.pair.source.client, &destination] {
        assert_eq!(
            transfer_leftovers(client, "app").await,
            Vec::<String>::new()
        );
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "app");
        assert!(pvcs.get_opt("data").await.unwrap().is_some(), "PVCs stay");
    }
}
