//! Conformance tests of the emulated Kubernetes API: the calls the
//! orchestrator and the emulated controllers make, through kube-rs and
//! kubectl, against a real server on a loopback socket.

mod api_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api_support::{api_error, cluster, eventually, from_json, namespace, CutProxy};
use futures_util::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::ResourceExt as _;
use serde_json::{json, Value};

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    from_json(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
}

fn pod(name: &str, labels: Value) -> Pod {
    from_json(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "mover:1", "args": ["receive"]}]},
    }))
}

fn dynamic_api(
    client: &kube::Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &resource)
}

#[tokio::test]
async fn discovery_serves_builtin_openshift_and_velero_resources() {
    let test = cluster().await;
    let discovery = kube::discovery::Discovery::new(test.client())
        .run()
        .await
        .expect("discovery");
    let find = |group: &str, kind: &str| {
        discovery
            .groups()
            .filter(|g| g.name() == group)
            .flat_map(|g| g.recommended_resources())
            .find(|(resource, _)| resource.kind == kind)
    };
    for (group, kind, plural, namespaced) in [
        ("", "Pod", "pods", true),
        ("", "Namespace", "namespaces", false),
        ("", "PersistentVolume", "persistentvolumes", false),
        ("apps", "Deployment", "deployments", true),
        ("storage.k8s.io", "StorageClass", "storageclasses", false),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        ("route.openshift.io", "Route", "routes", true),
        ("image.openshift.io", "ImageStream", "imagestreams", true),
        ("velero.io", "Backup", "backups", true),
        ("velero.io", "Restore", "restores", true),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
    ] {
        let (resource, capabilities) =
            find(group, kind).unwrap_or_else(|| panic!("{group}/{kind} is not discovered"));
        assert_eq!(resource.plural, plural);
        let scope = if namespaced {
            kube::discovery::Scope::Namespaced
        } else {
            kube::discovery::Scope::Cluster
        };
        assert_eq!(capabilities.scope, scope, "{kind}");
        assert!(
            capabilities.supports_operation(kube::discovery::verbs::WATCH),
            "{kind}"
        );
    }
    let (_, pods) = find("", "Pod").expect("pods");
    let subresources: Vec<&str> = pods
        .subresources
        .iter()
        .map(|(r, _)| r.plural.as_str())
        .collect();
    assert!(
        subresources.contains(&"log") && subresources.contains(&"status"),
        "{subresources:?}"
    );

    let version = test.client().apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn typed_crud_sets_server_metadata_and_reports_errors_as_status() {
    let test = cluster().await;
    let client = test.client();
    namespace(&client, "crud").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces.get("crud").await.expect("namespace");
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "crud");
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));

    // The owner must exist: a dependent of a missing owner is collected.
    let owner = Api::<ConfigMap>::namespaced(client.clone(), "crud")
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("owner");
    let owner_uid = owner.uid().expect("owner uid");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "crud");
    let secret: Secret = from_json(json!({
        "metadata": {"name": "creds", "labels": {"app": "mover"}, "annotations": {"a": "b"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}]},
        "stringData": {"plain": "x"},
        "data": {"key": "c2VjcmV0"},
    }));
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create");
    assert_eq!(created.namespace().as_deref(), Some("crud"));
    assert_eq!(created.uid().map(|u| u.len()), Some(36));
    assert!(created.creation_timestamp().is_some());
    assert_eq!(
        created.labels().get("app").map(String::as_str),
        Some("mover")
    );
    assert_eq!(created.owner_references()[0].uid, owner_uid);
    let data = created.data.clone().expect("data");
    assert_eq!(data["plain"].0, b"x", "stringData is folded into data");
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let first_rv: u64 = created
        .resource_version()
        .expect("rv")
        .parse()
        .expect("numeric rv");

    let fetched = secrets.get("creds").await.expect("get");
    assert_eq!(fetched.data, created.data);
    assert_eq!(fetched.resource_version(), created.resource_version());

    let mut changed = fetched.clone();
    changed.labels_mut().insert("tier".into(), "db".into());
    let replaced = secrets
        .replace("creds", &PostParams::default(), &changed)
        .await
        .expect("replace");
    let second_rv: u64 = replaced
        .resource_version()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert!(second_rv > first_rv);
    assert_eq!(replaced.uid(), created.uid());

    let listed = secrets.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    let exists = api_error(secrets.create(&PostParams::default(), &secret).await);
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    let missing = api_error(secrets.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(
        missing.message.contains("secrets \"nope\" not found"),
        "{}",
        missing.message
    );
    let no_namespace: Api<Secret> = Api::namespaced(client.clone(), "absent");
    let error = api_error(no_namespace.create(&PostParams::default(), &secret).await);
    assert_eq!(
        error.code, 404,
        "creating in a missing namespace: {}",
        error.message
    );

    let deleted = secrets
        .delete("creds", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        deleted.is_right(),
        "deleted at once, answered with a Status"
    );
    assert_eq!(api_error(secrets.get("creds").await).code, 404);

    // generateName: a random 5-character suffix, distinct each time
    let generated: ConfigMap = from_json(json!({"metadata": {"generateName": "mover-"}}));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "crud");
    let a = cms
        .create(&PostParams::default(), &generated)
        .await
        .expect("generated");
    let b = cms
        .create(&PostParams::default(), &generated)
        .await
        .expect("generated");
    assert!(
        a.name_any().starts_with("mover-") && a.name_any().len() == "mover-".len() + 5,
        "{}",
        a.name_any()
    );
    assert_ne!(a.name_any(), b.name_any());
}

