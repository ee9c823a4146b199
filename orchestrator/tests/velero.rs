//! The orchestrator's Velero client against two emulated clusters with
//! their Velero and a shared bucket (no Docker): preflight, the initial
//! backup created once and synced to the destination, the restore with
//! the migration's settings, per-resource results of a restore that
//! partially fails, and rollback cleanup.
//!
//! The client's functions make one pass; the tests call them again until
//! Velero is done, as the migration engine does.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::ResourceExt as _;
use kube_emulator::{ClusterPair, VeleroOptions};
use orchestrator::clusters::Cluster;
use orchestrator::names::VELERO_MIGRATION_LABEL;
use orchestrator::velero::backup::{backup_name, backup_spec, backup_visible, ensure_backup};
use orchestrator::velero::cleanup::{cleanup, Cleanup};
use orchestrator::velero::modifiers::{self, Rewrites};
use orchestrator::velero::preflight::{self, Needs, Version};
use orchestrator::velero::restore::{
    ensure_restore, prepare_modifiers, restore_name, restore_spec,
};
use orchestrator::velero::results::{self, Severity};
use orchestrator::velero::{Kind, Phase, VeleroConfig};
use serde_json::{json, Value};

const INTERNAL: &str = "image-registry.openshift-image-registry.svc:5000";
const MIGRATION: &str = "shop-move";

fn clusters(pair: &ClusterPair) -> (Cluster, Cluster) {
    let side = |side: &'static str, cluster: &kube_emulator::Cluster| Cluster {
        side,
        context: cluster.name.clone(),
        client: cluster.client.clone(),
    };
    (
        side("source", &pair.source),
        side("destination", &pair.destination),
    )
}

/// Calls `pass` until it returns a value (at most 90 s), as the engine
/// would after each `Wait`.
async fn until<T, F, Fut>(what: &str, mut pass: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match pass().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(e) => eprintln!("{what}: transient: {e:#}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `objects` (each with apiVersion and kind) in `namespace`
/// (`None`: cluster-scoped), resolving their resources by discovery.
async fn seed(client: &kube::Client, namespace: Option<&str>, objects: Vec<Value>) {
    for value in objects {
        let object: DynamicObject = serde_json::from_value(value).expect("a test object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("a group/version/kind");
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .expect("the resource is served");
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", object.name_any()));
    }
}

/// `name` with a ConfigMap `settings`, on `client`.
async fn settings_namespace(client: &kube::Client, name: &str) {
    seed(
        client,
        None,
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})],
    )
    .await;
    seed(
        client,
        Some(name),
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"currency": "EUR"}})],
    )
    .await;
}

fn routes(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("route.openshift.io", "v1", "Route"));
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// The application: a Deployment running an internal image, a ConfigMap,
/// a Secret, a ServiceAccount with a RoleBinding, a Route with a generated
/// host, and a Secret of the migration's own transfer (left out).
async fn shop(source: &kube::Client) {
    settings_namespace(source, "shop").await;
    // Cluster-wide rights of the namespace's ServiceAccount: Velero takes
    // them along as related items, since includeClusterResources is unset.
    seed(
        source,
        None,
        vec![json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "shop-sa-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop-sa", "namespace": "shop"}],
        })],
    )
    .await;
    let labels = json!({"app": "shop"});
    seed(
        source,
        Some("shop"),
        vec![
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": labels},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [
                            {"name": "web", "image": format!("{INTERNAL}/shop/web:v1")},
                            {"name": "sidecar", "image": "quay.io/example/sidecar:1"},
                        ]},
                    },
                },
            }),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"}, "stringData": {"password": "hunter2"}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop-sa"}}),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "shop-sa-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "shop-sa", "namespace": "shop"}],
            }),
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "mover-sender-data", "labels": {"mover.io/transfer": MIGRATION}},
                "stringData": {"k": "v"},
            }),
            json!({
                "apiVersion": "route.openshift.io/v1", "kind": "Route",
                "metadata": {"name": "web", "annotations": {"openshift.io/host.generated": "true"}},
                "spec": {"host": "web-shop.apps.source.example", "to": {"kind": "Service", "name": "web"}},
            }),
        ],
    )
    .await;
}

fn mapping() -> BTreeMap<String, String> {
    BTreeMap::from([("shop".to_string(), "shop-copy".to_string())])
}

