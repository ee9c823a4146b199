//! The kubelet against real Docker containers: pods with PVCs, Secrets,
//! ConfigMaps and security contexts, exit codes and termination messages,
//! logs, restarts, image errors, scheduling, deletion and cleanup. Each test
//! runs its own emulated cluster (own Docker network, own state directory).

mod cluster_support;

use std::os::unix::fs::MetadataExt as _;

use anyhow::Context as _;
use futures_util::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Node,
    PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{DeleteParams, LogParams};
use kube::Api;
use kube_emulator::docker::{self, INSTANCE_LABEL};
use kube_emulator::testing::wait_for;
use serde_json::json;

use cluster_support::{phase, TestCluster};

fn container_status(pod: &Pod, index: usize) -> ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.get(index).cloned())
        .unwrap_or_default()
}

fn terminated(pod: &Pod) -> ContainerStateTerminated {
    container_status(pod, 0)
        .state
        .and_then(|state| state.terminated)
        .unwrap_or_default()
}

fn waiting(pod: &Pod) -> Option<ContainerStateWaiting> {
    container_status(pod, 0)
        .state
        .and_then(|state| state.waiting)
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

#[tokio::test]
async fn a_pod_with_a_pvc_and_a_secret_writes_to_the_volume_as_its_user_and_fs_group(
) -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-pvc").await?;
    test.create::<Secret>(json!({
        "metadata": { "name": "db" },
        "data": { "password": "czNjcmV0" },
    }))
    .await?;
    test.create::<PersistentVolumeClaim>(json!({
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Mi" } } },
    }))
    .await?;
    test.pod(
        "writer",
        json!({
            "restartPolicy": "Never",
            "securityContext": { "runAsUser": 1000, "fsGroup": 2000 },
            "containers": [{
                "name": "writer",
                "command": ["sh", "-c",
                    "echo \"$PASSWORD\" > /data/from-env && cat /secret/password > /data/from-file \
                     && id -u > /data/uid && id -G > /data/groups"],
                "env": [{ "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } }],
                "volumeMounts": [
                    { "name": "data", "mountPath": "/data" },
                    { "name": "secret", "mountPath": "/secret" },
                ],
            }],
            "volumes": [
                { "name": "data", "persistentVolumeClaim": { "claimName": "data" } },
                { "name": "secret", "secret": { "secretName": "db" } },
            ],
        }),
    )
    .await?;

    let pod = test
        .wait_pod("writer", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Succeeded", "{:?}", pod.status);
    let done = terminated(&pod);
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(done
        .container_id
        .is_some_and(|id| id.starts_with("docker://")));

    let dir = test.claim_dir("data").await?;
    assert_eq!(std::fs::read_to_string(dir.join("from-env"))?, "s3cret\n");
    assert_eq!(std::fs::read_to_string(dir.join("from-file"))?, "s3cret");
    assert_eq!(std::fs::read_to_string(dir.join("uid"))?, "1000\n");
    let groups = std::fs::read_to_string(dir.join("groups"))?;
    assert!(
        groups.split_whitespace().any(|group| group == "2000"),
        "groups: {groups}"
    );
    // fsGroup: the volume belongs to the group, and setgid makes new files
    // inherit it.
    let written = std::fs::metadata(dir.join("from-env"))?;
    assert_eq!((written.uid(), written.gid()), (1000, 2000));
    let root = std::fs::metadata(&dir)?;
    assert_eq!(root.gid(), 2000);
    assert_ne!(root.mode() & 0o2000, 0, "the volume directory is setgid");
    Ok(())
}

#[tokio::test]
async fn failed_containers_report_exit_code_and_termination_message() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-fail").await?;
    test.pod(
        "written",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c", "echo 'disk full' > /dev/termination-log; echo noise; exit 3"],
            }],
        }),
    )
    .await?;
    test.pod(
        "from-logs",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c", "echo first; echo 'it broke' >&2; exit 1"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        }),
    )
    .await?;

    let pod = test
        .wait_pod("written", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Failed");
    let done = terminated(&pod);
    assert_eq!(done.exit_code, 3);
    assert_eq!(done.reason.as_deref(), Some("Error"));
    assert_eq!(done.message.as_deref(), Some("disk full\n"));
    let ready = pod
        .status
        .and_then(|status| status.conditions)
        .unwrap_or_default();
    assert!(ready
        .iter()
        .any(|condition| condition.type_ == "Ready" && condition.status == "False"));

    let pod = test
        .wait_pod("from-logs", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Failed");
    let done = terminated(&pod);
    assert_eq!(done.exit_code, 1);
    // The log tail, stdout and stderr (whose relative order Docker does
    // not keep).
    let message = done.message.unwrap_or_default();
    let mut lines: Vec<&str> = message.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["first", "it broke"], "{message:?}");
    Ok(())
}

