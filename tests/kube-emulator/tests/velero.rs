//! The emulated Velero across an emulated cluster pair: a Backup in the
//! source lands in the shared bucket, shows up in the destination through
//! the sync, and a Restore there recreates the selected objects in a
//! renamed namespace; restores over existing objects, of resources the
//! destination lacks, and of missing backups end as Velero's do.

mod controller_support;
mod velero_support;

use controller_support::from_json;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::ResourceExt;
use kube_emulator::ClusterPair;
use serde_json::json;
use velero_support::{create, finished, namespace, request, restore_results, synced, velero};

/// The source namespace `shop`: labelled objects of several kinds, an
/// unlabelled ConfigMap, and a PVC.
async fn shop(source: &kube::Client) -> Service {
    namespace(source, "shop").await;
    let ns = "shop";
    let labels = json!({ "app": "shop" });
    create::<ConfigMap>(source, ns, json!({ "metadata": { "name": "settings", "labels": labels }, "data": { "currency": "EUR" } })).await;
    create::<ConfigMap>(
        source,
        ns,
        json!({ "metadata": { "name": "unlabelled" }, "data": { "x": "y" } }),
    )
    .await;
    create::<Secret>(source, ns, json!({ "metadata": { "name": "credentials", "labels": labels }, "data": { "password": "aHVudGVyMg==" } })).await;
    create::<Deployment>(
        source,
        ns,
        json!({
            "metadata": { "name": "web", "labels": labels },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": { "containers": [{ "name": "web", "image": "shop:1" }] },
                },
            },
        }),
    )
    .await;
    create::<PersistentVolumeClaim>(
        source,
        ns,
        json!({
            "metadata": { "name": "data", "labels": labels },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
        }),
    )
    .await;
    create::<Service>(
        source,
        ns,
        json!({
            "metadata": { "name": "web", "labels": labels },
            "spec": { "type": "NodePort", "selector": labels, "ports": [{ "port": 80, "targetPort": 8080 }] },
        }),
    )
    .await
}