/// Runs the backup to its end on the source and until the destination
/// sees it; returns the phase there.
async fn backed_up(source: &Cluster, destination: &Cluster, cfg: &VeleroConfig) -> Phase {
    let name = backup_name(MIGRATION);
    let spec = backup_spec(&["shop".to_string()], cfg);
    let phase = until("the backup to finish", || async {
        let phase = ensure_backup(source, cfg, MIGRATION, &name, spec.clone()).await?;
        Ok(phase.is_final().then_some(phase))
    })
    .await;
    assert_eq!(phase, Phase::Completed { warnings: 0 });
    until("the destination to sync the backup", || async {
        Ok(backup_visible(destination, cfg, &name)
            .await?
            .filter(Phase::is_final))
    })
    .await
}

/// Restores with `modifiers` (the ConfigMap) and returns the final phase.
async fn restored(
    destination: &Cluster,
    cfg: &VeleroConfig,
    modifiers: Option<&ConfigMap>,
) -> Phase {
    let name = restore_name(MIGRATION);
    let modifier = modifiers.and_then(|m| m.metadata.name.as_deref());
    let spec = restore_spec(&backup_name(MIGRATION), &mapping(), modifier);
    until("the restore to finish", || async {
        if let Some(configmap) = modifiers {
            prepare_modifiers(destination, cfg, &name, configmap).await?;
        }
        let phase = ensure_restore(destination, cfg, MIGRATION, &name, spec.clone()).await?;
        Ok(phase.is_final().then_some(phase))
    })
    .await
}

/// A `velero` Deployment running `image`.
fn velero_deployment_json(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "velero"},
        "spec": {
            "selector": {"matchLabels": {"component": "velero"}},
            "template": {
                "metadata": {"labels": {"component": "velero"}},
                "spec": {"containers": [{"name": "velero", "image": image}]},
            },
        },
    })
}

async fn velero_deployment(client: &kube::Client, image: &str) {
    seed(client, Some("velero"), vec![velero_deployment_json(image)]).await;
}

/// The results of Backup or Restore `name`, read through DownloadRequests
/// until Velero has answered.
async fn results_of(
    cluster: &Cluster,
    cfg: &VeleroConfig,
    target: results::Target,
    name: &str,
) -> results::Results {
    until("the results", || async {
        Ok(
            match results::fetch(cluster, cfg, MIGRATION, target, name).await? {
                results::Fetch::Ready(results) => Some(results),
                results::Fetch::NotYet => None,
            },
        )
    })
    .await
}

/// Every object of `kind` in Velero's namespace.
async fn listed(cluster: &Cluster, cfg: &VeleroConfig, kind: Kind) -> Vec<DynamicObject> {
    kind.api(cluster, cfg)
        .list(&Default::default())
        .await
        .expect("listing Velero objects")
        .items
}

/// Asserts that problem `i` of `text` is about `cluster` and starts with
/// `start` after the cluster's name.
fn assert_problem(text: &[String], i: usize, cluster: &Cluster, start: &str) {
    let wanted = format!("{}: {start}", cluster.describe());
    assert!(
        text.get(i).is_some_and(|p| p.starts_with(&wanted)),
        "problem {i} should start with {wanted:?}: {text:#?}"
    );
}

