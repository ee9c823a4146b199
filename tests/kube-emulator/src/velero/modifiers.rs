//! Restore resource modifiers, as Velero's internal/resourcemodifiers
//! parses, validates and applies them.
//!
//! A Restore's `spec.resourceModifier` names a ConfigMap (`kind:
//! configmap`) in Velero's namespace whose one data key holds YAML:
//!
//! ```yaml
//! version: v1
//! resourceModifierRules:
//! - conditions:
//!     groupResource: deployments.apps      # glob, '.' separates
//!     namespaces: [shop]                   # source namespaces (globs)
//!     resourceNameRegex: "^web"            # unanchored Go regexp
//!     labelSelector: {matchLabels: {app: shop}}
//!     matches: [{path: /spec/replicas, value: "3"}]   # JSON patch tests
//!   patches:                               # or mergePatches / strategicPatches
//!   - operation: replace
//!     path: /spec/template/spec/containers/0/image
//!     value: "\"registry.dest/shop:1\""
//! ```
//!
//! Parsing is strict (unknown fields are errors, `value` must be a string);
//! a JSON patch's `value` becomes JSON by Velero's quoting rules
//! (json_patch.go `addQuotes`): a quoted string, empty, or anything that is
//! not `null`, a boolean, a number, an object or an array is a string. The
//! restore applies the rules to each item after its item actions and
//! before the namespace remap, matching conditions against the item as it
//! was before the first rule; a failing patch is a restore error of that
//! item, which is still restored; a failing `test` operation leaves the
//! item as it was.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::DynamicObject;
use kube::core::{Selector, SelectorExt};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::filter::IncludesExcludes;
use super::glob::Glob;