#[tokio::test]
async fn a_backup_of_the_source_restores_into_a_renamed_namespace_of_the_destination() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pair = ClusterPair::start(dir.path(), false)
        .await
        .expect("starting the clusters");
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    let source_service = shop(source).await;

    let source_backups = velero(source, "Backup");
    request(
        &source_backups,
        "Backup",
        "shop-backup",
        json!({
            "includedNamespaces": ["shop"],
            // The Deployment controller's ReplicaSet and pods stay out, as
            // a migration's backup leaves them out.
            "excludedResources": ["persistentvolumeclaims", "persistentvolumes", "imagestreams.image.openshift.io", "pods", "replicasets.apps"],
            "labelSelector": { "matchLabels": { "app": "shop" } },
        }),
    )
    .await;
    let status = finished(&source_backups, "shop-backup").await;
    assert_eq!(status["phase"], "Completed", "{status}");
    // The namespace, settings, credentials, web (Deployment), web (Service).
    assert_eq!(status["progress"]["totalItems"], 5, "{status}");
    assert_eq!(status["progress"]["itemsBackedUp"], 5, "{status}");
    assert!(
        status["startTimestamp"].is_string() && status["completionTimestamp"].is_string(),
        "{status}"
    );
    let bucket = &pair.shared.velero_bucket;
    let stored = bucket.join("backups/shop-backup");
    assert!(stored.join("velero-backup.json").is_file());
    assert!(stored
        .join("resources/configmaps/namespaces/shop/settings.json")
        .is_file());
    assert!(stored
        .join("resources/deployments.apps/namespaces/shop/web.json")
        .is_file());
    assert!(stored
        .join("resources/namespaces/cluster/shop.json")
        .is_file());
    assert!(!stored
        .join("resources/configmaps/namespaces/shop/unlabelled.json")
        .exists());
    assert!(!stored.join("resources/persistentvolumeclaims").exists());

    // The destination learns of the backup from the bucket.
    let destination_backups = velero(destination, "Backup");
    let synced = synced(&destination_backups, "shop-backup").await;
    assert_eq!(
        synced.data.pointer("/status/phase"),
        Some(&json!("Completed"))
    );
    assert_eq!(
        synced
            .labels()
            .get("velero.io/storage-location")
            .map(String::as_str),
        Some("default")
    );
    let location = velero(destination, "BackupStorageLocation")
        .get("default")
        .await
        .expect("the default BSL");
    assert_eq!(
        location.data.pointer("/status/phase"),
        Some(&json!("Available"))
    );

    let restores = velero(destination, "Restore");
    request(
        &restores,
        "Restore",
        "shop-restore",
        json!({ "backupName": "shop-backup", "namespaceMapping": { "shop": "shop-copy" } }),
    )
    .await;
    let status = finished(&restores, "shop-restore").await;
    assert_eq!(status["phase"], "Completed", "{status}");
    assert!(
        status.get("errors").is_none(),
        "zero errors are omitted: {status}"
    );
    assert_eq!(status["progress"]["itemsRestored"], 5, "{status}");

    let copied = Api::<Namespace>::all(destination.clone())
        .get("shop-copy")
        .await
        .expect("namespace shop-copy");
    assert_eq!(
        copied.labels().get("team").map(String::as_str),
        Some("shop"),
        "the namespace keeps its labels"
    );
    assert!(
        Api::<Namespace>::all(destination.clone())
            .get_opt("shop")
            .await
            .expect("reading namespaces")
            .is_none(),
        "nothing is restored under the source's namespace name"
    );
    let settings = Api::<ConfigMap>::namespaced(destination.clone(), "shop-copy")
        .get("settings")
        .await
        .expect("settings");
    assert_eq!(
        settings
            .data
            .as_ref()
            .and_then(|d| d.get("currency"))
            .map(String::as_str),
        Some("EUR")
    );
    assert_eq!(
        settings.labels().get("app").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        settings
            .labels()
            .get("velero.io/backup-name")
            .map(String::as_str),
        Some("shop-backup")
    );
    assert_eq!(
        settings
            .labels()
            .get("velero.io/restore-name")
            .map(String::as_str),
        Some("shop-restore")
    );
    let credentials = Api::<Secret>::namespaced(destination.clone(), "shop-copy")
        .get("credentials")
        .await
        .expect("credentials");
    assert_eq!(
        credentials.data.as_ref().and_then(|d| d.get("password")),
        Some(&ByteString(b"hunter2".to_vec()))
    );
    let web = Api::<Deployment>::namespaced(destination.clone(), "shop-copy")
        .get("web")
        .await
        .expect("deployment web");
    assert_eq!(web.spec.replicas, Some(3));
    let service = Api::<Service>::namespaced(destination.clone(), "shop-copy")
        .get("web")
        .await
        .expect("service web");
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(ports[0].port, 80);
    assert!(
        service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_ref())
            .is_some(),
        "the destination allocates a cluster IP"
    );
    assert_ne!(service.uid(), source_service.uid());
    assert!(
        Api::<ConfigMap>::namespaced(destination.clone(), "shop-copy")
            .get_opt("unlabelled")
            .await
            .expect("reading")
            .is_none(),
        "the label selector left the unlabelled ConfigMap out"
    );
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(destination.clone(), "shop-copy")
            .get_opt("data")
            .await
            .expect("reading")
            .is_none(),
        "excluded resources are not restored"
    );

    // Restoring again over objects that exist: the changed one is left
    // alone with a warning, the unchanged ones silently.
    let configmaps = Api::<ConfigMap>::namespaced(destination.clone(), "shop-copy");
    let changed = json!({ "data": { "currency": "USD" } });
    configmaps
        .patch("settings", &PatchParams::default(), &Patch::Merge(&changed))
        .await
        .expect("changing settings");
    request(
        &restores,
        "Restore",
        "again",
        json!({ "backupName": "shop-backup", "namespaceMapping": { "shop": "shop-copy" } }),
    )
    .await;
    let status = finished(&restores, "again").await;
    assert_eq!(
        status["phase"], "Completed",
        "warnings do not fail a restore: {status}"
    );
    assert!(
        status.get("errors").is_none(),
        "zero errors are omitted: {status}"
    );
    assert!(
        status["warnings"].as_u64().is_some_and(|w| w >= 1),
        "{status}"
    );
    let warnings = restore_results(bucket, "again")["warnings"]["namespaces"]["shop-copy"].clone();
    let warnings: Vec<String> = from_json(warnings);
    assert!(
        warnings
            .iter()
            .any(|w| w == "could not restore, ConfigMap:settings already exists. Warning: the in-cluster version is different than the backed-up version"),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("credentials")),
        "{warnings:?}"
    );
    let settings = configmaps.get("settings").await.expect("settings");
    assert_eq!(
        settings
            .data
            .as_ref()
            .and_then(|d| d.get("currency"))
            .map(String::as_str),
        Some("USD")
    );

    // With existingResourcePolicy: update the backed-up version wins.
    request(
        &restores,
        "Restore",
        "update",
        json!({ "backupName": "shop-backup", "namespaceMapping": { "shop": "shop-copy" }, "existingResourcePolicy": "update" }),
    )
    .await;
    let status = finished(&restores, "update").await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let settings = configmaps.get("settings").await.expect("settings");
    assert_eq!(
        settings
            .data
            .as_ref()
            .and_then(|d| d.get("currency"))
            .map(String::as_str),
        Some("EUR")
    );
    assert_eq!(
        settings
            .labels()
            .get("velero.io/restore-name")
            .map(String::as_str),
        Some("update"),
        "the patch carries the new restore labels"
    );
    // An unchanged object gets the new restore labels too.
    let credentials = Api::<Secret>::namespaced(destination.clone(), "shop-copy")
        .get("credentials")
        .await
        .expect("credentials");
    assert_eq!(
        credentials
            .labels()
            .get("velero.io/restore-name")
            .map(String::as_str),
        Some("update")
    );
}

