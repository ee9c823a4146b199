//! A whole application moves between two emulated clusters, end to end:
//! the release `orchestrator` against clusters whose pods are real Docker
//! containers, whose workload controllers, router and Velero run, with
//! images in real registries on loopback.
//!
//! The application (`tests/e2e/app/shop.yaml`, applied with kubectl) is a
//! Deployment running an internal image and a StatefulSet, each writing to
//! its PVC and serving what it reads, with a ConfigMap, a Secret, a
//! ServiceAccount and RoleBinding, a Route with a generated host and a
//! CronJob. One test walks the life of a migration on one cluster pair
//! (cluster starts are the expensive part): a failing hook stops a final
//! run before the destination is touched; two stage runs (the second
//! moves only changes); a final run; a rollback restoring the source
//! exactly; and a final run whose orchestrator is killed with SIGKILL in
//! every step it reaches, each time run again, ending as the first did.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::ResourceExt as _;
use kube_emulator::testing::{busybox_image, wait_for, LoopbackRegistry};
use kube_emulator::ClusterPair;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How both clusters' ImageStreams and pods name their internal registry.
const INTERNAL: &str = "image-registry.openshift-image-registry.svc:5000";
/// The source namespace `shop` becomes `shop-prod`; `shop-db` keeps its
/// name.
const NAMESPACES: [(&str, &str); 2] = [("shop", "shop-prod"), ("shop-db", "shop-db")];

struct Env {
    pair: ClusterPair,
    kubeconfig: PathBuf,
    plan: PathBuf,
    dir: tempfile::TempDir,
    _registries: (LoopbackRegistry, LoopbackRegistry),
    web_digest: String,
}

impl Env {
    async fn start() -> Result<Env> {
        tokio::task::spawn_blocking(e2e::build_images).await??;
        let busybox = busybox_image().await?;
        let dir = tempfile::tempdir()?;
        let pair = ClusterPair::start(&dir.path().join("state"), true).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, pair.kubeconfig())?;
        let (source_registry, destination_registry) =
            (LoopbackRegistry::start()?, LoopbackRegistry::start()?);
        pair.source
            .context
            .set_registry_mirror(INTERNAL, &source_registry.address);
        pair.destination
            .context
            .set_registry_mirror(INTERNAL, &destination_registry.address);
        // The application's image, built into the source's registry.
        let web_digest = source_registry.push(busybox, "shop/web", "1.0").await?;
        let plan = dir.path().join("plan.yaml");
        std::fs::write(
            &plan,
            format!(
                "name: shop\n\
                 namespaces: [\"shop:shop-prod\", shop-db]\n\
                 verifyTimeout: 300\n\
                 images:\n\
                 \x20 source: {{url: \"http://{}\", internalHosts: [\"{INTERNAL}\"]}}\n\
                 \x20 destination: {{url: \"http://{}\", internalHosts: [\"{INTERNAL}\"]}}\n",
                source_registry.address, destination_registry.address
            ),
        )?;
        Ok(Env {
            pair,
            kubeconfig,
            plan,
            dir,
            _registries: (source_registry, destination_registry),
            web_digest,
        })
    }

    fn source(&self) -> kube::Client {
        self.pair.source.client.clone()
    }

    fn destination(&self) -> kube::Client {
        self.pair.destination.client.clone()
    }

    /// The orchestrator command line with both clusters and `args`.
    fn command(&self, args: &[&str]) -> Result<tokio::process::Command> {
        let mut command = e2e::migration::orchestrator_command(&self.kubeconfig, args)?;
        command.kill_on_drop(true);
        Ok(command)
    }

    /// Runs the orchestrator to its end: exit code and JSON report.
    async fn orchestrator(&self, args: &[&str]) -> Result<(i32, Value)> {
        let output = self.command(args)?.output().await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!(
            "orchestrator {args:?}: {}\n--- stderr\n{stderr}",
            output.status
        );
        let report = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "the JSON report of {args:?}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        eprintln!("--- report\n{report:#}");
        Ok((output.status.code().unwrap_or(-1), report))
    }

    async fn migrate(&self, extra: &[&str]) -> Result<(i32, Value)> {
        let plan = self.plan.to_string_lossy().into_owned();
        let mut args = vec!["migrate", "-f", &plan, "--output", "json"];
        args.extend_from_slice(extra);
        self.orchestrator(&args).await
    }

    /// Applies the application to the source with kubectl, as a user would.
    async fn deploy_application(&self) -> Result<()> {
        let manifest = std::fs::read_to_string(e2e::repo_root().join("tests/e2e/app/shop.yaml"))?
            .replace(
                "${WEB_IMAGE}",
                &format!("{INTERNAL}/shop/web@{}", self.web_digest),
            )
            .replace("${BUSYBOX}", busybox_image().await?);
        let file = self.dir.path().join("shop.yaml");
        std::fs::write(&file, manifest)?;
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", "source", "apply", "-f"])
            .arg(&file)
            .output()
            .await
            .context("running kubectl (is it installed?)")?;
        if !output.status.success() {
            bail!(
                "kubectl apply: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The internal registry records the image in the ImageStream, as
        // OpenShift's does on a push.
        let streams =
            Api::<DynamicObject>::namespaced_with(self.source(), "shop", &image_streams());
        let reference = format!("{INTERNAL}/shop/web@{}", self.web_digest);
        streams
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "dockerImageRepository": format!("{INTERNAL}/shop/web"),
                    "tags": [{"tag": "1.0", "items": [{
                        "dockerImageReference": reference,
                        "image": self.web_digest,
                        "created": "2026-12-01T00:00:00Z",
                        "generation": 1,
                    }]}],
                }})),
            )
            .await?;
        Ok(())
    }

    fn migrations(&self) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "mover.io".into(),
            version: "v1alpha1".into(),
            api_version: "mover.io/v1alpha1".into(),
            kind: "Migration".into(),
            plural: "migrations".into(),
        };
        Api::namespaced_with(self.destination(), "mover-system", &resource)
    }
}

