//! One stored resource served in two API groups, as kube-apiserver serves
//! Events: `events.k8s.io/v1` Events are the `v1` Events, kept once (in
//! their core form) and converted field by field on the way in and out
//! (`pkg/apis/events/v1/conversion.go`), so that an Event written through
//! either API has the same uid and resourceVersion through both, and lists,
//! watches and field selectors of both see it.
//!
//! The conversion only renames top-level fields (`regarding` is the core
//! `involvedObject`, `note` its `message`, ...): every other field,
//! `series`, `related`, `eventTime`, `action`, `reason`, `type` and the
//! reporting instance, has the same name and shape in both. Renaming works
//! on partial objects too, so a server-side apply body converts as a whole
//! object does.
//!
//! Field selectors are checked against the labels each API accepts (the
//! core ones of `pkg/registry/core/event/strategy.go`, and the
//! `events.k8s.io` ones that `AddFieldLabelConversionsForEvent` maps onto
//! them), as the real server refuses any other with 400.

use serde_json::{Map, Value};

use super::resources::ResourceType;

/// The `events.k8s.io` group, whose Events are stored as core Events.
const EVENTS_GROUP: &str = "events.k8s.io";

/// `(events.k8s.io name, core name)` of the fields the two Event versions
/// name differently.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The field labels a core Event list or watch may select on, each with
/// the paths of the stored Event it reads (the first non-empty one wins:
/// `source` falls back to the reporting controller).
const CORE_EVENT_FIELDS: &[(&str, &[&str])] = &[
    ("involvedObject.kind", &["involvedObject.kind"]),
    ("involvedObject.namespace", &["involvedObject.namespace"]),
    ("involvedObject.name", &["involvedObject.name"]),
    ("involvedObject.uid", &["involvedObject.uid"]),
    ("involvedObject.apiVersion", &["involvedObject.apiVersion"]),
    (
        "involvedObject.resourceVersion",
        &["involvedObject.resourceVersion"],
    ),
    ("involvedObject.fieldPath", &["involvedObject.fieldPath"]),
    ("reason", &["reason"]),
    ("reportingComponent", &["reportingComponent"]),
    ("source", &["source.component", "reportingComponent"]),
    ("type", &["type"]),
    ("metadata.namespace", &["metadata.namespace"]),
    ("metadata.name", &["metadata.name"]),
];

/// The `events.k8s.io` field labels, each with the core label it means.
const EVENTS_V1_FIELDS: &[(&str, &str)] = &[
    ("reason", "reason"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

/// `(group, plural)` of the resource whose store holds `group/plural`'s
/// objects: itself, except for `events.k8s.io` Events.
pub fn stored_as<'a>(group: &'a str, plural: &'a str) -> (&'a str, &'a str) {
    if group == EVENTS_GROUP && plural == "events" {
        ("", "events")
    } else {
        (group, plural)
    }
}

/// Whether `rt` is served from another resource's objects.
fn converted(rt: &ResourceType) -> bool {
    rt.is(EVENTS_GROUP, "events")
}

/// Whether `rt` is one of the two Event resources.
pub fn is_event(rt: &ResourceType) -> bool {
    converted(rt) || rt.is("", "events")
}

/// Whether a write through `rt` gets the strict validation of the
/// `events.k8s.io` API (`ValidateEventCreate`/`Update` for a request
/// version other than `v1` or `events.k8s.io/v1beta1`).
pub fn strict_event_validation(rt: &ResourceType) -> bool {
    converted(rt)
}

/// Turns an object (or a partial one, an apply body) as `rt` serves it
/// into the stored form. Fields the served version does not have are
/// dropped, as decoding into its type drops unknown fields.
pub fn to_storage(rt: &ResourceType, object: &mut Value) {
    if converted(rt) {
        rename(object, EVENT_RENAMES.iter().copied());
    }
}

/// Turns a stored object into the form `rt` serves.
pub fn from_storage(rt: &ResourceType, object: &mut Value) {
    if converted(rt) {
        rename(
            object,
            EVENT_RENAMES
                .iter()
                .map(|&(served, stored)| (stored, served)),
        );
    }
}

/// Renames the top-level fields `from` to `to`, after dropping any `to`
/// already there (a field the source form does not have).
fn rename<'a>(object: &mut Value, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    for (_, to) in pairs.clone() {
        map.remove(to);
    }
    let mut moved = Map::new();
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            moved.insert(to.to_string(), value);
        }
    }
    map.extend(moved);
}

