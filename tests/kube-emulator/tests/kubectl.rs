//! The real `kubectl` against both clusters of `kube-emulator up`: a
//! scripted session of the everyday commands a user verifies a migrated
//! application with (issue 19), each checked for its exit code and its
//! output as a real cluster gives them. One cluster pair serves the whole
//! session (it is expensive to start); the two clusters run it at once.
//!
//! Covered: create (typed, so sent as protobuf), apply, server-side apply,
//! label, annotate, patch, get with server-side columns and `-o wide`,
//! describe, events from the scheduler and the kubelet, logs -f, exec
//! (stdout, stderr, stdin, exit code), port-forward, wait, rollout status,
//! scale and rollout restart of a Deployment and a StatefulSet, auth
//! can-i and RBAC on pods/exec, explain, delete --wait.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use kube_emulator::testing::busybox_image;
use kube_emulator::ClusterPair;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// How long one kubectl command may take (rollouts included).
const COMMAND_LIMIT: Duration = Duration::from_secs(150);

/// What one kubectl command did.
struct Run {
    command: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`{}` exited {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Fails unless it exited 0 and stdout has every one of `expected`.
    fn ok(self, expected: &[&str]) -> anyhow::Result<Run> {
        self.exits(0, expected)
    }

    /// Fails unless it exited `code` and stdout or stderr has every one of
    /// `expected`.
    fn exits(self, code: i32, expected: &[&str]) -> anyhow::Result<Run> {
        if self.code != code {
            bail!("expected exit code {code}: {}", self.describe());
        }
        for text in expected {
            if !self.stdout.contains(text) && !self.stderr.contains(text) {
                bail!("expected {text:?} in the output: {}", self.describe());
            }
        }
        Ok(self)
    }
}

/// kubectl with the pair's kubeconfig, in one context.
struct Kubectl {
    kubeconfig: PathBuf,
    context: String,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(&self.context)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.run_with_input(args, None).await
    }

    async fn run_with_input(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<Run> {
        let mut command = self.command(args);
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .spawn()
            .context("running kubectl (is it installed?)")?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes()).await?;
        }
        let output = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {} did not finish", args.join(" ")))??;
        Ok(Run {
            command: format!("kubectl --context {} {}", self.context, args.join(" ")),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `run` in the session's namespace.
    async fn run_ns(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.run(&[&["-n", NAMESPACE], args].concat()).await
    }

    async fn run_ns_with_input(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<Run> {
        self.run_with_input(&[&["-n", NAMESPACE], args].concat(), input)
            .await
    }

    /// The same kubectl as another user (`<context>-developer`).
    fn as_developer(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig.clone(),
            context: format!("{}-developer", self.context),
        }
    }
}

const NAMESPACE: &str = "kubectl-session";

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_kubectl_session_behaves_as_on_a_real_cluster() -> anyhow::Result<()> {
    let image = busybox_image().await?;
    let state = tempfile::tempdir()?;
    let pair = ClusterPair::start(state.path(), true).await?;
    let kubeconfig = state.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig())?;
    let session = |context: &str| {
        session(
            Kubectl {
                kubeconfig: kubeconfig.clone(),
                context: context.to_string(),
            },
            image,
        )
    };
    let (source, destination) = tokio::join!(session("source"), session("destination"));
    source.context("the source cluster's session")?;
    destination.context("the destination cluster's session")?;
    Ok(())
}

async fn session(kubectl: Kubectl, image: &str) -> anyhow::Result<()> {
    objects(&kubectl).await?;
    deployment(&kubectl, image).await?;
    streams(&kubectl).await?;
    access(&kubectl).await?;
    logs(&kubectl, image).await?;
    statefulset(&kubectl, image).await?;
    explain(&kubectl).await?;
    deletion(&kubectl).await
}

/// Plain objects: create, apply (client- and server-side), label,
/// annotate, patch.
async fn objects(k: &Kubectl) -> anyhow::Result<()> {
    k.run(&["create", "namespace", NAMESPACE])
        .await?
        .ok(&[&format!("namespace/{NAMESPACE} created")])?;
    let config_map =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: \"1\"}\n";
    k.run_ns_with_input(&["apply", "-f", "-"], Some(config_map))
        .await?
        .ok(&["configmap/settings created"])?;
    k.run_ns_with_input(&["apply", "--server-side", "-f", "-"], Some(config_map))
        .await?
        .ok(&["configmap/settings serverside-applied"])?;
    k.run_ns(&["label", "configmap", "settings", "tier=web"])
        .await?
        .ok(&["configmap/settings labeled"])?;
    k.run_ns(&["annotate", "configmap", "settings", "note=kept"])
        .await?
        .ok(&["configmap/settings annotated"])?;
    k.run_ns(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])
    .await?
    .ok(&["configmap/settings patched"])?;
    let shown = k
        .run_ns(&[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.a}{.data.b} {.metadata.labels.tier} {.metadata.annotations.note}",
        ])
        .await?
        .ok(&[])?;
    if shown.stdout != "12 web kept" {
        bail!("the ConfigMap after the edits: {}", shown.describe());
    }
    Ok(())
}

