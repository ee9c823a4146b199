//! The migration engine through the `orchestrator` binary against two
//! emulated clusters without Docker (API servers, their Velero and PVC
//! binder; no pod ever runs): the Migration resource that holds a run's
//! state, resuming a run whose process died, quiescing a source
//! application exactly once, and rolling it back to exactly what it was.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::ResourceExt as _;
use kube_emulator::ClusterPair;
use orchestrator::migration::{self, MigrationStatus, Phase, StepPhase};
use serde_json::{json, Value};

/// Two Docker-less emulated clusters and a kubeconfig naming them.
struct Env {
    pair: ClusterPair,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pair = ClusterPair::start(&dir.path().join("state"), false)
            .await
            .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, pair.kubeconfig()).unwrap();
        Env {
            pair,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Runs the orchestrator with both clusters' contexts; returns the
    /// exit code, stdout and stderr.
    async fn orchestrator(&self, args: &[&str]) -> (i32, String, String) {
        run(&self.kubeconfig, args).await
    }

    fn source(&self) -> kube::Client {
        self.pair.source.client.clone()
    }

    fn destination(&self) -> kube::Client {
        self.pair.destination.client.clone()
    }

    fn migrations(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.destination(),
            migration::NAMESPACE,
            &migration::resource(),
        )
    }

    async fn status(&self, run: &str) -> MigrationStatus {
        let object = self.migrations().get(run).await.unwrap();
        serde_json::from_value(object.data["status"].clone()).unwrap()
    }
}

async fn run(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = kubeconfig.to_str().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
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
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    eprintln!(
        "orchestrator {args:?}: {}\n{stdout}\n{stderr}",
        output.status
    );
    (output.status.code().unwrap_or(-1), stdout, stderr)
}

fn from_json<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// A namespace holding an application: a Deployment of 3, a StatefulSet
/// of 2, a Deployment the user keeps at 0, a CronJob and a ConfigMap.
async fn application(client: &kube::Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": ns}})),
        )
        .await
        .unwrap();
    let template = |app: &str| {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1d"]}]},
        })
    };
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    for (name, replicas) in [("web", 3), ("spare", 0)] {
        deployments
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                             "template": template(name)},
                })),
            )
            .await
            .unwrap();
    }
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "db"},
                "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                         "template": template("db")},
            })),
        )
        .await
        .unwrap();
    Api::<CronJob>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "report"},
                "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "busybox"}]}}}}},
            })),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "settings"}, "data": {"mode": "prod"}})),
        )
        .await
        .unwrap();
}

async fn replicas(client: &kube::Client, ns: &str, name: &str) -> (Option<i32>, Option<String>) {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    (
        deployment.spec.replicas,
        deployment
            .metadata
            .annotations
            .and_then(|a| a.get("mover.io/pre-quiesce-replicas").cloned()),
    )
}

