//! What the emulated Velero backs up and restores, as real Velero selects
//! it: related items (a ServiceAccount's ClusterRoleBindings and
//! ClusterRoles), `velero.io/exclude-from-backup`, `orLabelSelectors`,
//! short resource names, the cluster-scope rules of backup and restore,
//! restore validation, restore labels through GetValidName, binding
//! subjects following the namespace mapping, merged ServiceAccounts,
//! skipped completed Jobs and the restore order.

mod controller_support;
mod velero_support;

use std::path::Path;

use controller_support::from_json;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use velero_support::{
    back_up_shop, completed, create, finished, gunzip, namespace, request, set_status,
    shop_backed_up, start_pair, velero,
};

fn stored(bucket: &Path, backup: &str, item: &str) -> bool {
    bucket
        .join(format!("backups/{backup}/resources/{item}.json"))
        .is_file()
}

/// Namespace `shop` with a ServiceAccount bound cluster-wide, labelled
/// ConfigMaps, one excluded from backup, a completed Job; namespace
/// `ignored` excluded from backup by its label.
async fn shop(source: &kube::Client) {
    namespace(source, "shop").await;
    create::<ServiceAccount>(
        source,
        "shop",
        json!({ "metadata": { "name": "runner" }, "imagePullSecrets": [{ "name": "pull" }] }),
    )
    .await;
    let subjects = json!([{ "kind": "ServiceAccount", "name": "runner", "namespace": "shop" }]);
    for (name, role) in [
        ("runner-binding", "runner-role"),
        ("other-binding", "other-role"),
    ] {
        Api::<ClusterRole>::all(source.clone())
            .create(
                &PostParams::default(),
                &from_json(json!({ "metadata": { "name": role }, "rules": [] })),
            )
            .await
            .expect("creating a ClusterRole");
        let subjects = if name == "runner-binding" {
            subjects.clone()
        } else {
            json!([{ "kind": "User", "name": "someone" }])
        };
        Api::<ClusterRoleBinding>::all(source.clone())
            .create(&PostParams::default(), &from_json(json!({
                "metadata": { "name": name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                "subjects": subjects,
            })))
            .await
            .expect("creating a ClusterRoleBinding");
    }
    create::<RoleBinding>(source, "shop", json!({
        "metadata": { "name": "runner-edit" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit" },
        "subjects": subjects,
    }))
    .await;
    for (name, labels) in [
        ("front", json!({ "tier": "front" })),
        ("back", json!({ "tier": "back" })),
        ("plain", json!({})),
        (
            "skip-me",
            json!({ "velero.io/exclude-from-backup": "true" }),
        ),
    ] {
        create::<ConfigMap>(
            source,
            "shop",
            json!({ "metadata": { "name": name, "labels": labels }, "data": { "k": "v" } }),
        )
        .await;
    }
    create::<Job>(source, "shop", json!({
        "metadata": { "name": "done" },
        "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": "busybox" }] } } },
    }))
    .await;
    Api::<Job>::namespaced(source.clone(), "shop")
        .patch_status(
            "done",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "status": { "completionTime": "2026-01-01T00:00:00Z", "succeeded": 1 } }),
            ),
        )
        .await
        .expect("completing the job");
    Api::<Namespace>::all(source.clone())
        .create(&PostParams::default(), &from_json(json!({ "metadata": { "name": "ignored", "labels": { "velero.io/exclude-from-backup": "true" } } })))
        .await
        .expect("creating a namespace");
    create::<ConfigMap>(source, "ignored", json!({ "metadata": { "name": "x" } })).await;
}

