//! Event validation as kube-apiserver does it
//! (`pkg/apis/core/validation/events.go`), on the stored (core) form of
//! an Event, so field paths are the core names (`message`, not `note`).
//!
//! Every write gets the legacy checks: an Event without `eventTime` must
//! be in its involved object's namespace; one with it needs a reporting
//! controller (a qualified name), reporting instance, action and reason,
//! within their length limits, and a message of at most 1024 bytes.
//! Writes through `events.k8s.io` (`strict`) also need `eventTime`, a
//! `Normal` or `Warning` type, a valid `series` and none of the deprecated
//! fields on create; on update they may change nothing but `series` and
//! metadata.

use serde_json::Value;

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// The fields an `events.k8s.io` update may not change.
const IMMUTABLE: &[&str] = &[
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
];

/// `(field, why)` for each problem of `new` (replacing `old`, `None` on
/// create), in the order the real server lists them.
pub fn problems(old: Option<&Value>, new: &Value, strict: bool) -> Vec<(String, String)> {
    let mut problems = legacy(new);
    if !strict {
        return problems;
    }
    match old {
        None => {
            problems.extend(series(new));
            if is_zero(&new["eventTime"]) {
                problems.push(required("eventTime"));
            }
            let type_ = text(new, "type");
            if type_ != "Normal" && type_ != "Warning" {
                problems.push(invalid("type", "", &format!("has invalid value: {type_}")));
            }
            for field in ["firstTimestamp", "lastTimestamp"] {
                if !is_zero(&new[field]) {
                    problems.push(invalid(field, "", "needs to be unset"));
                }
            }
            if new["count"].as_i64().unwrap_or(0) != 0 {
                problems.push(invalid("count", "", "needs to be unset"));
            }
            let source = &new["source"];
            if !text(source, "component").is_empty() || !text(source, "host").is_empty() {
                problems.push(invalid("source", "", "needs to be unset"));
            }
        }
        Some(old) => {
            if old.get("series") != new.get("series") {
                problems.extend(series(new));
            }
            for field in IMMUTABLE {
                if !same(&old[*field], &new[*field]) {
                    let value = serde_json::to_string(&new[*field]).unwrap_or_default();
                    problems.push((
                        field.to_string(),
                        format!("Invalid value: {value}: field is immutable"),
                    ));
                }
            }
        }
    }
    problems
}

/// `legacyValidateEvent`: what every Event write must pass.
fn legacy(event: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let namespace = event["metadata"]["namespace"].as_str().unwrap_or("");
    let involved = text(&event["involvedObject"], "namespace");
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        )
    };
    if is_zero(&event["eventTime"]) {
        let fits = if involved.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved
        };
        if !fits {
            problems.push(mismatch());
        }
        return problems;
    }
    if involved.is_empty() && namespace != "default" && namespace != "kube-system" {
        problems.push(mismatch());
    }
    let controller = text(event, "reportingComponent");
    if controller.is_empty() {
        problems.push(required("reportingController"));
    }
    for why in qualified_name_problems(controller) {
        problems.push(invalid("reportingController", controller, &why));
    }
    let limited = [
        ("reportingInstance", REPORTING_INSTANCE_LIMIT),
        ("action", ACTION_LIMIT),
        ("reason", REASON_LIMIT),
    ];
    for (field, limit) in limited {
        let value = text(event, field);
        if value.is_empty() {
            problems.push(required(field));
        }
        if value.len() > limit {
            problems.push(too_long(field, limit));
        }
    }
    if text(event, "message").len() > NOTE_LIMIT {
        problems.push(too_long("message", NOTE_LIMIT));
    }
    problems
}

/// `validateV1EventSeries`.
fn series(event: &Value) -> Vec<(String, String)> {
    let series = &event["series"];
    if !series.is_object() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    if series["count"].as_i64().unwrap_or(0) < 2 {
        problems.push(invalid("series.count", "", "should be at least 2"));
    }
    if is_zero(&series["lastObservedTime"]) {
        problems.push(required("series.lastObservedTime"));
    }
    problems
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the prefix a DNS
/// subdomain, the name at most 63 alphanumerics, `-`, `_` or `.`,
/// starting and ending with an alphanumeric.
fn qualified_name_problems(value: &str) -> Vec<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let mut problems = Vec::new();
    if name.contains('/') {
        problems.push("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string());
        return problems;
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else if !is_subdomain(prefix) {
            problems.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
        }
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_string());
    }
    if !(name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || "-_.".contains(c)))
    {
        problems.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string());
    }
    problems
}

