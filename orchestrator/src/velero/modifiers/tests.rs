//! The rule builder, checked by applying its YAML the way Velero does:
//! strict decoding into Velero's Go types (mirrored below, every field),
//! condition matching (restore.go, resource_modifiers.go), JSON patch text
//! built as json_patch.go `ToString` builds it, and merge patches.

use super::rules::{pointer_escape, regex_escape};
use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Velero's types, field for field (internal/resourcemodifiers), decoded
/// strictly as `yaml.UnmarshalStrict` does.
mod go {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ResourceModifiers {
        pub version: String,
        #[serde(rename = "resourceModifierRules")]
        pub rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Rule {
        pub conditions: Conditions,
        #[serde(default)]
        pub patches: Vec<JsonPatch>,
        #[serde(default)]
        pub merge_patches: Vec<PatchData>,
        #[serde(default)]
        pub strategic_patches: Vec<PatchData>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct Conditions {
        #[serde(default)]
        pub namespaces: Vec<String>,
        pub group_resource: String,
        #[serde(default)]
        pub resource_name_regex: String,
        pub label_selector: Option<serde_json::Value>,
        #[serde(default)]
        pub matches: Vec<serde_json::Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct JsonPatch {
        pub operation: String,
        #[serde(default)]
        pub from: String,
        pub path: String,
        #[serde(default)]
        pub value: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct PatchData {
        pub patch_data: String,
    }
}

/// json_patch.go `addQuotes`.
fn add_quotes(value: &mut String) -> bool {
    if value.is_empty() {
        return true;
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        *value = value[1..value.len() - 1].to_string();
        return true;
    }
    let lower = value.to_ascii_lowercase();
    if lower == "null" || lower == "true" || lower == "false" {
        return false;
    }
    if value.starts_with('{') || value.starts_with('[') {
        return false;
    }
    value.parse::<f64>().is_err()
}

/// json_patch.go `ToString`, then decoded as evanphx/json-patch does.
fn patch_json(patch: &go::JsonPatch) -> Value {
    let mut value = patch.value.clone();
    let text = if add_quotes(&mut value) {
        format!(
            r#"{{"op": "{}", "from": "{}", "path": "{}", "value": "{}"}}"#,
            patch.operation, patch.from, patch.path, value
        )
    } else {
        format!(
            r#"{{"op": "{}", "from": "{}", "path": "{}", "value": {}}}"#,
            patch.operation, patch.from, patch.path, value
        )
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("Velero would fail on {text}: {e}"))
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> (String, String) {
    let (parent, last) = path.rsplit_once('/').unwrap();
    (parent.to_string(), unescape(last))
}

/// Applies one JSON patch document; `Ok(false)` when a test failed (Velero
/// then leaves the object as it was), `Err` for Velero's patch errors.
fn apply_json(object: &mut Value, patches: &[go::JsonPatch]) -> Result<bool, String> {
    let mut work = object.clone();
    for patch in patches {
        let op = patch_json(patch);
        let path = op["path"].as_str().unwrap();
        match op["op"].as_str().unwrap() {
            "test" => {
                if work.pointer(path) != Some(&op["value"]) {
                    return Ok(false);
                }
            }
            "replace" => {
                let slot = work.pointer_mut(path).ok_or(format!("missing {path}"))?;
                *slot = op["value"].clone();
            }
            "remove" => {
                let (parent, key) = split(path);
                let parent = work.pointer_mut(&parent).ok_or(format!("missing {path}"))?;
                let removed = match parent {
                    Value::Object(map) => map.remove(&key).is_some(),
                    Value::Array(items) => key
                        .parse::<usize>()
                        .ok()
                        .filter(|i| *i < items.len())
                        .map(|i| items.remove(i))
                        .is_some(),
                    _ => false,
                };
                if !removed {
                    return Err(format!("missing {path}"));
                }
            }
            other => return Err(format!("operation {other} not expected here")),
        }
    }
    *object = work;
    Ok(true)
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Velero's restore of `object` (of `group_resource`) through `yaml`: the
/// conditions see the source namespace; errors are restore errors.
fn velero_apply(yaml: &str, group_resource: &str, object: &Value) -> Result<Value, Vec<String>> {
    let document: go::ResourceModifiers =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("Velero refuses the rules: {e}"));
    assert_eq!(document.version, "v1");
    assert!(
        !document.rules.is_empty(),
        "Velero refuses an empty rule list"
    );
    let origin = object.clone();
    let mut out = object.clone();
    let mut errors = Vec::new();
    for rule in &document.rules {
        let c = &rule.conditions;
        assert!(!c.group_resource.is_empty());
        assert!(c.label_selector.is_none() && c.matches.is_empty());
        assert!(rule.strategic_patches.is_empty());
        assert!(
            rule.patches.is_empty() || rule.merge_patches.is_empty(),
            "only one kind of patch per rule"
        );
        let ns = origin["metadata"]["namespace"].as_str().unwrap_or("");
        if !ns.is_empty() && !c.namespaces.is_empty() && !c.namespaces.iter().any(|n| n == ns) {
            continue;
        }
        if c.group_resource != group_resource {
            continue;
        }
        let name = origin["metadata"]["name"].as_str().unwrap();
        if !c.resource_name_regex.is_empty()
            && !regex::Regex::new(&c.resource_name_regex)
                .unwrap()
                .is_match(name)
        {
            continue;
        }
        for patch in &rule.patches {
            let op = patch.operation.to_ascii_lowercase();
            assert!(["add", "remove", "replace", "test", "move", "copy"].contains(&op.as_str()));
            assert!(!patch.path.is_empty());
        }
        if !rule.patches.is_empty() {
            if let Err(e) = apply_json(&mut out, &rule.patches) {
                errors.push(e);
            }
        }
        for patch in &rule.merge_patches {
            let data: Value = serde_yaml::from_str(&patch.patch_data).unwrap();
            merge(&mut out, &data);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

const SOURCE: &str = "image-registry.openshift-image-registry.svc:5000";
const SOURCE_ALIAS: &str = "default-route-openshift-image-registry.apps.source.example";
const DEST: &str = "image-registry.openshift-image-registry.svc:5000";
const DEST_ROUTE: &str = "registry.dest.example:443";

fn rewrites() -> Rewrites {
    Rewrites {
        source_registry_hosts: vec![SOURCE.into(), SOURCE_ALIAS.into()],
        destination_registry_host: Some(DEST_ROUTE.into()),
        namespaces: BTreeMap::from([
            ("shop".to_string(), "shop-copy".to_string()),
            ("db".to_string(), "db".to_string()),
        ]),
        storage_classes: BTreeMap::from([
            ("gp2".to_string(), "ceph-rbd".to_string()),
            ("fast".to_string(), "1".to_string()),
        ]),
    }
}

fn obj(resource: Resource, value: Value) -> SourceObject {
    SourceObject {
        resource,
        object: value,
    }
}

/// Builds the rules for `objects`, writes the ConfigMap, and applies its
/// YAML to each object as Velero would.
fn restore_all(objects: &[SourceObject]) -> Vec<Value> {
    let set = rules(objects, &rewrites());
    assert!(set.skipped.is_empty(), "{:?}", set.skipped);
    let cm = configmap(&VeleroConfig::default(), "m", &set.document().unwrap()).unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data.len(), 1, "Velero wants exactly one data key");
    let yaml = &data[DATA_KEY];
    objects
        .iter()
        .map(|o| velero_apply(yaml, &o.resource.group_resource(), &o.object).unwrap())
        .collect()
}

fn deployment() -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": format!("{SOURCE_ALIAS}/shop/init:v1")}],
            "containers": [
                {"name": "web", "image": format!("{SOURCE}/shop/web@sha256:{}", "a".repeat(64))},
                {"name": "proxy", "image": "quay.io/example/proxy:1"},
                {"name": "shared", "image": format!("{SOURCE}/db/tools:latest")},
            ],
            "nodeName": "source-node-1",
            "nodeSelector": {"kubernetes.io/hostname": "source-node-1", "disk": "ssd"},
        }}},
    })
}

#[test]
fn internal_images_point_at_the_destination_registry_with_renamed_namespaces() {
    let restored = restore_all(&[obj(DEPLOYMENTS, deployment())]);
    let spec = &restored[0]["spec"]["template"]["spec"];
    assert_eq!(
        spec["initContainers"][0]["image"],
        format!("{DEST_ROUTE}/shop-copy/init:v1")
    );
    assert_eq!(
        spec["containers"][0]["image"],
        format!("{DEST_ROUTE}/shop-copy/web@sha256:{}", "a".repeat(64))
    );
    assert_eq!(
        spec["containers"][1]["image"], "quay.io/example/proxy:1",
        "external images stay"
    );
    assert_eq!(
        spec["containers"][2]["image"],
        format!("{DEST_ROUTE}/db/tools:latest")
    );
    assert!(spec.get("nodeName").is_none(), "{spec}");
    assert_eq!(
        spec["nodeSelector"],
        json!({"disk": "ssd"}),
        "only the hostname pin goes"
    );
}

#[test]
fn every_workload_kind_gets_its_pod_template_rewritten() {
    let template = |path: &str| -> Value {
        let containers =
            json!({"containers": [{"name": "c", "image": format!("{SOURCE}/shop/app:1")}]});
        let mut object = json!({"metadata": {"name": "x.y", "namespace": "shop"}});
        let mut slot = &mut object;
        for token in path.trim_start_matches('/').split('/') {
            slot = slot
                .as_object_mut()
                .unwrap()
                .entry(token.to_string())
                .or_insert(json!({}));
        }
        *slot = containers;
        object
    };
    for resource in RESOURCES.iter().filter(|r| r.pod_spec.is_some()) {
        let pod_spec = resource.pod_spec.unwrap();
        let restored = restore_all(&[obj(*resource, template(pod_spec))]);
        assert_eq!(
            restored[0].pointer(&format!("{pod_spec}/containers/0/image")),
            Some(&json!(format!("{DEST_ROUTE}/shop-copy/app:1"))),
            "{}",
            resource.kind
        );
    }
}

#[test]
fn rules_are_per_object_and_do_not_touch_namesakes() {
    let objects = [obj(DEPLOYMENTS, deployment())];
    let set = rules(&objects, &rewrites());
    let yaml = serde_yaml::to_string(&set.document().unwrap()).unwrap();
    // A Deployment of the same name in another namespace, one whose name
    // only starts alike, and a StatefulSet of the same name: untouched.
    for (resource, namespace, name) in [
        (DEPLOYMENTS, "other", "web"),
        (DEPLOYMENTS, "shop", "web2"),
        (STATEFUL_SETS, "shop", "web"),
    ] {
        let mut other = deployment();
        other["metadata"] = json!({"name": name, "namespace": namespace});
        let restored = velero_apply(&yaml, &resource.group_resource(), &other).unwrap();
        assert_eq!(restored, other, "{namespace}/{name}");
    }
    let rule = &set.rules[0];
    assert_eq!(rule.conditions.group_resource, "deployments.apps");
    assert_eq!(
        rule.conditions.resource_name_regex.as_deref(),
        Some("^web$")
    );
    assert_eq!(rule.conditions.namespaces, vec!["shop".to_string()]);
}

#[test]
fn a_changed_object_is_left_alone_not_patched_at_a_wrong_index() {
    let set = rules(&[obj(DEPLOYMENTS, deployment())], &rewrites());
    let yaml = serde_yaml::to_string(&set.document().unwrap()).unwrap();
    let mut changed = deployment();
    let containers = changed["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers.insert(0, json!({"name": "new", "image": "busybox"}));
    let restored = velero_apply(&yaml, "deployments.apps", &changed).unwrap();
    let spec = &restored["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], "busybox");
    assert_eq!(
        spec["containers"][1],
        changed["spec"]["template"]["spec"]["containers"][1]
    );
}

#[test]
fn generated_route_hosts_are_dropped_and_chosen_ones_kept() {
    let route = |name: &str, generated: bool| {
        let mut route = json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"host": format!("{name}-shop.apps.source.example"), "to": {"kind": "Service", "name": "web"}},
        });
        if generated {
            route["metadata"]["annotations"] = json!({"openshift.io/host.generated": "true"});
        }
        obj(ROUTES, route)
    };
    let restored = restore_all(&[route("web", true), route("api", false)]);
    assert!(restored[0]["spec"].get("host").is_none(), "{}", restored[0]);
    assert_eq!(restored[0]["spec"]["to"]["name"], "web");
    assert_eq!(restored[1]["spec"]["host"], "api-shop.apps.source.example");
}