/// A namespace `gadgets` holding a custom resource of a CRD only the
/// source has, and a ConfigMap.
async fn gadgets(source: &kube::Client) -> Api<DynamicObject> {
    let crds = Api::<CustomResourceDefinition>::all(source.clone());
    let crd = json!({
        "metadata": { "name": "widgets.example.com" },
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                           "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }],
        },
    });
    crds.create(&PostParams::default(), &from_json(crd))
        .await
        .expect("creating the CRD");
    kube::runtime::wait::await_condition(
        crds,
        "widgets.example.com",
        kube::runtime::conditions::is_crd_established(),
    )
    .await
    .expect("the CRD is established");
    namespace(source, "gadgets").await;
    create::<ConfigMap>(
        source,
        "gadgets",
        json!({ "metadata": { "name": "c" }, "data": { "k": "v" } }),
    )
    .await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widgets = Api::<DynamicObject>::namespaced_with(source.clone(), "gadgets", &resource);
    let widget = json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w1" }, "spec": { "size": 3 } });
    widgets
        .create(&PostParams::default(), &from_json(widget))
        .await
        .expect("creating a widget");
    widgets
}

#[tokio::test]
async fn custom_resources_restore_with_their_crd_and_fail_alone_without_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pair = ClusterPair::start(dir.path(), false)
        .await
        .expect("starting the clusters");
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    gadgets(source).await;

    // Without cluster resources the CRD stays behind, so the destination
    // cannot create the widget: the rest is restored, the restore is
    // PartiallyFailed and says which object failed.
    let source_backups = velero(source, "Backup");
    request(
        &source_backups,
        "Backup",
        "no-crd",
        json!({ "includedNamespaces": ["gadgets"], "includeClusterResources": false }),
    )
    .await;
    assert_eq!(
        finished(&source_backups, "no-crd").await["phase"],
        "Completed"
    );
    // By default the CRD of a backed-up custom resource comes along.
    request(
        &source_backups,
        "Backup",
        "with-crd",
        json!({ "includedNamespaces": ["gadgets"] }),
    )
    .await;
    assert_eq!(
        finished(&source_backups, "with-crd").await["phase"],
        "Completed"
    );
    let bucket = &pair.shared.velero_bucket;
    assert!(!bucket
        .join("backups/no-crd/resources/customresourcedefinitions.apiextensions.k8s.io")
        .exists());
    assert!(bucket
        .join("backups/with-crd/resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json")
        .is_file());

    let destination_backups = velero(destination, "Backup");
    synced(&destination_backups, "no-crd").await;
    synced(&destination_backups, "with-crd").await;
    let restores = velero(destination, "Restore");
    request(
        &restores,
        "Restore",
        "no-crd",
        json!({ "backupName": "no-crd", "namespaceMapping": { "gadgets": "first" } }),
    )
    .await;
    let status = finished(&restores, "no-crd").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["errors"], 1, "{status}");
    let errors: Vec<String> =
        from_json(restore_results(bucket, "no-crd")["errors"]["namespaces"]["first"].clone());
    assert!(
        errors.len() == 1
            && errors[0].starts_with("error restoring widgets.example.com/first/w1: "),
        "{errors:?}"
    );
    assert!(Api::<ConfigMap>::namespaced(destination.clone(), "first")
        .get_opt("c")
        .await
        .expect("reading")
        .is_some());

    request(
        &restores,
        "Restore",
        "with-crd",
        json!({ "backupName": "with-crd", "namespaceMapping": { "gadgets": "second" } }),
    )
    .await;
    let status = finished(&restores, "with-crd").await;
    assert_eq!(status["phase"], "Completed", "{status}");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widget = Api::<DynamicObject>::namespaced_with(destination.clone(), "second", &resource)
        .get("w1")
        .await
        .expect("the widget is restored");
    assert_eq!(widget.data.pointer("/spec/size"), Some(&json!(3)));
}

#[tokio::test]
async fn requests_velero_cannot_carry_out_fail_validation_with_the_reason() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pair = ClusterPair::start(dir.path(), false)
        .await
        .expect("starting the clusters");
    let client = &pair.destination.client;

    let restores = velero(client, "Restore");
    request(
        &restores,
        "Restore",
        "orphan",
        json!({ "backupName": "never-made" }),
    )
    .await;
    let status = finished(&restores, "orphan").await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    assert!(status.get("failureReason").is_none(), "{status}");
    assert_eq!(
        status["validationErrors"],
        json!(["Error retrieving backup: can't find backup velero/never-made: backups.velero.io \"never-made\" not found"]),
        "{status}"
    );

    let backups = velero(client, "Backup");
    request(
        &backups,
        "Backup",
        "elsewhere",
        json!({ "storageLocation": "aws-east" }),
    )
    .await;
    let status = finished(&backups, "elsewhere").await;
    assert_eq!(status["phase"], "FailedValidation", "{status}");
    assert!(status.get("failureReason").is_none(), "{status}");
    assert!(
        status["validationErrors"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("an existing backup storage location was not specified at backup creation time and the default aws-east was not found")),
        "{status}"
    );
    assert!(!pair.shared.velero_bucket.join("backups/elsewhere").exists());
}
