//! LimitRange admission: a new pod's containers (and init containers) get
//! the `Container` limits' default requests and limits for what they do
//! not set (noted in the `kubernetes.io/limit-ranger` annotation), then
//! pods are checked against the `Container` and `Pod` min, max and
//! maxLimitRequestRatio, and PVCs against the `PersistentVolumeClaim` min
//! and max storage, with the real plugin's messages. LimitRanges
//! themselves get the API server's defaults for `Container` items.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::{Catalog, ResourceType};
use super::pod;
use crate::quantity::Quantity;

/// Resource name → quantity (`cpu: 500m`).
type Resources = BTreeMap<String, Quantity>;

pub fn admit(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
) -> ApiResult<()> {
    if rt.is("", "limitranges") {
        default_limit_range(object);
        return Ok(());
    }
    let is_pod = rt.is("", "pods");
    // pods' containers cannot change after creation, so only creates count
    if !(is_pod && old.is_none() || rt.is("", "persistentvolumeclaims")) {
        return Ok(());
    }
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ranges: Vec<Value> = state
        .store
        .list(&Catalog::builtin("", "limitranges").key(), Some(&namespace))
        .cloned()
        .collect();
    let mut errors = Vec::new();
    for range in &ranges {
        let limits = range["spec"]["limits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let result = if is_pod {
            default_pod(object, &limits);
            check_pod(&object["spec"], &limits)
        } else {
            check_pvc(object, &limits)
        };
        match result {
            Ok(found) => errors.extend(found),
            Err(why) => errors.push(why),
        }
    }
    match errors.as_slice() {
        [] => Ok(()),
        [one] => Err(ApiError::forbidden_object(rt, &name, one)),
        many => Err(ApiError::forbidden_object(
            rt,
            &name,
            &format!("[{}]", many.join(", ")),
        )),
    }
}

/// A resource list field (`requests`, `min`, ...) as quantities.
fn resources(field: &Value) -> Result<Resources, String> {
    let mut found = Resources::new();
    for (resource, value) in field.as_object().into_iter().flatten() {
        if let Some(quantity) = Quantity::of(value) {
            found.insert(resource.clone(), quantity?);
        }
    }
    Ok(found)
}

fn of_type<'a>(limits: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    limits.iter().filter(move |l| l["type"] == kind)
}