#[tokio::test]
async fn logs_are_served_and_followed_until_the_container_ends() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-logs").await?;
    test.pod(
        "talker",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c", "echo one; echo two >&2; sleep 2; echo three"],
            }],
        }),
    )
    .await?;
    test.wait_pod("talker", "the pod to run", |pod| phase(pod) != "Pending")
        .await?;

    let pods = test.api::<Pod>();
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let lines: Vec<String> = pods
        .log_stream("talker", &follow)
        .await?
        .lines()
        .try_collect()
        .await?;
    // Everything, stdout in order (Docker does not keep the order of
    // stdout relative to stderr).
    let stdout: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|line| *line != "two")
        .collect();
    assert_eq!(stdout, ["one", "three"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.contains(&"two".to_string()), "{lines:?}");

    let pod = test
        .wait_pod("talker", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Succeeded");
    let last = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("talker", &last).await?, "three\n");
    let error = pods
        .logs(
            "talker",
            &LogParams {
                container: Some("nope".to_string()),
                ..LogParams::default()
            },
        )
        .await
        .expect_err("a container the pod does not have");
    assert!(error.to_string().contains("nope"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_missing_image_secret_or_non_root_user_leaves_the_container_waiting_with_a_reason(
) -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-waits").await?;
    test.pod(
        "no-image",
        json!({ "containers": [{ "name": "main", "image": "kube-emu-missing:nope", "command": ["true"] }] }),
    )
    .await?;
    test.pod(
        "no-secret",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c", "test \"$TOKEN\" = abc"],
                "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "later", "key": "token" } } }],
            }],
        }),
    )
    .await?;
    test.pod(
        "as-root",
        json!({
            "securityContext": { "runAsNonRoot": true },
            "containers": [{ "name": "main", "command": ["true"] }],
        }),
    )
    .await?;

    let pod = test
        .wait_pod("no-image", "an image pull error", |pod| {
            waiting(pod).is_some_and(|waiting| {
                matches!(
                    waiting.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                )
            })
        })
        .await?;
    assert_eq!(phase(&pod), "Pending");
    let message = waiting(&pod)
        .and_then(|waiting| waiting.message)
        .unwrap_or_default();
    assert!(message.contains("kube-emu-missing:nope"), "{message}");

    let pod = test
        .wait_pod("no-secret", "a config error", |pod| {
            waiting(pod).is_some_and(|waiting| {
                waiting.reason.as_deref() == Some("CreateContainerConfigError")
            })
        })
        .await?;
    let message = waiting(&pod)
        .and_then(|waiting| waiting.message)
        .unwrap_or_default();
    assert!(message.contains("secret \"later\" not found"), "{message}");

    // The busybox image runs as root.
    let pod = test
        .wait_pod("as-root", "a config error", |pod| {
            waiting(pod).is_some_and(|waiting| {
                waiting.reason.as_deref() == Some("CreateContainerConfigError")
            })
        })
        .await?;
    let message = waiting(&pod)
        .and_then(|waiting| waiting.message)
        .unwrap_or_default();
    assert!(
        message.contains("runAsNonRoot and image will run as root"),
        "{message}"
    );

    // Once the Secret exists the pod runs, with it.
    test.create::<Secret>(
        json!({ "metadata": { "name": "later" }, "stringData": { "token": "abc" } }),
    )
    .await?;
    let pod = test
        .wait_pod("no-secret", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Succeeded", "{:?}", pod.status);
    Ok(())
}