/// The parsed ConfigMap.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ResourceModifiers {
    version: String,
    #[serde(default)]
    resource_modifier_rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    conditions: Conditions,
    #[serde(default)]
    patches: Vec<JsonPatch>,
    #[serde(default)]
    merge_patches: Vec<DataPatch>,
    #[serde(default)]
    strategic_patches: Vec<DataPatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Conditions {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    group_resource: String,
    #[serde(default)]
    resource_name_regex: String,
    label_selector: Option<LabelSelector>,
    #[serde(default)]
    matches: Vec<MatchRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchRule {
    #[serde(default)]
    path: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPatch {
    #[serde(default)]
    operation: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DataPatch {
    #[serde(default)]
    patch_data: String,
}

/// `GetResourceModifiersFromConfig`: the rules of a ConfigMap's `data`,
/// or Velero's parsing error.
pub(super) fn parse(
    data: &std::collections::BTreeMap<String, String>,
    namespace: &str,
    name: &str,
) -> Result<ResourceModifiers, String> {
    if data.len() != 1 {
        return Err(format!(
            "illegal resource modifiers {namespace}/{name} configmap"
        ));
    }
    let yaml = data.values().next().map(String::as_str).unwrap_or("");
    // sigs.k8s.io/yaml: YAML to JSON, then a strict JSON decode (so
    // `value: 3` is a number where a string is wanted, an error).
    let decoded = serde_yaml::from_str::<Value>(yaml)
        .map_err(|error| error.to_string())
        .and_then(|json| serde_json::from_value(json).map_err(|error| error.to_string()));
    decoded.map_err(|error| {
        format!("failed to decode yaml data into resource modifiers, err: {error}")
    })
}

impl ResourceModifiers {
    /// resource_modifiers_validator.go `Validate`.
    pub fn validate(&self) -> Result<(), String> {
        if !self.version.eq_ignore_ascii_case("v1") {
            return Err(format!(
                "unsupported resource modifier version {}",
                self.version
            ));
        }
        if self.resource_modifier_rules.is_empty() {
            return Err("resource modifier rules cannot be empty".into());
        }
        for rule in &self.resource_modifier_rules {
            if rule.conditions.group_resource.is_empty() {
                // Velero's spelling.
                return Err("groupkResource cannot be empty".into());
            }
            let kinds = [
                rule.patches.len(),
                rule.merge_patches.len(),
                rule.strategic_patches.len(),
            ];
            if kinds.iter().filter(|n| **n > 0).count() >= 2 {
                return Err(
                    "only one of patches, mergePatches, strategicPatches can be specified".into(),
                );
            }
            for patch in &rule.patches {
                if patch.operation.is_empty() {
                    return Err("operation cannot be empty".into());
                }
                let operation = patch.operation.to_ascii_lowercase();
                if !["add", "remove", "replace", "test", "move", "copy"]
                    .contains(&operation.as_str())
                {
                    return Err(format!("unsupported operation {}", patch.operation));
                }
                if patch.path.is_empty() {
                    return Err("path cannot be empty".into());
                }
            }
        }
        Ok(())
    }

    /// `ApplyResourceModifierRules`: patches `object` (of `group_resource`,
    /// `plural[.group]`) by every matching rule; the errors are the item's
    /// restore errors.
    pub fn apply(&self, object: &mut DynamicObject, group_resource: &str) -> Vec<String> {
        let origin = object.clone();
        let mut errors = Vec::new();
        for rule in &self.resource_modifier_rules {
            match rule.matches(&origin, group_resource) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            }
            if let Err(error) = rule.patch(object) {
                errors.push(format!("error in applying patch {error}"));
            }
        }
        errors
    }
}

impl Rule {
    fn matches(&self, object: &DynamicObject, group_resource: &str) -> Result<bool, String> {
        let conditions = &self.conditions;
        if let Some(namespace) = object.namespace().filter(|ns| !ns.is_empty()) {
            // collections.NewIncludesExcludes().Includes(namespaces...)
            let included = IncludesExcludes::new(Some(&conditions.namespaces), None);
            if !included.includes(&namespace) {
                return Ok(false);
            }
        }
        let glob = Glob::compile(&conditions.group_resource, Some('.')).map_err(|error| {
            format!(
                "bad glob pattern of groupResource {}: {error}",
                conditions.group_resource
            )
        })?;
        if !glob.matches(group_resource) {
            return Ok(false);
        }
        if !conditions.resource_name_regex.is_empty() {
            let regex = regex::Regex::new(&conditions.resource_name_regex)
                .map_err(|error| format!("error in matching regex {error}"))?;
            if !regex.is_match(&object.name_any()) {
                return Ok(false);
            }
        }
        if let Some(selector) = &conditions.label_selector {
            let selector = Selector::try_from(selector.clone())
                .map_err(|error| format!("error in creating label selector {error}"))?;
            if !selector.matches(object.labels()) {
                return Ok(false);
            }
        }
        if conditions.matches.is_empty() {
            return Ok(true);
        }
        let mut tests = Vec::new();
        for rule in &conditions.matches {
            if rule.path.is_empty() {
                return Err("path is required for match rule".into());
            }
            tests.push(JsonPatch {
                operation: "test".into(),
                from: String::new(),
                path: rule.path.clone(),
                value: rule.value.clone(),
            });
        }
        let patch = decode(&tests)?;
        let mut document = to_value(object);
        // A failed test or a missing path is "no match"; Velero errs only
        // on patches it cannot decode.
        Ok(json_patch::patch(&mut document, &patch).is_ok())
    }

    /// `applyPatch`: the rule's JSON patches, else merge patches, else
    /// strategic merge patches.
    fn patch(&self, object: &mut DynamicObject) -> Result<(), String> {
        let mut document = to_value(object);
        if !self.patches.is_empty() {
            let patch = decode(&self.patches)?;
            match json_patch::patch(&mut document, &patch) {
                Ok(()) => {}
                Err(error) if matches!(error.kind, json_patch::PatchErrorKind::TestFailed) => {
                    return Ok(())
                }
                Err(error) => return Err(format!("error in applying JSON Patch {error}")),
            }
        } else if !self.merge_patches.is_empty() {
            for patch in &self.merge_patches {
                json_patch::merge(&mut document, &yaml_to_json(&patch.patch_data)?);
            }
        } else if !self.strategic_patches.is_empty() {
            for patch in &self.strategic_patches {
                strategic_merge(&mut document, &yaml_to_json(&patch.patch_data)?);
            }
        } else {
            return Err("no patch data found".into());
        }
        *object = serde_json::from_value(document)
            .map_err(|error| format!("error in unmarshalling modified object {error}"))?;
        Ok(())
    }
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// json_patch.go `patchArrayToByteArray` + `DecodePatch`.
fn decode(patches: &[JsonPatch]) -> Result<json_patch::Patch, String> {
    let mut operations = Vec::new();
    for patch in patches {
        let value = patch_value(&patch.value)
            .map_err(|error| format!("error in decoding json patch {error}"))?;
        let mut operation = json!({ "op": patch.operation, "path": patch.path, "value": value });
        if !patch.from.is_empty() {
            operation["from"] = json!(patch.from);
        }
        operations.push(operation);
    }
    serde_json::from_value(Value::Array(operations))
        .map_err(|error| format!("error in decoding json patch {error}"))
}

/// The JSON a patch's string `value` stands for (json_patch.go
/// `addQuotes` and `ToString`).
fn patch_value(value: &str) -> Result<Value, serde_json::Error> {
    if value.is_empty() {
        return Ok(json!(""));
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return Ok(json!(value[1..value.len() - 1]));
    }
    let literal = value == "null"
        || value.eq_ignore_ascii_case("true")
        || value.eq_ignore_ascii_case("false")
        || value.starts_with('{')
        || value.starts_with('[')
        || value.parse::<f64>().is_ok();
    if !literal {
        return Ok(json!(value));
    }
    // Go's decoder takes `True` as invalid JSON, as does serde.
    serde_json::from_str(value)
}

/// `yaml.YAMLToJSON` of a merge or strategic patch's `patchData`.
fn yaml_to_json(data: &str) -> Result<Value, String> {
    serde_yaml::from_str::<Value>(data)
        .map_err(|error| format!("error in converting YAML to JSON {error}"))
}

/// A strategic merge patch without the type schema: maps merge, a `null`
/// removes, lists of objects that all have a `name` merge by name (the
/// patch key of containers, volumes, env, ports, volumeMounts), other lists
/// are replaced.
fn strategic_merge(document: &mut Value, patch: &Value) {
    match (document, patch) {
        (Value::Object(document), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    document.remove(key);
                } else if let Some(existing) = document.get_mut(key) {
                    strategic_merge(existing, value);
                } else {
                    document.insert(key.clone(), value.clone());
                }
            }
        }
        (Value::Array(document), Value::Array(patch)) if by_name(document) && by_name(patch) => {
            for item in patch {
                let name = &item["name"];
                match document.iter_mut().find(|d| &d["name"] == name) {
                    Some(existing) => strategic_merge(existing, item),
                    None => document.push(item.clone()),
                }
            }
        }
        (document, patch) => *document = patch.clone(),
    }
}

fn by_name(list: &[Value]) -> bool {
    list.iter()
        .all(|item| item.get("name").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_values_are_quoted_as_velero_quotes_them() {
        assert_eq!(patch_value("").unwrap(), json!(""));
        assert_eq!(patch_value("\"3\"").unwrap(), json!("3"));
        assert_eq!(patch_value("3").unwrap(), json!(3));
        assert_eq!(patch_value("true").unwrap(), json!(true));
        assert_eq!(patch_value("null").unwrap(), Value::Null);
        assert_eq!(
            patch_value("registry.dest/shop:1").unwrap(),
            json!("registry.dest/shop:1")
        );
        assert_eq!(patch_value("{\"a\": [1]}").unwrap(), json!({ "a": [1] }));
        assert!(patch_value("{not json}").is_err());
    }

    #[test]
    fn strict_parsing_and_validation_give_velero_messages() {
        let data = |yaml: &str| {
            [("rules".to_string(), yaml.to_string())]
                .into_iter()
                .collect()
        };
        let unknown = parse(&data("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patchs: []\n"), "velero", "m");
        assert!(unknown
            .unwrap_err()
            .starts_with("failed to decode yaml data into resource modifiers, err: "));
        let two = std::collections::BTreeMap::from([
            ("a".into(), String::new()),
            ("b".into(), String::new()),
        ]);
        assert_eq!(
            parse(&two, "velero", "m").unwrap_err(),
            "illegal resource modifiers velero/m configmap"
        );
        let validate = |yaml: &str| parse(&data(yaml), "velero", "m").unwrap().validate();
        assert_eq!(
            validate("version: v2\nresourceModifierRules: []\n").unwrap_err(),
            "unsupported resource modifier version v2"
        );
        assert_eq!(
            validate("version: v1\nresourceModifierRules: []\n").unwrap_err(),
            "resource modifier rules cannot be empty"
        );
        assert_eq!(
            validate("version: v1\nresourceModifierRules:\n- conditions: {namespaces: [a]}\n")
                .unwrap_err(),
            "groupkResource cannot be empty"
        );
        assert_eq!(
            validate("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: frob, path: /a}]\n").unwrap_err(),
            "unsupported operation frob"
        );
        assert_eq!(
            validate("version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: remove, path: /a}]\n  mergePatches: [{patchData: '{}'}]\n").unwrap_err(),
            "only one of patches, mergePatches, strategicPatches can be specified"
        );
    }

    #[test]
    fn strategic_patches_merge_named_lists_by_name() {
        let mut document = json!({ "spec": { "containers": [{ "name": "a", "image": "x" }, { "name": "b", "image": "y" }], "dnsPolicy": "ClusterFirst" } });
        strategic_merge(
            &mut document,
            &json!({ "spec": { "containers": [{ "name": "b", "image": "z" }], "dnsPolicy": null } }),
        );
        assert_eq!(
            document,
            json!({ "spec": { "containers": [{ "name": "a", "image": "x" }, { "name": "b", "image": "z" }] } })
        );
    }
}