#[tokio::test]
async fn backups_take_related_rbac_skip_excluded_items_and_select_by_or_selectors_and_short_names()
{
    let (_dir, pair) = start_pair().await;
    let source = &pair.source.client;
    let bucket = &pair.shared.velero_bucket;
    shop(source).await;
    let backups = velero(source, "Backup");

    request(
        &backups,
        "Backup",
        "related",
        json!({ "includedNamespaces": ["shop", "ignored"] }),
    )
    .await;
    let status = finished(&backups, "related").await;
    assert_eq!(
        status["phase"], "Completed",
        "an excluded namespace is not a missing one: {status}"
    );
    assert!(stored(
        bucket,
        "related",
        "serviceaccounts/namespaces/shop/runner"
    ));
    assert!(stored(
        bucket,
        "related",
        "clusterrolebindings.rbac.authorization.k8s.io/cluster/runner-binding"
    ));
    assert!(stored(
        bucket,
        "related",
        "clusterroles.rbac.authorization.k8s.io/cluster/runner-role"
    ));
    assert!(!stored(
        bucket,
        "related",
        "clusterrolebindings.rbac.authorization.k8s.io/cluster/other-binding"
    ));
    assert!(!stored(
        bucket,
        "related",
        "clusterroles.rbac.authorization.k8s.io/cluster/other-role"
    ));
    assert!(!stored(
        bucket,
        "related",
        "configmaps/namespaces/shop/skip-me"
    ));
    assert!(stored(
        bucket,
        "related",
        "configmaps/namespaces/shop/plain"
    ));
    assert!(stored(bucket, "related", "namespaces/cluster/shop"));
    assert!(!bucket
        .join("backups/related/resources/configmaps/namespaces/ignored")
        .exists());
    assert!(!stored(bucket, "related", "namespaces/cluster/ignored"));

    completed(
        &backups,
        "Backup",
        "no-cluster",
        json!({ "includedNamespaces": ["shop"], "includeClusterResources": false }),
    )
    .await;
    assert!(stored(
        bucket,
        "no-cluster",
        "serviceaccounts/namespaces/shop/runner"
    ));
    assert!(!bucket
        .join("backups/no-cluster/resources/clusterrolebindings.rbac.authorization.k8s.io")
        .exists());
    assert!(
        !bucket
            .join("backups/no-cluster/resources/namespaces")
            .exists(),
        "no Namespace objects either"
    );

    request(&backups, "Backup", "tiers", json!({
        "includedNamespaces": ["shop"],
        "includedResources": ["cm"],
        "orLabelSelectors": [{ "matchLabels": { "tier": "front" } }, { "matchLabels": { "tier": "back" } }],
    }))
    .await;
    assert_eq!(finished(&backups, "tiers").await["phase"], "Completed");
    assert!(stored(bucket, "tiers", "configmaps/namespaces/shop/front"));
    assert!(stored(bucket, "tiers", "configmaps/namespaces/shop/back"));
    assert!(!stored(bucket, "tiers", "configmaps/namespaces/shop/plain"));
    assert!(
        !bucket
            .join("backups/tiers/resources/serviceaccounts")
            .exists(),
        "cm is configmaps only"
    );

    completed(&backups, "Backup", "kinds", json!({ "includedNamespaces": ["shop"], "includedResources": ["ServiceAccount", "rolebinding.rbac.authorization.k8s.io"] })).await;
    assert!(stored(
        bucket,
        "kinds",
        "serviceaccounts/namespaces/shop/runner"
    ));
    assert!(stored(
        bucket,
        "kinds",
        "rolebindings.rbac.authorization.k8s.io/namespaces/shop/runner-edit"
    ));
    assert!(!bucket.join("backups/kinds/resources/configmaps").exists());

    // The migration's own objects are left out by a DoesNotExist selector;
    // the Namespace object still comes with its namespace.
    create::<ConfigMap>(
        source,
        "shop",
        json!({ "metadata": { "name": "transfer", "labels": { "migration.test/transfer": "m1" } } }),
    )
    .await;
    completed(
        &backups,
        "Backup",
        "not-transfer",
        json!({
            "includedNamespaces": ["shop"],
            "labelSelector": { "matchExpressions": [{ "key": "migration.test/transfer", "operator": "DoesNotExist" }] },
        }),
    )
    .await;
    assert!(!stored(
        bucket,
        "not-transfer",
        "configmaps/namespaces/shop/transfer"
    ));
    assert!(stored(
        bucket,
        "not-transfer",
        "configmaps/namespaces/shop/plain"
    ));
    assert!(stored(bucket, "not-transfer", "namespaces/cluster/shop"));

    request(&backups, "Backup", "both", json!({ "labelSelector": { "matchLabels": { "a": "b" } }, "orLabelSelectors": [{ "matchLabels": { "a": "c" } }] })).await;
    let status = finished(&backups, "both").await;
    assert_eq!(status["phase"], "FailedValidation");
    assert_eq!(status["validationErrors"], json!(["encountered labelSelector as well as orLabelSelectors in backup spec, only one can be specified"]));
}

/// The lines of a restore's log that say what was restored, in order.
fn restored_order(bucket: &Path, restore: &str) -> Vec<String> {
    let log = String::from_utf8(gunzip(
        &bucket.join(format!("restores/{restore}/restore-{restore}-logs.gz")),
    ))
    .expect("text");
    log.lines()
        .filter_map(|l| l.split("msg=\"restored ").nth(1))
        .map(|s| s.trim_end_matches('"').to_string())
        .collect()
}