#[test]
fn stateful_set_claim_templates_follow_the_storage_class_mapping() {
    let sts = json!({
        "metadata": {"name": "db", "namespace": "db"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
            "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"storageClassName": "gp2"}},
                {"metadata": {"name": "logs"}, "spec": {"storageClassName": "standard"}},
                {"metadata": {"name": "tmp"}, "spec": {"storageClassName": "fast"}},
            ],
        },
    });
    let restored = restore_all(&[obj(STATEFUL_SETS, sts)]);
    let templates = &restored[0]["spec"]["volumeClaimTemplates"];
    assert_eq!(templates[0]["spec"]["storageClassName"], "ceph-rbd");
    assert_eq!(templates[1]["spec"]["storageClassName"], "standard");
    assert_eq!(
        templates[2]["spec"]["storageClassName"],
        json!("1"),
        "a class named like a number stays a string"
    );
}

#[test]
fn image_stream_tag_references_in_renamed_namespaces_are_renamed() {
    let triggers = json!([
        {"from": {"kind": "ImageStreamTag", "name": "web:latest", "namespace": "shop"}, "fieldPath": "spec.template.spec.containers[?(@.name==\"web\")].image"},
        {"from": {"kind": "ImageStreamTag", "name": "base:1"}, "fieldPath": "x"},
    ]);
    let deployment = json!({
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"image.openshift.io/triggers": triggers.to_string()}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "quay.io/x:1"}]}}},
    });
    let dc = json!({
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "legacy", "image": format!("{SOURCE}/shop/legacy@sha256:{}", "b".repeat(64))}]}},
            "triggers": [
                {"type": "ConfigChange"},
                {"type": "ImageChange", "imageChangeParams": {
                    "automatic": true,
                    "containerNames": ["legacy"],
                    "from": {"kind": "ImageStreamTag", "name": "legacy:latest", "namespace": "shop"},
                    "lastTriggeredImage": format!("{SOURCE}/shop/legacy@sha256:{}", "b".repeat(64)),
                }},
            ],
        },
    });
    let restored = restore_all(&[obj(DEPLOYMENTS, deployment), obj(DEPLOYMENT_CONFIGS, dc)]);
    let annotation: Value = serde_json::from_str(
        restored[0]["metadata"]["annotations"]["image.openshift.io/triggers"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(annotation[0]["from"]["namespace"], "shop-copy");
    assert!(annotation[1]["from"].get("namespace").is_none());
    assert_eq!(annotation[0]["fieldPath"], triggers[0]["fieldPath"]);
    let params = &restored[1]["spec"]["triggers"][1]["imageChangeParams"];
    assert_eq!(params["from"]["namespace"], "shop-copy");
    assert_eq!(
        params["lastTriggeredImage"],
        format!("{DEST_ROUTE}/shop-copy/legacy@sha256:{}", "b".repeat(64))
    );
}

#[test]
fn nothing_to_rewrite_means_no_document() {
    let external = json!({
        "metadata": {"name": "web", "namespace": "db"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}},
    });
    let set = rules(&[obj(DEPLOYMENTS, external)], &rewrites());
    assert!(set.rules.is_empty());
    assert_eq!(set.document(), None);
    let without_images = Rewrites {
        source_registry_hosts: Vec::new(),
        destination_registry_host: None,
        ..rewrites()
    };
    assert!(rules(&[obj(DEPLOYMENTS, json!({"metadata": {"name": "w", "namespace": "shop"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("{SOURCE}/shop/a:1")}]}}}}))], &without_images).rules.is_empty());
}

