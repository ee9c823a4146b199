//! The admission chain, against a Docker-less emulated cluster through
//! kube-rs and the real kubectl: Pod Security (enforce refusals with the
//! upstream wording, warnings, namespace relabelling), OpenShift's
//! SecurityContextConstraints (namespace allocations, defaulting,
//! refusals, grants), LimitRange and ResourceQuota, and dry runs through
//! the whole chain.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, ResourceQuota};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_emulator::{Cluster, ClusterOptions, Policy, Shared};
use serde_json::{json, Value};

/// A running cluster (no Docker), its state directory and a kubeconfig
/// for kubectl.
struct TestCluster {
    cluster: Cluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl TestCluster {
    async fn start(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let shared = Arc::new(Shared {
            velero_bucket: dir.path().join("bucket"),
            instance: "admission-test".to_string(),
            ..Shared::default()
        });
        std::fs::create_dir_all(&shared.velero_bucket).expect("bucket directory");
        let options = ClusterOptions {
            policy,
            ..ClusterOptions::new("admission", false)
        };
        let cluster = Cluster::start(&options, dir.path(), shared)
            .await
            .expect("starting the emulated cluster");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, cluster.kubeconfig()).expect("kubeconfig");
        TestCluster {
            cluster,
            dir,
            kubeconfig,
        }
    }

    fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }

    /// A client impersonating `user` (with `groups`, if any).
    fn as_user(&self, user: &str, groups: &[&str]) -> kube::Client {
        let admin = self
            .cluster
            .certificate_for(kube_emulator::cluster::ADMIN, &["system:masters"])
            .expect("the admin's certificate");
        let mut config = self
            .cluster
            .config_with(&kube_emulator::Credentials::Certificate(admin))
            .expect("a client configuration");
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| g.to_string()).collect());
        }
        kube::Client::try_from(config).expect("kube client")
    }

    async fn namespace(&self, name: &str, labels: Value) -> Namespace {
        let namespaces: Api<Namespace> = Api::all(self.client());
        namespaces
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name, "labels": labels}})),
            )
            .await
            .expect("creating a namespace")
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("running kubectl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Writes `manifest` to a file and returns its path.
    fn manifest(&self, name: &str, manifest: &Value) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(manifest).expect("manifest"))
            .expect("manifest file");
        path.display().to_string()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object")
}

fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

const PSA: &str = "pod-security.kubernetes.io";

/// A pod with one container `c` and `spec` merged over its spec.
fn pod_with(name: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    });
    merge(&mut pod["spec"], spec);
    pod
}

/// JSON merge (objects merge, anything else replaces).
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(target.entry(k).or_insert(Value::Null), v);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// The container security context the restricted level asks for.
fn restricted_container() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn restricted_pod(name: &str) -> Value {
    pod_with(
        name,
        json!({"containers": [{"name": "c", "image": "busybox:1", "securityContext": restricted_container()}]}),
    )
}

/// Creates `pod` in `namespace`; the refusal's (code, reason, message)
/// if refused.
async fn try_create(
    client: &kube::Client,
    namespace: &str,
    pod: &Value,
    dry_run: bool,
) -> Result<Pod, (u16, String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    pods.create(&params, &from_json(pod.clone()))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => {
                (status.code, status.reason.clone(), status.message.clone())
            }
            other => panic!("unexpected error {other:?}"),
        })
}

