//! `kubectl get` against the emulated API prints the columns a real
//! cluster's printers give (server-side Tables): headers in order, with
//! and without `-o wide`, and the cells of a row. Most kinds need no
//! Docker; pods and nodes run on a small Docker cluster.

mod controller_support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use controller_support::{eventually, from_json};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_emulator::cluster::instance_id;
use kube_emulator::testing::busybox_image;
use kube_emulator::{Cluster, ClusterOptions, Shared};
use serde_json::{json, Value};

/// A cluster and a kubeconfig file for kubectl.
struct KubectlCluster {
    cluster: Cluster,
    kubeconfig: tempfile::NamedTempFile,
    _state: tempfile::TempDir,
}

impl KubectlCluster {
    async fn start(name: &str, docker: bool) -> Self {
        if docker {
            busybox_image().await.expect("the busybox image");
        }
        let state = tempfile::tempdir().expect("a state directory");
        let shared = Arc::new(Shared {
            instance: instance_id(),
            velero_bucket: state.path().join("velero-bucket"),
            ..Shared::default()
        });
        std::fs::create_dir_all(&shared.velero_bucket).expect("the bucket");
        let cluster = Cluster::start(&ClusterOptions::new(name, docker), state.path(), shared)
            .await
            .expect("starting the cluster");
        let mut kubeconfig = tempfile::NamedTempFile::new().expect("a kubeconfig file");
        kubeconfig
            .write_all(cluster.kubeconfig().as_bytes())
            .expect("writing the kubeconfig");
        Self {
            cluster,
            kubeconfig,
            _state: state,
        }
    }