/// Preflight's problems, as the report prints them.
async fn problems(
    source: &Cluster,
    destination: &Cluster,
    cfg: &VeleroConfig,
    needs: &Needs<'_>,
) -> Vec<String> {
    let report = preflight::check(source, destination, cfg, needs)
        .await
        .expect("preflight reaches both clusters");
    report.problems.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn preflight_checks_both_velero_installs_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(dir.path(), false).await.unwrap();
    let (source, destination) = clusters(&pair);
    velero_deployment(&pair.source.client, "velero/velero:v1.11.1").await;
    velero_deployment(&pair.destination.client, "docker.io/velero/velero:v1.14.0").await;
    let namespaces = mapping();
    let needs = Needs {
        migration: MIGRATION,
        namespaces: &namespaces,
        resource_modifiers: true,
    };
    let cfg = VeleroConfig::default();
    let report = until("Velero's BackupStorageLocations", || async {
        let report = preflight::check(&source, &destination, &cfg, &needs).await?;
        Ok(report
            .problems
            .iter()
            .all(|p| !p.object.contains("BackupStorageLocation"))
            .then_some(report))
    })
    .await;
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 1, "{text:#?}");
    assert_problem(
        &text,
        0,
        &source,
        "Velero server in velero: version 1.11.1 is too old",
    );
    assert!(text[0].contains("resource modifiers"), "{text:#?}");
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    assert_eq!(
        report.versions,
        vec![
            ("source".to_string(), Version::new(1, 11, 1)),
            ("destination".to_string(), Version::new(1, 14, 0)),
        ]
    );
    // Without resource modifiers 1.11 is enough.
    let plain = Needs {
        resource_modifiers: false,
        ..needs.clone()
    };
    assert!(preflight::check(&source, &destination, &cfg, &plain)
        .await
        .unwrap()
        .passed());
    // Reading versions from the Deployments changed nothing.
    assert!(listed(&source, &cfg, Kind::ServerStatusRequest)
        .await
        .is_empty());

    // Another migration's backup of the same namespace, still running
    // (Backups have no status subresource: a status written on creation
    // stays, and Velero leaves a Backup that is not New alone).
    seed(
        &pair.source.client,
        Some("velero"),
        vec![json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": "other-initial", "labels": {VELERO_MIGRATION_LABEL: "other"}},
            "spec": {"includedNamespaces": ["shop", "db"]},
            "status": {"phase": "InProgress"},
        })],
    )
    .await;
    let text = problems(&source, &destination, &cfg, &plain).await;
    assert_eq!(text.len(), 1, "{text:#?}");
    assert_problem(
        &text,
        0,
        &source,
        "Backup velero/other-initial: migration \"other\" is still running on the same namespaces",
    );
    Kind::Backup
        .api(&source, &cfg)
        .delete("other-initial", &Default::default())
        .await
        .unwrap();

    // Velero elsewhere, a location that does not exist, a destination
    // bucket prefix that would never show the source's backups.
    let elsewhere = VeleroConfig {
        namespace: "openshift-adp".into(),
        storage_location: None,
    };
    let text = problems(&source, &destination, &elsewhere, &plain).await;
    assert_eq!(text.len(), 2, "{text:#?}");
    assert_problem(&text, 0, &source, "Namespace openshift-adp: does not exist");
    assert_problem(&text, 1, &destination, "Namespace openshift-adp");

    let named = VeleroConfig {
        storage_location: Some("nope".into()),
        ..VeleroConfig::default()
    };
    let text = problems(&source, &destination, &named, &plain).await;
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(text
        .iter()
        .all(|p| p.contains("no BackupStorageLocation named \"nope\"")));

    Kind::BackupStorageLocation
        .api(&destination, &cfg)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"objectStorage": {"prefix": "elsewhere"}}})),
        )
        .await
        .unwrap();
    let text = problems(&source, &destination, &cfg, &plain).await;
    assert_eq!(text.len(), 1, "{text:#?}");
    assert_problem(
        &text,
        0,
        &destination,
        "BackupStorageLocation velero/default: stores in",
    );
    assert!(text[0].contains("\"elsewhere\""), "{text:#?}");
}