#[tokio::test]
async fn pod_security_levels_refuse_with_the_upstream_messages() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("base", json!({format!("{PSA}/enforce"): "baseline"}))
        .await;
    test.namespace(
        "strict",
        json!({format!("{PSA}/enforce"): "restricted", format!("{PSA}/enforce-version"): "latest"}),
    )
    .await;
    test.namespace("open", json!({})).await;

    // (namespace, spec merged into the pod's, expected refusal detail or None)
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("base", json!({}), None),
        ("base", json!({"hostNetwork": true, "hostPID": true}), Some("host namespaces (hostNetwork=true, hostPID=true)")),
        ("base", json!({"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}),
            Some("privileged (container \"c\" must not set securityContext.privileged=true)")),
        ("base", json!({"containers": [{"name": "c", "image": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]}}}]}),
            Some("non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)")),
        ("base", json!({"volumes": [{"name": "host", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]}),
            Some("hostPath volumes (volume \"host\")")),
        ("base", json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 443, "hostPort": 443}]}]}),
            Some("hostPort (container \"c\" uses hostPorts 443, 80)")),
        ("base", json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            Some("forbidden AppArmor profile (pod must not set AppArmor profile type to \"Unconfined\")")),
        ("base", json!({"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}}}),
            Some("seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)")),
        ("base", json!({"containers": [{"name": "c", "image": "i", "securityContext": {"procMount": "Unmasked"}}]}),
            Some("procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")")),
        ("base", json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            Some("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")")),
        ("base", json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}}),
            Some("forbidden sysctls (kernel.msgmax)")),
        ("base", json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            Some("hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)")),
        ("base", json!({"containers": [{"name": "c", "image": "i", "livenessProbe": {"httpGet": {"host": "example.com", "port": 80}}}]}),
            Some("probe or lifecycle host (container \"c\" uses probe or lifecycle host \"example.com\")")),
        // restricted: the compliant pod passes, each rule is checked
        ("strict", restricted_pod("x")["spec"].clone(), None),
        ("strict", json!({}), Some("allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")")),
        // pod-level settings count for every container; a container's own override them
        ("strict", json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}), None),
        ("strict", json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {"runAsNonRoot": false, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}]}),
            Some("unrestricted capabilities (container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add), runAsNonRoot != true (container \"c\" must not set securityContext.runAsNonRoot=false), runAsUser=0 (pod must not set runAsUser=0)")),
        ("strict", json!({"volumes": [{"name": "data", "nfs": {"server": "s", "path": "/"}}, {"name": "cfg", "configMap": {"name": "x"}}],
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
            Some("restricted volume types (volume \"data\" uses restricted volume type \"nfs\")")),
        // init and ephemeral containers are checked too
        ("strict", json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [{"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
            Some("allowPrivilegeEscalation != false (container \"init\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"init\" must set securityContext.capabilities.drop=[\"ALL\"])")),
        ("open", json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}), None),
    ];
    for (index, (namespace, spec, expected)) in cases.into_iter().enumerate() {
        let name = format!("p{index}");
        let pod = pod_with(&name, spec);
        let level = match namespace {
            "base" => "baseline:latest",
            "strict" => "restricted:latest",
            _ => "privileged:latest",
        };
        match (try_create(&client, namespace, &pod, false).await, expected) {
            (Ok(_), None) => {}
            (Err((code, reason, message)), Some(detail)) => {
                assert_eq!((code, reason.as_str()), (403, "Forbidden"), "case {index}");
                assert_eq!(
                    message,
                    format!(
                        "pods \"{name}\" is forbidden: violates PodSecurity \"{level}\": {detail}"
                    ),
                    "case {index}"
                );
            }
            (outcome, expected) => {
                panic!("case {index}: got {outcome:?}, expected refusal {expected:?}")
            }
        }
    }
}

#[tokio::test]
async fn pod_security_versions_and_bad_labels() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    // runAsUser=0 is a restricted rule only from v1.23
    test.namespace(
        "old",
        json!({format!("{PSA}/enforce"): "restricted", format!("{PSA}/enforce-version"): "v1.22"}),
    )
    .await;
    let mut root = restricted_pod("root");
    root["spec"]["securityContext"] = json!({"runAsUser": 0});
    assert!(try_create(&client, "old", &root, false).await.is_ok());
    test.namespace(
        "new",
        json!({format!("{PSA}/enforce"): "restricted", format!("{PSA}/enforce-version"): "v1.23"}),
    )
    .await;
    let (_, _, message) = try_create(&client, "new", &root, false)
        .await
        .expect_err("refused");
    assert_eq!(
        message,
        "pods \"root\" is forbidden: violates PodSecurity \"restricted:v1.23\": runAsUser=0 (pod must not set runAsUser=0)"
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let bad: Namespace = from_json(
        json!({"metadata": {"name": "bad", "labels": {format!("{PSA}/enforce"): "strict", format!("{PSA}/warn-version"): "1.2"}}}),
    );
    let status = api_error(namespaces.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "Namespace \"bad\" is invalid: [metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted, metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.2\": must be \"latest\" or \"v1.x\"]"
    );
}