fn is_subdomain(text: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    text.len() <= 253
        && text.split('.').all(|label| {
            label.starts_with(alnum)
                && label.ends_with(alnum)
                && label.chars().all(|c| alnum(c) || c == '-')
        })
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or("")
}

/// A time (or other field) Go would see as its zero value.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Equal as Go compares the typed fields: absent, null and empty are one.
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| is_zero(v) || v.as_object().is_some_and(|m| m.is_empty());
    a == b || (empty(a) && empty(b))
}

fn required(field: &str) -> (String, String) {
    (field.to_string(), "Required value".to_string())
}

fn invalid(field: &str, value: &str, why: &str) -> (String, String) {
    (
        field.to_string(),
        format!("Invalid value: {value:?}: {why}"),
    )
}

fn too_long(field: &str, limit: usize) -> (String, String) {
    invalid(field, "", &format!("can have at most {limit} characters"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What kube-runtime's `Recorder` creates, in the stored form.
    fn recorded() -> Value {
        json!({
            "metadata": {"name": "m.1", "namespace": "ns"},
            "involvedObject": {"kind": "Migration", "name": "m", "namespace": "ns"},
            "eventTime": "2026-12-07T08:00:00.000000Z",
            "reportingComponent": "mover.io/orchestrator",
            "reportingInstance": "mover.io/orchestrator",
            "action": "Migrate", "reason": "Started", "type": "Normal", "message": "go",
        })
    }

    fn fields(problems: &[(String, String)]) -> Vec<&str> {
        problems.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_recorder_event_passes_strict_validation() {
        assert!(problems(None, &recorded(), true).is_empty());
    }

    #[test]
    fn strict_creation_needs_event_time_type_and_no_deprecated_fields() {
        let mut event = recorded();
        event["eventTime"] = Value::Null;
        event["type"] = json!("Odd");
        event["count"] = json!(1);
        event["source"] = json!({"component": "kubelet"});
        event["firstTimestamp"] = json!("2026-12-07T08:00:00Z");
        // Without eventTime the legacy checks pass on namespaces alone.
        assert_eq!(
            fields(&problems(None, &event, true)),
            ["eventTime", "type", "firstTimestamp", "count", "source"]
        );
        assert!(problems(None, &event, false).is_empty());
    }

    #[test]
    fn an_event_with_event_time_needs_its_reporter_action_and_reason() {
        let mut event = recorded();
        for field in [
            "reportingComponent",
            "reportingInstance",
            "action",
            "reason",
        ] {
            event[field] = json!("");
        }
        event["message"] = json!("x".repeat(1025));
        let found = problems(None, &event, false);
        assert_eq!(
            fields(&found),
            [
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "message"
            ]
        );
        assert_eq!(
            found[6].1,
            "Invalid value: \"\": can have at most 1024 characters"
        );
        event["reportingComponent"] = json!("not a/qualified/name");
        assert!(fields(&problems(None, &event, false)).contains(&"reportingController"));
    }

    #[test]
    fn a_core_event_must_be_in_its_objects_namespace() {
        let event = json!({
            "metadata": {"name": "p.1", "namespace": "other"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns"},
        });
        let found = problems(None, &event, false);
        assert_eq!(fields(&found), ["involvedObject.namespace"]);
        let node = json!({
            "metadata": {"name": "n.1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n"},
        });
        assert!(problems(None, &node, false).is_empty());
    }

    #[test]
    fn a_strict_update_may_change_the_series_only() {
        let old = recorded();
        let mut new = old.clone();
        new["series"] = json!({"count": 2, "lastObservedTime": "2026-12-07T08:01:00.000000Z"});
        assert!(problems(Some(&old), &new, true).is_empty());
        new["series"]["count"] = json!(1);
        new["message"] = json!("changed");
        assert_eq!(
            fields(&problems(Some(&old), &new, true)),
            ["series.count", "message"]
        );
        // The core API lets a client change what it likes.
        assert!(problems(Some(&old), &new, false).is_empty());
    }
}