#[tokio::test]
async fn the_backup_is_created_once_synced_and_restored_into_the_mapped_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(dir.path(), false).await.unwrap();
    let (source, destination) = clusters(&pair);
    let cfg = VeleroConfig::default();
    shop(&pair.source.client).await;

    // A restore asked for before the destination has the backup is not
    // created (Velero would fail it validation for good).
    let early = ensure_restore(
        &destination,
        &cfg,
        MIGRATION,
        &restore_name(MIGRATION),
        restore_spec(&backup_name(MIGRATION), &mapping(), None),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{early:#}").contains("Backup \"shop-move-initial\" is not there"),
        "{early:#}"
    );
    assert!(listed(&destination, &cfg, Kind::Restore).await.is_empty());

    let synced = backed_up(&source, &destination, &cfg).await;
    assert_eq!(synced, Phase::Completed { warnings: 0 });
    let backup_results = results_of(
        &source,
        &cfg,
        results::Target::Backup,
        &backup_name(MIGRATION),
    )
    .await;
    assert_eq!(backup_results.messages(), Vec::new(), "a clean backup");
    // Another pass observes the same Backup: not created twice.
    let backups = Kind::Backup.api(&source, &cfg);
    let first = backups.get(&backup_name(MIGRATION)).await.unwrap();
    let again = ensure_backup(
        &source,
        &cfg,
        MIGRATION,
        &backup_name(MIGRATION),
        json!({"includedNamespaces": ["other"]}),
    )
    .await
    .unwrap();
    assert!(again.is_final());
    let second = backups.get(&backup_name(MIGRATION)).await.unwrap();
    assert_eq!(first.uid(), second.uid());
    assert_eq!(
        second.data["spec"]["includedNamespaces"],
        json!(["shop"]),
        "the spec is never changed"
    );
    assert_eq!(second.labels()[VELERO_MIGRATION_LABEL], MIGRATION);
    let stored = pair
        .shared
        .velero_bucket
        .join("backups")
        .join(backup_name(MIGRATION));
    assert!(stored
        .join("resources/deployments.apps/namespaces/shop/web.json")
        .is_file());
    assert!(
        !stored
            .join("resources/secrets/namespaces/shop/mover-sender-data.json")
            .exists(),
        "transfer objects stay out"
    );

    let rules = modifiers::rules(
        &modifiers::source_objects(&source, &["shop".to_string()])
            .await
            .unwrap(),
        &Rewrites {
            source_registry_hosts: vec![INTERNAL.into()],
            destination_registry_host: Some("registry.destination:5000".into()),
            namespaces: mapping(),
            storage_classes: BTreeMap::new(),
        },
    );
    // The Deployment's internal image and the Route's generated host.
    assert_eq!(rules.rules.len(), 2, "{rules:#?}");
    let document = rules.document().unwrap();
    let configmap = modifiers::configmap(&cfg, MIGRATION, &document).unwrap();
    let phase = restored(&destination, &cfg, Some(&configmap)).await;
    assert_eq!(phase.name(), "Completed", "{phase:?}");
    let stored = Api::<ConfigMap>::namespaced(destination.client.clone(), "velero")
        .get(&modifiers::configmap_name(MIGRATION))
        .await
        .unwrap();
    let yaml = &stored.data.unwrap()[modifiers::DATA_KEY];
    assert_eq!(
        serde_yaml::from_str::<modifiers::ResourceModifiers>(yaml).unwrap(),
        document
    );
    let restore = Kind::Restore
        .api(&destination, &cfg)
        .get(&restore_name(MIGRATION))
        .await
        .unwrap();
    assert_eq!(restore.labels()[VELERO_MIGRATION_LABEL], MIGRATION);
    assert_eq!(restore.data["spec"]["existingResourcePolicy"], "none");

    let deployment = Api::<Deployment>::namespaced(destination.client.clone(), "shop-copy")
        .get("web")
        .await
        .expect("the Deployment in shop-copy");
    let containers = &deployment.spec.template.spec.as_ref().unwrap().containers;
    assert_eq!(
        containers[0].image.as_deref(),
        Some("registry.destination:5000/shop-copy/web:v1"),
        "the internal image points at the destination's registry"
    );
    assert_eq!(
        containers[1].image.as_deref(),
        Some("quay.io/example/sidecar:1")
    );
    assert_eq!(
        deployment.labels()["velero.io/restore-name"],
        restore_name(MIGRATION)
    );
    assert_eq!(
        deployment.labels()["velero.io/backup-name"],
        backup_name(MIGRATION)
    );
    Api::<ConfigMap>::namespaced(destination.client.clone(), "shop-copy")
        .get("settings")
        .await
        .unwrap();
    Api::<Secret>::namespaced(destination.client.clone(), "shop-copy")
        .get("credentials")
        .await
        .unwrap();
    assert!(
        Api::<Secret>::namespaced(destination.client.clone(), "shop-copy")
            .get_opt("mover-sender-data")
            .await
            .unwrap()
            .is_none()
    );
    Api::<ServiceAccount>::namespaced(destination.client.clone(), "shop-copy")
        .get("shop-sa")
        .await
        .unwrap();
    let binding = Api::<RoleBinding>::namespaced(destination.client.clone(), "shop-copy")
        .get("shop-sa-view")
        .await
        .unwrap();
    assert_eq!(binding.role_ref.name, "view");
    let cluster_binding = Api::<ClusterRoleBinding>::all(destination.client.clone())
        .get("shop-sa-nodes")
        .await
        .expect("the ServiceAccount's ClusterRoleBinding comes along");
    let subjects = cluster_binding.subjects.unwrap_or_default();
    assert_eq!(subjects[0].namespace.as_deref(), Some("shop-copy"));
    let route = routes(&destination.client, "shop-copy")
        .get("web")
        .await
        .unwrap();
    assert_ne!(
        route.data.pointer("/spec/host"),
        Some(&json!("web-shop.apps.source.example")),
        "the generated host is dropped: {:?}",
        route.data
    );
    assert_eq!(route.data.pointer("/spec/to/name"), Some(&json!("web")));
    assert!(Api::<Namespace>::all(destination.client.clone())
        .get_opt("shop")
        .await
        .unwrap()
        .is_none());
}