/// Randomized securityContext combinations: the restricted level admits
/// exactly the pods that satisfy every restricted rule.
#[tokio::test]
async fn restricted_admits_exactly_the_pods_that_follow_every_rule() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("strict", json!({format!("{PSA}/enforce"): "restricted"}))
        .await;
    let mut rng = fastrand::Rng::with_seed(14);
    let maybe = |rng: &mut fastrand::Rng, choices: &[Value]| -> Option<Value> {
        let index = rng.usize(..=choices.len());
        choices.get(index).cloned()
    };
    for round in 0..150 {
        let mut pod_context = serde_json::Map::new();
        let mut containers = Vec::new();
        for field in [
            ("runAsNonRoot", vec![json!(true), json!(false)]),
            ("runAsUser", vec![json!(0), json!(1000)]),
            (
                "seccompProfile",
                vec![
                    json!({"type": "RuntimeDefault"}),
                    json!({"type": "Unconfined"}),
                    json!({"type": "Localhost", "localhostProfile": "p"}),
                ],
            ),
        ] {
            if let Some(value) = maybe(&mut rng, &field.1) {
                pod_context.insert(field.0.to_string(), value);
            }
        }
        for name in ["a", "b"].iter().take(rng.usize(1..=2)) {
            let mut context = serde_json::Map::new();
            for (field, choices) in [
                ("allowPrivilegeEscalation", vec![json!(false), json!(true)]),
                ("runAsNonRoot", vec![json!(true), json!(false)]),
                ("runAsUser", vec![json!(0), json!(1000)]),
                ("privileged", vec![json!(false), json!(true)]),
                (
                    "capabilities",
                    vec![
                        json!({"drop": ["ALL"]}),
                        json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
                        json!({"drop": ["ALL"], "add": ["SYS_TIME"]}),
                        json!({"drop": ["KILL"]}),
                    ],
                ),
                (
                    "seccompProfile",
                    vec![
                        json!({"type": "RuntimeDefault"}),
                        json!({"type": "Unconfined"}),
                    ],
                ),
            ] {
                if let Some(value) = maybe(&mut rng, &choices) {
                    context.insert(field.to_string(), value);
                }
            }
            containers.push(json!({"name": name, "image": "i", "securityContext": context}));
        }
        let spec = json!({"securityContext": pod_context, "containers": containers});
        let pod = pod_with(&format!("r{round}"), spec.clone());
        let follows = follows_restricted(&spec);
        let admitted = try_create(&client, "strict", &pod, true).await;
        assert_eq!(
            admitted.is_ok(),
            follows,
            "round {round}: {spec} → {admitted:?}"
        );
    }
}

/// The restricted rules, written out independently of the emulator.
fn follows_restricted(spec: &Value) -> bool {
    let pod = &spec["securityContext"];
    spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .all(|c| {
            let own = &c["securityContext"];
            let effective = |field: &str| {
                if own[field].is_null() {
                    &pod[field]
                } else {
                    &own[field]
                }
            };
            let capabilities = &own["capabilities"];
            own["allowPrivilegeEscalation"] == false
                && own["privileged"] != true
                && capabilities["drop"]
                    .as_array()
                    .is_some_and(|d| d.contains(&json!("ALL")))
                && capabilities["add"]
                    .as_array()
                    .is_none_or(|a| a.iter().all(|c| c == "NET_BIND_SERVICE"))
                && effective("runAsNonRoot") == true
                && pod["runAsNonRoot"] != false
                && own["runAsUser"] != 0
                && pod["runAsUser"] != 0
                && matches!(
                    effective("seccompProfile")["type"].as_str(),
                    Some("RuntimeDefault" | "Localhost")
                )
                && pod["seccompProfile"]["type"] != "Unconfined"
        })
}

#[tokio::test]
async fn warn_mode_answers_with_warning_headers_for_pods_and_workloads() {
    let test = TestCluster::start(Policy::default()).await;
    test.namespace("warned", json!({format!("{PSA}/warn"): "restricted"}))
        .await;
    // kube-rs: the raw response carries the Warning header, and the pod is created
    let body = serde_json::to_vec(&pod_with("plain", json!({}))).expect("body");
    let request = http::Request::post("/api/v1/namespaces/warned/pods")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))
        .expect("request");
    let response = test.client().send(request).await.expect("response");
    assert_eq!(response.status(), 201);
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().expect("ASCII").to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            r#"299 - "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")""#
        ]
    );
    // kubectl prints them; workloads with pod templates are warned about too
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "warned"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"hostNetwork": true, "containers": [{"name": "web", "image": "nginx:1", "securityContext": restricted_container()}]}}},
    });
    let path = test.manifest("deployment.json", &deployment);
    let (ok, out, err) = test.kubectl(&["apply", "-f", &path]).await;
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)"),
        "{err}"
    );
    // a compliant pod gets no warning
    let mut fine = restricted_pod("fine");
    fine["metadata"]["namespace"] = json!("warned");
    let path = test.manifest("ok.json", &fine);
    let (ok, out, err) = test.kubectl(&["apply", "-f", &path]).await;
    assert!(ok && !err.contains("Warning"), "{out}{err}");
}