    /// Creates `object` with `kubectl create -f -`.
    async fn create(&self, object: Value) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .args(["create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut stdin = child.stdin.take().expect("kubectl's stdin");
        stdin
            .write_all(object.to_string().as_bytes())
            .await
            .expect("writing to kubectl");
        drop(stdin);
        let output = child.wait_with_output().await.expect("kubectl's output");
        assert!(
            output.status.success(),
            "kubectl create {object}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The API of `example.com/v1` kind `kind` in `default`, once its
    /// CRD is served.
    async fn served(&self, kind: &str) -> Api<DynamicObject> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.cluster.client.clone(),
            "default",
            &ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", kind)),
        );
        eventually(&format!("{kind} is served"), || async {
            api.list(&Default::default())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        api
    }

    /// `kubectl get args...`, as a table.
    async fn get(&self, args: &[&str]) -> Table {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .arg("get")
            .args(args)
            .output()
            .await
            .expect("running kubectl");
        assert!(
            output.status.success(),
            "kubectl get {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Table::parse(&String::from_utf8_lossy(&output.stdout))
    }

    /// Waits until `kubectl get args...` shows a row named `name` for
    /// which `check` holds, and returns the table.
    async fn get_until(&self, args: &[&str], name: &str, check: impl Fn(&Row) -> bool) -> Table {
        eventually(
            &format!("kubectl get {args:?} shows {name} as expected"),
            || async {
                let table = self.get(args).await;
                match table.row(name) {
                    Some(row) if check(&row) => Ok(table),
                    _ => Err(table.text.clone()),
                }
            },
        )
        .await
    }
}

/// kubectl's printed table: the headers, and each row's cells by header.
struct Table {
    headers: Vec<String>,
    rows: Vec<Row>,
    text: String,
}

type Row = BTreeMap<String, String>;

impl Table {
    /// Cuts each line at the header columns' starts (kubectl aligns cells
    /// under their header, left-justified, so empty cells stay empty).
    fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let mut starts = Vec::new();
        let mut headers = Vec::new();
        let mut rest = header;
        let mut offset = 0;
        while let Some(start) = rest.find(|c: char| c != ' ') {
            let after = &rest[start..];
            let end = after.find("   ").unwrap_or(after.len());
            starts.push(offset + start);
            headers.push(after[..end].trim().to_string());
            offset += start + end;
            rest = &after[end..];
        }
        let rows = lines
            .map(|line| {
                headers
                    .iter()
                    .enumerate()
                    .map(|(i, header)| {
                        let start = starts[i].min(line.len());
                        let end = starts
                            .get(i + 1)
                            .map_or(line.len(), |s| (*s).min(line.len()));
                        (header.clone(), line[start..end].trim().to_string())
                    })
                    .collect()
            })
            .collect();
        Self {
            headers,
            rows,
            text: text.to_string(),
        }
    }

    fn row(&self, name: &str) -> Option<Row> {
        let first = self.headers.first()?;
        self.rows.iter().find(|row| row[first] == name).cloned()
    }

    fn assert_headers(&self, expected: &[&str]) {
        assert_eq!(self.headers, expected, "in:\n{}", self.text);
    }
}

/// Checks some cells of `row`.
fn assert_cells(row: &Row, expected: &[(&str, &str)]) {
    for (header, value) in expected {
        assert_eq!(
            row.get(*header).map(String::as_str),
            Some(*value),
            "{header} in {row:?}"
        );
    }
}

#[tokio::test]
async fn kubectl_get_shows_the_real_columns_of_each_kind() {
    let test = KubectlCluster::start("tables", false).await;
    test.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        .await;
    let in_shop = |mut object: Value| {
        object["metadata"]["namespace"] = json!("shop");
        object
    };

    let namespaces = test.get(&["namespace", "shop"]).await;
    namespaces.assert_headers(&["NAME", "STATUS", "AGE"]);
    assert_cells(
        &namespaces.row("shop").expect("a row"),
        &[("STATUS", "Active")],
    );

    test.create(in_shop(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}))).await;
    let maps = test.get(&["configmap", "settings", "-n", "shop"]).await;
    maps.assert_headers(&["NAME", "DATA", "AGE"]);
    assert_cells(&maps.row("settings").expect("a row"), &[("DATA", "3")]);

    test.create(in_shop(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "type": "Opaque", "stringData": {"t": "x"}}))).await;
    let secrets = test.get(&["secret", "token", "-n", "shop"]).await;
    secrets.assert_headers(&["NAME", "TYPE", "DATA", "AGE"]);
    assert_cells(
        &secrets.row("token").expect("a row"),
        &[("TYPE", "Opaque"), ("DATA", "1")],
    );

    test.create(in_shop(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mover"}}),
    ))
    .await;
    let accounts = test.get(&["serviceaccount", "mover", "-n", "shop"]).await;
    accounts.assert_headers(&["NAME", "SECRETS", "AGE"]);
    assert_cells(&accounts.row("mover").expect("a row"), &[("SECRETS", "0")]);

    test.create(in_shop(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {
        "type": "NodePort", "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
    }}))).await;
    let services = test
        .get(&["service", "web", "-n", "shop", "-o", "wide"])
        .await;
    services.assert_headers(&[
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "SELECTOR",
    ]);
    let web = services.row("web").expect("a row");
    assert_cells(
        &web,
        &[
            ("TYPE", "NodePort"),
            ("EXTERNAL-IP", "<none>"),
            ("SELECTOR", "app=web"),
        ],
    );
    let ports = &web["PORT(S)"];
    assert!(
        ports.starts_with("80:30080/TCP,53:") && ports.ends_with("/UDP"),
        "{ports}"
    );
    test.get(&["service", "web", "-n", "shop"])
        .await
        .assert_headers(&[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ]);

    test.create(in_shop(
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}], "ports": [{"port": 8080}],
        }]}),
    ))
    .await;
    let endpoints = test.get(&["endpoints", "web", "-n", "shop"]).await;
    endpoints.assert_headers(&["NAME", "ENDPOINTS", "AGE"]);
    assert_cells(
        &endpoints.row("web").expect("a row"),
        &[("ENDPOINTS", "10.1.0.1:8080,10.1.0.2:8080")],
    );

    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "server", "image": "nginx:1"}, {"name": "proxy", "image": "envoy:2"},
    ]}});
    test.create(in_shop(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template,
        }}),
    ))
    .await;
    let deployments = test
        .get(&["deployment", "web", "-n", "shop", "-o", "wide"])
        .await;
    deployments.assert_headers(&[
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]);
    assert_cells(
        &deployments.row("web").expect("a row"),
        &[
            ("READY", "0/2"),
            ("AVAILABLE", "0"),
            ("CONTAINERS", "server,proxy"),
            ("IMAGES", "nginx:1,envoy:2"),
            ("SELECTOR", "app=web"),
        ],
    );
    test.get(&["deployment", "-n", "shop"])
        .await
        .assert_headers(&["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let sets = eventually("the Deployment's ReplicaSet", || async {
        let table = test.get(&["replicaset", "-n", "shop", "-o", "wide"]).await;
        if table.rows.is_empty() {
            Err(table.text)
        } else {
            Ok(table)
        }
    })
    .await;
    sets.assert_headers(&[
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]);

    test.create(in_shop(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "web"}}, "template": template,
    }}))).await;
    let stateful = test
        .get(&["statefulset", "db", "-n", "shop", "-o", "wide"])
        .await;
    stateful.assert_headers(&["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]);
    assert_cells(&stateful.row("db").expect("a row"), &[("READY", "0/3")]);

    test.create(in_shop(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": template,
    }}))).await;
    test.get(&["daemonset", "agent", "-n", "shop", "-o", "wide"])
        .await
        .assert_headers(&[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
        ]);

    let job_template = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]}});
    test.create(in_shop(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}, "spec": {"template": job_template}}))).await;
    let jobs = test.get(&["job", "once", "-n", "shop"]).await;
    jobs.assert_headers(&["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    assert_cells(
        &jobs.row("once").expect("a row"),
        &[("STATUS", "Running"), ("COMPLETIONS", "0/1")],
    );
    test.create(in_shop(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 3 1 1 *", "jobTemplate": {"spec": {"template": job_template}},
    }}))).await;
    let cron_jobs = test.get(&["cronjob", "nightly", "-n", "shop"]).await;
    cron_jobs.assert_headers(&[
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "AGE",
    ]);
    assert_cells(
        &cron_jobs.row("nightly").expect("a row"),
        &[
            ("SCHEDULE", "0 3 1 1 *"),
            ("TIMEZONE", "<none>"),
            ("ACTIVE", "0"),
            ("LAST SCHEDULE", "<none>"),
        ],
    );

    test.create(in_shop(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
    }}))).await;
    let claims = test
        .get_until(
            &["pvc", "data", "-n", "shop", "-o", "wide"],
            "data",
            |row| row["STATUS"] == "Bound",
        )
        .await;
    claims.assert_headers(&[
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS MODES",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "AGE",
        "VOLUMEMODE",
    ]);
    let claim = claims.row("data").expect("a row");
    assert_cells(
        &claim,
        &[
            ("CAPACITY", "1Gi"),
            ("ACCESS MODES", "RWO"),
            ("STORAGECLASS", "standard"),
            ("VOLUMEATTRIBUTESCLASS", "<unset>"),
        ],
    );
    let volumes = test.get(&["pv", &claim["VOLUME"]]).await;
    volumes.assert_headers(&[
        "NAME",
        "CAPACITY",
        "ACCESS MODES",
        "RECLAIM POLICY",
        "STATUS",
        "CLAIM",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "REASON",
        "AGE",
    ]);
    assert_cells(
        &volumes.row(&claim["VOLUME"]).expect("a row"),
        &[("CLAIM", "shop/data"), ("STORAGECLASS", "standard")],
    );
    let classes = test.get(&["storageclass"]).await;
    classes.assert_headers(&[
        "NAME",
        "PROVISIONER",
        "RECLAIMPOLICY",
        "VOLUMEBINDINGMODE",
        "ALLOWVOLUMEEXPANSION",
        "AGE",
    ]);
    assert_cells(
        &classes.row("standard (default)").expect("a row"),
        &[
            ("PROVISIONER", "kube-emulator.io/hostpath"),
            ("RECLAIMPOLICY", "Delete"),
            ("VOLUMEBINDINGMODE", "Immediate"),
            ("ALLOWVOLUMEEXPANSION", "false"),
        ],
    );

    test.create(in_shop(json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
        "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z", "count": 4,
    }))).await;
    let events = test.get(&["events", "-n", "shop"]).await;
    events.assert_headers(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    let event = events
        .rows
        .iter()
        .find(|row| row["OBJECT"] == "pod/web-1")
        .expect("the event's row");
    assert_cells(
        event,
        &[
            ("TYPE", "Warning"),
            ("REASON", "BackOff"),
            ("OBJECT", "pod/web-1"),
            ("MESSAGE", "Back-off restarting failed container"),
        ],
    );

    test.create(in_shop(json!({"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "receiver"}, "spec": {
        "host": "receiver.apps.test", "to": {"kind": "Service", "name": "web"},
        "port": {"targetPort": "http"}, "tls": {"termination": "passthrough"},
    }}))).await;
    let routes = test.get(&["route", "receiver", "-n", "shop"]).await;
    routes.assert_headers(&[
        "NAME",
        "HOST/PORT",
        "PATH",
        "SERVICES",
        "PORT",
        "TERMINATION",
        "WILDCARD",
    ]);
    assert_cells(
        &routes.row("receiver").expect("a row"),
        &[
            ("HOST/PORT", "receiver.apps.test"),
            ("PATH", ""),
            ("SERVICES", "web"),
            ("PORT", "http"),
            ("TERMINATION", "passthrough"),
        ],
    );
}