/// The paths into a stored object that field label `label` of `rt`
/// reads (the first non-empty one counts), or why the label is refused.
/// Resources without a list of their own accept any dotted path.
pub fn field_paths(rt: &ResourceType, label: &str) -> Result<Vec<String>, String> {
    let unsupported = || format!("field label not supported: {label}");
    let core_label = if converted(rt) {
        EVENTS_V1_FIELDS
            .iter()
            .find(|(served, _)| *served == label)
            .map(|(_, core)| *core)
            .ok_or_else(unsupported)?
    } else if rt.is("", "events") {
        label
    } else {
        return Ok(vec![label.to_string()]);
    };
    CORE_EVENT_FIELDS
        .iter()
        .find(|(core, _)| *core == core_label)
        .map(|(_, paths)| paths.iter().map(|p| p.to_string()).collect())
        .ok_or_else(unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::Catalog;
    use serde_json::json;

    fn events_v1() -> ResourceType {
        Catalog::builtin(EVENTS_GROUP, "events")
    }

    #[test]
    fn an_events_v1_event_round_trips_through_the_core_form() {
        let served = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "m.1", "namespace": "ns"},
            "regarding": {"kind": "Migration", "name": "m", "namespace": "ns"},
            "related": {"kind": "Pod", "name": "p"},
            "note": "copying", "reason": "Copy", "action": "Sync", "type": "Normal",
            "reportingController": "mover.io/orchestrator", "reportingInstance": "o-1",
            "eventTime": "2026-12-07T08:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-07T08:01:00.000000Z"},
            "deprecatedSource": {"component": "c"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2026-12-07T08:00:00Z",
            "deprecatedLastTimestamp": "2026-12-07T08:01:00Z",
        });
        let mut stored = served.clone();
        to_storage(&events_v1(), &mut stored);
        assert_eq!(stored["involvedObject"]["kind"], "Migration");
        assert_eq!(stored["message"], "copying");
        assert_eq!(stored["reportingComponent"], "mover.io/orchestrator");
        assert_eq!(stored["reportingInstance"], "o-1");
        assert_eq!(stored["source"]["component"], "c");
        assert_eq!(stored["count"], 3);
        assert_eq!(stored["firstTimestamp"], "2026-12-07T08:00:00Z");
        assert_eq!(stored["lastTimestamp"], "2026-12-07T08:01:00Z");
        assert_eq!(stored["series"]["count"], 2);
        assert_eq!(stored["related"]["name"], "p");
        assert!(stored.get("regarding").is_none() && stored.get("note").is_none());
        let mut back = stored;
        from_storage(&events_v1(), &mut back);
        assert_eq!(back, served);
    }

    #[test]
    fn core_only_fields_sent_to_events_v1_are_dropped() {
        let mut sent = json!({"message": "ignored", "note": "kept"});
        to_storage(&events_v1(), &mut sent);
        assert_eq!(sent, json!({"message": "kept"}));
    }

    #[test]
    fn other_resources_are_not_converted() {
        let pods = Catalog::builtin("", "pods");
        let mut pod = json!({"note": "x"});
        to_storage(&pods, &mut pod);
        assert_eq!(pod, json!({"note": "x"}));
        assert_eq!(stored_as("", "pods"), ("", "pods"));
        assert_eq!(stored_as(EVENTS_GROUP, "events"), ("", "events"));
    }

    #[test]
    fn field_labels_are_those_each_api_accepts() {
        let core = Catalog::builtin("", "events");
        assert_eq!(
            field_paths(&core, "involvedObject.uid").unwrap(),
            ["involvedObject.uid"]
        );
        assert_eq!(
            field_paths(&core, "source").unwrap(),
            ["source.component", "reportingComponent"]
        );
        assert!(field_paths(&core, "regarding.name").is_err());
        assert!(field_paths(&core, "message").is_err());
        let v1 = events_v1();
        assert_eq!(
            field_paths(&v1, "regarding.name").unwrap(),
            ["involvedObject.name"]
        );
        assert_eq!(
            field_paths(&v1, "reportingController").unwrap(),
            ["reportingComponent"]
        );
        assert_eq!(
            field_paths(&v1, "involvedObject.name").unwrap_err(),
            "field label not supported: involvedObject.name"
        );
        let pods = Catalog::builtin("", "pods");
        assert_eq!(
            field_paths(&pods, "spec.nodeName").unwrap(),
            ["spec.nodeName"]
        );
    }
}
