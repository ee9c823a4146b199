//! The orchestrator against clusters as strict as real ones: a Kubernetes
//! source whose application namespace enforces Pod Security `restricted`
//! under a ResourceQuota without LimitRange, with the application pinned to
//! a tainted second node and running as a container-level uid; an
//! OpenShift destination with SecurityContextConstraints and a
//! WaitForFirstConsumer storage class; a user who is not cluster-admin;
//! and API faults injected while the volumes copy.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use kube_emulator::api::{Failure, Requests, Span};
use kube_emulator::{ClusterPair, PairOptions, Policy};
use serde_json::{json, Value};

/// The namespace of the shop's media: long enough that the router's
/// `mover-receiver-<namespace>` host label would pass 63 characters, so the
/// orchestrator names the Route's host itself, in the apps domain the
/// OpenShift destination's ingress configuration gives.
const SHOP: &str = "shop-media-assets-of-the-storefront-in-eu-central-1";

/// The uid the vault application runs as (set on its container only).
const VAULT_UID: u32 = 1001;

struct Env {
    pair: ClusterPair,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Runs the release `orchestrator` as the kubeconfig's `user` contexts
    /// (`""` for the admin's `source`/`destination`, `-developer`).
    async fn orchestrator(&self, user: &str, args: &[&str]) -> Result<Output> {
        let binary = e2e::release_binary("orchestrator")?;
        let kubeconfig = self.kubeconfig.to_string_lossy().into_owned();
        let (source, destination) = (format!("source{user}"), format!("destination{user}"));
        let output = tokio::process::Command::new(&binary)
            .args(args)
            .args([
                "--source-kubeconfig",
                &kubeconfig,
                "--source-context",
                &source,
            ])
            .args(["--destination-kubeconfig", &kubeconfig])
            .args(["--destination-context", &destination])
            .args(["--mover-image", e2e::MOVER_IMAGE])
            .args(["--namespace", "vault", "--namespace", SHOP])
            .args(["--storage-class", "standard=wffc", "--name", "strict"])
            .output()
            .await
            .with_context(|| format!("running {}", binary.display()))?;
        eprintln!(
            "orchestrator{user} {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }

    /// `kubectl --context CONTEXT ARGS` as the admin, which must succeed.
    fn kubectl(&self, context: &str, args: &[&str]) -> Result<String> {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", context])
            .args(args)
            .output()
            .context("running kubectl")?;
        if !output.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

async fn create<K>(api: &Api<K>, object: Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    Ok(api.create(&PostParams::default(), &object).await?)
}

/// A namespace with `labels`, and a bound 1 GiB ReadWriteOnce PVC in it;
/// returns the PVC's host directory.
async fn namespace_with_pvc(
    client: &kube::Client,
    ns: &str,
    labels: Value,
    pvc: &str,
) -> Result<PathBuf> {
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": ns, "labels": labels}}),
    )
    .await?;
    create(
        &Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
        json!({
            "metadata": {"name": pvc},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}}
            }
        }),
    )
    .await?;
    e2e::volume_dir(client, ns, pvc).await
}

fn write(path: &Path, bytes: &[u8], mode: u32, owner: (u32, u32)) -> Result<()> {
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))?;
    Ok(())
}

/// The vault application: a restricted-compliant Deployment on node 2
/// (tolerating its NoExecute taint), its user named on the container only,
/// with the requests and limits the namespace's quota demands.
async fn vault_app(client: &kube::Client, node: &str) -> Result<()> {
    let image = kube_emulator::testing::busybox_image().await?;
    create(
        &Api::<Deployment>::namespaced(client.clone(), "vault"),
        json!({
            "metadata": {"name": "vault"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "vault"}},
                "template": {
                    "metadata": {"labels": {"app": "vault"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "tolerations": [{"key": "dedicated", "operator": "Equal",
                                         "value": "vault", "effect": "NoExecute"}],
                        "securityContext": {"runAsNonRoot": true, "fsGroup": 2000,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "vault",
                            "image": image,
                            "command": ["sleep", "3600"],
                            "securityContext": {
                                "runAsUser": VAULT_UID, "runAsGroup": VAULT_UID,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}
                            },
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                          "limits": {"cpu": "500m", "memory": "128Mi"}},
                            "volumeMounts": [{"name": "data", "mountPath": "/vault"}]
                        }],
                        "volumes": [{"name": "data",
                                     "persistentVolumeClaim": {"claimName": "data"}}]
                    }
                }
            }
        }),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "vault");
    for _ in 0..480 {
        let running = pods
            .list(&ListParams::default().labels("app=vault"))
            .await?
            .items
            .into_iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("the vault application never ran")
}

/// Lines of `text` that report a missing right.
fn refusals(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("not allowed to"))
        .collect()
}