#[tokio::test]
async fn custom_resources_print_their_crd_printer_columns() {
    let test = KubectlCluster::start("crd-tables", false).await;
    let crd = |plural: &str, kind: &str, columns: Value| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "additionalPrinterColumns": columns}]},
        })
    };
    test.create(crd("migrations", "Migration", json!([
        {"name": "Plan", "type": "string", "jsonPath": ".spec.planName"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]))).await;
    test.create(crd("widgets", "Widget", json!([]))).await;
    let migrations = test.served("Migration").await;
    let migration = migrations
        .create(
            &PostParams::default(),
            &from_json::<DynamicObject>(json!({
                "apiVersion": "example.com/v1", "kind": "Migration",
                "metadata": {"name": "final"}, "spec": {"planName": "shop-to-dest"},
            })),
        )
        .await
        .expect("creating the migration");
    let mut with_status = migration;
    with_status.data["status"] = json!({"phase": "Running", "attempts": 2, "conditions": [{"type": "Ready", "status": "False"}]});
    migrations
        .replace_status("final", &PostParams::default(), &with_status)
        .await
        .expect("setting the status");

    let table = test.get(&["migrations"]).await;
    table.assert_headers(&["NAME", "PLAN", "PHASE", "READY", "AGE"]);
    let row = table.row("final").expect("a row");
    assert_cells(
        &row,
        &[
            ("PLAN", "shop-to-dest"),
            ("PHASE", "Running"),
            ("READY", "False"),
        ],
    );
    assert!(row["AGE"].ends_with('s'), "an age: {row:?}");
    let wide = test.get(&["migrations", "-o", "wide"]).await;
    wide.assert_headers(&["NAME", "PLAN", "PHASE", "READY", "ATTEMPTS", "AGE"]);
    assert_cells(&wide.row("final").expect("a row"), &[("ATTEMPTS", "2")]);

    test.served("Widget").await;
    test.create(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}})).await;
    test.get(&["widgets"])
        .await
        .assert_headers(&["NAME", "AGE"]);
}

