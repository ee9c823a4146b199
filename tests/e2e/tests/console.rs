//! The web console in a real browser (headless Chromium over WebDriver),
//! against the release controller serving it beside a pair of emulated
//! clusters whose transfer pods are real `mover:dev` containers.
//!
//! A user with the rights the README gives a console user (not an
//! administrator) logs in with a token, sees the clusters, builds a plan
//! through the form (its validation first), starts a stage migration and
//! watches its progress bar grow and its pipeline reach done, sees a
//! failing volume's reason as the mover gave it, rolls the stage back,
//! and reads a migration on a phone-sized screen. The browser's console
//! log must stay free of errors on every page. Screenshots go to
//! `target/console-screenshots/`.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use e2e::browser::{Browser, LAPTOP};
use e2e::controller::{
    clusters, controller_command, create, migrations, noise, plans, register_clusters,
    source_volume, start_pair, wait_for_crds, NS,
};
use e2e::migration::{app_pod, tree, Uses};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The user the console is used as.
const USER: &str = "alice";

/// How long a migration may take to finish, pods starting included.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Runs `kubectl ARGS` against context `context` of `kubeconfig`, with
/// `input` on its stdin.
fn kubectl(kubeconfig: &Path, context: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The document of `yaml` (several, `---` apart) that defines `kind`
/// `name`.
fn document<'a>(yaml: &'a str, kind: &str, name: &str) -> Result<&'a str> {
    yaml.split("\n---\n")
        .find(|doc| {
            doc.lines().any(|l| l == format!("kind: {kind}"))
                && doc.lines().any(|l| l.trim() == format!("name: {name}"))
        })
        .with_context(|| format!("no {kind} {name}"))
}

/// Gives [`USER`] on the host what the README says a console user needs:
/// deploy/rbac/user.yaml's roles bound as its header says, and the
/// ClusterRole `mover-console-user` that `orchestrator install` adds
/// (taken from deploy/controller.yaml, which install.rs generates) bound
/// in the controller's namespace. Returns a token of that user.
fn user_token(pair: &kube_emulator::ClusterPair, kubeconfig: &Path) -> Result<String> {
    let root = e2e::repo_root();
    let roles = std::fs::read_to_string(root.join("deploy/rbac/user.yaml"))?;
    let installed = std::fs::read_to_string(root.join("deploy/controller.yaml"))?;
    let console_role = document(&installed, "ClusterRole", "mover-console-user")?;
    let user = format!("--user={USER}");
    // A ClusterRoleBinding without a namespace, else a RoleBinding in it.
    let bind = |namespace: Option<&str>, binding: &str, role: &str| -> Result<()> {
        let role = format!("--clusterrole={role}");
        let mut args = match namespace {
            Some(ns) => vec!["-n", ns, "create", "rolebinding"],
            None => vec!["create", "clusterrolebinding"],
        };
        args.extend([binding, role.as_str(), user.as_str()]);
        kubectl(kubeconfig, "destination", &args, "")
    };
    kubectl(kubeconfig, "destination", &["apply", "-f", "-"], &roles)?;
    kubectl(
        kubeconfig,
        "destination",
        &["apply", "-f", "-"],
        console_role,
    )?;
    bind(None, "alice-mover-cluster", "mover-migrator-cluster")?;
    bind(Some(NS), "alice-mover-state", "mover-migrator-state")?;
    bind(Some(NS), "alice-console", "mover-console-user")?;
    Ok(pair.destination.token_for(USER, &[]))
}

/// What a plan made in the form leaves out and these clusters need: the
/// image built here, volumes only (no Velero), and a bandwidth limit that
/// makes the copy last long enough to watch.
async fn complete_plan(host: &kube::Client, name: &str) -> Result<()> {
    plans(host)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"plan": {
                "volumesOnly": true,
                "moverImage": e2e::MOVER_IMAGE,
                "bandwidthLimit": "4M",
            }}})),
        )
        .await
        .with_context(|| format!("completing MigrationPlan {name}"))?;
    Ok(())
}

/// The name of the run the page at `url` (`/migrations/NAME`) shows.
fn run_name(url: &str) -> Result<String> {
    let (_, name) = url
        .split_once("/migrations/")
        .with_context(|| format!("{url} is no migration page"))?;
    Ok(name.trim_end_matches('/').to_string())
}

