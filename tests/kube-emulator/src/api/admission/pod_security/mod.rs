//! Pod Security Admission, as the upstream plugin runs it with the default
//! configuration (everything privileged unless labelled, no exemptions):
//! a namespace's `pod-security.kubernetes.io/{enforce,audit,warn}` labels
//! (and their `-version`s) choose a level of the Pod Security Standards.
//! Pods that fail the enforce level are refused; pods and workload
//! templates that fail the warn level get a warning. Labelling a
//! namespace with a stricter enforce level warns about its existing pods
//! that would now be refused. The audit level is parsed and checked but,
//! the emulator keeping no audit log, has no effect.

mod checks;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::super::error::{ApiError, ApiResult};
use super::super::objects::State;
use super::super::resources::{Catalog, ResourceType};
use super::pod;
use checks::{evaluate, Pod, Violation};

/// A level of the Pod Security Standards, least strict first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Which release's standard: `v1.N`, or the newest (`latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Minor(u32),
    Latest,
}

impl Version {
    fn parse(text: &str) -> Option<Self> {
        if text == "latest" {
            return Some(Version::Latest);
        }
        let minor = text.strip_prefix("v1.")?;
        let canonical = minor == "0" || (!minor.starts_with('0') && !minor.is_empty());
        if !canonical || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(Version::Minor)
    }

    /// Whether this version includes what came in v1.`minor`.
    pub fn at_least(self, minor: u32) -> bool {
        match self {
            Version::Latest => true,
            Version::Minor(own) => own >= minor,
        }
    }
}

/// A level at a version: `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LevelVersion {
    level: Level,
    version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Version::Latest => write!(f, "{}:latest", self.level.name()),
            Version::Minor(minor) => write!(f, "{}:v1.{minor}", self.level.name()),
        }
    }
}

const PRIVILEGED: LevelVersion = LevelVersion {
    level: Level::Privileged,
    version: Version::Latest,
};

const PREFIX: &str = "pod-security.kubernetes.io/";

/// A namespace's policy, and what was wrong with its labels (as
/// `(field, why)` of a 422).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    enforce: LevelVersion,
    audit: LevelVersion,
    warn: LevelVersion,
    errors: Vec<(String, String)>,
}

impl Policy {
    /// From a namespace's labels. A bad enforce level fails closed
    /// (restricted), bad audit and warn levels fail open (privileged);
    /// without a warn label, warn follows a stricter enforce.
    fn of(namespace: &Value) -> Self {
        let labels = &namespace["metadata"]["labels"];
        let mut policy = Policy {
            enforce: PRIVILEGED,
            audit: PRIVILEGED,
            warn: PRIVILEGED,
            errors: Vec::new(),
        };
        let mut has_enforce_level = false;
        for mode in ["enforce", "audit", "warn"] {
            let level_key = format!("{PREFIX}{mode}");
            let version_key = format!("{PREFIX}{mode}-version");
            let mut chosen = PRIVILEGED;
            if let Some(text) = labels[&level_key].as_str() {
                match Level::parse(text) {
                    Some(level) => {
                        chosen.level = level;
                        has_enforce_level |= mode == "enforce";
                    }
                    None => {
                        if mode == "enforce" {
                            chosen.level = Level::Restricted;
                        }
                        policy.errors.push(label_error(
                            &level_key,
                            text,
                            "must be one of privileged, baseline, restricted",
                        ));
                    }
                }
            }
            if let Some(text) = labels[&version_key].as_str() {
                match Version::parse(text) {
                    Some(version) => chosen.version = version,
                    None => policy.errors.push(label_error(
                        &version_key,
                        text,
                        "must be \"latest\" or \"v1.x\"",
                    )),
                }
            }
            match mode {
                "enforce" => policy.enforce = chosen,
                "audit" => policy.audit = chosen,
                _ => policy.warn = chosen,
            }
        }
        let warn_labelled = labels[format!("{PREFIX}warn")].is_string();
        let warn_versioned = labels[format!("{PREFIX}warn-version")].is_string();
        if !warn_labelled && has_enforce_level && policy.enforce.level > policy.warn.level {
            policy.warn.level = policy.enforce.level;
            if !warn_versioned {
                policy.warn.version = policy.enforce.version;
            }
        }
        policy
    }

    fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

fn label_error(key: &str, value: &str, why: &str) -> (String, String) {
    (
        format!("metadata.labels[{key}]"),
        format!("Invalid value: {value:?}: {why}"),
    )
}

/// The aggregated result of a pod against a level, as the plugin words it.
struct Verdict(Vec<Violation>);

impl Verdict {
    fn of(level: LevelVersion, metadata: &Value, spec: &Value) -> Self {
        let pod = Pod {
            metadata,
            spec,
            version: level.version,
        };
        Verdict(evaluate(level.level, &pod))
    }

    fn allowed(&self) -> bool {
        self.0.is_empty()
    }