#[test]
fn the_same_registry_name_on_both_sides_needs_no_rule_unless_the_namespace_is_renamed() {
    let same = Rewrites {
        destination_registry_host: Some(SOURCE.into()),
        ..rewrites()
    };
    let image = |ns: &str| {
        obj(
            DEPLOYMENTS,
            json!({"metadata": {"name": "w", "namespace": ns}, "spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": format!("{SOURCE}/{ns}/a:1")}]}}}}),
        )
    };
    assert!(rules(&[image("db")], &same).rules.is_empty());
    let renamed = rules(&[image("shop")], &same);
    assert_eq!(renamed.rules.len(), 1);
    assert_eq!(
        renamed.rules[0].patches[1].value.as_deref(),
        Some(format!("{SOURCE}/shop-copy/a:1").as_str())
    );
}

#[test]
fn values_stay_strings_the_way_velero_splices_them() {
    for value in [
        "1", "1.5", "true", "NULL", "[x", "{x", "inf", "0x1F", "1_000",
    ] {
        let written = velero_string(value).unwrap();
        let mut seen = written.clone();
        assert!(add_quotes(&mut seen), "{value} -> {written}");
        assert_eq!(seen, value);
    }
    assert_eq!(velero_string("gp2").unwrap(), "gp2");
    assert_eq!(velero_string("a\"b"), None);
    assert_eq!(regex_escape("web.v1"), "web\\.v1");
    assert_eq!(
        pointer_escape("kubernetes.io/hostname"),
        "kubernetes.io~1hostname"
    );
}

#[test]
fn the_plan_gives_the_rewrites() {
    use crate::plan::{resolve, PlanFile, PlanFlags};
    let file: PlanFile = serde_yaml::from_str(&format!(
        "namespaces: [shop:shop-copy]\nstorageClassMapping: {{gp2: ceph}}\nimages:\n  source: {{url: 'https://src.example', internalHosts: ['{SOURCE}']}}\n  destination: {{url: 'https://dst.example', internalHosts: ['{DEST}', 'other:5000']}}\n"
    ))
    .unwrap();
    let plan = resolve(file, &PlanFlags::default(), "test").unwrap();
    let rewrites = Rewrites::from_plan(&plan);
    assert_eq!(rewrites.source_registry_hosts, vec![SOURCE.to_string()]);
    assert_eq!(rewrites.destination_registry_host.as_deref(), Some(DEST));
    assert_eq!(rewrites.namespaces["shop"], "shop-copy");
    assert_eq!(rewrites.storage_classes["gp2"], "ceph");
    assert_eq!(
        rewrites.image(&format!("{SOURCE}/shop/web:1")),
        Some(format!("{DEST}/shop-copy/web:1"))
    );
    assert_eq!(rewrites.image("docker.io/library/nginx"), None);
}