/// A Deployment made with `kubectl create` (a protobuf body), watched to
/// its rollout, shown in columns, scaled and restarted.
async fn deployment(k: &Kubectl, image: &str) -> anyhow::Result<()> {
    let serve = "mkdir -p /www && echo page > /www/index.html && exec httpd -f -p 8080 -h /www";
    let image_arg = format!("--image={image}");
    k.run_ns(&[
        "create",
        "deployment",
        "web",
        &image_arg,
        "--port=8080",
        "--",
        "sh",
        "-c",
        serve,
    ])
    .await?
    .ok(&["deployment.apps/web created"])?;
    k.run_ns(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await?
        .ok(&["deployment \"web\" successfully rolled out"])?;
    k.run_ns(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ])
    .await?
    .ok(&["deployment.apps/web condition met"])?;
    k.run_ns(&["get", "pods", "-l", "app=web"]).await?.ok(&[
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "1/1", "Running",
    ])?;
    let node = format!("{}-node-", k.context);
    k.run_ns(&["get", "pods", "-l", "app=web", "-o", "wide"])
        .await?
        .ok(&["IP", "NODE", "NOMINATED NODE", "READINESS GATES", &node])?;
    k.run(&["get", "nodes", "-o", "wide"]).await?.ok(&[
        "STATUS",
        "ROLES",
        "VERSION",
        "INTERNAL-IP",
        "Ready",
        &node,
    ])?;
    k.run_ns(&["get", "deployment", "web"]).await?.ok(&[
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "1/1",
    ])?;
    k.run_ns(&["get", "events"]).await?.ok(&[
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
        "ScalingReplicaSet",
        "Successfully assigned",
        "already present on machine",
        "Started container",
    ])?;
    k.run_ns(&["describe", "pods", "-l", "app=web"])
        .await?
        .ok(&[
            "Status:",
            "Running",
            "Events:",
            "default-scheduler",
            "kubelet",
            "Created container: ",
        ])?;
    k.run_ns(&["scale", "deployment", "web", "--replicas=2"])
        .await?
        .ok(&["deployment.apps/web scaled"])?;
    k.run_ns(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await?
        .ok(&["successfully rolled out"])?;
    k.run_ns(&["get", "deployment", "web"])
        .await?
        .ok(&["2/2"])?;
    k.run_ns(&["rollout", "restart", "deployment/web"])
        .await?
        .ok(&["deployment.apps/web restarted"])?;
    k.run_ns(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await?
        .ok(&["deployment \"web\" successfully rolled out"])?;
    Ok(())
}

/// exec and port-forward into the Deployment's pods.
async fn streams(k: &Kubectl) -> anyhow::Result<()> {
    let out = k
        .run_ns(&["exec", "deploy/web", "--", "cat", "/www/index.html"])
        .await?
        .ok(&[])?;
    if out.stdout != "page\n" {
        bail!("exec's stdout: {}", out.describe());
    }
    let failed = k
        .run_ns(&[
            "exec",
            "deploy/web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await?
        .exits(3, &["command terminated with exit code 3"])?;
    if failed.stdout != "out\n" || !failed.stderr.starts_with("err\n") {
        bail!("exec's stdout and stderr: {}", failed.describe());
    }
    let echoed = k
        .run_ns_with_input(
            &["exec", "-i", "deploy/web", "--", "tr", "a-z", "A-Z"],
            Some("piped\n"),
        )
        .await?
        .ok(&[])?;
    if echoed.stdout != "PIPED\n" {
        bail!("exec's stdin: {}", echoed.describe());
    }
    port_forward(k).await
}

/// `kubectl port-forward deploy/web :8080`, then an HTTP request through
/// the local port it picked.
async fn port_forward(k: &Kubectl) -> anyhow::Result<()> {
    let mut forward = k
        .command(&["-n", NAMESPACE, "port-forward", "deploy/web", ":8080"])
        .spawn()?;
    let stdout = forward.stdout.take().context("port-forward's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("port-forward said nothing")??
        .context("port-forward ended")?;
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let port = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse::<u16>().ok())
        .with_context(|| format!("port-forward's first line: {first:?}"))?;
    let mut answer = String::new();
    for attempt in 0..2 {
        let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        connection
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
            .await?;
        answer.clear();
        tokio::time::timeout(
            Duration::from_secs(30),
            connection.read_to_string(&mut answer),
        )
        .await
        .with_context(|| format!("request {attempt} through port-forward"))??;
        if !(answer.starts_with("HTTP/1.") && answer.contains("200") && answer.ends_with("page\n"))
        {
            bail!("the answer through port-forward: {answer:?}");
        }
    }
    forward.kill().await?;
    Ok(())
}

/// A pod's log followed to its end, and waiting for its phase.
async fn logs(k: &Kubectl, image: &str) -> anyhow::Result<()> {
    let image_arg = format!("--image={image}");
    k.run_ns(&[
        "run",
        "talker",
        &image_arg,
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; sleep 2; echo two",
    ])
    .await?
    .ok(&["pod/talker created"])?;
    k.run_ns(&[
        "wait",
        "--for=condition=Ready",
        "pod/talker",
        "--timeout=60s",
    ])
    .await?
    .ok(&["pod/talker condition met"])?;
    let followed = k.run_ns(&["logs", "-f", "talker"]).await?.ok(&[])?;
    if followed.stdout != "one\ntwo\n" {
        bail!("logs -f: {}", followed.describe());
    }
    k.run_ns(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/talker",
        "--timeout=60s",
    ])
    .await?
    .ok(&["pod/talker condition met"])?;
    k.run_ns(&["get", "pod", "talker"])
        .await?
        .ok(&["Completed", "0/1"])?;
    Ok(())
}

/// A StatefulSet rolled out, scaled and restarted. Its defaulted
/// `rollingUpdate.partition: 0` makes kubectl report a "partitioned roll
/// out", as it does on a real cluster.
async fn statefulset(k: &Kubectl, image: &str) -> anyhow::Result<()> {
    let manifest = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers:\n      - {{name: db, image: {image}, command: [sleep, \"3600\"]}}\n"
    );
    k.run_ns_with_input(&["apply", "-f", "-"], Some(&manifest))
        .await?
        .ok(&["statefulset.apps/db created"])?;
    k.run_ns(&["rollout", "status", "statefulset/db", "--timeout=120s"])
        .await?
        .ok(&["partitioned roll out complete: 1 new pods have been updated"])?;
    k.run_ns(&["scale", "statefulset", "db", "--replicas=2"])
        .await?
        .ok(&["statefulset.apps/db scaled"])?;
    k.run_ns(&["rollout", "status", "statefulset/db", "--timeout=120s"])
        .await?
        .ok(&["partitioned roll out complete: 2 new pods have been updated"])?;
    k.run_ns(&["rollout", "restart", "statefulset/db"])
        .await?
        .ok(&["statefulset.apps/db restarted"])?;
    k.run_ns(&["rollout", "status", "statefulset/db", "--timeout=150s"])
        .await?
        .ok(&["partitioned roll out complete: 2 new pods have been updated"])?;
    k.run_ns(&["get", "statefulset", "db"])
        .await?
        .ok(&["READY", "2/2"])?;
    Ok(())
}

/// auth can-i, and RBAC on the streaming subresources.
async fn access(k: &Kubectl) -> anyhow::Result<()> {
    k.run(&["auth", "can-i", "create", "pods/exec", "-n", NAMESPACE])
        .await?
        .ok(&["yes"])?;
    // The developer may read the namespace (view), not exec into its pods.
    k.run(&[
        "-n",
        NAMESPACE,
        "create",
        "rolebinding",
        "developer-view",
        "--clusterrole=view",
        "--user=developer",
    ])
    .await?
    .ok(&["rolebinding.rbac.authorization.k8s.io/developer-view created"])?;
    let developer = k.as_developer();
    developer
        .run(&["auth", "can-i", "get", "pods", "-n", NAMESPACE])
        .await?
        .ok(&["yes"])?;
    developer
        .run(&["auth", "can-i", "create", "pods/exec", "-n", NAMESPACE])
        .await?
        .exits(1, &["no"])?;
    developer
        .run(&["-n", NAMESPACE, "exec", "deploy/web", "--", "true"])
        .await?
        .exits(1, &["Forbidden", "cannot create resource \"pods/exec\""])?;
    developer
        .run(&["-n", NAMESPACE, "port-forward", "deploy/web", ":8080"])
        .await?
        .exits(
            1,
            &[
                "error upgrading connection",
                "is forbidden",
                "cannot create resource \"pods/portforward\"",
            ],
        )?;
    Ok(())
}

async fn explain(k: &Kubectl) -> anyhow::Result<()> {
    k.run(&["explain", "pod.spec.containers"]).await?.ok(&[
        "KIND:       Pod",
        "FIELD: containers <[]Container>",
        "image\t<string>",
        "name\t<string> -required-",
    ])?;
    k.run(&["explain", "deployment.spec.replicas"])
        .await?
        .ok(&[
            "GROUP:      apps",
            "FIELD: replicas <integer>",
            "Number of desired pods",
        ])?;
    Ok(())
}

/// delete --wait, and the kubelet saying it stops the containers.
async fn deletion(k: &Kubectl) -> anyhow::Result<()> {
    k.run_ns(&["delete", "deployment", "web", "--wait"])
        .await?
        .ok(&["deployment.apps \"web\" deleted"])?;
    k.run_ns(&["get", "deployment", "web"]).await?.exits(
        1,
        &["Error from server (NotFound): deployments.apps \"web\" not found"],
    )?;
    k.run_ns(&["delete", "statefulset", "db", "--wait"])
        .await?
        .ok(&["statefulset.apps \"db\" deleted"])?;
    k.run_ns(&[
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app=web",
        "--timeout=60s",
    ])
    .await?;
    k.run_ns(&["get", "events"])
        .await?
        .ok(&["Killing", "Stopping container"])?;
    k.run(&["delete", "namespace", NAMESPACE, "--wait"])
        .await?
        .ok(&[&format!("namespace \"{NAMESPACE}\" deleted")])?;
    Ok(())
}