/// A Widget whose CRD the destination has as cluster-scoped: with
/// `existingResourcePolicy: none` the source's CRD does not replace it, so
/// the namespaced Widget fails and the rest is restored.
#[tokio::test]
async fn a_restore_that_partially_fails_is_reported_per_resource() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(dir.path(), false).await.unwrap();
    let (source, destination) = clusters(&pair);
    let cfg = VeleroConfig::default();
    settings_namespace(&pair.source.client, "shop").await;
    widgets_crd(&pair.source.client, "Namespaced").await;
    widgets_crd(&pair.destination.client, "Cluster").await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3},
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(pair.source.client.clone(), "shop", &resource)
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    // What DVM made on the destination before the restore (a namespace
    // and a bound PVC), and a ConfigMap someone changed there: all kept.
    seed(
        &pair.destination.client,
        None,
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-copy"}})],
    )
    .await;
    seed(
        &pair.destination.client,
        Some("shop-copy"),
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"currency": "USD"}}),
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "labels": {"mover.io/migrated-by": MIGRATION}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }),
        ],
    )
    .await;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(destination.client.clone(), "shop-copy");
    let pvc_before = until("the PVC to be bound", || async {
        let pvc = pvcs.get("data").await?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && pvc.spec.as_ref().is_some_and(|s| s.volume_name.is_some());
        Ok(bound.then_some(pvc))
    })
    .await;

    backed_up(&source, &destination, &cfg).await;
    let phase = restored(&destination, &cfg, None).await;
    let Phase::PartiallyFailed { errors, warnings } = phase else {
        panic!("expected PartiallyFailed, got {phase:?}");
    };
    assert_eq!(errors, 1);
    assert!(warnings >= 1, "the existing ConfigMap is a warning");
    let settings = Api::<ConfigMap>::namespaced(destination.client.clone(), "shop-copy")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(
        settings.data.unwrap()["currency"],
        "USD",
        "existingResourcePolicy none keeps it"
    );
    let pvc_after = pvcs.get("data").await.unwrap();
    assert_eq!(
        pvc_before.metadata.resource_version,
        pvc_after.metadata.resource_version
    );
    assert!(
        !pvc_after.labels().contains_key("velero.io/restore-name"),
        "the restore never touched the PVC: {:?}",
        pvc_after.metadata
    );

    // The results through a DownloadRequest, as `velero restore describe
    // --details` reads them, split per resource.
    let name = restore_name(MIGRATION);
    let results = results_of(&destination, &cfg, results::Target::Restore, &name).await;
    let errors: Vec<_> = results
        .messages()
        .into_iter()
        .filter(|m| m.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].scope, "shop-copy");
    assert!(errors[0].text.contains("w1"), "{errors:#?}");
    assert!(
        errors[0]
            .resource
            .as_deref()
            .is_some_and(|r| r.contains("w1")),
        "{errors:#?}"
    );
    let requests = listed(&destination, &cfg, Kind::DownloadRequest).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].data["spec"]["target"],
        json!({"kind": "RestoreResults", "name": name})
    );
}