fn image_streams() -> ApiResource {
    ApiResource {
        group: "image.openshift.io".into(),
        version: "v1".into(),
        api_version: "image.openshift.io/v1".into(),
        kind: "ImageStream".into(),
        plural: "imagestreams".into(),
    }
}

fn routes() -> ApiResource {
    ApiResource {
        group: "route.openshift.io".into(),
        version: "v1".into(),
        api_version: "route.openshift.io/v1".into(),
        kind: "Route".into(),
        plural: "routes".into(),
    }
}

/// Waits until the Deployment `web` and the StatefulSet `db` of a cluster
/// have their one pod ready (the source: `shop`; the destination:
/// `shop-prod`).
async fn wait_ready(client: &kube::Client, web_ns: &str) -> Result<()> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), web_ns);
    wait_for(&deployments, "web", "one ready replica", |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await?;
    let sets = Api::<StatefulSet>::namespaced(client.clone(), "shop-db");
    wait_for(&sets, "db", "one ready replica", |s| {
        s.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await?;
    Ok(())
}

/// GET `path` from the Service `service`, through its endpoints, as
/// kube-proxy would route it: the body.
async fn get(client: &kube::Client, ns: &str, service: &str, path: &str) -> Result<String> {
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), ns);
    let mut last = String::new();
    for _ in 0..120 {
        let found = endpoints.get_opt(service).await?;
        let target = found.as_ref().and_then(|e| {
            let subset = e.subsets.as_ref()?.first()?;
            let ip = subset.addresses.as_ref()?.first()?.ip.clone();
            let port = subset.ports.as_ref()?.first()?.port;
            Some((ip, port))
        });
        if let Some((ip, port)) = target {
            match http_get(&ip, port, path).await {
                Ok(body) => return Ok(body),
                Err(e) => last = format!("{e:#}"),
            }
        } else {
            last = format!("no ready endpoint: {found:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("GET {ns}/{service}{path}: {last}")
}

async fn http_get(ip: &str, port: i32, path: &str) -> Result<String> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip, port as u16)),
    )
    .await
    .context("connect timed out")??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .context("read timed out")??;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{head}");
    }
    Ok(body.to_string())
}

