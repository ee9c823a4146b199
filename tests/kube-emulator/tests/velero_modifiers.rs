//! Restore resource modifiers on the emulated Velero, as real Velero
//! parses and applies them (internal/resourcemodifiers): the rewrites a
//! migration makes (registry of images, generated Route hosts, storage
//! classes of volumeClaimTemplates), the kinds of patches and conditions,
//! a failing patch as a restore error of its item, and the validation of
//! the ConfigMap.

mod controller_support;
mod velero_support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject};
use kube::ResourceExt;
use serde_json::{json, Value};
use velero_support::{
    back_up_shop, create, finished, modifiers, namespace, request, restore_results, shop_backed_up,
    start_pair, velero,
};

const RULES: &str = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    namespaces: [shop]
    resourceNameRegex: "^web$"
    matches:
    - path: /spec/template/spec/containers/0/image
      value: image-registry.openshift-image-registry.svc:5000/shop/web:1
  patches:
  - operation: replace
    path: /spec/template/spec/containers/0/image
    value: "\"registry.destination.test/shop/web:1\""
  - operation: replace
    path: /spec/replicas
    value: "2"
- conditions:
    groupResource: "*.route.openshift.io"
    labelSelector:
      matchLabels: {app: shop}
  patches:
  - operation: remove
    path: /spec/host
- conditions:
    groupResource: "{statefulsets,daemonsets}.apps"
  patches:
  - operation: replace
    path: /spec/volumeClaimTemplates/0/spec/storageClassName
    value: fast
- conditions:
    groupResource: configmaps
    labelSelector:
      matchLabels: {app: shop}
  mergePatches:
  - patchData: |
      metadata:
        labels:
          migrated: "true"
      data:
        currency: null
- conditions:
    groupResource: configmaps
    resourceNameRegex: broken
  patches:
  - operation: remove
    path: /data/missing
- conditions:
    groupResource: deployments.apps
    resourceNameRegex: worker
  strategicPatches:
  - patchData: |
      spec:
        template:
          spec:
            containers:
            - name: worker
              image: registry.destination.test/shop/worker:2
- conditions:
    groupResource: configmaps
    namespaces: [elsewhere]
  patches:
  - operation: add
    path: /data/never
    value: "x"
"#;

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "metadata": { "name": name, "labels": { "app": "shop" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [
                    { "name": name, "image": image },
                    { "name": "sidecar", "image": "sidecar:1" },
                ] },
            },
        },
    })
}