#[tokio::test]
async fn restores_follow_cluster_scope_rules_remap_subjects_merge_service_accounts_and_keep_velero_order(
) {
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    shop(source).await;
    back_up_shop(&pair, "shop").await;
    let restores = velero(destination, "Restore");
    let bindings = Api::<ClusterRoleBinding>::all(destination.clone());

    // Only some namespaces: no cluster-scoped items.
    completed(&restores, "Restore", "scoped", json!({ "backupName": "shop", "includedNamespaces": ["shop"], "namespaceMapping": { "shop": "one" } })).await;
    assert!(bindings
        .get_opt("runner-binding")
        .await
        .expect("reading")
        .is_none());
    assert!(Api::<ConfigMap>::namespaced(destination.clone(), "one")
        .get_opt("plain")
        .await
        .expect("reading")
        .is_some());
    assert!(
        Api::<Job>::namespaced(destination.clone(), "one")
            .get_opt("done")
            .await
            .expect("reading")
            .is_none(),
        "completed Jobs are not restored"
    );

    // Every namespace: cluster-scoped items too, subjects remapped; an
    // existing ServiceAccount is merged; a long restore name is a valid label.
    Api::<Namespace>::all(destination.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "two" } })),
        )
        .await
        .expect("creating namespace two");
    create::<ServiceAccount>(
        destination,
        "two",
        json!({ "metadata": { "name": "runner" }, "imagePullSecrets": [{ "name": "mine" }] }),
    )
    .await;
    let long = format!("everything-{}", "x".repeat(60));
    request(
        &restores,
        "Restore",
        &long,
        json!({ "backupName": "shop", "namespaceMapping": { "shop": "two" } }),
    )
    .await;
    let status = finished(&restores, &long).await;
    assert_eq!(status["phase"], "Completed", "{status}");
    assert!(
        status.get("warnings").is_none(),
        "a merged ServiceAccount is no warning: {status}"
    );
    let binding = bindings
        .get("runner-binding")
        .await
        .expect("the related ClusterRoleBinding");
    let subjects = serde_json::to_value(&binding.subjects).expect("JSON");
    assert_eq!(subjects[0]["namespace"], "two", "{subjects}");
    assert!(Api::<ClusterRole>::all(destination.clone())
        .get_opt("runner-role")
        .await
        .expect("reading")
        .is_some());
    let role_binding = Api::<RoleBinding>::namespaced(destination.clone(), "two")
        .get("runner-edit")
        .await
        .expect("rolebinding");
    assert_eq!(
        serde_json::to_value(&role_binding.subjects).expect("JSON")[0]["namespace"],
        "two"
    );
    let account = Api::<ServiceAccount>::namespaced(destination.clone(), "two")
        .get("runner")
        .await
        .expect("sa");
    let pulls: Vec<String> = account
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(pulls, ["mine", "pull"]);
    let labels = role_binding.labels();
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(long.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        labels.get("velero.io/restore-name"),
        Some(&format!("{}{}", &long[..57], &hash[..6]))
    );
    assert_eq!(
        labels.get("velero.io/backup-name").map(String::as_str),
        Some("shop")
    );
    let namespace = Api::<Namespace>::all(destination.clone())
        .get("two")
        .await
        .expect("namespace");
    assert!(
        !namespace.labels().contains_key("velero.io/restore-name"),
        "namespaces are not labelled"
    );

    // Velero's order: RBAC and ServiceAccounts, then ConfigMaps, then the rest.
    let order = restored_order(&pair.shared.velero_bucket, &long);
    let at = |prefix: &str| {
        order
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {order:?}"))
    };
    assert!(
        at("clusterroles.") < at("clusterrolebindings."),
        "{order:?}"
    );
    assert!(
        at("clusterrolebindings.") < at("rolebindings."),
        "{order:?}"
    );
    assert!(at("rolebindings.") < at("configmaps/"), "{order:?}");
}

#[tokio::test]
async fn restores_velero_refuses_fail_validation_with_its_messages() {
    let (_dir, pair) = start_pair().await;
    let destination = &pair.destination.client;
    shop_backed_up(&pair, "shop").await;
    let restores = velero(destination, "Restore");
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("nodes", json!({ "backupName": "shop", "includedResources": ["nodes"] }), vec!["nodes are non-restorable resources"]),
        ("star", json!({ "backupName": "shop", "excludedResources": ["*"] }), vec!["Invalid included/excluded resource lists: excludes list cannot contain '*'"]),
        ("overlap", json!({ "backupName": "shop", "includedNamespaces": ["a"], "excludedNamespaces": ["a"] }), vec!["Invalid included/excluded namespace lists: excludes list cannot contain an item in the includes list: a"]),
        ("selectors", json!({ "backupName": "shop", "labelSelector": {}, "orLabelSelectors": [{}] }), vec!["encountered labelSelector as well as orLabelSelectors in restore spec, only one can be specified"]),
        ("policy", json!({ "backupName": "shop", "existingResourcePolicy": "replace" }), vec!["Invalid ExistingResourcePolicy: replace"]),
        ("neither", json!({}), vec!["Either a backup or schedule must be specified as a source for the restore, but not both"]),
    ];
    for (name, spec, expected) in cases {
        request(&restores, "Restore", name, spec).await;
        let status = finished(&restores, name).await;
        assert_eq!(status["phase"], "FailedValidation", "{name}: {status}");
        assert_eq!(status["validationErrors"], json!(expected), "{name}");
        assert!(status.get("failureReason").is_none(), "{status}");
    }
    set_status(
        &velero(destination, "BackupStorageLocation"),
        "default",
        json!({ "phase": "Unavailable" }),
    )
    .await;
    request(
        &restores,
        "Restore",
        "unavailable",
        json!({ "backupName": "shop" }),
    )
    .await;
    let status = finished(&restores, "unavailable").await;
    assert_eq!(
        status["validationErrors"],
        json!(["The BSL default is unavailable, cannot retrieve the backup"])
    );
}