#[tokio::test]
async fn on_failure_restarts_the_container_until_it_succeeds() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-restart").await?;
    test.pod(
        "flaky",
        json!({
            "restartPolicy": "OnFailure",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c", "if [ -f /state/ran ]; then exit 0; fi; touch /state/ran; exit 7"],
                "volumeMounts": [{ "name": "state", "mountPath": "/state" }],
            }],
            "volumes": [{ "name": "state", "emptyDir": {} }],
        }),
    )
    .await?;
    let pod = test
        .wait_pod("flaky", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Succeeded");
    let status = container_status(&pod, 0);
    assert_eq!(status.restart_count, 1);
    let previous = status
        .last_state
        .and_then(|state| state.terminated)
        .unwrap_or_default();
    assert_eq!(previous.exit_code, 7);
    assert_eq!(terminated(&pod).exit_code, 0);
    Ok(())
}

#[tokio::test]
async fn deleting_a_pod_removes_its_containers_and_files() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-delete").await?;
    let pod = test
        .pod(
            "sleeper",
            json!({
                "containers": [{
                    "name": "main",
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }],
                }],
                "volumes": [{ "name": "scratch", "emptyDir": {} }],
            }),
        )
        .await?;
    let uid = pod.metadata.uid.clone().context("uid")?;
    let pod = test
        .wait_pod("sleeper", "the pod to run", |pod| phase(pod) == "Running")
        .await?;
    assert!(container_status(&pod, 0).ready);
    assert!(pod
        .status
        .as_ref()
        .and_then(|status| status.pod_ip.as_ref())
        .is_some());
    assert_eq!(test.containers(Some(&uid)).await?.len(), 1);
    let pod_dir = test.cluster.context.state_dir.join("pods").join(&uid);
    assert!(pod_dir.is_dir());

    // Deleted gracefully, as the API server does for a pod a node runs:
    // marked with its grace period, and gone only once the kubelet has
    // stopped it and removed what it had (so its volumes are free by the
    // time nobody can see it any more).
    let deleted = test
        .api::<Pod>()
        .delete("sleeper", &DeleteParams::default())
        .await?;
    let marked = deleted.left().context("a running pod went at once")?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    let gone = tokio::time::timeout(kube_emulator::testing::WAIT_LIMIT, async {
        loop {
            let pod_gone = test.api::<Pod>().get_opt("sleeper").await?.is_none();
            if pod_gone {
                // Its containers and files went first.
                anyhow::ensure!(test.containers(Some(&uid)).await?.is_empty());
                anyhow::ensure!(!pod_dir.exists());
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    gone.context("the pod is still there")??;

    // `--force --grace-period=0` removes a running pod at once; the
    // kubelet cleans up after it.
    let pod = test
        .pod(
            "forced",
            json!({"containers": [{"name": "main", "command": ["sleep", "3600"]}]}),
        )
        .await?;
    let uid = pod.metadata.uid.clone().context("uid")?;
    test.wait_pod("forced", "the pod to run", |pod| phase(pod) == "Running")
        .await?;
    let deleted = test
        .api::<Pod>()
        .delete(
            "forced",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await?;
    assert!(deleted.is_right(), "a forced delete is immediate");
    let cleaned = tokio::time::timeout(kube_emulator::testing::WAIT_LIMIT, async {
        while !test.containers(Some(&uid)).await?.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })
    .await;
    cleaned.context("the forced pod's container is still there")??;
    Ok(())
}

#[tokio::test]
async fn pods_are_scheduled_by_node_name_and_selector() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-sched").await?;
    let nodes = Api::<Node>::all(test.cluster.client.clone());
    let node = wait_for(
        &nodes,
        "kl-sched-node-2",
        "the node to be registered",
        |node| {
            node.status
                .as_ref()
                .is_some_and(|status| status.conditions.is_some())
        },
    )
    .await?;
    let status = node.status.unwrap_or_default();
    assert!(status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True"));
    let router_ip = test.cluster.context.router_ip.to_string();
    assert!(status
        .addresses
        .unwrap_or_default()
        .iter()
        .any(|address| address.type_ == "InternalIP" && address.address == router_ip));

    let run = |placement: serde_json::Value| {
        let mut spec = json!({ "restartPolicy": "Never", "containers": [{ "name": "main", "command": ["true"] }] });
        if let (Some(spec), Some(placement)) = (spec.as_object_mut(), placement.as_object()) {
            spec.extend(placement.clone());
        }
        spec
    };
    test.pod("pinned", run(json!({ "nodeName": "kl-sched-node-2" })))
        .await?;
    test.pod(
        "selected",
        run(json!({ "nodeSelector": { "kubernetes.io/hostname": "kl-sched-node-1" } })),
    )
    .await?;
    test.pod("anywhere", run(json!({}))).await?;
    test.pod("nowhere", run(json!({ "nodeName": "elsewhere" })))
        .await?;
    test.pod(
        "unmatched",
        run(json!({ "nodeSelector": { "kubernetes.io/hostname": "elsewhere" } })),
    )
    .await?;

    let node_name = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default()
    };
    let pod = test
        .wait_pod("pinned", "the pod to finish", finished)
        .await?;
    assert_eq!(
        (phase(&pod), node_name(&pod).as_str()),
        ("Succeeded", "kl-sched-node-2")
    );
    let pod = test
        .wait_pod("selected", "the pod to finish", finished)
        .await?;
    assert_eq!(
        (phase(&pod), node_name(&pod).as_str()),
        ("Succeeded", "kl-sched-node-1")
    );
    let pod = test
        .wait_pod("anywhere", "the pod to finish", finished)
        .await?;
    assert!(node_name(&pod).starts_with("kl-sched-node-"));
    assert_eq!(
        pod.status.and_then(|status| status.host_ip),
        Some(router_ip)
    );

    let not_scheduled = |reason: &'static str| {
        move |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions.iter().any(|condition| {
                        condition.type_ == "PodScheduled"
                            && condition.status == "False"
                            && condition.reason.as_deref() == Some(reason)
                    })
                })
        }
    };
    let pod = test
        .wait_pod("nowhere", "NodeNotFound", not_scheduled("NodeNotFound"))
        .await?;
    assert_eq!(phase(&pod), "Pending");
    let pod = test
        .wait_pod("unmatched", "Unschedulable", not_scheduled("Unschedulable"))
        .await?;
    assert_eq!(node_name(&pod), "");
    Ok(())
}