fn step<'a>(status: &'a MigrationStatus, name: &str) -> &'a migration::StepStatus {
    status
        .step(name)
        .unwrap_or_else(|| panic!("no step {name} in {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_final_run_is_kept_in_a_migration_resumed_after_a_crash_and_rolled_back() {
    let env = Env::start().await;
    application(&env.source(), "shop").await;
    let crons = Api::<CronJob>::namespaced(env.source(), "shop");
    let suspend_before = crons.get("report").await.unwrap().spec.suspend;

    // A final run (volumes only: no PVCs here, so this is the quiesce
    // path alone) stops the application and records every step.
    let (code, stdout, _) = env
        .orchestrator(&[
            "migrate",
            "--name",
            "shop",
            "-n",
            "shop",
            "--volumes-only",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["run"], "shop-final-1");
    assert_eq!(report["succeeded"], true);
    let steps: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["phase"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("Quiesce", "Done")), "{steps:?}");
    assert!(steps.contains(&("Backup", "Skipped")), "{steps:?}");
    assert!(steps.contains(&("CopyVolumes", "Skipped")), "{steps:?}");
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains("stays stopped"),
        "{report}"
    );
    let src = env.source();
    assert_eq!(
        replicas(&src, "shop", "web").await,
        (Some(0), Some("3".into()))
    );
    assert_eq!(
        replicas(&src, "shop", "spare").await,
        (Some(0), Some("0".into()))
    );
    let cron = Api::<CronJob>::namespaced(src.clone(), "shop")
        .get("report")
        .await
        .unwrap();
    assert_eq!(cron.spec.suspend, Some(true));

    let status = env.status("shop-final-1").await;
    assert_eq!(status.phase, Phase::Succeeded);
    assert!(step(&status, "Quiesce").started.is_some());
    assert!(step(&status, "Quiesce").finished.is_some());
    assert_eq!(status.records["quiesced"].as_array().unwrap().len(), 4);

    // The process died in the middle of quiescing: the Migration says
    // Running at Quiesce. Running the same command again resumes it, and
    // the second pass keeps the saved originals (3, not the quiesced 0).
    let mut crashed = status.clone();
    crashed.phase = Phase::Running;
    crashed.step = "Quiesce".into();
    crashed.finished = None;
    for record in &mut crashed.steps {
        if ["Quiesce", "WaitForQuiesce", "Cleanup"].contains(&record.name.as_str()) {
            record.phase = StepPhase::Pending;
            record.finished = None;
        }
    }
    crashed.steps[0].phase = StepPhase::Done;
    env.migrations()
        .patch_status(
            "shop-final-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": crashed })),
        )
        .await
        .unwrap();
    let (code, _, stderr) = env
        .orchestrator(&["migrate", "--name", "shop", "-n", "shop", "--volumes-only"])
        .await;
    assert_eq!(code, 0);
    assert!(
        stderr.contains("resuming shop-final-1 at step Quiesce"),
        "{stderr}"
    );
    assert_eq!(
        replicas(&src, "shop", "web").await,
        (Some(0), Some("3".into()))
    );
    assert_eq!(env.status("shop-final-1").await.phase, Phase::Succeeded);
    assert_eq!(
        env.migrations()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "a resumed run creates no second Migration"
    );

    // `status` shows where the run stands, by plan or by run name.
    let (code, stdout, _) = env.orchestrator(&["status", "shop"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("shop-final-1 (final run of \"shop\"): Succeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("Quiesce"), "{stdout}");
    let (code, _, stderr) = env.orchestrator(&["status", "nothing"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no migration run or plan named \"nothing\""),
        "{stderr}"
    );

    // Rollback gives every workload exactly its original value back.
    let (code, stdout, _) = env
        .orchestrator(&[
            "rollback", "--name", "shop", "-n", "shop", "--output", "json",
        ])
        .await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["run"], "shop-rollback-2");
    assert_eq!(replicas(&src, "shop", "web").await, (Some(3), None));
    assert_eq!(replicas(&src, "shop", "spare").await, (Some(0), None));
    let db = Api::<StatefulSet>::namespaced(src.clone(), "shop")
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.spec.replicas, Some(2));
    let cron = Api::<CronJob>::namespaced(src.clone(), "shop")
        .get("report")
        .await
        .unwrap();
    assert_eq!(cron.spec.suspend, suspend_before);
    assert!(cron
        .annotations()
        .keys()
        .all(|k| !k.starts_with("mover.io/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_over_namespaces_another_migration_holds_is_refused() {
    let env = Env::start().await;
    application(&env.source(), "shop").await;
    // Another plan's run over "shop" is in flight (its process is gone).
    let (code, _, _) = env
        .orchestrator(&["migrate", "--name", "first", "-n", "shop", "--volumes-only"])
        .await;
    assert_eq!(code, 0);
    let mut status = env.status("first-final-1").await;
    status.phase = Phase::Running;
    env.migrations()
        .patch_status(
            "first-final-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    let (code, _, stderr) = env
        .orchestrator(&[
            "migrate",
            "--name",
            "second",
            "-n",
            "shop",
            "--volumes-only",
        ])
        .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "migration first-final-1 (plan \"first\") is in flight over namespace(s) shop"
        ),
        "{stderr}"
    );
    // A stage run of a plan whose final run is in flight is refused too.
    let (code, _, stderr) = env
        .orchestrator(&["migrate", "--name", "first", "-n", "shop", "--stage"])
        .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("a final run of migration \"first\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bare_pod_using_a_pvc_fails_preflight_of_a_quiescing_run() {
    let env = Env::start().await;
    let src = env.source();
    Api::<Namespace>::all(src.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "lab"}})),
        )
        .await
        .unwrap();
    let pvc = json!({
        "metadata": {"name": "scratch"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(src.clone(), "lab")
        .create(&PostParams::default(), &from_json(pvc))
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(src.clone(), "lab")
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "notebook"},
                "spec": {"containers": [{"name": "n", "image": "busybox"}],
                         "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "scratch"}}]},
            })),
        )
        .await
        .unwrap();
    // Wait for the binder to bind the claim (preflight wants it Bound).
    let pvcs = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(src, "lab");
    for _ in 0..100 {
        let phase = pvcs
            .get("scratch")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase);
        if phase.as_deref() == Some("Bound") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, stdout, _) = env
        .orchestrator(&[
            "migrate",
            "--name",
            "lab",
            "-n",
            "lab",
            "--volumes-only",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let preflight = &report["steps"][0];
    assert_eq!(preflight["phase"], "Failed");
    assert!(
        preflight["message"]
            .as_str()
            .unwrap()
            .contains("lab/notebook"),
        "{preflight}"
    );
}

/// The Widget CRD, namespaced or cluster-scoped.
async fn widgets_crd(client: &kube::Client, scope: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": scope,
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        })),
    )
    .await
    .unwrap();
    kube::runtime::wait::await_condition(
        crds,
        "widgets.example.com",
        kube::runtime::conditions::is_crd_established(),
    )
    .await
    .unwrap();
}