#[tokio::test]
async fn stale_updates_conflict_and_unconditional_updates_pass() {
    let test = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(test.client(), "default");
    let original = cms
        .create(
            &PostParams::default(),
            &config_map("c", json!({}), json!({"k": "1"})),
        )
        .await
        .expect("create");
    let mut first = original.clone();
    first.data = Some(BTreeMap::from([("k".into(), "2".into())]));
    cms.replace("c", &PostParams::default(), &first)
        .await
        .expect("first writer");

    let mut stale = original.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "3".into())]));
    let conflict = api_error(cms.replace("c", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        cms.get("c").await.expect("get").data.expect("data")["k"],
        "2"
    );

    stale.metadata.resource_version = None;
    let forced = cms
        .replace("c", &PostParams::default(), &stale)
        .await
        .expect("unconditional");
    assert_eq!(forced.data.expect("data")["k"], "3");

    // a merge patch carrying a stale resourceVersion is a precondition too
    let patch =
        json!({"metadata": {"resourceVersion": original.resource_version()}, "data": {"k": "4"}});
    let conflict = api_error(
        cms.patch("c", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(conflict.code, 409);
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let test = cluster().await;
    let client = test.client();
    namespace(&client, "one").await;
    namespace(&client, "two").await;
    for (ns, name, labels) in [
        ("one", "web-1", json!({"app": "web", "tier": "front"})),
        ("one", "db-1", json!({"app": "db"})),
        ("two", "web-2", json!({"app": "web", "legacy": "yes"})),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&PostParams::default(), &pod(name, labels))
            .await
            .expect("create pod");
    }
    let pods_two: Api<Pod> = Api::namespaced(client.clone(), "two");
    pods_two
        .patch_status(
            "web-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .expect("status");
    pods_two
        .patch(
            "web-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node-a"}})),
        )
        .await
        .expect("nodeName");

    let all: Api<Pod> = Api::all(client.clone());
    let names = |selector: (&str, &str)| {
        let all = all.clone();
        let (labels, fields) = (selector.0.to_string(), selector.1.to_string());
        async move {
            let mut params = ListParams::default();
            if !labels.is_empty() {
                params = params.labels(&labels);
            }
            if !fields.is_empty() {
                params = params.fields(&fields);
            }
            let mut names: Vec<String> = all
                .list(&params)
                .await
                .expect("list")
                .iter()
                .map(|p| p.name_any())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names(("", "")).await, ["db-1", "web-1", "web-2"]);
    assert_eq!(names(("app=web", "")).await, ["web-1", "web-2"]);
    assert_eq!(names(("app==web,tier", "")).await, ["web-1"]);
    assert_eq!(names(("app!=web", "")).await, ["db-1"]);
    assert_eq!(names(("app in (db,cache)", "")).await, ["db-1"]);
    assert_eq!(names(("app notin (db)", "")).await, ["web-1", "web-2"]);
    assert_eq!(names(("!legacy", "")).await, ["db-1", "web-1"]);
    assert_eq!(names(("", "metadata.name=web-2")).await, ["web-2"]);
    assert_eq!(
        names(("", "metadata.namespace=one")).await,
        ["db-1", "web-1"]
    );
    assert_eq!(names(("", "status.phase=Running")).await, ["web-2"]);
    assert_eq!(
        names(("", "status.phase!=Running")).await,
        ["db-1", "web-1"]
    );
    assert_eq!(names(("", "spec.nodeName=node-a")).await, ["web-2"]);
    assert_eq!(
        names(("app=web", "metadata.namespace!=two")).await,
        ["web-1"]
    );

    let bad = api_error(all.list(&ListParams::default().labels("app in web")).await);
    assert_eq!(bad.code, 400);
    assert!(bad.message.contains("labelSelector"), "{}", bad.message);

    // paging: limit and continue walk the whole list
    let first = all
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        second
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        ["web-2"]
    );
    assert!(second.metadata.continue_.is_none_or(|c| c.is_empty()));
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let test = cluster().await;
    let client = test.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut two_containers = pod("p", json!({"app": "x"}));
    let mut second = two_containers.spec.as_ref().expect("spec").containers[0].clone();
    second.name = "sidecar".into();
    second.image = Some("sidecar:1".into());
    two_containers
        .spec
        .as_mut()
        .expect("spec")
        .containers
        .push(second);
    pods.create(&PostParams::default(), &two_containers)
        .await
        .expect("create");

    // strategic merge: containers merge by name
    let strategic = json!({"spec": {"containers": [{"name": "sidecar", "image": "sidecar:2"}]}});
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(&strategic))
        .await
        .expect("strategic");
    let containers = patched.spec.expect("spec").containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("mover:1"));
    assert_eq!(containers[1].image.as_deref(), Some("sidecar:2"));

    // merge patch: lists replace, null removes
    let merge = json!({"metadata": {"labels": {"app": null, "new": "1"}}});
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .expect("merge");
    assert_eq!(
        patched.labels(),
        &BTreeMap::from([("new".to_string(), "1".to_string())])
    );

    // JSON patch, including a failing test operation
    let json_patch = from_json(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"by": "json-patch"}},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "mover:2"}
    ]));
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .expect("json patch");
    assert_eq!(patched.annotations()["by"], "json-patch");
    assert_eq!(
        patched.spec.expect("spec").containers[0].image.as_deref(),
        Some("mover:2")
    );
    let failing = from_json(json!([{"op": "test", "path": "/metadata/name", "value": "other"}]));
    assert_eq!(
        api_error(
            pods.patch("p", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
        )
        .code,
        422
    );

    // server-side apply: creates when missing, merges, drops what the manager stopped applying
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let apply = PatchParams::apply("orchestrator").force();
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plan"}, "data": {"a": "1", "b": "2"}});
    let created = cms
        .patch("plan", &apply, &Patch::Apply(&applied))
        .await
        .expect("apply creates");
    assert_eq!(created.data.clone().expect("data").len(), 2);
    cms.patch(
        "plan",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"other": "kept"}})),
    )
    .await
    .expect("another writer");
    let reapplied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plan"}, "data": {"a": "3"}});
    let merged = cms
        .patch("plan", &apply, &Patch::Apply(&reapplied))
        .await
        .expect("apply merges");
    assert_eq!(
        merged.data.clone().expect("data"),
        BTreeMap::from([
            ("a".to_string(), "3".to_string()),
            ("other".to_string(), "kept".to_string())
        ])
    );
    assert_eq!(merged.uid(), created.uid());
    let no_manager = api_error(
        cms.patch("plan", &PatchParams::default(), &Patch::Apply(&reapplied))
            .await,
    );
    assert_eq!(no_manager.code, 422);
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let test = cluster().await;
    let client = test.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim: PersistentVolumeClaim = from_json(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "fast"},
        "status": {"phase": "Bound"},
    }));
    let created = pvcs
        .create(&PostParams::default(), &claim)
        .await
        .expect("create");
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending"),
        "status is the server's on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // main resource: status changes ignored, spec changes kept
    let mut main = created.clone();
    main.status = Some(from_json(json!({"phase": "Lost"})));
    main.labels_mut().insert("l".into(), "v".into());
    let replaced = pvcs
        .replace("data", &PostParams::default(), &main)
        .await
        .expect("replace");
    assert_eq!(
        replaced.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(replaced.labels()["l"], "v");

    // /status: only status changes
    let status = json!({"metadata": {"labels": {"l": "changed"}}, "spec": {"storageClassName": "slow"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
    let bound = pvcs
        .patch_status("data", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
    assert_eq!(
        bound.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
    assert_eq!(bound.labels()["l"], "v");
    assert_eq!(
        bound
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("fast")
    );
    let mut whole = bound.clone();
    whole.status = Some(from_json(json!({"phase": "Lost"})));
    let lost = pvcs
        .replace_status("data", &PostParams::default(), &whole)
        .await
        .expect("replace status");
    assert_eq!(lost.status.and_then(|s| s.phase).as_deref(), Some("Lost"));

    // generation counts spec changes only
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("g", json!({})))
        .await
        .expect("pod");
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    let relabelled = pods
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("label");
    assert_eq!(relabelled.metadata.generation, Some(1));
    let respec = pods
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 5}})),
        )
        .await
        .expect("spec");
    assert_eq!(respec.metadata.generation, Some(2));
    let volumes = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    let immutable = api_error(
        pods.patch("g", &PatchParams::default(), &Patch::Merge(&volumes))
            .await,
    );
    assert_eq!(immutable.code, 422, "a pod's volumes cannot change");
}