#[tokio::test]
async fn labelling_a_namespace_warns_about_pods_the_new_level_would_refuse() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("shop", json!({})).await;
    for name in ["a", "b", "c"] {
        try_create(&client, "shop", &pod_with(name, json!({})), false)
            .await
            .expect("created");
    }
    try_create(&client, "shop", &restricted_pod("good"), false)
        .await
        .expect("created");
    try_create(
        &client,
        "shop",
        &pod_with("host", json!({"hostNetwork": true})),
        false,
    )
    .await
    .expect("created");
    let (ok, out, err) = test
        .kubectl(&[
            "label",
            "namespace",
            "shop",
            "pod-security.kubernetes.io/enforce=baseline",
        ])
        .await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        err,
        "Warning: existing pods in namespace \"shop\" violate the new PodSecurity enforce level \"baseline:latest\"\nWarning: host: host namespaces\n"
    );
    let (ok, out, err) = test
        .kubectl(&[
            "label",
            "--overwrite",
            "namespace",
            "shop",
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        err,
        "Warning: existing pods in namespace \"shop\" violate the new PodSecurity enforce level \"restricted:latest\"\n\
         Warning: a (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile\n\
         Warning: host: host namespaces, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile\n"
    );
    // loosening warns about nothing
    let (ok, _, err) = test
        .kubectl(&[
            "label",
            "--overwrite",
            "namespace",
            "shop",
            "pod-security.kubernetes.io/enforce=baseline",
        ])
        .await;
    assert!(ok && err.is_empty(), "{err}");
}

fn scc_api(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("security.openshift.io", "v1", "SecurityContextConstraints");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "securitycontextconstraints");
    Api::all_with(client.clone(), &resource)
}

fn annotation<'a>(object: &'a Value, key: &str) -> &'a str {
    object["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn openshift_namespaces_get_unique_security_allocations_and_keep_given_ones() {
    let test = TestCluster::start(Policy::openshift()).await;
    let mut seen = std::collections::HashSet::new();
    for name in ["one", "two", "three"] {
        let namespace = serde_json::to_value(test.namespace(name, json!({})).await).expect("json");
        let range = annotation(&namespace, "openshift.io/sa.scc.uid-range").to_string();
        let mcs = annotation(&namespace, "openshift.io/sa.scc.mcs").to_string();
        assert!(
            range.ends_with("/10000") && range.starts_with("10000"),
            "{range}"
        );
        assert_eq!(
            annotation(&namespace, "openshift.io/sa.scc.supplemental-groups"),
            range
        );
        assert!(mcs.starts_with("s0:c") && mcs.contains(",c"), "{mcs}");
        assert!(seen.insert(range) && seen.insert(mcs));
    }
    let migrated: Namespace = from_json(json!({"metadata": {"name": "migrated", "annotations": {
        "openshift.io/sa.scc.uid-range": "1000650000/10000",
        "openshift.io/sa.scc.supplemental-groups": "1000650000/10000",
        "openshift.io/sa.scc.mcs": "s0:c26,c5",
    }}}));
    let namespaces: Api<Namespace> = Api::all(test.client());
    let created = namespaces
        .create(&PostParams::default(), &migrated)
        .await
        .expect("created");
    let created = serde_json::to_value(created).expect("json");
    assert_eq!(
        annotation(&created, "openshift.io/sa.scc.uid-range"),
        "1000650000/10000"
    );
    assert_eq!(annotation(&created, "openshift.io/sa.scc.mcs"), "s0:c26,c5");
    // a plain Kubernetes cluster allocates nothing and serves no SCCs
    let plain = TestCluster::start(Policy::default()).await;
    let namespace = serde_json::to_value(plain.namespace("one", json!({})).await).expect("json");
    assert!(namespace["metadata"]["annotations"].is_null());
    assert_eq!(
        api_error(scc_api(&plain.client()).list(&Default::default()).await).code,
        404
    );
}