/// What the source application looks like, to compare after a rollback.
async fn workload_specs(client: &kube::Client) -> Result<BTreeMap<String, Value>> {
    let mut specs = BTreeMap::new();
    let web = Api::<Deployment>::namespaced(client.clone(), "shop")
        .get("web")
        .await?;
    specs.insert("deployment/web".into(), json!(web.spec));
    specs.insert(
        "deployment/web annotations".into(),
        json!(web.metadata.annotations),
    );
    let db = Api::<StatefulSet>::namespaced(client.clone(), "shop-db")
        .get("db")
        .await?;
    specs.insert("statefulset/db".into(), json!(db.spec));
    let cron = Api::<CronJob>::namespaced(client.clone(), "shop")
        .get("nightly-report")
        .await?;
    specs.insert("cronjob/nightly-report".into(), json!(cron.spec));
    Ok(specs)
}

fn step_phase<'a>(report: &'a Value, step: &str) -> &'a str {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step))
        .and_then(|s| s["phase"].as_str())
        .unwrap_or("(absent)")
}

/// Everything a finished final migration must have left on both sides.
async fn check_migrated(env: &Env, source_served: &(String, String)) -> Result<()> {
    let dst = env.destination();
    wait_ready(&dst, "shop-prod").await?;
    // The destination serves the data written on the source.
    let visits = get(&dst, "shop-prod", "web", "/visits.log").await?;
    assert!(
        visits.starts_with(&source_served.0),
        "the destination's visits.log continues the source's:\n{visits}\n---\n{}",
        source_served.0
    );
    let rows = get(&dst, "shop-db", "db", "/rows.txt").await?;
    assert!(
        rows.starts_with(&source_served.1),
        "the destination's rows continue the source's:\n{rows}\n---\n{}",
        source_served.1
    );
    // It runs the copied image, from the destination's registry, under
    // the renamed namespace.
    let pods = Api::<Pod>::namespaced(dst.clone(), "shop-prod")
        .list(&ListParams::default().labels("app=web"))
        .await?;
    let image = pods.items[0].spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    assert_eq!(
        image,
        format!("{INTERNAL}/shop-prod/web@{}", env.web_digest)
    );
    // The private key kept its owner and mode.
    let web_dir = e2e::volume_dir(&dst, "shop-prod", "web-data").await?;
    let key = std::fs::metadata(web_dir.join("private.key"))?;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!((key.uid(), key.permissions().mode() & 0o777), (1000, 0o600));
    // The rest of the application came through Velero.
    let route = Api::<DynamicObject>::namespaced_with(dst.clone(), "shop-prod", &routes());
    let route = wait_for(&route, "web", "a host", |r| {
        r.data.pointer("/spec/host").is_some()
    })
    .await?;
    assert_eq!(
        route.data.pointer("/spec/host").and_then(Value::as_str),
        Some("web-shop-prod.apps.destination.emu.test"),
        "the Route gets the destination's generated host"
    );
    let config = Api::<ConfigMap>::namespaced(dst.clone(), "shop-prod")
        .get("web-config")
        .await?;
    assert_eq!(config.data.unwrap()["greeting"], "hello from the shop");
    Api::<Secret>::namespaced(dst.clone(), "shop-prod")
        .get("web-secret")
        .await?;
    Api::<ServiceAccount>::namespaced(dst.clone(), "shop-prod")
        .get("web")
        .await?;
    let binding = Api::<RoleBinding>::namespaced(dst.clone(), "shop-prod")
        .get("web-config-reader")
        .await?;
    assert_eq!(
        binding.subjects.unwrap()[0].namespace.as_deref(),
        Some("shop-prod"),
        "the binding's subject follows the namespace mapping"
    );
    Api::<CronJob>::namespaced(dst.clone(), "shop-prod")
        .get("nightly-report")
        .await?;
    // The source stays stopped, its original values saved on the objects.
    let src = env.source();
    let web = Api::<Deployment>::namespaced(src.clone(), "shop")
        .get("web")
        .await?;
    assert_eq!(web.spec.replicas, Some(0));
    assert_eq!(
        web.metadata.annotations.unwrap()["mover.io/pre-quiesce-replicas"],
        "1"
    );
    let db = Api::<StatefulSet>::namespaced(src.clone(), "shop-db")
        .get("db")
        .await?;
    assert_eq!(db.spec.replicas, Some(0));
    let cron = Api::<CronJob>::namespaced(src.clone(), "shop")
        .get("nightly-report")
        .await?;
    assert_eq!(cron.spec.suspend, Some(true));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_application_moves_rolls_back_and_moves_again_through_crashes() -> Result<()> {
    let env = Env::start().await?;
    env.deploy_application().await?;
    let src = env.source();
    wait_ready(&src, "shop").await?;
    let original = workload_specs(&src).await?;

    // A final run whose pre-backup hook fails stops before the destination
    // is touched and leaves the source running.
    let failing = env.dir.path().join("failing-hook.yaml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(&env.plan)?
            + &format!(
                "hooks:\n- name: dump\n  phase: PreBackup\n  cluster: source\n  namespace: shop\n\
                 \x20 image: {}\n  runAsUser: 1000\n  command: [sh, -c, \"echo dumping the catalogue; exit 3\"]\n",
                busybox_image().await?
            ),
    )?;
    let (code, report) = env
        .orchestrator(&[
            "migrate",
            "-f",
            &failing.to_string_lossy(),
            "--output",
            "json",
        ])
        .await?;
    assert_eq!(code, 1);
    assert_eq!(step_phase(&report, "PreBackupHooks"), "Failed");
    assert_eq!(step_phase(&report, "CopyImages"), "Pending");
    let hook = &report["records"]["hooks"][0];
    assert!(
        hook["log"]
            .as_str()
            .unwrap_or_default()
            .contains("dumping the catalogue"),
        "{hook}"
    );
    for (_, ns) in NAMESPACES {
        assert!(
            Api::<Namespace>::all(env.destination())
                .get_opt(ns)
                .await?
                .is_none(),
            "the destination was touched: namespace {ns} exists"
        );
    }
    assert_eq!(workload_specs(&src).await?, original);

    // Two stage runs while the application runs: the second moves only
    // what changed since the first.
    let (code, first) = env.migrate(&["--stage"]).await?;
    assert_eq!(code, 0);
    let web_dir = e2e::volume_dir(&src, "shop", "web-data").await?;
    std::fs::write(web_dir.join("catalogue.json"), "{\"items\": 42}\n")?;
    let (code, second) = env.migrate(&["--stage"]).await?;
    assert_eq!(code, 0);
    let sent = |report: &Value| -> u64 {
        report["pvcs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["files_sent"].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(sent(&first) >= 3, "{first}");
    assert_eq!(
        sent(&second),
        1,
        "the second stage run sends only the new file"
    );
    assert_eq!(step_phase(&second, "Quiesce"), "(absent)");
    assert_eq!(
        workload_specs(&src).await?,
        original,
        "stage runs never quiesce"
    );

    // What the source serves just before the final run.
    let source_served = (
        get(&src, "shop", "web", "/visits.log").await?,
        get(&src, "shop-db", "db", "/rows.txt").await?,
    );

    // The final run.
    let (code, report) = env.migrate(&[]).await?;
    assert_eq!(code, 0);
    for step in [
        "Preflight",
        "CopyImages",
        "Backup",
        "Quiesce",
        "WaitForQuiesce",
        "CopyVolumes",
        "ReleaseVolumes",
        "WaitForBackupSync",
        "Restore",
        "Verify",
        "Cleanup",
    ] {
        assert_eq!(step_phase(&report, step), "Done", "{step}");
    }
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains("stays stopped"),
        "{report}"
    );
    check_migrated(&env, &source_served).await?;
    // The transfer pods were gone before the restore: no restored pod
    // waited for a ReadWriteOnce volume a receiver still held.
    for ns in ["shop-prod", "shop-db"] {
        let events = Api::<Event>::namespaced(env.destination(), ns)
            .list(&ListParams::default())
            .await?;
        let attach: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedAttachVolume"))
            .map(|e| {
                format!(
                    "{} {:?} at {:?}: {}",
                    e.involved_object.kind.as_deref().unwrap_or_default(),
                    e.involved_object.name,
                    e.first_timestamp,
                    e.message.as_deref().unwrap_or_default()
                )
            })
            .collect();
        assert!(attach.is_empty(), "{ns}: {attach:?}");
    }

    // Rollback: the destination loses what the migration made; the source
    // gets exactly its application back, running.
    let plan = env.plan.to_string_lossy().into_owned();
    let (code, _) = env
        .orchestrator(&["rollback", "-f", &plan, "--output", "json"])
        .await?;
    assert_eq!(code, 0);
    for (_, ns) in NAMESPACES {
        assert!(
            Api::<Namespace>::all(env.destination())
                .get_opt(ns)
                .await?
                .is_none(),
            "namespace {ns} is left on the destination"
        );
    }
    assert_eq!(workload_specs(&src).await?, original);
    wait_ready(&src, "shop").await?;

    // A final run again, its orchestrator killed in every step it reaches
    // and run again each time: it ends as the first did.
    let source_served = (
        get(&src, "shop", "web", "/visits.log").await?,
        get(&src, "shop-db", "db", "/rows.txt").await?,
    );
    let mut killed_in = BTreeSet::new();
    let report = loop {
        let mut child = env
            .command(&["migrate", "-f", &plan, "--output", "json"])?
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let output = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = stdout.read_to_end(&mut text).await;
            text
        });
        let outcome = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            let step = current_step(&env).await;
            if let Some(step) = step.filter(|s| !killed_in.contains(s)) {
                child.start_kill()?;
                child.wait().await?;
                eprintln!("killed the orchestrator in step {step}");
                killed_in.insert(step);
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = output.await?;
        if let Some(status) = outcome {
            assert!(status.success(), "{}", String::from_utf8_lossy(&text));
            break serde_json::from_slice::<Value>(&text)?;
        }
    };
    eprintln!("killed in: {killed_in:?}");
    // Quick steps (Verify of pods that started while no orchestrator ran,
    // Cleanup with nothing left) may end between two looks; the long ones
    // are always caught.
    assert!(killed_in.len() >= 6, "{killed_in:?}");
    for step in ["Backup", "CopyVolumes", "Restore"] {
        assert!(
            killed_in.contains(step),
            "never killed in {step}: {killed_in:?}"
        );
    }
    assert_eq!(report["succeeded"], true, "{report}");
    let runs = env.migrations().list(&ListParams::default()).await?;
    let finals: Vec<String> = runs
        .items
        .iter()
        .map(|m| m.name_any())
        .filter(|n| n.contains("-final-"))
        .collect();
    assert_eq!(
        finals.len(),
        3,
        "the failed, the first and the interrupted final runs: {finals:?}"
    );
    check_migrated(&env, &source_served).await?;
    Ok(())
}

/// The step of the plan's run in flight, if one is running.
async fn current_step(env: &Env) -> Option<String> {
    let runs = env.migrations().list(&ListParams::default()).await.ok()?;
    runs.items.iter().find_map(|run| {
        let status = &run.data["status"];
        (status["phase"] == "Running")
            .then(|| status["step"].as_str().map(str::to_string))
            .flatten()
            .filter(|s| !s.is_empty())
    })
}
