//! The `Table` form of lists and objects that `kubectl get` asks for
//! (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), with the
//! columns a real cluster's printers give each kind, so that `kubectl get`
//! (and `-o wide`) prints here what it prints there.
//!
//! - [`builtin`]: the built-in kinds, as Kubernetes' own printers lay them
//!   out (`pkg/printers/internalversion`), and OpenShift Routes as
//!   openshift-apiserver's do; [`pod`] holds the pod STATUS kubectl is
//!   known for;
//! - [`custom`]: custom resources, from their CRD's
//!   `additionalPrinterColumns` (JSONPath cells);
//! - anything else gets the generic NAME and CREATED AT.
//!
//! As on a real server, every column is always sent; those of priority 1
//! are the ones `kubectl get` shows only with `-o wide`.

mod builtin;
mod custom;
mod pod;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::resources::ResourceType;
use super::store::Store;

/// Whether the request's Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A Table of `objects` of `rt` served at `version`; `include` is the
/// request's `includeObject` (`None`, `Metadata` — the default — or
/// `Object`). `store` holds the CRDs whose printer columns custom
/// resources use.
pub fn table(
    store: &Store,
    rt: &ResourceType,
    version: &str,
    objects: &[Value],
    resource_version: u64,
    include: Option<&str>,
) -> Value {
    let printer = match builtin::printer(rt) {
        Some(printer) => Printer::Builtin(printer),
        None => match custom::columns(store, rt, version) {
            Some(columns) => Printer::Custom(columns),
            None => Printer::Generic,
        },
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            // Printers read the stored form, as the real ones read the
            // internal type (events.k8s.io Events print as core ones).
            let mut stored = object.clone();
            super::conversion::to_storage(rt, &mut stored);
            let (cells, conditions) = printer.cells(&stored);
            let mut row = json!({"cells": cells, "object": row_object(object, include)});
            if let Some(conditions) = conditions {
                row["conditions"] = conditions;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": printer.columns(),
        "rows": rows,
    })
}

/// How the rows of one resource are laid out.
enum Printer {
    Builtin(&'static builtin::Printer),
    Custom(Vec<custom::Column>),
    /// What a real server gives resources without a printer.
    Generic,
}

impl Printer {
    fn columns(&self) -> Vec<Value> {
        match self {
            Printer::Builtin(printer) => printer.columns.iter().map(Column::definition).collect(),
            Printer::Custom(columns) => std::iter::once(NAME.definition())
                .chain(columns.iter().map(custom::Column::definition))
                .collect(),
            Printer::Generic => vec![
                NAME.definition(),
                Column::new("Created At", "date", "The time the object was created.").definition(),
            ],
        }
    }

    /// A row's cells, and the row's conditions if it has any.
    fn cells(&self, object: &Value) -> (Vec<Value>, Option<Value>) {
        match self {
            Printer::Builtin(printer) => ((printer.cells)(object), (printer.conditions)(object)),
            Printer::Custom(columns) => {
                let cells = std::iter::once(json!(name(object)))
                    .chain(columns.iter().map(|column| column.cell(object)))
                    .collect();
                (cells, None)
            }
            Printer::Generic => {
                let created = text(object, "/metadata/creationTimestamp");
                (vec![json!(name(object)), json!(created)], None)
            }
        }
    }
}

/// A column definition.
#[derive(Clone, Copy)]
struct Column {
    name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    kind: &'static str,
    /// `name` for the object's name column, else empty.
    format: &'static str,
    description: &'static str,
    /// 0, or 1 for the columns shown only with `-o wide`.
    priority: u8,
}

impl Column {
    const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    /// The same column, shown only with `-o wide`.
    const fn wide(self) -> Self {
        Self {
            priority: 1,
            ..self
        }
    }

    fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};

const AGE: Column = Column::new(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// What a row carries of its object.
fn row_object(object: &Value, include: Option<&str>) -> Value {
    match include {
        Some("None") => Value::Null,
        Some("Object") => object.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"].clone(),
        }),
    }
}

/// The string at `pointer` in `object`, `""` when absent.
fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The integer at `pointer` in `object`, 0 when absent.
fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at `pointer` in `object`, empty when absent.
fn list<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name(object: &Value) -> &str {
    text(object, "/metadata/name")
}

/// `value`, or `<none>` when empty.
fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".to_string()
    } else {
        value.to_string()
    }
}

/// The object's age, as kubectl shows it.
fn age(object: &Value) -> String {
    since(text(object, "/metadata/creationTimestamp")).unwrap_or_else(|| "<unknown>".to_string())
}

/// How long ago the RFC 3339 time `time` was, `None` if it is no time.
fn since(time: &str) -> Option<String> {
    time.parse::<Timestamp>().ok().map(ago)
}

/// How long ago `then` was.
fn ago(then: Timestamp) -> String {
    human_duration(Timestamp::now().as_second() - then.as_second())
}

/// A duration in seconds as apimachinery's `HumanDuration` writes it:
/// `42s`, `5m3s`, `45m`, `3h20m`, `20h`, `4d5h`, `90d`, `2y30d`.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    let with_rest = |whole: i64, unit: &str, rest: i64, rest_unit: &str| {
        if rest == 0 {
            format!("{whole}{unit}")
        } else {
            format!("{whole}{unit}{rest}{rest_unit}")
        }
    };
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_rest(days, "d", hours % 24, "h");
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if days < 365 * 8 {
        return with_rest(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubectl_writes_them() {
        for (seconds, shown) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (42, "42s"),
            (119, "119s"),
            (303, "5m3s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (20 * 3600, "20h"),
            (4 * 86_400 + 5 * 3600, "4d5h"),
            (90 * 86_400, "90d"),
            (3 * 365 * 86_400, "3y"),
            (10 * 365 * 86_400, "10y"),
        ] {
            assert_eq!(human_duration(seconds), shown, "{seconds}s");
        }
    }
}