// Several workers: the emulated clusters' API servers run on this
// runtime, and kubectl is run as a blocking command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_migrate_between_strict_clusters_as_their_admission_demands() -> Result<()> {
    tokio::task::spawn_blocking(e2e::build_images).await??;
    let dir = tempfile::tempdir()?;
    let options = PairOptions {
        docker: true,
        source: Policy::default(),
        destination: Policy::openshift(),
        ..PairOptions::default()
    };
    let pair = ClusterPair::start_with(&dir.path().join("state"), &options).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, pair.kubeconfig())?;
    let env = Env {
        pair,
        kubeconfig,
        _dir: dir,
    };
    let src = env.pair.source.client.clone();
    let dst = env.pair.destination.client.clone();

    // Source: node 2 is tainted for the vault alone.
    let nodes = Api::<Node>::all(src.clone())
        .list(&ListParams::default())
        .await?;
    let node2 = nodes.items[1]
        .metadata
        .name
        .clone()
        .context("a node name")?;
    Api::<Node>::all(src.clone())
        .patch(
            &node2,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "vault", "effect": "NoExecute"}
            ]}})),
        )
        .await?;

    // vault: restricted, under a quota without LimitRange; private files
    // of the application's uid.
    let vault = namespace_with_pvc(
        &src,
        "vault",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        "data",
    )
    .await?;
    create(
        &Api::<ResourceQuota>::namespaced(src.clone(), "vault"),
        json!({"metadata": {"name": "compute"}, "spec": {"hard": {
            "pods": "4", "requests.cpu": "1", "requests.memory": "1Gi",
            "limits.cpu": "4", "limits.memory": "4Gi"
        }}}),
    )
    .await?;
    std::os::unix::fs::chown(&vault, Some(VAULT_UID), Some(2000))?;
    write(
        &vault.join("secret.key"),
        b"0600 key material\n",
        0o600,
        (VAULT_UID, 2000),
    )?;
    std::fs::create_dir(vault.join("db"))?;
    std::os::unix::fs::chown(vault.join("db"), Some(VAULT_UID), Some(2000))?;
    for i in 0..50u32 {
        let body = format!("record {i}\n").repeat(1000);
        write(
            &vault.join(format!("db/{i}.dat")),
            body.as_bytes(),
            0o640,
            (VAULT_UID, 2000),
        )?;
    }
    vault_app(&src, &node2).await?;

    // shop: no Pod Security label, files of several owners and a large one
    // (the copy lasts while the API misbehaves).
    let shop = namespace_with_pvc(&src, SHOP, json!({}), "media").await?;
    write(&shop.join("root-only"), b"root's\n", 0o600, (0, 0))?;
    write(
        &shop.join("theirs"),
        b"someone else's\n",
        0o644,
        (1234, 5678),
    )?;
    let big: Vec<u8> = (0..96u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&shop.join("big.bin"), &big, 0o644, (4321, 4321))?;
    let source_tree = e2e::snapshot(&shop)?;

    // Destination: a WaitForFirstConsumer class.
    create(
        &Api::<StorageClass>::all(dst.clone()),
        json!({"metadata": {"name": "wffc"},
               "provisioner": kube_emulator::binder::PROVISIONER,
               "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await?;

    // A developer without rights: preflight lists what is missing, on
    // both sides, and changes nothing.
    let denied = env.orchestrator("-developer", &["plan"]).await?;
    assert_eq!(denied.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    let no_logs = format!("not allowed to get pods/log in namespace \"{SHOP}\"");
    for expected in [
        "the source cluster (context \"source-developer\"): not allowed to create pods in namespace \"vault\"",
        no_logs.as_str(),
        "the destination cluster (context \"destination-developer\"): not allowed to create namespaces at the cluster scope",
        "not allowed to patch migrations.mover.io in namespace \"mover-system\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing from:\n{stderr}");
    }
    // With deploy/rbac/user.yaml bound as its header says, nothing is.
    let roles = e2e::repo_root().join("deploy/rbac/user.yaml");
    let roles = roles.to_string_lossy();
    for context in ["source", "destination"] {
        env.kubectl(context, &["apply", "-f", &roles])?;
        env.kubectl(
            context,
            &[
                "create",
                "clusterrolebinding",
                "dev-cluster",
                "--clusterrole=mover-migrator-cluster",
                "--user=developer",
            ],
        )?;
    }
    for ns in ["vault", SHOP] {
        env.kubectl(
            "source",
            &[
                "-n",
                ns,
                "create",
                "rolebinding",
                "dev",
                "--clusterrole=mover-migrator",
                "--user=developer",
            ],
        )?;
    }
    env.kubectl(
        "destination",
        &[
            "create",
            "clusterrolebinding",
            "dev-namespaces",
            "--clusterrole=mover-migrator",
            "--user=developer",
        ],
    )?;
    env.kubectl("destination", &["create", "namespace", "mover-system"])?;
    env.kubectl(
        "destination",
        &[
            "-n",
            "mover-system",
            "create",
            "rolebinding",
            "dev-state",
            "--clusterrole=mover-migrator-state",
            "--user=developer",
        ],
    )?;
    env.kubectl(
        "destination",
        &[
            "create",
            "clusterrolebinding",
            "dev-anyuid",
            "--clusterrole=mover-migrator-anyuid",
            "--user=developer",
        ],
    )?;
    let allowed = env
        .orchestrator("-developer", &["plan", "--volumes-only"])
        .await?;
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert_eq!(
        refusals(&String::from_utf8_lossy(&allowed.stderr)),
        Vec::<&str>::new()
    );
    assert_eq!(allowed.status.code(), Some(0));
    // How each transfer pod will run, as the plan says it.
    assert!(
        stdout.contains("sender runs as the application (uid 1001, gid 1001)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sender runs as root allowed only to read"),
        "{stdout}"
    );
    assert!(
        stdout.contains("receiver runs as root, keeping every file's owner"),
        "{stdout}"
    );
    assert!(
        stdout.contains("receiver runs as the application's user (the uid the cluster assigns)"),
        "{stdout}"
    );

    // The migration, while the source API server throttles, fails, cuts
    // streams and restarts.
    let faults = env.pair.source.faults().clone();
    let senders: Api<Pod> = Api::namespaced(src.clone(), SHOP);
    let misbehave = tokio::spawn(async move {
        for _ in 0..600 {
            let running = senders
                .list(&ListParams::default().labels("mover.io/role=sender"))
                .await
                .is_ok_and(|l| !l.items.is_empty());
            if running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        faults.fail(
            Requests::all(),
            Failure::TooManyRequests {
                retry_after_seconds: 1,
            },
            Span::Requests(15),
        );
        faults.fail(
            Requests::all(),
            Failure::ServiceUnavailable,
            Span::Requests(10),
        );
        faults.cut_streams_every(Duration::from_secs(2), Duration::from_secs(8));
        tokio::time::sleep(Duration::from_secs(3)).await;
        faults.restart(Duration::from_secs(3));
    });
    let output = env
        .orchestrator("", &["migrate", "--volumes-only", "--output", "json"])
        .await?;
    misbehave.await?;
    // The restart window may outlast a quick migration: the checks below
    // are the test's own calls, made once the API server is back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report: Value = serde_json::from_slice(&output.stdout).context("the JSON report")?;
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    let counts = env.pair.source.faults().counts();
    assert!(
        counts.too_many_requests > 0 && counts.service_unavailable > 0 && counts.streams_cut > 0,
        "faults were injected: {counts:?}"
    );

    // shop: every owner and mode kept (receiver as root through anyuid).
    let shop_copy = e2e::volume_dir(&dst, SHOP, "media").await?;
    assert_eq!(e2e::snapshot(&shop_copy)?, source_tree);

    // vault: the same bytes and modes, every file owned by the one
    // non-root uid the receiver ran as (restricted admits no root).
    let vault_copy = e2e::volume_dir(&dst, "vault", "data").await?;
    let key = vault_copy.join("secret.key");
    assert_eq!(std::fs::read(&key)?, b"0600 key material\n");
    // The mode the source has now (the kubelet gave the volume to the
    // application's fsGroup, group-readable, as a real one does).
    let source_mode = std::fs::metadata(vault.join("secret.key"))?.mode() & 0o777;
    assert_eq!(source_mode & 0o007, 0, "private to its owner and group");
    assert_eq!(std::fs::metadata(&key)?.mode() & 0o777, source_mode);
    let owner = std::fs::metadata(&key)?.uid();
    assert_ne!(owner, 0);
    // (The volume's root is the provisioner's, not the receiver's.)
    let others: Vec<PathBuf> = e2e::not_owned_by(&vault_copy, owner)?
        .into_iter()
        .filter(|p| *p != vault_copy)
        .collect();
    assert_eq!(others, Vec::<PathBuf>::new());
    for i in [0u32, 49] {
        let copied = std::fs::read_to_string(vault_copy.join(format!("db/{i}.dat")))?;
        assert_eq!(copied, format!("record {i}\n").repeat(1000));
    }

    // The WaitForFirstConsumer claims were bound where their receiver ran.
    let claim = Api::<PersistentVolumeClaim>::namespaced(dst.clone(), "vault")
        .get("data")
        .await?;
    let volume = claim.spec.and_then(|s| s.volume_name).context("bound")?;
    let pv = Api::<PersistentVolume>::all(dst.clone())
        .get(&volume)
        .await?;
    assert!(
        pv.spec.and_then(|s| s.node_affinity).is_some(),
        "a WaitForFirstConsumer PV is pinned to its first consumer's node"
    );
    // The destination namespace carries the source's labels; OpenShift gave
    // it its ranges.
    let ns = Api::<Namespace>::all(dst.clone()).get("vault").await?;
    let annotations: BTreeMap<String, String> = ns.metadata.annotations.unwrap_or_default();
    assert!(annotations.contains_key("openshift.io/sa.scc.uid-range"));
    // Nothing of the transfer is left on either side.
    for (client, ns) in [(&src, "vault"), (&src, SHOP), (&dst, "vault"), (&dst, SHOP)] {
        let left = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels("mover.io/transfer"))
            .await?;
        assert!(left.items.is_empty(), "transfer pods left in {ns}");
    }
    Ok(())
}