/// Clicks `button`, checks that the confirmation dialog it opens says
/// each of `says`, confirms, and returns the run it started (the page
/// moves to it).
async fn start_run(browser: &Browser, button: &str, says: &[&str]) -> Result<String> {
    browser.click(button).await?;
    let text = browser
        .text("dialog#confirm[open] #confirm-text")
        .await?
        .to_lowercase();
    for words in says {
        ensure!(
            text.contains(words),
            "the confirmation of {button} does not say {words:?}: {text:?}"
        );
    }
    browser.click("dialog#confirm[open] #confirm-ok").await?;
    let page = browser
        .until("the migration page", Duration::from_secs(30), async || {
            let url = browser.url().await;
            Ok(url.contains("/migrations/").then_some(url))
        })
        .await?;
    run_name(&page)
}

/// The value of the PVC row `pvc`'s progress bar (`None` before it has
/// one), and its maximum.
async fn progress(browser: &Browser, pvc: &str) -> Result<Option<(f64, f64)>> {
    let value = browser
        .eval(
            "const bar = document.querySelector(arguments[0]);
             return bar ? [bar.value, bar.max] : null;",
            vec![json!(format!("[data-pvc=\"{pvc}\"] progress"))],
        )
        .await?;
    Ok(value
        .as_array()
        .and_then(|pair| Some((pair.first()?.as_f64()?, pair.get(1)?.as_f64()?))))
}

