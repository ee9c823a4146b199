//! ResourceQuota admission and usage: what each object uses (`pods`,
//! `requests.cpu`, `persistentvolumeclaims`, `requests.storage`,
//! `count/<resource>`, `<class>.storageclass.storage.k8s.io/...`), the
//! refusal of a write that would take a namespace over a quota's `hard`
//! (or a pod that does not say how much CPU or memory a quota counts),
//! and the quotas' `status.used`, recomputed after every write and
//! removal in their namespace as the quota controller would. Pods in a
//! terminal phase use nothing but their `count/pods`. Quota scopes are
//! not evaluated: a scoped quota counts every pod.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::{Catalog, ResourceType, TypeKey};
use super::limit_ranger::pod_totals;
use crate::quantity::Quantity;

/// Quota resource name → amount.
type Usage = BTreeMap<String, Quantity>;

/// The core resources with an object-count quota name of their own.
const LEGACY_COUNTS: [&str; 6] = [
    "services",
    "secrets",
    "configmaps",
    "replicationcontrollers",
    "resourcequotas",
    "persistentvolumeclaims",
];

/// The compute resources every container must declare when a quota
/// counts them (an upstream compatibility rule).
const MUST_DECLARE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn add(usage: &mut Usage, resource: impl Into<String>, amount: Quantity) {
    let entry = usage.entry(resource.into()).or_insert(Quantity::ZERO);
    *entry += amount;
}

/// What one stored object of `key` uses.
fn usage(key: &TypeKey, object: &Value) -> Result<Usage, String> {
    let mut usage = Usage::new();
    let one = Quantity::count(1);
    let count = if key.group.is_empty() {
        format!("count/{}", key.plural)
    } else {
        format!("count/{}.{}", key.plural, key.group)
    };
    add(&mut usage, count, one);
    if !key.group.is_empty() {
        return Ok(usage);
    }
    if LEGACY_COUNTS.contains(&key.plural.as_str()) {
        add(&mut usage, key.plural.clone(), one);
    }
    match key.plural.as_str() {
        "pods" if !terminated(object) => {
            add(&mut usage, "pods", one);
            let (requests, limits) = pod_totals(&object["spec"])?;
            for (resource, amount) in requests {
                if is_compute(&resource) {
                    add(&mut usage, format!("requests.{resource}"), amount);
                    add(&mut usage, resource, amount);
                }
            }
            for (resource, amount) in limits {
                if is_compute(&resource) {
                    add(&mut usage, format!("limits.{resource}"), amount);
                }
            }
        }
        "persistentvolumeclaims" => {
            let storage = match Quantity::of(&object["spec"]["resources"]["requests"]["storage"]) {
                Some(parsed) => parsed?,
                None => Quantity::ZERO,
            };
            add(&mut usage, "requests.storage", storage);
            if let Some(class) = object["spec"]["storageClassName"].as_str() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                add(&mut usage, format!("{prefix}requests.storage"), storage);
                add(&mut usage, format!("{prefix}persistentvolumeclaims"), one);
            }
        }
        _ => {}
    }
    Ok(usage)
}

fn is_compute(resource: &str) -> bool {
    matches!(resource, "cpu" | "memory" | "ephemeral-storage")
}