/// Fills in the `Container` defaults each container lacks.
fn default_pod(pod: &mut Value, limits: &[Value]) {
    let (mut requests, mut limits_default) = (Map::new(), Map::new());
    for limit in of_type(limits, "Container") {
        for (field, into) in [
            ("defaultRequest", &mut requests),
            ("default", &mut limits_default),
        ] {
            for (k, v) in limit[field].as_object().into_iter().flatten() {
                into.insert(k.clone(), v.clone());
            }
        }
    }
    if requests.is_empty() && limits_default.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        for container in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let container_name = pod::name(container).to_string();
            if !container["resources"].is_object() {
                container["resources"] = json!({});
            }
            for (field, defaults, noun) in [
                ("requests", &requests, "request"),
                ("limits", &limits_default, "limit"),
            ] {
                let resources = &mut container["resources"];
                if !resources[field].is_object() {
                    resources[field] = json!({});
                }
                let mut set = Vec::new();
                for (resource, value) in defaults {
                    if resources[field].get(resource).is_none() {
                        resources[field][resource] = value.clone();
                        set.push(resource.clone());
                    }
                }
                if !set.is_empty() {
                    notes.push(format!(
                        "{} {noun} for {what} {container_name}",
                        set.join(", ")
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

type Map = BTreeMap<String, Value>;

/// A `Container` item's default limit falls back to its max, its default
/// request to its default limit, then to its min.
fn default_limit_range(range: &mut Value) {
    for item in range["spec"]["limits"].as_array_mut().into_iter().flatten() {
        if item["type"] != "Container" {
            continue;
        }
        for (into, from) in [
            ("default", "max"),
            ("defaultRequest", "default"),
            ("defaultRequest", "min"),
        ] {
            let fallback = item[from].as_object().cloned().unwrap_or_default();
            if !item[into].is_object() {
                item[into] = json!({});
            }
            for (resource, value) in fallback {
                if item[into].get(&resource).is_none() {
                    item[into][resource] = value;
                }
            }
        }
    }
}

/// The min/max/ratio violations of a (defaulted) pod spec.
fn check_pod(spec: &Value, limits: &[Value]) -> Result<Vec<String>, String> {
    let mut errors = Vec::new();
    for limit in of_type(limits, "Container") {
        for list in ["containers", "initContainers"] {
            for container in spec[list].as_array().into_iter().flatten() {
                let requests = resources(&container["resources"]["requests"])?;
                let used = resources(&container["resources"]["limits"])?;
                errors.extend(bounds("Container", limit, &requests, &used)?);
            }
        }
    }
    for limit in of_type(limits, "Pod") {
        let (requests, used) = pod_totals(spec)?;
        errors.extend(bounds("Pod", limit, &requests, &used)?);
    }
    Ok(errors)
}

/// A pod's requests and limits: the sum over its containers, or the
/// largest init container's when that is more (init containers run one
/// at a time).
pub fn pod_totals(spec: &Value) -> Result<(Resources, Resources), String> {
    let mut totals = (Resources::new(), Resources::new());
    for (field, total) in [("requests", &mut totals.0), ("limits", &mut totals.1)] {
        for container in spec["containers"].as_array().into_iter().flatten() {
            for (resource, q) in resources(&container["resources"][field])? {
                let sum = total.get(&resource).copied().unwrap_or(Quantity::ZERO) + q;
                total.insert(resource, sum);
            }
        }
        for container in spec["initContainers"].as_array().into_iter().flatten() {
            for (resource, q) in resources(&container["resources"][field])? {
                if total.get(&resource).is_none_or(|t| q > *t) {
                    total.insert(resource, q);
                }
            }
        }
    }
    Ok(totals)
}

/// The min, max and maxLimitRequestRatio errors of one limit item.
fn bounds(
    kind: &str,
    limit: &Value,
    requests: &Resources,
    limits: &Resources,
) -> Result<Vec<String>, String> {
    let mut errors = Vec::new();
    for (resource, min) in resources(&limit["min"])? {
        let error = match (requests.get(&resource), limits.get(&resource)) {
            (None, _) => Some(format!(
                "minimum {resource} usage per {kind} is {min}.  No request is specified"
            )),
            (Some(r), _) if *r < min => Some(format!(
                "minimum {resource} usage per {kind} is {min}, but request is {r}"
            )),
            (_, Some(l)) if *l < min => Some(format!(
                "minimum {resource} usage per {kind} is {min}, but limit is {l}"
            )),
            _ => None,
        };
        errors.extend(error);
    }
    for (resource, max) in resources(&limit["max"])? {
        let error = match (requests.get(&resource), limits.get(&resource)) {
            (_, None) => Some(format!(
                "maximum {resource} usage per {kind} is {max}.  No limit is specified"
            )),
            (_, Some(l)) if *l > max => Some(format!(
                "maximum {resource} usage per {kind} is {max}, but limit is {l}"
            )),
            (Some(r), _) if *r > max => Some(format!(
                "maximum {resource} usage per {kind} is {max}, but request is {r}"
            )),
            _ => None,
        };
        errors.extend(error);
    }
    for (resource, ratio) in resources(&limit["maxLimitRequestRatio"])? {
        let request = requests.get(&resource).copied().unwrap_or(Quantity::ZERO);
        let limit = limits.get(&resource).copied().unwrap_or(Quantity::ZERO);
        if request.is_zero() {
            errors.push(format!("{resource} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"));
        } else if limit.is_zero() {
            errors.push(format!("{resource} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"));
        } else {
            let observed = limit.milli() as f64 / request.milli() as f64;
            if observed * 1000.0 > ratio.milli() as f64 {
                errors.push(format!("{resource} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"));
            }
        }
    }
    Ok(errors)
}

/// PVC storage requests against the `PersistentVolumeClaim` min and max.
fn check_pvc(pvc: &Value, limits: &[Value]) -> Result<Vec<String>, String> {
    let kind = "PersistentVolumeClaim";
    let requests = resources(&pvc["spec"]["resources"]["requests"])?;
    let mut errors = Vec::new();
    for limit in of_type(limits, kind) {
        let min_only = json!({"min": limit["min"]});
        errors.extend(bounds(kind, &min_only, &requests, &Resources::new())?);
        for (resource, max) in resources(&limit["max"])? {
            let error = match requests.get(&resource) {
                None => Some(format!(
                    "maximum {resource} usage per {kind} is {max}.  No request is specified"
                )),
                Some(r) if *r > max => Some(format!(
                    "maximum {resource} usage per {kind} is {max}, but request is {r}"
                )),
                _ => None,
            };
            errors.extend(error);
        }
    }
    Ok(errors)
}