#[tokio::test]
async fn init_containers_run_first_and_containers_share_the_pod_network() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-multi").await?;
    test.create::<ConfigMap>(json!({
        "metadata": { "name": "settings" },
        "data": { "greeting": "hello", "port": "7000" },
    }))
    .await?;
    test.pod(
        "pair",
        json!({
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "prepare",
                "command": ["sh", "-c", "cp /config/greeting /shared/greeting"],
                "volumeMounts": [
                    { "name": "shared", "mountPath": "/shared" },
                    { "name": "config", "mountPath": "/config" },
                ],
            }],
            "containers": [
                {
                    "name": "server",
                    "command": ["sh", "-c", "nc -l -p \"$CFG_port\" > /shared/received"],
                    "envFrom": [{ "configMapRef": { "name": "settings" }, "prefix": "CFG_" }],
                    "volumeMounts": [{ "name": "shared", "mountPath": "/shared" }],
                },
                {
                    "name": "client",
                    "command": ["sh", "-c",
                        "until nc 127.0.0.1 $(PORT) < /shared/greeting; do sleep 0.1; done; echo $(NAME) > /dev/termination-log"],
                    "env": [
                        { "name": "PORT", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "port" } } },
                        { "name": "NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    ],
                    "volumeMounts": [{ "name": "shared", "mountPath": "/shared" }],
                },
            ],
            "volumes": [
                { "name": "shared", "emptyDir": {} },
                { "name": "config", "configMap": { "name": "settings", "items": [{ "key": "greeting", "path": "greeting" }] } },
            ],
        }),
    )
    .await?;
    let pod = test.wait_pod("pair", "the pod to finish", finished).await?;
    assert_eq!(phase(&pod), "Succeeded", "{:?}", pod.status);
    let init = pod
        .status
        .as_ref()
        .and_then(|status| status.init_container_statuses.as_ref())
        .and_then(|statuses| statuses.first().cloned())
        .and_then(|status| status.state?.terminated)
        .context("init container status")?;
    assert_eq!(init.reason.as_deref(), Some("Completed"));
    let client = container_status(&pod, 1)
        .state
        .and_then(|state| state.terminated)
        .unwrap_or_default();
    assert_eq!(client.message.as_deref(), Some("pair\n"));
    let logs = test
        .api::<Pod>()
        .logs(
            "pair",
            &LogParams {
                container: Some("server".to_string()),
                ..LogParams::default()
            },
        )
        .await?;
    assert_eq!(logs, "");
    let received = std::fs::read_to_string(
        test.cluster
            .context
            .state_dir
            .join("pods")
            .join(pod.metadata.uid.as_deref().unwrap_or_default())
            .join("volumes/shared/received"),
    )?;
    assert_eq!(received, "hello");
    Ok(())
}