#[tokio::test]
async fn openshift_velero_and_runtime_crd_resources_via_dynamic_objects() {
    let test = cluster().await;
    let client = test.client();
    let routes = dynamic_api(&client, "default", "route.openshift.io", "v1", "Route");
    let route: DynamicObject = from_json(json!({
        "apiVersion": "route.openshift.io/v1", "kind": "Route",
        "metadata": {"name": "receiver"},
        "spec": {"to": {"kind": "Service", "name": "receiver"}, "tls": {"termination": "passthrough"}, "port": {"targetPort": 8443}},
    }));
    routes
        .create(&PostParams::default(), &route)
        .await
        .expect("route");
    let admitted = json!({"status": {"ingress": [{"host": "receiver.apps.test", "conditions": [{"type": "Admitted", "status": "True"}]}]}});
    routes
        .patch_status(
            "receiver",
            &PatchParams::default(),
            &Patch::Merge(&admitted),
        )
        .await
        .expect("route status");
    let fetched = routes.get("receiver").await.expect("get route");
    assert_eq!(
        fetched.data["status"]["ingress"][0]["host"],
        "receiver.apps.test"
    );
    assert_eq!(fetched.data["spec"]["tls"]["termination"], "passthrough");

    let streams = dynamic_api(
        &client,
        "default",
        "image.openshift.io",
        "v1",
        "ImageStream",
    );
    let stream: DynamicObject = from_json(
        json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": {"name": "app"}, "spec": {}}),
    );
    streams
        .create(&PostParams::default(), &stream)
        .await
        .expect("imagestream");
    assert_eq!(
        streams
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // Velero, running in the cluster, creates its namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the velero namespace", || async {
        namespaces.get_opt("velero").await.ok().flatten()
    })
    .await;
    let backups = dynamic_api(&client, "velero", "velero.io", "v1", "Backup");
    let backup: DynamicObject = from_json(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": "b1", "labels": {"migration": "m1"}},
        "spec": {"includedNamespaces": ["default"], "excludedResources": ["persistentvolumes"]},
    }));
    backups
        .create(&PostParams::default(), &backup)
        .await
        .expect("backup");
    let listed = backups
        .list(&ListParams::default().labels("migration=m1"))
        .await
        .expect("list backups");
    assert_eq!(
        listed.items[0].data["spec"]["includedNamespaces"],
        json!(["default"])
    );
    backups
        .delete("b1", &DeleteParams::default())
        .await
        .expect("delete backup");

    // a CRD created at runtime is served (discovery and CRUD), and no longer once deleted
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": {"name": "migrations.example.io"},
        "spec": {
            "group": "example.io", "scope": "Namespaced",
            "names": {"plural": "migrations", "singular": "migration", "kind": "Migration", "shortNames": ["mig"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }));
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    kube::runtime::wait::await_condition(
        crds.clone(),
        "migrations.example.io",
        kube::runtime::conditions::is_crd_established(),
    )
    .await
    .expect("CRD established");
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    assert!(discovery.groups().any(|g| g.name() == "example.io"));
    let migrations = dynamic_api(&client, "default", "example.io", "v1", "Migration");
    let migration: DynamicObject = from_json(
        json!({"apiVersion": "example.io/v1", "kind": "Migration", "metadata": {"name": "m1"}, "spec": {"stage": "backup"}}),
    );
    migrations
        .create(&PostParams::default(), &migration)
        .await
        .expect("create custom object");
    migrations
        .patch_status(
            "m1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .expect("custom status");
    let ignored = json!({"spec": {"stage": "dvm"}, "status": {"phase": "Failed"}});
    let current = migrations
        .patch("m1", &PatchParams::default(), &Patch::Merge(&ignored))
        .await
        .expect("patch");
    assert_eq!(
        (
            current.data["spec"]["stage"].as_str(),
            current.data["status"]["phase"].as_str()
        ),
        (Some("dvm"), Some("Running"))
    );
    crds.delete("migrations.example.io", &DeleteParams::default())
        .await
        .expect("delete CRD");
    assert_eq!(api_error(migrations.get("m1").await).code, 404);
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    assert!(!discovery.groups().any(|g| g.name() == "example.io"));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let test = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(test.client(), "default");
    let mut held = config_map("held", json!({}), json!({}));
    held.metadata.finalizers = Some(vec!["example.io/keep".into()]);
    cms.create(&PostParams::default(), &held)
        .await
        .expect("create");
    let pending = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = pending.left().expect("still there, returned as the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms
        .get("held")
        .await
        .expect("still gettable")
        .metadata
        .deletion_timestamp
        .is_some());

    let adding = json!({"metadata": {"finalizers": ["example.io/keep", "example.io/more"]}});
    assert_eq!(
        api_error(
            cms.patch("held", &PatchParams::default(), &Patch::Merge(&adding))
                .await
        )
        .code,
        422
    );

    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("remove finalizer");
    assert_eq!(api_error(cms.get("held").await).code, 404);
}