#[tokio::test]
async fn kubectl_get_pods_and_nodes_on_docker_shows_their_state() {
    let test = KubectlCluster::start("tables-docker", true).await;
    let image = busybox_image().await.expect("the busybox image");
    let pod = |name: &str, spec: Value| {
        let mut spec = spec;
        for list in ["containers", "initContainers"] {
            for container in spec[list].as_array_mut().into_iter().flatten() {
                container["image"] = json!(image);
            }
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    test.create(pod(
        "sleeper",
        json!({"containers": [{"name": "main", "command": ["sleep", "3600"]}]}),
    ))
    .await;
    test.create(pod(
        "done",
        json!({"restartPolicy": "Never", "containers": [{"name": "main", "command": ["true"]}]}),
    ))
    .await;
    test.create(pod("broken", json!({"restartPolicy": "Never", "containers": [{"name": "main", "command": ["sh", "-c", "exit 3"]}]}))).await;
    test.create(pod(
        "waiting",
        json!({
            "initContainers": [{"name": "setup", "command": ["sleep", "3600"]}],
            "containers": [{"name": "main", "command": ["sleep", "3600"]}],
        }),
    ))
    .await;

    let pods = test
        .get_until(&["pods", "-o", "wide"], "sleeper", |row| {
            row["STATUS"] == "Running"
        })
        .await;
    pods.assert_headers(&[
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]);
    let sleeper = pods.row("sleeper").expect("a row");
    assert_cells(
        &sleeper,
        &[
            ("READY", "1/1"),
            ("RESTARTS", "0"),
            ("NOMINATED NODE", "<none>"),
            ("READINESS GATES", "<none>"),
        ],
    );
    assert!(
        sleeper["NODE"].starts_with("tables-docker-node-"),
        "{sleeper:?}"
    );
    assert!(
        sleeper["IP"].parse::<std::net::IpAddr>().is_ok(),
        "{sleeper:?}"
    );
    test.get(&["pods"])
        .await
        .assert_headers(&["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    test.get_until(&["pods"], "done", |row| {
        row["STATUS"] == "Completed" && row["READY"] == "0/1"
    })
    .await;
    test.get_until(&["pods"], "broken", |row| row["STATUS"] == "Error")
        .await;
    test.get_until(&["pods"], "waiting", |row| {
        row["STATUS"] == "Init:0/1" && row["READY"] == "0/1"
    })
    .await;

    let nodes = test.get(&["nodes", "-o", "wide"]).await;
    nodes.assert_headers(&[
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]);
    let node = nodes.row("tables-docker-node-1").expect("a node row");
    let router_ip = test.cluster.context.router_ip.to_string();
    assert_cells(
        &node,
        &[
            ("STATUS", "Ready"),
            ("ROLES", "<none>"),
            ("INTERNAL-IP", router_ip.as_str()),
            ("EXTERNAL-IP", "<none>"),
            ("OS-IMAGE", "kube-emulator"),
            ("KERNEL-VERSION", "<unknown>"),
            ("CONTAINER-RUNTIME", "docker://kube-emulator"),
        ],
    );
    assert!(node["VERSION"].starts_with("v1."), "{node:?}");
    test.get(&["nodes"])
        .await
        .assert_headers(&["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
}