async fn widgets_crd(client: &kube::Client, scope: &str) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    kube::runtime::wait::await_condition(
        crds,
        "widgets.example.com",
        kube::runtime::conditions::is_crd_established(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn rollback_cleanup_deletes_restores_the_modifiers_and_backups_with_their_bucket_copy() {
    let dir = tempfile::tempdir().unwrap();
    let pair = ClusterPair::start(dir.path(), false).await.unwrap();
    let (source, destination) = clusters(&pair);
    let cfg = VeleroConfig::default();
    settings_namespace(&pair.source.client, "shop").await;
    backed_up(&source, &destination, &cfg).await;
    let rule = modifiers::Rule {
        conditions: modifiers::Conditions {
            group_resource: "configmaps".into(),
            resource_name_regex: Some("^settings$".into()),
            namespaces: vec!["shop".into()],
        },
        patches: vec![modifiers::JsonPatch {
            operation: "replace".into(),
            path: "/data/currency".into(),
            value: Some("CHF".into()),
        }],
        merge_patches: Vec::new(),
    };
    let document = modifiers::ResourceModifiers {
        version: "v1".into(),
        resource_modifier_rules: vec![rule],
    };
    let configmap = modifiers::configmap(&cfg, MIGRATION, &document).unwrap();
    restored(&destination, &cfg, Some(&configmap)).await;
    let settings = Api::<ConfigMap>::namespaced(destination.client.clone(), "shop-copy")
        .get("settings")
        .await
        .unwrap();
    assert_eq!(settings.data.unwrap()["currency"], "CHF");

    let first = cleanup(&source, &destination, &cfg, MIGRATION)
        .await
        .unwrap();
    let Cleanup::Pending(pending) = first else {
        panic!("the backups cannot be gone after one pass");
    };
    assert!(
        pending
            .iter()
            .any(|p| p.contains("Backup shop-move-initial")),
        "{pending:#?}"
    );
    assert!(Kind::Restore
        .api(&destination, &cfg)
        .get_opt(&restore_name(MIGRATION))
        .await
        .unwrap()
        .is_none());
    assert!(
        Api::<ConfigMap>::namespaced(destination.client.clone(), "velero")
            .get_opt(&modifiers::configmap_name(MIGRATION))
            .await
            .unwrap()
            .is_none()
    );
    // Velero deletes the backup and its bucket copy, then the request;
    // the destination's copy goes after the source's.
    until("cleanup to finish", || async {
        let pass = cleanup(&source, &destination, &cfg, MIGRATION).await?;
        assert!(
            listed(&source, &cfg, Kind::DeleteBackupRequest).await.len() <= 1,
            "one DeleteBackupRequest per Backup"
        );
        Ok((pass == Cleanup::Done).then_some(()))
    })
    .await;
    assert!(!pair
        .shared
        .velero_bucket
        .join("backups")
        .join(backup_name(MIGRATION))
        .exists());
    // The BSL sync (every second here) does not bring anything back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for cluster in [&source, &destination] {
        assert!(listed(cluster, &cfg, Kind::Backup).await.is_empty());
        assert!(listed(cluster, &cfg, Kind::Restore).await.is_empty());
    }
    assert_eq!(
        cleanup(&source, &destination, &cfg, MIGRATION)
            .await
            .unwrap(),
        Cleanup::Done
    );
}

/// Velero installed as OADP does (namespace `openshift-adp`, a BSL of its
/// own name) and pinned by digest, so only a ServerStatusRequest can tell
/// the version: preflight waits for the answer, reads it, and removes the
/// request.
#[tokio::test]
async fn preflight_asks_the_server_its_version_where_the_image_has_no_tag() {
    let dir = tempfile::tempdir().unwrap();
    let options = VeleroOptions {
        namespace: "openshift-adp".into(),
        storage_location: "dpa-1".into(),
        server_version: "v1.11.1".into(),
        ..VeleroOptions::default()
    };
    let pair = ClusterPair::start_with_velero(dir.path(), false, &options)
        .await
        .unwrap();
    let (source, destination) = clusters(&pair);
    let cfg = VeleroConfig {
        namespace: "openshift-adp".into(),
        storage_location: None,
    };
    seed(
        &pair.source.client,
        Some("openshift-adp"),
        vec![velero_deployment_json(
            "registry.example/oadp/velero@sha256:0123",
        )],
    )
    .await;
    let namespaces = mapping();
    let needs = Needs {
        migration: MIGRATION,
        namespaces: &namespaces,
        resource_modifiers: true,
    };
    let first = preflight::check(&source, &destination, &cfg, &needs)
        .await
        .unwrap();
    assert_eq!(first.pending.len(), 2, "{first:#?}");
    assert!(
        first.pending[0].contains("ServerStatusRequest openshift-adp/shop-move-version"),
        "{first:#?}"
    );
    let report = until("Velero's answers", || async {
        let report = preflight::check(&source, &destination, &cfg, &needs).await?;
        Ok(report.pending.is_empty().then_some(report))
    })
    .await;
    assert_eq!(
        report.versions,
        vec![
            ("source".to_string(), Version::new(1, 11, 1)),
            ("destination".to_string(), Version::new(1, 11, 1)),
        ]
    );
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    for (i, cluster) in [&source, &destination].into_iter().enumerate() {
        assert_problem(
            &text,
            i,
            cluster,
            "Velero server in openshift-adp: version 1.11.1 is too old",
        );
    }
    for cluster in [&source, &destination] {
        assert!(listed(cluster, &cfg, Kind::ServerStatusRequest)
            .await
            .is_empty());
    }
}