#[tokio::test]
async fn namespace_deletion_cascades_and_waits_for_finalizers() {
    let test = cluster().await;
    let client = test.client();
    namespace(&client, "doomed").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    cms.create(
        &PostParams::default(),
        &config_map("plain", json!({}), json!({})),
    )
    .await
    .expect("cm");
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "s"}})),
        )
        .await
        .expect("secret");
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .expect("pod");
    let mut held = config_map("held", json!({}), json!({}));
    held.metadata.finalizers = Some(vec!["example.io/keep".into()]);
    cms.create(&PostParams::default(), &held)
        .await
        .expect("held cm");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("doomed", &DeleteParams::background())
        .await
        .expect("delete ns");
    let terminating = namespaces.get("doomed").await.expect("namespace waits");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(api_error(pods.get("p").await).code, 404);
    assert_eq!(api_error(secrets.get("s").await).code, 404);
    assert_eq!(
        cms.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        ["held"]
    );
    let refused = api_error(
        cms.create(
            &PostParams::default(),
            &config_map("late", json!({}), json!({})),
        )
        .await,
    );
    assert_eq!(refused.code, 403);

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .expect("release");
    assert_eq!(api_error(namespaces.get("doomed").await).code, 404);
}

#[tokio::test]
async fn deletecollection_owner_gc_and_scale() {
    let test = cluster().await;
    let client = test.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("a", json!({"m": "1"})),
        ("b", json!({"m": "1"})),
        ("c", json!({"m": "2"})),
    ] {
        cms.create(&PostParams::default(), &config_map(name, labels, json!({})))
            .await
            .expect("cm");
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("m=1"),
    )
    .await
    .expect("deletecollection");
    let left: Vec<String> = cms
        .list(&ListParams::default().labels("m"))
        .await
        .expect("list")
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c"]);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = from_json(json!({
        "metadata": {"name": "app"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }));
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
    assert_eq!(created.spec.replicas, Some(1));
    let scale = deployments.get_scale("app").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let scaled = deployments
        .patch_scale(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale to zero");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(
        deployments.get("app").await.expect("get").spec.replicas,
        Some(0)
    );

    let owned = json!({"metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "uid": created.uid()}]}});
    cms.create(&PostParams::default(), &from_json(owned))
        .await
        .expect("dependent");
    deployments
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete owner");
    assert_eq!(
        api_error(cms.get("owned").await).code,
        404,
        "dependents are garbage collected"
    );
}

/// The collector also finds dependents written after their owner went (a
/// controller's create racing its owner's deletion, an adoption patch): one
/// whose owners are all gone is deleted, one with an owner left loses only
/// the references to the gone ones. Owners are matched by uid, in the
/// dependent's namespace or cluster scoped.
#[tokio::test]
async fn dependents_of_gone_owners_are_collected_when_written() {
    let test = cluster().await;
    let client = test.client();
    namespace(&client, "gc").await;
    namespace(&client, "elsewhere").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let make = |api: Api<ConfigMap>, body: Value| async move {
        api.create(&PostParams::default(), &from_json(body))
            .await
            .expect("create")
    };
    let owner = make(cms.clone(), json!({"metadata": {"name": "owner"}})).await;
    let foreign = make(
        Api::namespaced(client.clone(), "elsewhere"),
        json!({"metadata": {"name": "foreign"}}),
    )
    .await;
    let reference = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
    let live = reference("owner", &owner.uid().unwrap());
    let gone = reference("gone", "0b6f7e52-0000-4000-8000-000000000000");
    let other_namespace = reference("foreign", &foreign.uid().unwrap());

    // Created with owners that do not exist (or not here): deleted.
    for (name, owners) in [
        ("orphan", json!([gone])),
        ("misplaced", json!([other_namespace])),
    ] {
        let created = make(
            cms.clone(),
            json!({"metadata": {"name": name, "ownerReferences": owners}}),
        )
        .await;
        assert_eq!(created.name_any(), name, "the create itself succeeds");
        assert_eq!(api_error(cms.get(name).await).code, 404, "{name} collected");
    }

    // Created with one live and one gone owner: only the dangling reference goes.
    make(
        cms.clone(),
        json!({"metadata": {"name": "shared", "ownerReferences": [live, gone]}}),
    )
    .await;
    let shared = cms.get("shared").await.expect("shared stays");
    let uids: Vec<String> = shared
        .owner_references()
        .iter()
        .map(|r| r.uid.clone())
        .collect();
    assert_eq!(uids, vec![owner.uid().unwrap()]);

    // Adopted by an owner that is gone by the time of the patch: deleted.
    make(cms.clone(), json!({"metadata": {"name": "adoptee"}})).await;
    cms.patch(
        "adoptee",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"ownerReferences": [gone]}})),
    )
    .await
    .expect("adoption patch");
    assert_eq!(api_error(cms.get("adoptee").await).code, 404);

    // A dependent of a live owner is left alone, and goes with it.
    make(
        cms.clone(),
        json!({"metadata": {"name": "kept", "ownerReferences": [live]}}),
    )
    .await;
    assert!(cms.get("kept").await.is_ok());
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    for name in ["kept", "shared"] {
        assert_eq!(api_error(cms.get(name).await).code, 404, "{name} collected");
    }
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let test = cluster().await;
    let services: Api<Service> = Api::namespaced(test.client(), "default");
    let service = |name: &str, kind: &str| -> Service {
        from_json(
            json!({"metadata": {"name": name}, "spec": {"type": kind, "selector": {"app": name}, "ports": [{"port": 8443}]}}),
        )
    };
    let plain = services
        .create(&PostParams::default(), &service("plain", "ClusterIP"))
        .await
        .expect("svc");
    let node = services
        .create(&PostParams::default(), &service("node", "NodePort"))
        .await
        .expect("svc");
    let lb = services
        .create(&PostParams::default(), &service("lb", "LoadBalancer"))
        .await
        .expect("svc");
    let ip = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.cluster_ip.clone())
            .expect("clusterIP")
    };
    let node_port = |s: &Service| s.spec.as_ref().and_then(|s| s.ports.as_ref()?[0].node_port);
    for s in [&plain, &node, &lb] {
        assert!(ip(s).starts_with("10.96."), "{}", ip(s));
    }
    assert_ne!(ip(&plain), ip(&node));
    assert_eq!(node_port(&plain), None);
    let ports = [
        node_port(&node).expect("nodePort"),
        node_port(&lb).expect("nodePort"),
    ];
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)) && ports[0] != ports[1],
        "{ports:?}"
    );

    let mut changed = node.clone();
    changed.spec.as_mut().expect("spec").cluster_ip = None;
    changed
        .spec
        .as_mut()
        .expect("spec")
        .ports
        .as_mut()
        .expect("ports")[0]
        .node_port = None;
    let replaced = services
        .replace("node", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_eq!(
        (ip(&replaced), node_port(&replaced)),
        (ip(&node), node_port(&node)),
        "allocations kept"
    );

    let taken: Service = from_json(
        json!({"metadata": {"name": "taken"}, "spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": ports[0]}]}}),
    );
    let error = api_error(services.create(&PostParams::default(), &taken).await);
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    assert!(
        error.message.contains("already allocated"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let test = cluster().await;
    let client = test.client();
    let request = |method: &str, path: &str, content_type: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .expect("request")
    };
    let failure = |result: kube::Result<String>| api_error(result);

    let bad_json = failure(
        client
            .request_text(request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                "{not json",
            ))
            .await,
    );
    assert_eq!(bad_json.code, 400);
    assert!(
        bad_json.message.contains("not valid JSON"),
        "{}",
        bad_json.message
    );

    let wrong_kind = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#;
    let error = failure(
        client
            .request_text(request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                wrong_kind,
            ))
            .await,
    );
    assert_eq!(error.code, 400);
    assert!(error.message.contains("kind"), "{}", error.message);

    let wrong_version =
        r#"{"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#;
    assert_eq!(
        failure(
            client
                .request_text(request(
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    "application/json",
                    wrong_version
                ))
                .await
        )
        .code,
        400
    );

    let unnamed = failure(
        client
            .request_text(request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                "{}",
            ))
            .await,
    );
    assert_eq!((unnamed.code, unnamed.reason.as_str()), (422, "Invalid"));
    assert!(
        unnamed.message.contains("metadata.name"),
        "{}",
        unnamed.message
    );

    let bad_name = r#"{"metadata": {"name": "Not_A_DNS_Name"}}"#;
    let error = failure(
        client
            .request_text(request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                bad_name,
            ))
            .await,
    );
    assert_eq!(error.code, 422);
    assert!(error.message.contains("RFC 1123"), "{}", error.message);

    for (path, body, field) in [
        (
            "configmaps",
            r#"{"metadata": {"name": "x"}, "data": "text"}"#,
            "data",
        ),
        (
            "configmaps",
            r#"{"metadata": {"name": "x", "labels": {"n": 1}}}"#,
            "metadata.labels",
        ),
        (
            "configmaps",
            r#"{"metadata": {"name": "x", "finalizers": "f"}}"#,
            "metadata.finalizers",
        ),
        (
            "pods",
            r#"{"metadata": {"name": "x"}, "spec": {}}"#,
            "spec.containers",
        ),
        (
            "pods",
            r#"{"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}}"#,
            "spec.containers[0].image",
        ),
        ("pods", r#"{"metadata": {"name": "x"}, "spec": 7}"#, "spec"),
    ] {
        let path = format!("/api/v1/namespaces/default/{path}");
        let error = failure(
            client
                .request_text(request("POST", &path, "application/json", body))
                .await,
        );
        assert_eq!(error.code, 422, "{body}: {}", error.message);
        assert!(
            error.message.contains(&format!("{field}:")),
            "{body}: {}",
            error.message
        );
    }

    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let created = client
        .request_text(request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/yaml",
            yaml,
        ))
        .await
        .expect("YAML bodies are accepted");
    assert!(created.contains("from-yaml"));

    let unknown = failure(
        client
            .request_text(request(
                "GET",
                "/apis/nope.io/v1/things",
                "application/json",
                "",
            ))
            .await,
    );
    assert_eq!(unknown.code, 404);
    let wrong_name = r#"{"metadata": {"name": "other"}}"#;
    let mismatch = failure(
        client
            .request_text(request(
                "PUT",
                "/api/v1/namespaces/default/configmaps/from-yaml",
                "application/json",
                wrong_name,
            ))
            .await,
    );
    assert_eq!(mismatch.code, 400);
    let review = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}}}"#;
    let answer: Value = serde_json::from_str(
        &client
            .request_text(request(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "application/json",
                review,
            ))
            .await
            .expect("access review"),
    )
    .expect("JSON");
    assert_eq!(answer["status"]["allowed"], true);
    let not_stored = failure(
        client
            .request_text(request(
                "GET",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "application/json",
                "",
            ))
            .await,
    );
    assert_eq!(not_stored.code, 405, "reviews are answered, not stored");
}