    /// `reason (detail), reason (detail)`.
    fn detail(&self) -> String {
        self.0
            .iter()
            .map(|v| {
                if v.detail.is_empty() {
                    v.reason.clone()
                } else {
                    format!("{} ({})", v.reason, v.detail)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `reason, reason`.
    fn reasons(&self) -> String {
        self.0
            .iter()
            .map(|v| v.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs the plugin on a write: namespaces (their labels), pods (enforce
/// and warn) and workloads with pod templates (warn).
pub fn admit(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if rt.is_namespace() {
        return admit_namespace(state, rt, old, object, warnings);
    }
    let Some((metadata, spec)) = pod::template(rt, object) else {
        return Ok(());
    };
    let is_pod = rt.is("", "pods");
    if is_pod && old.is_some_and(|old| !significant_pod_update(old, object)) {
        return Ok(());
    }
    let namespaces = Catalog::namespace_type();
    let namespace_name = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let Some(namespace) = state.store.get(&namespaces.key(), "", namespace_name) else {
        return Ok(());
    };
    let policy = Policy::of(namespace);
    if is_pod && policy.errors.is_empty() && policy.fully_privileged() {
        return Ok(());
    }
    if !is_pod
        && policy.errors.is_empty()
        && policy.warn.level == Level::Privileged
        && policy.audit.level == Level::Privileged
    {
        return Ok(());
    }
    let enforced = is_pod.then(|| Verdict::of(policy.enforce, metadata, spec));
    if let Some(verdict) = enforced.as_ref().filter(|v| !v.allowed()) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::forbidden_object(
            rt,
            name,
            &format!(
                "violates PodSecurity \"{}\": {}",
                policy.enforce,
                verdict.detail()
            ),
        ));
    }
    let warned = match enforced {
        Some(verdict) if policy.warn == policy.enforce => verdict,
        _ => Verdict::of(policy.warn, metadata, spec),
    };
    if !warned.allowed() {
        warnings.push(format!(
            "would violate PodSecurity \"{}\": {}",
            policy.warn,
            warned.detail()
        ));
    }
    Ok(())
}

/// A pod update the plugin looks at again: new images or ephemeral
/// containers (nothing else in a pod's spec may change).
fn significant_pod_update(old: &Value, new: &Value) -> bool {
    let images = |pod: &Value| -> Vec<Value> {
        pod::CONTAINER_LISTS
            .iter()
            .flat_map(|list| pod["spec"][*list].as_array().cloned().unwrap_or_default())
            .map(|c| Value::Array(vec![c["name"].clone(), c["image"].clone()]))
            .collect()
    };
    images(old) != images(new)
}

/// Bad labels are refused (on update only when they got worse); a
/// stricter enforce level warns about the namespace's pods it would refuse.
fn admit_namespace(
    state: &State,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let new = Policy::of(object);
    let Some(old) = old else {
        return check_labels(rt, name, &new.errors);
    };
    let old = Policy::of(old);
    if !new.errors.is_empty() && (old.errors.is_empty() || old.errors != new.errors) {
        return check_labels(rt, name, &new.errors);
    }
    let loosened =
        new.enforce.version == old.enforce.version && new.enforce.level <= old.enforce.level;
    if new.enforce == old.enforce || new.enforce.level == Level::Privileged || loosened {
        return Ok(());
    }
    warnings.extend(existing_pod_warnings(state, name, new.enforce));
    Ok(())
}

fn check_labels(rt: &ResourceType, name: &str, errors: &[(String, String)]) -> ApiResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(rt, name, errors))
}

/// The warnings for the pods of `namespace` that `enforce` would refuse:
/// one per distinct set of reasons, naming the first pod (by name) and
/// how many others share it. Pods no controller owns come first, then
/// one pod per controller, then the rest.
fn existing_pod_warnings(state: &State, namespace: &str, enforce: LevelVersion) -> Vec<String> {
    let pods_type = Catalog::builtin("", "pods");
    let pods: Vec<&Value> = state
        .store
        .list(&pods_type.key(), Some(namespace))
        .collect();
    // reasons → (first pod name, count), in order of first appearance
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for pod in prioritized(pods) {
        let verdict = Verdict::of(enforce, &pod["metadata"], &pod["spec"]);
        if verdict.allowed() {
            continue;
        }
        let pod_name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let entry = seen
            .entry(verdict.reasons())
            .or_insert((pod_name.clone(), 0));
        if pod_name < entry.0 {
            entry.0 = pod_name;
        }
        entry.1 += 1;
    }
    if seen.is_empty() {
        return Vec::new();
    }
    let mut pod_warnings: Vec<String> = seen
        .into_iter()
        .map(|(reasons, (first, count))| match count {
            1 => format!("{first}: {reasons}"),
            2 => format!("{first} (and 1 other pod): {reasons}"),
            n => format!("{first} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    pod_warnings.sort();
    let mut warnings = vec![format!(
        "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{enforce}\""
    )];
    warnings.extend(pod_warnings);
    warnings
}

/// Uncontrolled pods and the first pod of each controller, then the
/// other pods of controllers already seen.
fn prioritized(pods: Vec<&Value>) -> Vec<&Value> {
    let controller = |pod: &Value| {
        pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["controller"] == true)
            .and_then(|r| r["uid"].as_str())
            .map(str::to_string)
    };
    let mut first = Vec::new();
    let mut duplicates = Vec::new();
    let mut controllers = Vec::new();
    for pod in pods {
        match controller(pod) {
            Some(uid) if controllers.contains(&uid) => duplicates.push(pod),
            Some(uid) => {
                controllers.push(uid);
                first.push(pod);
            }
            None => first.push(pod),
        }
    }
    first.extend(duplicates);
    first
}