#[tokio::test]
async fn modifiers_rewrite_images_routes_and_storage_classes_and_a_failing_patch_is_an_item_error()
{
    let (_dir, pair) = start_pair().await;
    let (source, destination) = (&pair.source.client, &pair.destination.client);
    namespace(source, "shop").await;
    let internal = "image-registry.openshift-image-registry.svc:5000/shop/web:1";
    create::<Deployment>(source, "shop", deployment("web", internal)).await;
    create::<Deployment>(source, "shop", deployment("webhook", internal)).await;
    create::<Deployment>(source, "shop", deployment("worker", "worker:1")).await;
    create::<StatefulSet>(
        source,
        "shop",
        json!({
            "metadata": { "name": "db" },
            "spec": {
                "serviceName": "db",
                "selector": { "matchLabels": { "app": "db" } },
                "template": { "metadata": { "labels": { "app": "db" } }, "spec": { "containers": [{ "name": "db", "image": "db:1" }] } },
                "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": "gp2",
                    "resources": { "requests": { "storage": "1Gi" } } } }],
            },
        }),
    )
    .await;
    create::<ConfigMap>(source, "shop", json!({ "metadata": { "name": "settings", "labels": { "app": "shop" } }, "data": { "currency": "EUR", "lang": "de" } })).await;
    create::<ConfigMap>(
        source,
        "shop",
        json!({ "metadata": { "name": "broken" }, "data": { "a": "b" } }),
    )
    .await;
    let routes = Api::<DynamicObject>::namespaced_with(
        source.clone(),
        "shop",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "route.openshift.io",
            "v1",
            "Route",
        )),
    );
    routes
        .create(
            &Default::default(),
            &controller_support::from_json(json!({
                "apiVersion": "route.openshift.io/v1", "kind": "Route",
                "metadata": { "name": "web", "labels": { "app": "shop" } },
                "spec": { "host": "web-shop.apps.source.emu.test", "to": { "kind": "Service", "name": "web" } },
            })),
        )
        .await
        .expect("creating the route");
    back_up_shop(&pair, "shop").await;

    modifiers(destination, "migration", RULES).await;
    let restores = velero(destination, "Restore");
    request(
        &restores,
        "Restore",
        "modified",
        json!({
            "backupName": "shop",
            "namespaceMapping": { "shop": "shop-dest" },
            "resourceModifier": { "kind": "ConfigMap", "name": "migration" },
        }),
    )
    .await;
    let status = finished(&restores, "modified").await;
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    assert_eq!(status["errors"], 1, "{status}");
    let results = restore_results(&pair.shared.velero_bucket, "modified");
    let errors = &results["errors"]["namespaces"]["shop-dest"];
    assert!(
        errors.as_array().is_some_and(|e| e.len() == 1
            && e[0].as_str().is_some_and(
                |m| m.starts_with("error in applying patch error in applying JSON Patch ")
            )),
        "{results}"
    );

    let deployments = Api::<Deployment>::namespaced(destination.clone(), "shop-dest");
    let image = |d: &Deployment, i: usize| {
        let d = serde_json::to_value(d).expect("JSON");
        d.pointer(&format!("/spec/template/spec/containers/{i}/image"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let web = deployments.get("web").await.expect("web");
    assert_eq!(image(&web, 0), "registry.destination.test/shop/web:1");
    assert_eq!(image(&web, 1), "sidecar:1", "only the patched path changes");
    assert_eq!(
        serde_json::to_value(&web)
            .expect("JSON")
            .pointer("/spec/replicas"),
        Some(&json!(2)),
        "\"2\" is the number 2"
    );
    let webhook = deployments.get("webhook").await.expect("webhook");
    assert_eq!(
        image(&webhook, 0),
        internal,
        "the name regex ^web$ does not match webhook"
    );
    let worker = deployments.get("worker").await.expect("worker");
    assert_eq!(image(&worker, 0), "registry.destination.test/shop/worker:2");
    assert_eq!(
        image(&worker, 1),
        "sidecar:1",
        "strategic patches merge containers by name"
    );

    let route = Api::<DynamicObject>::namespaced_with(
        destination.clone(),
        "shop-dest",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "route.openshift.io",
            "v1",
            "Route",
        )),
    )
    .get("web")
    .await
    .expect("route");
    assert_eq!(route.data.pointer("/spec/host"), None, "{:?}", route.data);

    let db = Api::<StatefulSet>::namespaced(destination.clone(), "shop-dest")
        .get("db")
        .await
        .expect("db");
    let db = serde_json::to_value(&db).expect("JSON");
    assert_eq!(
        db.pointer("/spec/volumeClaimTemplates/0/spec/storageClassName"),
        Some(&json!("fast")),
        "{db}"
    );

    let configmaps = Api::<ConfigMap>::namespaced(destination.clone(), "shop-dest");
    let settings = configmaps.get("settings").await.expect("settings");
    assert_eq!(
        settings.labels().get("migrated").map(String::as_str),
        Some("true")
    );
    let data = settings.data.unwrap_or_default();
    assert!(
        !data.contains_key("currency") && data.get("lang").map(String::as_str) == Some("de"),
        "{data:?}"
    );
    let broken = configmaps
        .get("broken")
        .await
        .expect("an item whose patch failed is still restored");
    assert_eq!(
        broken.data.unwrap_or_default().get("a").map(String::as_str),
        Some("b")
    );
    assert!(
        !configmaps
            .get("settings")
            .await
            .expect("settings")
            .data
            .unwrap_or_default()
            .contains_key("never"),
        "namespaces are the source's"
    );
}

#[tokio::test]
async fn a_missing_or_invalid_modifier_configmap_fails_validation_with_velero_messages() {
    let (_dir, pair) = start_pair().await;
    let destination = &pair.destination.client;
    shop_backed_up(&pair, "shop").await;
    modifiers(destination, "v2", "version: v2\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: remove, path: /x}]\n").await;
    modifiers(
        destination,
        "typo",
        "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patchez: []\n",
    )
    .await;
    modifiers(destination, "numbers", "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: add, path: /x, value: 3}]\n").await;
    let restores = velero(destination, "Restore");
    let cases = [
        ("nope", "failed to get resource modifiers configmap velero/nope".to_string()),
        ("v2", "Validation error in resource modifiers provided in configmap velero/v2: unsupported resource modifier version v2".into()),
        ("typo", "Error in parsing resource modifiers provided in configmap velero/typo: failed to decode yaml data into resource modifiers, err: ".into()),
        ("numbers", "Error in parsing resource modifiers provided in configmap velero/numbers: failed to decode yaml data into resource modifiers, err: ".into()),
    ];
    for (configmap, expected) in cases {
        let name = format!("with-{configmap}");
        request(
            &restores,
            "Restore",
            &name,
            json!({ "backupName": "shop", "resourceModifier": { "kind": "configmap", "name": configmap } }),
        )
        .await;
        let status = finished(&restores, &name).await;
        assert_eq!(status["phase"], "FailedValidation", "{status}");
        let errors = status["validationErrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            errors.len() == 1 && errors[0].as_str().is_some_and(|e| e.starts_with(&expected)),
            "{configmap}: {status}"
        );
    }
}