/// Collects a watcher's events into a shared list.
fn collect_events(
    stream: impl futures_util::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>>
        + Send
        + 'static,
) -> Arc<Mutex<Vec<String>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(event) = stream.next().await {
            let text = match event {
                Ok(watcher::Event::Apply(cm)) => format!("apply {}", cm.name_any()),
                Ok(watcher::Event::Delete(cm)) => format!("delete {}", cm.name_any()),
                Ok(watcher::Event::Init) => "init".to_string(),
                Ok(watcher::Event::InitApply(cm)) => format!("initapply {}", cm.name_any()),
                Ok(watcher::Event::InitDone) => "initdone".to_string(),
                Err(_) => continue, // connection errors while the proxy is cut
            };
            sink.lock().expect("events").push(text);
        }
    });
    events
}

async fn saw(events: &Arc<Mutex<Vec<String>>>, wanted: &[&str]) {
    eventually(&format!("watch events {wanted:?}"), || {
        let events = events.lock().expect("events").clone();
        async move {
            wanted
                .iter()
                .all(|w| events.iter().any(|e| e == w))
                .then_some(())
        }
    })
    .await
}

#[tokio::test]
async fn watcher_sees_changes_and_resumes_after_a_cut_connection() {
    let server = api_support::server(None, kube_emulator::api::DEFAULT_HISTORY).await;
    let direct = server.client(&server.url);
    let proxy = CutProxy::start(&server.url).await;
    let watched: Api<ConfigMap> = Api::namespaced(server.client(&proxy.url), "default");
    let cms: Api<ConfigMap> = Api::namespaced(direct, "default");
    cms.create(
        &PostParams::default(),
        &config_map("before", json!({}), json!({})),
    )
    .await
    .expect("cm");

    let events = collect_events(watcher(watched, watcher::Config::default()).default_backoff());
    saw(&events, &["init", "initapply before", "initdone"]).await;
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({})),
    )
    .await
    .expect("cm");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .expect("patch");
    saw(&events, &["apply a"]).await;

    proxy.cut();
    cms.create(
        &PostParams::default(),
        &config_map("during", json!({}), json!({})),
    )
    .await
    .expect("cm");
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    proxy.resume();
    saw(&events, &["apply during", "delete a"]).await;
    let inits = events
        .lock()
        .expect("events")
        .iter()
        .filter(|e| *e == "init")
        .count();
    assert_eq!(
        inits, 1,
        "resumed from its resourceVersion, without relisting"
    );
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let test = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(test.client(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({})),
    )
    .await
    .expect("cm");
    let config = watcher::Config::default().streaming_lists();
    let events = collect_events(watcher(cms.clone(), config).default_backoff());
    saw(&events, &["init", "initapply a", "initdone"]).await;
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({}), json!({})),
    )
    .await
    .expect("cm");
    saw(&events, &["apply b"]).await;
}