#[tokio::test]
async fn the_default_sccs_are_served_with_their_real_fields() {
    let test = TestCluster::start(Policy::openshift()).await;
    let sccs = scc_api(&test.client())
        .list(&Default::default())
        .await
        .expect("list");
    let names: Vec<String> = sccs
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "anyuid",
            "hostmount-anyuid",
            "nonroot",
            "nonroot-v2",
            "privileged",
            "restricted",
            "restricted-v2"
        ]
    );
    let anyuid = serde_json::to_value(&sccs.items[0]).expect("json");
    assert_eq!(anyuid["priority"], 10);
    assert_eq!(anyuid["runAsUser"]["type"], "RunAsAny");
    let (ok, out, err) = test
        .kubectl(&["get", "scc", "restricted-v2", "-o", "json"])
        .await;
    assert!(ok, "{out}{err}");
    let v2: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v2["requiredDropCapabilities"], json!(["ALL"]));
    assert_eq!(v2["seccompProfiles"], json!(["runtime/default"]));
}

#[tokio::test]
async fn scc_admission_defaults_pods_from_the_chosen_scc() {
    let test = TestCluster::start(Policy::openshift()).await;
    let client = test.client();
    let namespace = serde_json::to_value(test.namespace("app", json!({})).await).expect("json");
    let range = annotation(&namespace, "openshift.io/sa.scc.uid-range");
    let first: i64 = range
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("range start");
    let mcs = annotation(&namespace, "openshift.io/sa.scc.mcs").to_string();

    // the administrator may use every SCC: anyuid (priority 10) admits a plain pod
    let plain = serde_json::to_value(
        try_create(&client, "app", &pod_with("plain", json!({})), false)
            .await
            .expect("admitted"),
    )
    .expect("json");
    assert_eq!(annotation(&plain, "openshift.io/scc"), "anyuid");
    assert_eq!(
        annotation(&plain, "security.openshift.io/validated-scc-subject-type"),
        "user"
    );
    assert_eq!(
        plain["spec"]["securityContext"]["seLinuxOptions"]["level"],
        json!(mcs)
    );
    assert_eq!(
        plain["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["MKNOD"])
    );
    assert!(plain["spec"]["containers"][0]["securityContext"]["runAsUser"].is_null());

    // anyuid allows no seccomp profile, so a pod asking for one gets restricted-v2 and its defaults
    let pod = pod_with(
        "seccomp",
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}),
    );
    let defaulted = serde_json::to_value(
        try_create(&client, "app", &pod, false)
            .await
            .expect("admitted"),
    )
    .expect("json");
    assert_eq!(annotation(&defaulted, "openshift.io/scc"), "restricted-v2");
    let pod_context = &defaulted["spec"]["securityContext"];
    assert_eq!(pod_context["fsGroup"], json!(first));
    assert_eq!(pod_context["seLinuxOptions"]["level"], json!(mcs));
    let container = &defaulted["spec"]["containers"][0]["securityContext"];
    assert_eq!(container["runAsUser"], json!(first));
    assert_eq!(container["runAsNonRoot"], json!(true));
    assert_eq!(container["allowPrivilegeEscalation"], json!(false));
    assert_eq!(container["capabilities"], json!({"drop": ["ALL"]}));

    // the stored pod is the defaulted one
    let pods: Api<Pod> = Api::namespaced(client.clone(), "app");
    let stored = serde_json::to_value(pods.get("seccomp").await.expect("stored")).expect("json");
    assert_eq!(
        stored["spec"]["containers"][0]["securityContext"]["runAsUser"],
        json!(first)
    );
}