/// The page's `#phase` once its state is `state`; fails at once if the
/// run failed (with the page's text).
async fn wait_phase(browser: &Browser, state: &str) -> Result<()> {
    browser
        .until(&format!("#phase to be {state}"), RUN_LIMIT, async || {
            let now = browser
                .eval(
                    "const p = document.querySelector('#phase');
                         return p ? p.dataset.state : null;",
                    vec![],
                )
                .await?;
            if now == state {
                return Ok(Some(()));
            }
            if now == "failed" {
                let text = browser.text("#main").await.unwrap_or_default();
                bail!("the run failed; the page says:\n{text}");
            }
            Ok(None)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_builds_a_plan_and_runs_it_in_a_browser() -> Result<()> {
    let (_dir, pair, kubeconfig) = start_pair().await?;
    let (src, host) = (pair.source.client.clone(), pair.destination.client.clone());

    // `shop`: sixteen 4 MiB files, so that the copy's progress moves in
    // steps (a file counts once it is done) over 16 s at 4 MB/s.
    let shop = source_volume(&src, "shop", &[]).await?;
    for i in 0..16 {
        let name = format!("part-{i:02}.bin");
        std::fs::write(shop.join(&name), noise(name.as_bytes(), 4 << 20))?;
    }
    // `vault`: its application runs as uid 1000, and so does its sender,
    // which cannot read a file only root may.
    let vault = source_volume(&src, "vault", &[("readable.txt", b"fine\n".to_vec())]).await?;
    let secret = vault.join("secret.key");
    std::fs::write(&secret, "root only\n")?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    app_pod(&src, "vault", "data", Uses::Mount).await?;

    create(
        &Api::<Namespace>::all(host.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await?;
    let console_port = e2e::free_port()?;
    let _controller = controller_command(&kubeconfig, e2e::free_port()?)?
        .arg("--console-listen")
        .arg(format!("127.0.0.1:{console_port}"))
        .spawn()
        .context("starting the controller")?;
    wait_for_crds(&host).await?;
    register_clusters(&pair, &pair.source.api_url).await?;
    // A cluster nobody answers for, to tell reachable from not.
    create(
        &Api::<Secret>::namespaced(host.clone(), NS),
        json!({"metadata": {"name": "gone-token"}, "stringData": {"token": "x"}}),
    )
    .await?;
    create(
        &clusters(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "MigrationCluster",
               "metadata": {"name": "gone"},
               "spec": {"url": format!("https://127.0.0.1:{}", e2e::free_port()?),
                        "secretRef": {"name": "gone-token"}}}),
    )
    .await?;
    let token = user_token(&pair, &kubeconfig)?;

    let browser = Browser::start(&format!("http://127.0.0.1:{console_port}")).await?;
    let outcome = drive(&browser, &pair, &token, &shop).await;
    if outcome.is_err() {
        let _ = browser.screenshot("failure").await;
    }
    let log = browser.assert_clean_log("at the end").await;
    browser.close().await?;
    outcome?;
    log
}

/// The user's session, page by page.
async fn drive(
    browser: &Browser,
    pair: &kube_emulator::ClusterPair,
    token: &str,
    shop: &Path,
) -> Result<()> {
    let host = pair.destination.client.clone();

    // Log in.
    browser.goto("/login").await?;
    browser.type_into("input#token", token).await?;
    browser.click("button#login").await?;
    browser.find("nav a[href=\"/clusters\"]").await?;
    browser.assert_clean_log("logging in").await?;

    // Clusters: both of the pair reachable, with their versions; the one
    // nobody answers for is not.
    browser.click("nav a[href=\"/clusters\"]").await?;
    for name in ["source", "host"] {
        let version = cluster_version(&host, name).await?;
        browser
            .text_containing(
                &format!("tr[data-cluster=\"{name}\"] [data-field=\"version\"]"),
                &version,
            )
            .await?;
    }
    let reachable = |name: &str| format!("tr[data-cluster=\"{name}\"] [data-field=\"reachable\"]");
    for (name, says) in [("source", "yes"), ("host", "yes"), ("gone", "no")] {
        browser
            .until(
                &format!("cluster {name} to show reachable: {says}"),
                Duration::from_secs(60),
                async || {
                    let now = browser.text(&reachable(name)).await?;
                    Ok(now.trim().starts_with(says).then_some(()))
                },
            )
            .await?;
    }
    for field in ["openshift", "velero", "registry"] {
        browser
            .find(&format!(
                "tr[data-cluster=\"source\"] [data-field=\"{field}\"]"
            ))
            .await?;
    }
    browser.screenshot("clusters").await?;
    browser.assert_clean_log("on the clusters page").await?;

    // A plan through the form: refused without a name, the error beside
    // the field; then made from the source's namespace `shop`.
    browser.click("nav a[href=\"/plans\"]").await?;
    browser.click("a#new-plan").await?;
    browser.find("input#plan-name").await?;
    browser.click("button#create-plan").await?;
    let error = browser
        .until(
            "the plan name's field error",
            Duration::from_secs(10),
            async || {
                let Some(error) = browser
                    .find_all(".field-error[data-for=\"plan-name\"]")
                    .await?
                    .into_iter()
                    .next()
                else {
                    return Ok(None);
                };
                let text = error.text().await?;
                Ok((!text.trim().is_empty()).then_some(text))
            },
        )
        .await?;
    ensure!(
        browser.url().await.ends_with("/plans/new"),
        "the form stays open after {error:?}"
    );
    // The server refused the plan (422), which Chromium logs.
    browser
        .assert_log_errors("submitting an empty form", &["/api/plans"])
        .await?;
    browser.type_into("input#plan-name", "shop").await?;
    browser
        .find("select#source-cluster option[value=\"source\"]")
        .await?;
    browser
        .find("select#source-cluster")
        .await?
        .select_by_value("source")
        .await?;
    browser
        .find("select#destination-cluster option[value=\"host\"]")
        .await?;
    browser
        .find("select#destination-cluster")
        .await?
        .select_by_value("host")
        .await?;
    browser
        .click("input[name=\"namespace\"][value=\"shop\"]")
        .await?;
    let pvc = browser
        .find("input[name=\"pvc\"][value=\"shop/data\"]")
        .await?;
    ensure!(
        pvc.is_selected().await?,
        "PVC shop/data is not checked by default"
    );
    browser.screenshot("new-plan").await?;
    browser.click("button#create-plan").await?;
    browser
        .until("the plan's page", Duration::from_secs(30), async || {
            Ok(browser.url().await.ends_with("/plans/shop").then_some(()))
        })
        .await?;
    browser.find("[data-pvc=\"shop/data\"]").await?;
    browser.find("#plan-conditions").await?;
    browser.screenshot("plan").await?;
    browser.assert_clean_log("making a plan").await?;
    // The plan was made as the user.
    let plan = plans(&host).get("shop").await?;
    ensure!(
        plan.data["spec"]["sourceCluster"] == "source"
            && plan.data["spec"]["destinationCluster"] == "host",
        "the form's plan: {:#}",
        plan.data
    );
    complete_plan(&host, "shop").await?;

    // A stage run: the progress bar grows while the copy goes on.
    let stage = start_run(browser, "button#run-stage", &["cop", "keeps running"]).await?;
    let bar = "shop/data";
    let mut seen: Vec<f64> = Vec::new();
    browser
        .until(
            "shop/data's progress bar to grow twice",
            RUN_LIMIT,
            async || {
                if let Some((value, max)) = progress(browser, bar).await? {
                    // The first value seen below the last is one taken mid-copy.
                    if value > 0.0 && value <= max && seen.last().is_none_or(|last| value > *last) {
                        seen.push(value);
                    }
                }
                Ok((seen.len() >= 2).then_some(()))
            },
        )
        .await?;
    let shot = browser.screenshot("migration-running").await?;
    // The README's picture of a running migration, refreshed on request
    // (a test run leaves the source tree alone otherwise).
    if std::env::var_os("UPDATE_CONSOLE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, e2e::repo_root().join("docs/console-migration.png"))
            .context("copying the running migration's screenshot to docs/")?;
    }
    wait_phase(browser, "succeeded").await?;
    let (value, max) = progress(browser, bar).await?.context("no progress bar")?;
    ensure!(
        value == max,
        "the copy is done but its bar shows {value}/{max}"
    );
    for step in ["Preflight", "CopyVolumes", "Cleanup"] {
        browser
            .find(&format!("[data-step=\"{step}\"][data-state=\"done\"]"))
            .await?;
    }
    for field in ["bytes", "files", "rate", "attempt"] {
        let text = browser
            .text(&format!("[data-pvc=\"{bar}\"] [data-field=\"{field}\"]"))
            .await?;
        ensure!(!text.trim().is_empty(), "the {field} of {bar} is empty");
    }
    browser.find("#throughput").await?;
    browser.screenshot("migration-done").await?;
    browser.assert_clean_log("watching a stage run").await?;
    ensure!(
        migrations(&host).get(&stage).await?.data["status"]["phase"] == "Succeeded",
        "the page says {stage} succeeded"
    );
    // The copy equals its source (`tree` passes over the work area a stage
    // run keeps: its hash cache makes the next run cheap).
    let copy = e2e::volume_dir(&host, "shop", "data").await?;
    let copied = tree(&copy)?;
    ensure!(
        tree(shop)? == copied,
        "the stage run's copy {} differs from {}",
        copy.display(),
        shop.display()
    );

    // A plan whose volume fails: its row gives the mover's reason.
    create(
        &plans(&host),
        json!({"apiVersion": "mover.io/v1alpha1", "kind": "MigrationPlan",
               "metadata": {"name": "vault"},
               "spec": {"sourceCluster": "source", "destinationCluster": "host",
                        "plan": {"namespaces": ["vault"]}}}),
    )
    .await?;
    complete_plan(&host, "vault").await?;
    browser.goto("/plans/vault").await?;
    let failing = start_run(browser, "button#run-stage", &["keeps running"]).await?;
    let shown = browser
        .text_containing(
            "[data-pvc=\"vault/data\"][data-state=\"failed\"] [data-field=\"reason\"]",
            "secret.key",
        )
        .await?;
    let status = migrations(&host).get(&failing).await?.data["status"].clone();
    let reason = status["pvcs"]
        .as_array()
        .and_then(|pvcs| pvcs.iter().find(|p| p["namespace"] == "vault"))
        .and_then(|p| p["error"].as_str())
        .with_context(|| format!("no reason for vault/data in {status:#}"))?
        .to_string();
    ensure!(
        normalize(&shown).contains(&normalize(&reason)),
        "the row shows {shown:?}, the mover said {reason:?}"
    );
    // The run itself goes on (a stage run retries the volume next time),
    // and the phase says what did not make it.
    browser
        .text_containing("#phase[data-state=\"succeeded\"]", "1 PVC failed")
        .await?;
    browser.screenshot("migration-failed").await?;
    browser.assert_clean_log("watching a failing run").await?;

    // Roll the stage back from the plan's page.
    browser.goto("/plans/shop").await?;
    let rollback = start_run(browser, "button#run-rollback", &["deletes", "restarts"]).await?;
    wait_phase(browser, "succeeded").await?;
    browser.screenshot("rollback").await?;
    browser.assert_clean_log("rolling back").await?;
    ensure!(
        migrations(&host).get(&rollback).await?.data["spec"]["kind"] == "rollback",
        "{rollback} is a rollback"
    );
    let copies = Api::<PersistentVolumeClaim>::namespaced(host.clone(), "shop");
    ensure!(
        copies
            .get_opt("data")
            .await?
            .is_none_or(|pvc| pvc.metadata.deletion_timestamp.is_some()),
        "the rollback left the copied PVC shop/data"
    );

    // A phone: the migration page fits the screen's width.
    browser.resize(390, 844).await?;
    browser.goto(&format!("/migrations/{stage}")).await?;
    browser.find("#phase[data-state=\"succeeded\"]").await?;
    browser.find("[data-pvc=\"shop/data\"] progress").await?;
    let widths = browser
        .eval(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await?;
    let (scroll, inner) = (widths[0].as_f64(), widths[1].as_f64());
    ensure!(
        matches!((scroll, inner), (Some(s), Some(i)) if s <= i && i <= 390.0),
        "the migration page scrolls sideways on a phone: scrollWidth/innerWidth {widths}"
    );
    browser.screenshot("migration-phone").await?;
    browser.assert_clean_log("on a phone").await?;
    browser.resize(LAPTOP.0, LAPTOP.1).await?;
    Ok(())
}

/// The Kubernetes version MigrationCluster `name`'s status reports, once
/// it does.
async fn cluster_version(host: &kube::Client, name: &str) -> Result<String> {
    for _ in 0..240 {
        let cluster = clusters(host).get(name).await?;
        if let Some(version) = cluster.data["status"]["kubernetesVersion"].as_str() {
            return Ok(version.to_string());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("MigrationCluster {name} reports no version")
}

/// `text` with its runs of white space made single spaces (a page wraps
/// and collapses what the mover wrote).
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The harness itself: a page that logs an error or fails a request fails
/// the log check, and a wait for an element that never comes fails naming
/// the selector and the page, with a screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_reports_console_errors_and_missing_elements() -> Result<()> {
    let browser = Browser::start("http://127.0.0.1:1").await?;
    browser
        .goto("data:text/html,<title>clean</title><p id=ok>fine</p>")
        .await?;
    ensure!(browser.text("#ok").await? == "fine");
    browser.assert_clean_log("on a clean page").await?;

    let refused = e2e::free_port()?;
    browser
        .goto(&format!(
            "data:text/html,<script>console.error('boom')</script>\
             <img src=\"http://127.0.0.1:{refused}/missing.png\" onerror=\"document.title='done'\">"
        ))
        .await?;
    browser
        .until("the image to fail", Duration::from_secs(10), async || {
            Ok((browser.client().title().await? == "done").then_some(()))
        })
        .await?;
    let failure = format!(
        "{:#}",
        browser
            .assert_clean_log("on a broken page")
            .await
            .err()
            .context("a console error and a failed request passed the log check")?
    );
    ensure!(failure.contains("boom"), "{failure}");
    ensure!(failure.contains("missing.png"), "{failure}");
    ensure!(failure.contains("[console-api]"), "{failure}");
    ensure!(failure.contains("[network]"), "{failure}");

    let missing = browser
        .find_within("#nowhere", Duration::from_secs(1))
        .await
        .err()
        .context("found an element that is not there")?;
    let message = format!("{missing:#}");
    ensure!(
        message.contains("`#nowhere`") && message.contains("data:text/html"),
        "{message}"
    );
    let shot = message
        .rsplit("the page then: ")
        .next()
        .context("no screenshot named")?;
    ensure!(
        std::fs::read(shot)?.starts_with(b"\x89PNG"),
        "{shot} is no PNG"
    );
    browser.close().await
}