#[tokio::test]
async fn watcher_relists_when_its_resource_version_is_gone() {
    let server = api_support::server(None, 3).await;
    let proxy = CutProxy::start(&server.url).await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(&server.url), "default");
    let watched: Api<ConfigMap> = Api::namespaced(server.client(&proxy.url), "default");
    cms.create(
        &PostParams::default(),
        &config_map("old", json!({}), json!({})),
    )
    .await
    .expect("cm");
    let events = collect_events(watcher(watched, watcher::Config::default()).default_backoff());
    saw(&events, &["initapply old", "initdone"]).await;

    proxy.cut();
    cms.delete("old", &DeleteParams::default())
        .await
        .expect("delete");
    for n in 0..5 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("new-{n}"), json!({}), json!({})),
        )
        .await
        .expect("cm");
    }
    proxy.resume();
    saw(&events, &["initapply new-0", "initapply new-4"]).await;
    let events = events.lock().expect("events").clone();
    assert_eq!(
        events.iter().filter(|e| *e == "init").count(),
        2,
        "relisted after 410 Gone: {events:?}"
    );
    let relist = events
        .iter()
        .rposition(|e| e == "init")
        .expect("second init");
    assert!(
        !events[relist..].contains(&"initapply old".to_string()),
        "{events:?}"
    );
}