#[tokio::test]
async fn scc_refusals_list_every_provider_as_openshift_does() {
    let test = TestCluster::start(Policy::openshift()).await;
    let client = test.client();
    let namespace = serde_json::to_value(test.namespace("app", json!({})).await).expect("json");
    let range = annotation(&namespace, "openshift.io/sa.scc.uid-range");
    let first: i64 = range
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("range start");
    // with only restricted-v2 left, even the administrator's root pod is refused
    for name in [
        "anyuid",
        "hostmount-anyuid",
        "nonroot",
        "nonroot-v2",
        "privileged",
        "restricted",
    ] {
        scc_api(&client)
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleting an SCC");
    }
    let root = pod_with(
        "root",
        json!({"securityContext": {"fsGroup": 0},
        "containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]}),
    );
    let (code, reason, message) = try_create(&client, "app", &root, false)
        .await
        .expect_err("refused");
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        format!("pods \"root\" is forbidden: unable to validate against any security context constraint: [provider restricted-v2: .spec.securityContext.fsGroup: Invalid value: []int64{{0}}: 0 is not an allowed group, provider restricted-v2: .containers[0].runAsUser: Invalid value: 0: must be in the ranges: [{first}, {}]]", first + 9999)
    );
    // kubectl shows the same refusal
    let mut manifest = root.clone();
    manifest["metadata"]["namespace"] = json!("app");
    let path = test.manifest("root.json", &manifest);
    let (ok, _, err) = test.kubectl(&["create", "-f", &path]).await;
    assert!(!ok && err.contains("is forbidden: unable to validate against any security context constraint: [provider restricted-v2: .spec.securityContext.fsGroup"), "{err}");
}

#[tokio::test]
async fn a_service_account_named_in_anyuid_may_run_as_root() {
    let test = TestCluster::start(Policy::openshift()).await;
    let admin = test.client();
    test.namespace("app", json!({})).await;
    // the developer may create pods in app (RBAC), which says nothing of SCCs
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = from_json(json!({
        "metadata": {"name": "developer-edit", "namespace": "app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "developer", "apiGroup": "rbac.authorization.k8s.io"}]
    }));
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), "app")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding edit");
    let developer = test.as_user("developer", &["developers"]);
    let root = |account: &str| {
        pod_with(
            &format!("root-{account}"),
            json!({"serviceAccountName": account,
            "containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0, "privileged": true}}]}),
        )
    };
    // a user and service account without rights to anyuid are refused
    let (code, _, message) = try_create(&developer, "app", &root("default"), false)
        .await
        .expect_err("refused");
    assert_eq!(code, 403);
    assert!(
        message.starts_with("pods \"root-default\" is forbidden: unable to validate against any security context constraint: [")
            && message.contains("provider \"anyuid\": Forbidden: not usable by user or serviceaccount")
            && message.contains("provider \"privileged\": Forbidden: not usable by user or serviceaccount"),
        "{message}"
    );
    // naming the service account in anyuid's users lets its pods run as root (not privileged)
    scc_api(&admin)
        .patch(
            "anyuid",
            &PatchParams::default(),
            &Patch::Merge(json!({"users": ["system:serviceaccount:app:builder"]})),
        )
        .await
        .expect("granting anyuid");
    let mut builder = root("builder");
    builder["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 0});
    let admitted = serde_json::to_value(
        try_create(&developer, "app", &builder, false)
            .await
            .expect("admitted"),
    )
    .expect("json");
    assert_eq!(annotation(&admitted, "openshift.io/scc"), "anyuid");
    assert_eq!(
        annotation(
            &admitted,
            "security.openshift.io/validated-scc-subject-type"
        ),
        "serviceaccount"
    );
    assert_eq!(
        admitted["spec"]["containers"][0]["securityContext"]["runAsUser"],
        json!(0)
    );
    // kubectl --as works the same way
    let mut manifest = root("default");
    manifest["metadata"]["namespace"] = json!("app");
    let path = test.manifest("root.json", &manifest);
    let (ok, _, err) = test
        .kubectl(&["create", "-f", &path, "--as", "developer"])
        .await;
    assert!(
        !ok && err.contains("provider \"anyuid\": Forbidden: not usable by user or serviceaccount"),
        "{err}"
    );
}

fn quota(hard: Value) -> ResourceQuota {
    from_json(json!({"metadata": {"name": "q"}, "spec": {"hard": hard}}))
}

#[tokio::test]
async fn quotas_refuse_and_keep_their_usage_current() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("team", json!({})).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    quotas
        .create(&PostParams::default(), &quota(json!({"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi", "limits.cpu": "2", "limits.memory": "2Gi"})))
        .await
        .expect("quota");
    let status = |q: ResourceQuota| serde_json::to_value(q.status).expect("json");
    assert_eq!(
        status(quotas.get("q").await.expect("quota"))["used"],
        json!({"pods": "0", "requests.cpu": "0", "requests.memory": "0", "limits.cpu": "0", "limits.memory": "0"})
    );

    let (code, _, message) = try_create(&client, "team", &pod_with("bare", json!({})), false)
        .await
        .expect_err("refused");
    assert_eq!(code, 403);
    assert_eq!(message, "pods \"bare\" is forbidden: failed quota: q: must specify limits.cpu for: c; limits.memory for: c; requests.cpu for: c; requests.memory for: c");

    let sized = |name: &str, cpu: &str| {
        pod_with(
            name,
            json!({"containers": [{"name": "c", "image": "i", "resources": {
            "requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": "512Mi"}}}]}),
        )
    };
    try_create(&client, "team", &sized("one", "600m"), false)
        .await
        .expect("fits");
    assert_eq!(
        status(quotas.get("q").await.expect("quota"))["used"],
        json!({"pods": "1", "requests.cpu": "600m", "requests.memory": "256Mi", "limits.cpu": "600m", "limits.memory": "512Mi"})
    );
    let (_, _, message) = try_create(&client, "team", &sized("two", "600m"), false)
        .await
        .expect_err("refused");
    assert_eq!(message, "pods \"two\" is forbidden: exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1");
    // a dry run is refused the same way, and a fitting dry run consumes nothing
    let (_, _, dry) = try_create(&client, "team", &sized("two", "600m"), true)
        .await
        .expect_err("refused");
    assert_eq!(dry, message);
    try_create(&client, "team", &sized("three", "400m"), true)
        .await
        .expect("fits");
    assert_eq!(
        status(quotas.get("q").await.expect("quota"))["used"]["pods"],
        "1"
    );

    // a finished pod no longer counts; a deleted one neither
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    pods.patch_status(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("finishing the pod");
    assert_eq!(
        status(quotas.get("q").await.expect("quota"))["used"]["requests.cpu"],
        "0"
    );
    try_create(&client, "team", &sized("two", "600m"), false)
        .await
        .expect("fits now");
    pods.delete("two", &DeleteParams::default())
        .await
        .expect("deleted");
    assert_eq!(
        status(quotas.get("q").await.expect("quota"))["used"]["pods"],
        "0"
    );
}

#[tokio::test]
async fn storage_and_object_count_quotas() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("team", json!({})).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team");
    quotas
        .create(
            &PostParams::default(),
            &quota(json!({
                "persistentvolumeclaims": "2", "requests.storage": "5Gi",
                "gold.storageclass.storage.k8s.io/requests.storage": "1Gi",
                "count/configmaps": "1",
            })),
        )
        .await
        .expect("quota");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "team");
    let claim = |name: &str, class: &str, size: &str| -> PersistentVolumeClaim {
        from_json(
            json!({"metadata": {"name": name}, "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}),
        )
    };
    claims
        .create(&PostParams::default(), &claim("a", "silver", "3Gi"))
        .await
        .expect("fits");
    let status = api_error(
        claims
            .create(&PostParams::default(), &claim("b", "gold", "2Gi"))
            .await,
    );
    assert_eq!(
        status.message,
        "persistentvolumeclaims \"b\" is forbidden: exceeded quota: q, requested: gold.storageclass.storage.k8s.io/requests.storage=2Gi, used: gold.storageclass.storage.k8s.io/requests.storage=0, limited: gold.storageclass.storage.k8s.io/requests.storage=1Gi"
    );
    let status = api_error(
        claims
            .create(&PostParams::default(), &claim("b", "silver", "3Gi"))
            .await,
    );
    assert_eq!(
        status.message,
        "persistentvolumeclaims \"b\" is forbidden: exceeded quota: q, requested: requests.storage=3Gi, used: requests.storage=3Gi, limited: requests.storage=5Gi"
    );
    let used = serde_json::to_value(quotas.get("q").await.expect("quota").status).expect("json")
        ["used"]
        .clone();
    assert_eq!(used["persistentvolumeclaims"], "1");
    assert_eq!(used["requests.storage"], "3Gi");

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let map = |name: &str| -> ConfigMap { from_json(json!({"metadata": {"name": name}})) };
    maps.create(&PostParams::default(), &map("first"))
        .await
        .expect("fits");
    let status = api_error(maps.create(&PostParams::default(), &map("second")).await);
    assert_eq!(status.message, "configmaps \"second\" is forbidden: exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1");
    // server-side apply and kubectl's server dry run go through the same chain
    let params = PatchParams::apply("test").dry_run();
    let status = api_error(
        maps.patch(
            "second",
            &params,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "second"}}),
            ),
        )
        .await,
    );
    assert_eq!(status.code, 403);
    let path = test.manifest("cm.json", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "third", "namespace": "team"}}));
    let (ok, _, err) = test
        .kubectl(&["apply", "--dry-run=server", "-f", &path])
        .await;
    assert!(
        !ok && err.contains("exceeded quota: q, requested: count/configmaps=1"),
        "{err}"
    );
}