/// Pods that finished use no compute quota.
fn terminated(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// A quota's `spec.hard`, parsed.
fn hard(quota: &Value) -> Result<Usage, String> {
    let mut hard = Usage::new();
    for (resource, value) in quota["spec"]["hard"].as_object().into_iter().flatten() {
        if let Some(amount) = Quantity::of(value) {
            hard.insert(resource.clone(), amount?);
        }
    }
    Ok(hard)
}

/// What everything stored in `namespace` uses.
fn used(state: &State, namespace: &str) -> Usage {
    let mut total = Usage::new();
    for (key, object) in state.store.in_namespace(namespace) {
        // an object whose quantities do not parse was stored before its
        // namespace had a quota; it counts as using nothing
        for (resource, amount) in usage(&key, &object).unwrap_or_default() {
            add(&mut total, resource, amount);
        }
    }
    total
}

fn quotas(state: &State, namespace: &str) -> Vec<Value> {
    state
        .store
        .list(
            &Catalog::builtin("", "resourcequotas").key(),
            Some(namespace),
        )
        .cloned()
        .collect()
}

/// `k=v,k=v`, sorted by resource.
fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses a create (or a PVC update) that a quota of its namespace does
/// not allow.
pub fn admit(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &Value,
) -> ApiResult<()> {
    let counted_update = old.is_some() && rt.is("", "persistentvolumeclaims");
    if old.is_some() && !counted_update || !rt.namespaced {
        return Ok(());
    }
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let quotas = quotas(state, namespace);
    if quotas.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let forbidden = |why: String| ApiError::forbidden_object(rt, name, &why);
    let key = rt.key();
    let mut delta = usage(&key, object).map_err(&forbidden)?;
    if let Some(old) = old {
        let before = usage(&key, old).map_err(&forbidden)?;
        for (resource, amount) in &mut delta {
            let previous = before.get(resource).copied().unwrap_or(Quantity::ZERO);
            *amount = if *amount > previous {
                *amount - previous
            } else {
                Quantity::ZERO
            };
        }
    }
    delta.retain(|_, amount| !amount.is_zero());
    let used = used(state, namespace);
    for quota in &quotas {
        let quota_name = quota["metadata"]["name"].as_str().unwrap_or_default();
        let hard = hard(quota).map_err(&forbidden)?;
        if rt.is("", "pods") && old.is_none() {
            undeclared(&object["spec"], &hard)
                .map_err(|why| forbidden(format!("failed quota: {quota_name}: {why}")))?;
        }
        let requested: Usage = delta
            .iter()
            .filter(|(resource, _)| hard.contains_key(*resource))
            .map(|(r, a)| (r.clone(), *a))
            .collect();
        let exceeded: BTreeSet<&String> = requested
            .iter()
            .filter(|(resource, amount)| {
                let now = used.get(*resource).copied().unwrap_or(Quantity::ZERO);
                now + **amount > hard[*resource]
            })
            .map(|(resource, _)| resource)
            .collect();
        if exceeded.is_empty() {
            continue;
        }
        let mask = |usage: &Usage| -> Usage {
            exceeded
                .iter()
                .map(|r| {
                    let amount = usage.get(*r).copied().unwrap_or(Quantity::ZERO);
                    ((*r).clone(), amount)
                })
                .collect()
        };
        return Err(forbidden(format!(
            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
            pretty(&mask(&requested)),
            pretty(&mask(&used)),
            pretty(&mask(&hard))
        )));
    }
    Ok(())
}

/// `must specify limits.cpu for: a,b; requests.memory for: a` when a
/// quota counts CPU or memory that some containers do not declare.
fn undeclared(spec: &Value, hard: &Usage) -> Result<(), String> {
    let required: Vec<&str> = MUST_DECLARE
        .into_iter()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for container in spec[list].as_array().into_iter().flatten() {
            let resources = &container["resources"];
            let declared = |resource: &str| match resource.split_once('.') {
                Some(("limits", r)) => resources["limits"].get(r).is_some(),
                Some(("requests", r)) => resources["requests"].get(r).is_some(),
                _ => resources["requests"].get(resource).is_some(),
            };
            for resource in required.iter().filter(|r| !declared(r)) {
                let container_name = container["name"].as_str().unwrap_or_default();
                missing
                    .entry(resource)
                    .or_default()
                    .insert(container_name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|(resource, names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("{resource} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", listed.join("; ")))
}

/// Rewrites the `status` (hard and used) of the quotas of `namespace`
/// whose status no longer says what is used.
pub fn refresh(state: &mut State, namespace: &str) {
    let quotas = quotas(state, namespace);
    if quotas.is_empty() {
        return;
    }
    let used = used(state, namespace);
    let key = Catalog::builtin("", "resourcequotas").key();
    for mut quota in quotas {
        let Ok(hard) = hard(&quota) else { continue };
        let text = |usage: &mut dyn Iterator<Item = (&String, Quantity)>| -> Value {
            Value::Object(
                usage
                    .map(|(k, v)| (k.clone(), json!(v.to_string())))
                    .collect(),
            )
        };
        let status = json!({
            "hard": text(&mut hard.iter().map(|(k, v)| (k, *v))),
            "used": text(&mut hard.keys().map(|k| (k, used.get(k).copied().unwrap_or(Quantity::ZERO)))),
        });
        if quota["status"] != status {
            quota["status"] = status;
            state.store.put(&key, quota);
        }
    }
}