#[tokio::test]
async fn dropping_the_cluster_removes_its_containers_and_network() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-drop").await?;
    test.pod(
        "sleeper",
        json!({ "containers": [{ "name": "main", "command": ["sleep", "3600"] }] }),
    )
    .await?;
    test.wait_pod("sleeper", "the pod to run", |pod| phase(pod) == "Running")
        .await?;
    let instance = test.cluster.context.shared.instance.clone();
    let network = test.cluster.context.network.clone();
    assert_eq!(test.containers(None).await?.len(), 1);

    drop(test);
    let left = docker::docker([
        "ps",
        "-aq",
        "--filter",
        &format!("label={INSTANCE_LABEL}={instance}"),
    ])
    .await?;
    assert_eq!(left.trim(), "", "containers left behind");
    let network_error = docker::docker(["network", "inspect", &network])
        .await
        .expect_err("the network is gone");
    assert!(network_error.is_not_found(), "{network_error}");
    Ok(())
}

#[tokio::test]
async fn pods_resolve_cluster_dns_names_and_know_their_hostname() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("kl-dns").await?;
    test.cluster
        .context
        .shared
        .dns
        .lock()
        .map_err(|_| anyhow::anyhow!("the DNS table is poisoned"))?
        .insert(
            "receiver.apps.example.test".to_string(),
            [10, 1, 2, 3].into(),
        );
    test.pod(
        "resolver",
        json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "command": ["sh", "-c",
                    "{ hostname; grep receiver.apps.example.test /etc/hosts; } > /dev/termination-log"],
            }],
        }),
    )
    .await?;
    let pod = test
        .wait_pod("resolver", "the pod to finish", finished)
        .await?;
    assert_eq!(phase(&pod), "Succeeded", "{:?}", pod.status);
    let message = terminated(&pod).message.unwrap_or_default();
    let lines: Vec<Vec<&str>> = message
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["resolver"],
            vec!["10.1.2.3", "receiver.apps.example.test"]
        ],
        "{message:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_docker_daemon_is_reported_as_docker_not_running() {
    let error = docker::docker(["--host", "unix:///nonexistent/docker.sock", "version"])
        .await
        .expect_err("no daemon there");
    assert!(
        matches!(error, docker::DockerError::NotRunning { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("Docker must be running"),
        "{error}"
    );
}