#[tokio::test]
async fn limit_ranges_default_and_bound_container_resources() {
    let test = TestCluster::start(Policy::default()).await;
    let client = test.client();
    test.namespace("team", json!({})).await;
    let ranges: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "team",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "LimitRange")),
    );
    let range: DynamicObject = from_json(
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"}, "spec": {"limits": [
            {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}, "min": {"memory": "64Mi"}, "maxLimitRequestRatio": {"cpu": "10"}},
        ]}}),
    );
    ranges
        .create(&PostParams::default(), &range)
        .await
        .expect("limit range");
    let defaulted = serde_json::to_value(
        try_create(&client, "team", &pod_with("plain", json!({})), false)
            .await
            .expect("admitted"),
    )
    .expect("json");
    assert_eq!(
        defaulted["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}})
    );
    assert_eq!(
        annotation(&defaulted, "kubernetes.io/limit-ranger"),
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    let big = pod_with(
        "big",
        json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "2", "memory": "32Mi"}, "requests": {"cpu": "100m"}}}]}),
    );
    let (code, _, message) = try_create(&client, "team", &big, false)
        .await
        .expect_err("refused");
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"big\" is forbidden: [minimum memory usage per Container is 64Mi, but request is 32Mi, maximum cpu usage per Container is 1, but limit is 2, cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000]"
    );
}

