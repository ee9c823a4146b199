//! Pods reach their cluster's API server as on a real cluster: the
//! ServiceAccount admission plugin mounts `kube-api-access-XXXXX`, the
//! kubelet fills it (a token bound to the pod, the CA, the namespace) and
//! sets `KUBERNETES_SERVICE_HOST`/`_PORT`, and kube-rs's
//! `Config::incluster()` inside the container (the `kube-emu-incluster`
//! client) is authenticated as the ServiceAccount and authorized by RBAC.

mod cluster_support;

use std::time::Duration;

use anyhow::Context as _;
use cluster_support::TestCluster;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServiceAccount};
use kube::api::{AttachParams, DeleteParams};
use kube::Api;
use kube_emulator::testing::incluster_client_image;
use kube_emulator::Credentials;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const SYSTEM_PODS: &str = "/api/v1/namespaces/kube-system/pods";

/// A ServiceAccount `name` in `default` that may read pods there and
/// nothing else, with `automount` as its `automountServiceAccountToken`.
async fn pod_reader(test: &TestCluster, name: &str, automount: Option<bool>) -> anyhow::Result<()> {
    let mut account = json!({ "metadata": { "name": name } });
    if let Some(automount) = automount {
        account["automountServiceAccountToken"] = json!(automount);
    }
    test.create::<ServiceAccount>(account).await?;
    test.create::<k8s_openapi::api::rbac::v1::Role>(json!({
        "metadata": { "name": name },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }],
    }))
    .await?;
    test.create::<k8s_openapi::api::rbac::v1::RoleBinding>(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": "default" }],
    }))
    .await?;
    Ok(())
}