#[tokio::test]
async fn raw_watch_times_out_and_resumes_from_its_resource_version() {
    let test = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(test.client(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("first", json!({"w": "1"}), json!({})),
    )
    .await
    .expect("cm");
    cms.create(
        &PostParams::default(),
        &config_map("unlabelled", json!({}), json!({})),
    )
    .await
    .expect("cm");
    let params = WatchParams::default().labels("w=1").timeout(1); // bookmarks are allowed by default
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&params, "0")
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    let added: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(cm) => Some(cm.name_any()),
            _ => None,
        })
        .collect();
    assert_eq!(
        added,
        ["first"],
        "the current objects matching the selector, then the stream ends"
    );
    let last_rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    match events.last() {
        Some(WatchEvent::Bookmark(bookmark)) => assert_eq!(
            bookmark.metadata.resource_version, last_rv,
            "a timed-out watch ends with a bookmark of how far it got"
        ),
        other => panic!("expected a closing bookmark, got {other:?}"),
    }

    // while nobody watches: a labelled object appears, another stops matching
    cms.create(
        &PostParams::default(),
        &config_map("second", json!({"w": "1"}), json!({})),
    )
    .await
    .expect("cm");
    cms.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "2"}}})),
    )
    .await
    .expect("relabel");
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&params, &last_rv)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("events");
    let seen: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(cm) => Some(format!("added {}", cm.name_any())),
            WatchEvent::Deleted(cm) => Some(format!("deleted {}", cm.name_any())),
            WatchEvent::Modified(cm) => Some(format!("modified {}", cm.name_any())),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        ["added second", "deleted first"],
        "replayed from the resourceVersion, selector applied"
    );
}

/// What the API server asked the kubelet: namespace, pod, container,
/// follow, tailLines.
type LogRequest = (String, String, Option<String>, bool, Option<u64>);

/// A kubelet stand-in: a fixed log, or (with follow) the chunks the test
/// feeds it, and a record of what it was asked.
struct FakeLogs {
    asked: Mutex<Vec<LogRequest>>,
    chunks: Mutex<Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>>,
}

impl kube_emulator::PodStreams for FakeLogs {
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        follow: bool,
        tail_lines: Option<u64>,
    ) -> futures_util::future::BoxFuture<
        'static,
        anyhow::Result<futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>>,
    > {
        self.asked.lock().expect("asked").push((
            namespace.into(),
            pod.into(),
            container.map(str::to_string),
            follow,
            tail_lines,
        ));
        let followed = if follow {
            self.chunks.lock().expect("chunks").take()
        } else {
            None
        };
        Box::pin(async move {
            let stream: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> =
                match followed {
                    Some(rx) => Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (Ok(chunk), rx))
                    })),
                    None => Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(
                        "one\ntwo\n",
                    ))])),
                };
            Ok(stream)
        })
    }
}