fn step_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report}"))
}

/// A final run through Velero on clusters without Docker (no pod runs):
/// the resources reach the renamed namespace; a restore error is reported
/// by resource and fails the run; a second run with `--allow-partial`
/// takes its backup after the source was quiesced and still restores the
/// workload with its original replicas; verification names the workload
/// whose pods never run; rollback removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_final_run_restores_through_velero_and_reports_what_failed_by_resource() {
    let env = Env::start().await;
    let (src, dst) = (env.source(), env.destination());
    Api::<Namespace>::all(src.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "store"}})),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(src.clone(), "store")
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "settings"}, "data": {"currency": "EUR"}})),
        )
        .await
        .unwrap();
    Api::<Deployment>::namespaced(src.clone(), "store")
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "web", "image": "busybox"}]}}},
            })),
        )
        .await
        .unwrap();
    // The destination has a Widget CRD of another scope: restoring the
    // namespaced Widget fails there, the rest goes through.
    widgets_crd(&src, "Namespaced").await;
    widgets_crd(&dst, "Cluster").await;
    let widget_resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "example.com",
        "v1",
        "Widget",
    ));
    Api::<DynamicObject>::namespaced_with(src.clone(), "store", &widget_resource)
        .create(
            &PostParams::default(),
            &from_json(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                              "metadata": {"name": "w1"}, "spec": {"size": 3}})),
        )
        .await
        .unwrap();

    // A ReplicaSet no Deployment owns would be left behind by the backup:
    // preflight refuses, changing nothing.
    let sets = Api::<ReplicaSet>::namespaced(src.clone(), "store");
    sets.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": "legacy"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "legacy"}},
                     "template": {"metadata": {"labels": {"app": "legacy"}},
                                  "spec": {"containers": [{"name": "l", "image": "busybox"}]}}},
        })),
    )
    .await
    .unwrap();
    let (code, stdout, _) = env
        .orchestrator(&[
            "migrate",
            "--name",
            "store",
            "-n",
            "store:store-new",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let preflight = step_of(&report, "Preflight");
    assert_eq!(preflight["phase"], "Failed");
    assert!(
        preflight["message"]
            .as_str()
            .unwrap()
            .contains("store/legacy"),
        "{preflight}"
    );
    assert_eq!(
        replicas(&src, "store", "web").await,
        (Some(2), None),
        "nothing quiesced"
    );
    sets.delete("legacy", &Default::default()).await.unwrap();

    let args = [
        "migrate",
        "--name",
        "store",
        "-n",
        "store:store-new",
        "--verify-timeout",
        "5",
        "--output",
        "json",
    ];
    let (code, stdout, _) = env.orchestrator(&args).await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    for step in ["Backup", "Quiesce", "WaitForBackupSync"] {
        assert_eq!(step_of(&report, step)["phase"], "Done", "{step}");
    }
    let restore = step_of(&report, "Restore");
    assert_eq!(restore["phase"], "Failed");
    let message = restore["message"].as_str().unwrap();
    assert!(message.contains("PartiallyFailed"), "{message}");
    assert!(
        message.contains("w1"),
        "the failure names the Widget: {message}"
    );
    let messages = report["records"]["restore"]["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["severity"] == "error" && m["text"].as_str().unwrap().contains("w1")),
        "{messages:?}"
    );
    assert!(
        report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("still stopped")),
        "{report}"
    );
    let settings = Api::<ConfigMap>::namespaced(dst.clone(), "store-new")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(settings.data.unwrap()["currency"], "EUR");

    // Run again with --allow-partial. Its backup is taken with the source
    // quiesced; the restored Deployment still gets its original replicas.
    Api::<Deployment>::namespaced(dst.clone(), "store-new")
        .delete("web", &Default::default())
        .await
        .unwrap();
    let mut again = args.to_vec();
    again.push("--allow-partial");
    let (code, stdout, _) = env.orchestrator(&again).await;
    assert_eq!(code, 1, "verification fails: no pod ever runs here");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["run"], "store-final-3");
    assert_eq!(step_of(&report, "Restore")["phase"], "Done");
    let verify = step_of(&report, "Verify");
    assert_eq!(verify["phase"], "Failed");
    assert!(
        verify["message"]
            .as_str()
            .unwrap()
            .contains("Deployment web"),
        "{verify}"
    );
    let restored = Api::<Deployment>::namespaced(dst.clone(), "store-new")
        .get("web")
        .await
        .unwrap();
    assert_eq!(restored.spec.replicas, Some(2));
    assert!(
        restored
            .annotations()
            .keys()
            .all(|k| !k.starts_with("mover.io/pre-quiesce")),
        "{:?}",
        restored.annotations()
    );
    assert_eq!(
        replicas(&src, "store", "web").await,
        (Some(0), Some("2".into()))
    );

    // Rollback: the namespace the migration created goes, the source runs
    // again, and no Backup of the plan is left on either side.
    let (code, stdout, _) = env
        .orchestrator(&[
            "rollback",
            "--name",
            "store",
            "-n",
            "store:store-new",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 0, "{stdout}");
    assert!(Api::<Namespace>::all(dst.clone())
        .get_opt("store-new")
        .await
        .unwrap()
        .is_none());
    assert_eq!(replicas(&src, "store", "web").await, (Some(2), None));
    let backups = |client: kube::Client| {
        Api::<DynamicObject>::namespaced_with(
            client,
            "velero",
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "velero.io",
                "v1",
                "Backup",
            )),
        )
    };
    for client in [src.clone(), dst.clone()] {
        let mut left = Vec::new();
        for _ in 0..50 {
            left = backups(client.clone())
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|b| b.name_any())
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(left.is_empty(), "{left:?}");
    }
}