/// A pod of the client image that sleeps, as `account`, with `extra`
/// merged into its spec.
async fn client_pod(
    test: &TestCluster,
    name: &str,
    account: &str,
    extra: serde_json::Value,
) -> anyhow::Result<Pod> {
    let image = incluster_client_image(env!("CARGO_BIN_EXE_kube-emu-incluster").as_ref()).await?;
    let mut spec = json!({
        "serviceAccountName": account,
        "containers": [{ "name": "client", "image": image, "command": ["sleep", "3600"] }],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    test.pod(name, spec).await
}

/// Runs `command` in the pod's container: its stdout, and whether it
/// exited 0.
async fn exec(test: &TestCluster, pod: &str, command: &[&str]) -> anyhow::Result<(String, bool)> {
    let params = AttachParams::default().stderr(false);
    let mut process = test
        .api::<Pod>()
        .exec(pod, command.to_vec(), &params)
        .await?;
    let mut out = String::new();
    process
        .stdout()
        .context("stdout")?
        .read_to_string(&mut out)
        .await?;
    let status = process.take_status().context("status")?.await;
    process.join().await?;
    let success = status.and_then(|s| s.status).as_deref() == Some("Success");
    Ok((out, success))
}

/// The client's output lines in `pod`, asking for `paths`.
async fn client(test: &TestCluster, pod: &str, paths: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut command = vec!["kube-emu-incluster"];
    command.extend(paths);
    let (out, _) = exec(test, pod, &command).await?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Fails unless `result` is the API server's 401.
fn assert_unauthorized<T: std::fmt::Debug>(result: &Result<T, kube::Error>) {
    assert!(
        matches!(result, Err(kube::Error::Api(status)) if status.code == 401),
        "{result:?}"
    );
}

/// The name of the pod's `kube-api-access-` volume, if it has one.
fn token_volume(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with("kube-api-access-"))?;
    Some(volume.name.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_calls_the_api_server_as_its_service_account_as_rbac_allows() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("incluster").await?;
    pod_reader(&test, "reader", None).await?;
    // A non-root user: the token is its own, mode 0600, as the real
    // kubelet makes it when every container names the same user.
    let security = json!({ "securityContext": { "runAsUser": 1000, "runAsGroup": 1000 } });
    let pod = client_pod(&test, "reader", "reader", security).await?;

    // admission changed the spec as a real API server does
    let volume = token_volume(&pod).context("no kube-api-access volume")?;
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap())?;
    let projected = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .unwrap()["projected"]
        .clone();
    assert_eq!(projected["defaultMode"], 420);
    assert_eq!(
        projected["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(
        projected["sources"][1]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"],
        json!([{ "name": volume, "mountPath": MOUNT, "readOnly": true }])
    );

    test.running("reader").await?;
    let lines = client(&test, "reader", &[PODS, SECRETS, SYSTEM_PODS]).await?;
    assert_eq!(
        lines,
        [
            "namespace default".to_string(),
            "whoami 201 system:serviceaccount:default:reader".to_string(),
            format!("GET {PODS} 200"),
            format!("GET {SECRETS} 403"),
            format!("GET {SYSTEM_PODS} 403"),
        ],
        "the client's view"
    );

    // the files and the environment
    let (listing, _) = exec(&test, "reader", &["ls", "-ln", &format!("{MOUNT}/")]).await?;
    let modes: Vec<(String, String)> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.get(8)?.to_string(),
                format!("{} {}", fields[0], fields[2]),
            ))
        })
        .collect();
    assert!(
        modes.contains(&("token".into(), "-rw------- 1000".into())),
        "{listing}"
    );
    assert!(
        modes.contains(&("ca.crt".into(), "-rw-r--r-- 0".into())),
        "{listing}"
    );
    let (ca, _) = exec(&test, "reader", &["cat", &format!("{MOUNT}/ca.crt")]).await?;
    assert_eq!(ca, test.cluster.ca_pem());
    let (env, _) = exec(&test, "reader", &["env"]).await?;
    let endpoints: Endpoints = test.api().get("kubernetes").await?;
    let subset = &endpoints.subsets.unwrap()[0];
    let ip = subset.addresses.as_ref().unwrap()[0].ip.clone();
    let port = subset.ports.as_ref().unwrap()[0].port;
    assert_eq!(ip, test.cluster.context.router_ip.to_string());
    for var in [
        format!("KUBERNETES_SERVICE_HOST={ip}"),
        format!("KUBERNETES_SERVICE_PORT={port}"),
        format!("KUBERNETES_SERVICE_PORT_HTTPS={port}"),
        format!("KUBERNETES_PORT=tcp://{ip}:{port}"),
    ] {
        assert!(
            env.lines().any(|line| line == var),
            "{var} missing in\n{env}"
        );
    }
    let service: Service = test.api().get("kubernetes").await?;
    let target = service.spec.unwrap().ports.unwrap()[0].target_port.clone();
    assert_eq!(
        target,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port))
    );

    // the token is the pod's: it works from outside too, and not once the
    // ServiceAccount is gone
    let (token, _) = exec(&test, "reader", &["cat", &format!("{MOUNT}/token")]).await?;
    let outside = test
        .cluster
        .client_with(&Credentials::Token(token.clone()))?;
    Api::<Pod>::namespaced(outside.clone(), "default")
        .get("reader")
        .await?;
    Api::<ServiceAccount>::namespaced(test.cluster.client.clone(), "default")
        .delete("reader", &DeleteParams::default())
        .await?;
    let lines = client(&test, "reader", &[PODS]).await?;
    assert_eq!(
        lines[1..],
        ["whoami 401 -".to_string(), format!("GET {PODS} 401")]
    );
    let refused = Api::<Pod>::namespaced(outside, "default")
        .get("reader")
        .await;
    assert_unauthorized(&refused);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn automount_false_on_the_pod_or_its_account_mounts_no_token() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("no-automount").await?;
    pod_reader(&test, "quiet", Some(false)).await?;
    pod_reader(&test, "talker", None).await?;
    let quiet = client_pod(&test, "quiet", "quiet", json!({})).await?;
    let pod_says_no = json!({ "automountServiceAccountToken": false });
    let hushed = client_pod(&test, "hushed", "talker", pod_says_no).await?;
    let pod_says_yes = json!({ "automountServiceAccountToken": true });
    let loud = client_pod(&test, "loud", "quiet", pod_says_yes).await?;
    assert_eq!(token_volume(&quiet), None, "the account said no");
    assert_eq!(token_volume(&hushed), None, "the pod said no");
    assert!(token_volume(&loud).is_some(), "the pod's word wins");

    test.running("quiet").await?;
    let (_, exists) = exec(&test, "quiet", &["test", "-e", &format!("{MOUNT}/token")]).await?;
    assert!(!exists, "a token was mounted");
    let lines = client(&test, "quiet", &[]).await?;
    assert!(lines[0].starts_with("incluster "), "{lines:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubelet_renews_a_token_and_a_deleted_pod_s_token_stops_working() -> anyhow::Result<()>
{
    let test = TestCluster::with_docker("token-renewal").await?;
    pod_reader(&test, "reader", None).await?;
    client_pod(&test, "reader", "reader", json!({})).await?;
    test.running("reader").await?;
    let token_file = format!("{MOUNT}/token");
    let (first, _) = exec(&test, "reader", &["cat", &token_file]).await?;

    // 50 of the token's 60 minutes: past 80% of its lifetime
    let clock = &test.cluster.context.shared.clock;
    clock.advance(Duration::from_secs(50 * 60));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        let (token, _) = exec(&test, "reader", &["cat", &token_file]).await?;
        if token != first {
            break token;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the token was not renewed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lines = client(&test, "reader", &[PODS]).await?;
    assert_eq!(lines[2], format!("GET {PODS} 200"), "{lines:?}");

    // past the first token's expiry: only the renewed one works
    clock.advance(Duration::from_secs(15 * 60));
    let as_first = test.cluster.client_with(&Credentials::Token(first))?;
    let refused = Api::<Pod>::namespaced(as_first, "default")
        .get("reader")
        .await;
    assert_unauthorized(&refused);
    let as_second = test.cluster.client_with(&Credentials::Token(second))?;
    let pods = Api::<Pod>::namespaced(as_second, "default");
    pods.get("reader").await?;

    // bound to the pod: it dies with it
    test.delete_pods(&["reader"]).await?;
    test.wait_gone(&["reader"]).await?;
    let refused = pods.get("reader").await;
    assert_unauthorized(&refused);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reapplying_a_pod_keeps_the_volume_admission_added() -> anyhow::Result<()> {
    let test = TestCluster::start(kube_emulator::ClusterOptions::new("reapply", false)).await?;
    pod_reader(&test, "app", None).await?;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "app" },
        "spec": {
            "serviceAccountName": "app",
            "containers": [{
                "name": "app",
                "image": "app:1",
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        },
    });
    let pods = test.api::<Pod>();
    let params = kube::api::PatchParams::apply("test").force();
    let first = pods
        .patch("app", &params, &kube::api::Patch::Apply(&pod))
        .await?;
    assert!(token_volume(&first).is_some());
    let second = pods
        .patch("app", &params, &kube::api::Patch::Apply(&pod))
        .await?;
    assert_eq!(first.spec, second.spec, "the second apply changed the spec");
    Ok(())
}

/// The pods of `default` as seen with a token of ServiceAccount `app`
/// from a TokenRequest with `spec`.
async fn pods_as_token(test: &TestCluster, spec: serde_json::Value) -> anyhow::Result<Api<Pod>> {
    let request =
        json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec });
    let request: TokenRequest = serde_json::from_value(request)?;
    let issued: TokenRequest = test
        .api::<ServiceAccount>()
        .create_subresource("token", "app", &Default::default(), &request)
        .await?;
    let token = issued
        .status
        .context("no status")?
        .token
        .context("no token")?;
    let client = test.cluster.client_with(&Credentials::Token(token))?;
    Ok(Api::namespaced(client, "default"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_needs_the_api_audience_and_the_very_pod_it_is_bound_to() -> anyhow::Result<()> {
    let test = TestCluster::start(kube_emulator::ClusterOptions::new("bound", false)).await?;
    pod_reader(&test, "app", None).await?;
    let pod = json!({ "metadata": { "name": "app" }, "spec": {
        "serviceAccountName": "app", "containers": [{ "name": "app", "image": "app:1" }],
    } });
    let created: Pod = test.create(pod.clone()).await?;
    let bound = json!({ "kind": "Pod", "apiVersion": "v1", "name": "app" });

    let for_vault = pods_as_token(&test, json!({ "audiences": ["vault"] })).await?;
    assert_unauthorized(&for_vault.get("app").await);
    let wrong_uid = json!({ "kind": "Pod", "apiVersion": "v1", "name": "app", "uid": "nope" });
    let conflict = pods_as_token(&test, json!({ "boundObjectRef": wrong_uid })).await;
    assert!(
        format!("{conflict:?}").contains("does not match the UID"),
        "{conflict:?}"
    );
    let as_pod = pods_as_token(&test, json!({ "boundObjectRef": bound })).await?;
    as_pod.get("app").await?;

    // a new pod of the same name is another pod
    let pods = test.api::<Pod>();
    pods.delete("app", &DeleteParams::default().grace_period(0))
        .await?;
    let recreated: Pod = test.create(pod).await?;
    assert_ne!(recreated.metadata.uid, created.metadata.uid);
    assert_unauthorized(&as_pod.get("app").await);
    Ok(())
}