#[tokio::test]
async fn dry_runs_go_through_the_whole_chain_and_store_nothing() {
    let test = TestCluster::start(Policy::openshift()).await;
    let client = test.client();
    test.namespace("app", json!({format!("{PSA}/enforce"): "restricted"}))
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "app");
    // refused exactly as a real create would be
    let (_, _, message) = try_create(&client, "app", &pod_with("bad", json!({})), true)
        .await
        .expect_err("refused");
    assert!(
        message
            .starts_with("pods \"bad\" is forbidden: violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    // admitted: the defaulted object comes back (SCC annotation, uid), nothing is stored
    let admitted = serde_json::to_value(
        try_create(&client, "app", &restricted_pod("good"), true)
            .await
            .expect("admitted"),
    )
    .expect("json");
    assert_eq!(annotation(&admitted, "openshift.io/scc"), "restricted-v2");
    assert!(admitted["spec"]["containers"][0]["securityContext"]["runAsUser"].is_i64());
    assert_eq!(api_error(pods.get("good").await).code, 404);
    // kubectl apply --dry-run=server: refused and admitted alike, nothing stored
    let mut bad = pod_with("bad", json!({}));
    bad["metadata"]["namespace"] = json!("app");
    let path = test.manifest("bad.json", &bad);
    let (ok, _, err) = test
        .kubectl(&["apply", "--dry-run=server", "-f", &path])
        .await;
    assert!(
        !ok && err.contains(
            "violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{err}"
    );
    let mut good = restricted_pod("good");
    good["metadata"]["namespace"] = json!("app");
    let path = test.manifest("good.json", &good);
    let (ok, out, err) = test
        .kubectl(&["apply", "--dry-run=server", "-f", &path])
        .await;
    assert!(
        ok && out.contains("pod/good created (server dry run)"),
        "{out}{err}"
    );
    assert_eq!(api_error(pods.get("good").await).code, 404);

    // update and patch dry runs of a workload: warned about, not changed
    test.namespace("warned", json!({format!("{PSA}/warn"): "baseline"}))
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "warned");
    let deployment: Deployment = from_json(
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}),
    );
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");
    let patch = json!({"spec": {"template": {"spec": {"hostPID": true}}}});
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default().dry_run(),
            &Patch::Merge(patch),
        )
        .await
        .expect("dry-run patch");
    assert_eq!(
        patched.spec.template.spec.and_then(|s| s.host_pid),
        Some(true)
    );
    let mut replaced = deployments.get("web").await.expect("stored");
    if let Some(spec) = replaced.spec.template.spec.as_mut() {
        spec.host_ipc = Some(true);
    }
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let replaced = deployments
        .replace("web", &params, &replaced)
        .await
        .expect("dry-run replace");
    assert_eq!(
        replaced.spec.template.spec.and_then(|s| s.host_ipc),
        Some(true)
    );
    let stored = deployments.get("web").await.expect("stored");
    let stored = stored.spec.template.spec.expect("pod template");
    assert_eq!((stored.host_pid, stored.host_ipc), (None, None));
    let (ok, _, err) = test
        .kubectl(&[
            "-n",
            "warned",
            "patch",
            "deployment",
            "web",
            "--dry-run=server",
            "-p",
            r#"{"spec":{"template":{"spec":{"hostPID":true}}}}"#,
        ])
        .await;
    assert!(ok && err.contains("Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostPID=true)"), "{err}");
}