#[tokio::test]
async fn pod_logs_come_from_the_kubelet_and_follow_streams() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let logs = Arc::new(FakeLogs {
        asked: Mutex::default(),
        chunks: Mutex::new(Some(rx)),
    });
    let server = api_support::server(Some(logs.clone()), 100).await;
    let client = server.client(&server.url);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("sender", json!({})))
        .await
        .expect("pod");

    let text = pods
        .logs(
            "sender",
            &LogParams {
                tail_lines: Some(5),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(text, "one\ntwo\n");
    let asked = logs.asked.lock().expect("asked")[0].clone();
    assert_eq!(
        asked,
        (
            "default".into(),
            "sender".into(),
            Some("main".into()),
            false,
            Some(5)
        )
    );

    let stream = pods
        .log_stream(
            "sender",
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("follow");
    let mut lines = stream.lines();
    tx.send(bytes::Bytes::from("progress 10%\n"))
        .await
        .expect("chunk");
    assert_eq!(
        lines.next().await.expect("line").expect("text"),
        "progress 10%"
    );
    tx.send(bytes::Bytes::from("progress 100%\n"))
        .await
        .expect("chunk");
    assert_eq!(
        lines.next().await.expect("line").expect("text"),
        "progress 100%"
    );
    drop(tx);
    assert!(
        lines.next().await.is_none(),
        "the stream ends with the container"
    );

    let missing = api_error(pods.logs("absent", &LogParams::default()).await);
    assert_eq!(missing.code, 404);
    let wrong = api_error(
        pods.logs(
            "sender",
            &LogParams {
                container: Some("nope".into()),
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!(wrong.code, 400);
    let put_log = http::Request::builder()
        .method("PUT")
        .uri("/api/v1/namespaces/default/pods/sender/log")
        .header("content-type", "application/json")
        .body(br#"{"metadata": {"name": "sender"}}"#.to_vec())
        .expect("request");
    let refused = api_error(client.request_text(put_log).await);
    assert_eq!(refused.code, 405, "the log is read-only");

    // a cluster without a kubelet answers 404 with a Status
    let bare_server = api_support::server(None, 100).await;
    let bare = bare_server.client(&bare_server.url);
    let bare_pods: Api<Pod> = Api::namespaced(bare, "default");
    bare_pods
        .create(&PostParams::default(), &pod("p", json!({})))
        .await
        .expect("pod");
    assert_eq!(
        api_error(bare_pods.logs("p", &LogParams::default()).await).code,
        404
    );
}

/// Runs kubectl against the cluster; returns (success, stdout, stderr).
async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
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

#[tokio::test]
async fn kubectl_works_unchanged() {
    let test = cluster().await;
    let kubeconfig = test.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, test.cluster.kubeconfig()).expect("kubeconfig");
    let run = |args: &'static [&'static str]| kubectl(&kubeconfig, args);

    let (ok, out, err) = run(&["get", "ns"]).await;
    assert!(
        ok && out.contains("default") && out.contains("kube-system"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&["create", "namespace", "x"]).await;
    assert!(ok && out.contains("namespace/x created"), "{out}{err}");

    let manifest = test.dir.path().join("cm.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: x\ndata:\n  a: \"1\"\n  b: \"2\"\n").expect("manifest");
    let path = manifest.to_str().expect("path").to_string();
    let (ok, out, err) = kubectl(&kubeconfig, &["apply", "-f", &path]).await;
    assert!(ok && out.contains("configmap/cfg created"), "{out}{err}");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: x\ndata:\n  a: \"3\"\n").expect("manifest");
    let (ok, out, err) = kubectl(&kubeconfig, &["apply", "-f", &path]).await;
    assert!(ok && out.contains("configmap/cfg configured"), "{out}{err}");

    let (ok, out, err) = run(&["get", "cm", "cfg", "-n", "x", "-o", "json"]).await;
    assert!(ok, "{err}");
    let cm: Value = serde_json::from_str(&out).expect("kubectl -o json");
    assert_eq!(
        cm["data"],
        json!({"a": "3"}),
        "client-side apply removed b and changed a"
    );
    assert!(
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // typed kubectl commands send protobuf bodies
    let (ok, out, err) = run(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "x",
        "--from-literal=k=v",
    ])
    .await;
    assert!(ok && out.contains("secret/token created"), "{out}{err}");
    let (ok, out, err) = run(&[
        "get",
        "secret",
        "token",
        "-n",
        "x",
        "-o",
        "jsonpath={.data.k}",
    ])
    .await;
    assert!(ok && out == "dg==", "{out}{err}");

    let (ok, out, err) = run(&["get", "pods", "-A"]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["get", "cm", "-n", "x"]).await;
    assert!(ok && out.contains("cfg"), "{out}{err}");

    let (ok, out, err) = run(&["delete", "cm", "cfg", "-n", "x"]).await;
    assert!(ok && out.contains("deleted"), "{out}{err}");
    let (ok, _, err) = run(&["get", "cm", "cfg", "-n", "x"]).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
    let (ok, out, err) = run(&["delete", "namespace", "x"]).await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["get", "ns", "x"]).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[tokio::test]
async fn malformed_requests_get_client_errors_and_never_break_the_server() {
    let test = cluster().await;
    let client = test.client();
    let send = |method: &str, path: String, content_type: &str, body: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .expect("request");
        let client = client.clone();
        async move {
            match client.request_text(request).await {
                Ok(_) => 200,
                Err(kube::Error::Api(status)) => status.code,
                Err(other) => panic!("the server broke the connection: {other}"),
            }
        }
    };
    let collections = [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces",
        "/apis/apps/v1/namespaces/default/deployments",
        "/apis/route.openshift.io/v1/namespaces/default/routes",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    ];
    let bodies = [
        "", "null", "[]", "\"text\"", "5", "{", "{\"metadata\": 5}", "{\"metadata\": {\"name\": 5}}",
        "{\"metadata\": {\"name\": \"ok\"}, \"spec\": [1]}",
        "{\"metadata\": {\"name\": \"ok\"}, \"spec\": {\"ports\": [1, {\"port\": \"x\"}], \"containers\": [5]}}",
        "{\"metadata\": {\"name\": \"ok\", \"ownerReferences\": [1]}}",
        "{\"metadata\": {\"name\": \"ok\", \"generateName\": 3}, \"status\": \"x\"}",
        "{\"apiVersion\": 1, \"kind\": [], \"metadata\": {\"name\": \"ok\"}}",
    ];
    let patch_types = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
    ];
    for collection in collections {
        for body in bodies {
            let code = send("POST", collection.to_string(), "application/json", body).await;
            assert!(code < 500, "POST {collection} {body}: {code}");
        }
        let object = format!("{collection}/ok");
        for body in bodies {
            let code = send("PUT", object.clone(), "application/json", body).await;
            assert!(code < 500, "PUT {object} {body}: {code}");
            for patch_type in patch_types {
                let query = "?fieldManager=test";
                let code = send("PATCH", format!("{object}{query}"), patch_type, body).await;
                assert!(code < 500, "PATCH {object} {patch_type} {body}: {code}");
                let status =
                    send("PATCH", format!("{object}/status{query}"), patch_type, body).await;
                assert!(
                    status < 500,
                    "PATCH {object}/status {patch_type} {body}: {status}"
                );
            }
        }
        let code = send(
            "DELETE",
            object.clone(),
            "application/json",
            "{\"preconditions\": 5}",
        )
        .await;
        assert!(code < 500, "DELETE {object}: {code}");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("still-fine", json!({}), json!({})),
    )
    .await
    .expect("the server still serves");
}

#[tokio::test]
async fn up_command_serves_a_pair_kubectl_can_use() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .arg("up")
        .arg("--no-docker")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting kube-emulator up");
    let written = kubeconfig.clone();
    eventually("the kubeconfig", || {
        let text = std::fs::read_to_string(&written).unwrap_or_default();
        async move { text.contains("user: destination-developer\n").then_some(()) }
    })
    .await;
    let (ok, out, err) = kubectl(
        &kubeconfig,
        &["--context", "source", "create", "namespace", "only-here"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl(
        &kubeconfig,
        &["--context", "source", "get", "ns", "only-here"],
    )
    .await;
    assert!(ok && out.contains("only-here"), "{out}{err}");
    let (ok, _, err) = kubectl(
        &kubeconfig,
        &["--context", "destination", "get", "ns", "only-here"],
    )
    .await;
    assert!(
        !ok && err.contains("NotFound"),
        "the clusters are separate: {err}"
    );
    up.kill().await.expect("stopping kube-emulator up");
}
