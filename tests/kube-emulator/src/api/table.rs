//! The `Table` form of lists and objects that `kubectl get` asks for
//! (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): a NAME column,
//! the phase for pods and namespaces, and an AGE column.

use serde_json::{json, Value};

use super::resources::ResourceType;

/// Whether the request's Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A Table of `objects`; `include` is the request's `includeObject`
/// (`None`, `Metadata` — the default — or `Object`).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    resource_version: u64,
    include: Option<&str>,
) -> Value {
    let has_phase = rt.group.is_empty()
        && matches!(
            rt.plural.as_str(),
            "pods" | "namespaces" | "persistentvolumeclaims" | "persistentvolumes"
        );
    let column = |name: &str, kind: &str, format: &str, description: &str| json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0});
    let mut columns = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
    )];
    if has_phase {
        columns.push(column("Status", "string", "", "The phase of the object."));
    }
    columns.push(column(
        "Age",
        "string",
        "",
        "Time since the object was created.",
    ));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            if has_phase {
                cells.push(object["status"]["phase"].clone());
            }
            cells.push(json!(age(object["metadata"]["creationTimestamp"].as_str())));
            let row_object = match include {
                Some("None") => Value::Null,
                Some("Object") => object.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"].clone(),
                }),
            };
            json!({"cells": cells, "object": row_object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// `42s`, `5m`, `3h`, `2d`: how kubectl shows ages.
fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| c.parse::<k8s_openapi::jiff::Timestamp>().ok()) else {
        return "<unknown>".to_string();
    };
    let seconds = (k8s_openapi::jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
