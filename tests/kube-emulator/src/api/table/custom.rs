//! Custom resources' columns: their CRD's `additionalPrinterColumns` for
//! the version served (an AGE column when it declares none), each cell the
//! value at the column's JSONPath, typed as the column says, as the
//! apiextensions server computes them.
//!
//! The JSONPaths understood are those printer columns use: fields
//! (`.status.phase`, `.metadata['some.key']`), array indexes (`[0]`) and
//! equality filters (`.status.conditions[?(@.type=="Ready")].status`). A
//! path beyond that gives empty cells (`<none>`), as a path finding
//! nothing does.

use serde_json::{json, Value};

use super::{since, text};
use crate::api::resources::{ResourceType, TypeKey};
use crate::api::store::Store;

/// One printer column of a custom resource.
pub(super) struct Column {
    definition: Value,
    kind: String,
    /// `None` when the path is beyond what is understood.
    path: Option<Vec<Step>>,
}

/// The printer columns of custom resource `rt` at `version` (after NAME),
/// `None` when `rt` is not defined by a CRD.
pub(super) fn columns(store: &Store, rt: &ResourceType, version: &str) -> Option<Vec<Column>> {
    let crds = TypeKey {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    };
    let crd = store.get(&crds, "", &format!("{}.{}", rt.plural, rt.group))?;
    let declared = super::list(crd, "/spec/versions")
        .iter()
        .find(|v| text(v, "/name") == version)
        .map(|v| super::list(v, "/additionalPrinterColumns"))
        .unwrap_or_default();
    let age = [json!({
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    })];
    let declared = if declared.is_empty() {
        &age[..]
    } else {
        declared
    };
    Some(declared.iter().map(Column::from_crd).collect())
}

impl Column {
    fn from_crd(declared: &Value) -> Self {
        let kind = text(declared, "/type").to_string();
        Self {
            definition: json!({
                "name": text(declared, "/name"),
                "type": kind,
                "format": text(declared, "/format"),
                "description": text(declared, "/description"),
                "priority": declared["priority"].as_i64().unwrap_or(0),
            }),
            path: parse(text(declared, "/jsonPath")),
            kind,
        }
    }

    pub(super) fn definition(&self) -> Value {
        self.definition.clone()
    }

    /// The cell of `object`: the value found, as the column's type, or
    /// null (`<none>`) when there is none of that type.
    pub(super) fn cell(&self, object: &Value) -> Value {
        let Some(found) = self.path.as_deref().and_then(|path| find(object, path)) else {
            return Value::Null;
        };
        match (self.kind.as_str(), found) {
            (_, Value::Null) => Value::Null,
            ("string", Value::String(text)) => json!(text),
            ("string", other) => json!(other.to_string()),
            ("integer", Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map_or(Value::Null, |n| json!(n)),
            ("number", Value::Number(n)) => json!(n.as_f64()),
            ("boolean", Value::Bool(b)) => json!(b),
            ("date", Value::String(time)) => {
                json!(since(time).unwrap_or_else(|| "<invalid>".to_string()))
            }
            _ => Value::Null,
        }
    }
}

/// One step of a JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.a.b=="value")]`: the first element whose `a.b` is `value`.
    Filter(Vec<String>, String),
}

/// Parses `.a.b`, `.a['b.c']`, `.a[0]`, `.a[?(@.k=="v")].b`, with or
/// without the surrounding `{}`.
fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let mut rest = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Field(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inside = &after[..end];
            steps.push(bracket(inside)?);
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The step inside `[...]`.
fn bracket(inside: &str) -> Option<Step> {
    if let Some(filter) = inside
        .strip_prefix("?(@.")
        .and_then(|f| f.strip_suffix(')'))
    {
        let (field, value) = filter.split_once("==")?;
        let fields = field.trim().split('.').map(str::to_string).collect();
        return Some(Step::Filter(fields, unquote(value.trim())?.to_string()));
    }
    if let Some(name) = unquote(inside) {
        return Some(Step::Field(name.to_string()));
    }
    inside.parse().ok().map(Step::Index)
}

fn unquote(text: &str) -> Option<&str> {
    ['\'', '"'].iter().find_map(|quote| {
        text.strip_prefix(*quote)
            .and_then(|t| t.strip_suffix(*quote))
    })
}

/// The value `path` leads to in `object`.
fn find<'a>(object: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, step| match step {
        Step::Field(name) => value.get(name),
        Step::Index(index) => value.get(*index),
        Step::Filter(fields, wanted) => value.as_array()?.iter().find(|element| {
            let found = fields.iter().try_fold(*element, |v, field| v.get(field));
            match found {
                Some(Value::String(text)) => text == wanted,
                Some(other) => serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == *other),
                None => false,
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_find_their_values() {
        let object = json!({
            "metadata": {"annotations": {"a.b/c": "annotated"}},
            "spec": {"planName": "plan", "replicas": 3, "ports": [80, 443]},
            "status": {"conditions": [
                {"type": "Scheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
            ]},
        });
        for (path, found) in [
            (".spec.planName", json!("plan")),
            ("{.spec.replicas}", json!(3)),
            (".spec.ports[1]", json!(443)),
            (".metadata.annotations['a.b/c']", json!("annotated")),
            (
                r#".status.conditions[?(@.type=="Ready")].status"#,
                json!("False"),
            ),
        ] {
            let steps = parse(path).unwrap_or_else(|| panic!("{path} parses"));
            assert_eq!(find(&object, &steps), Some(&found), "{path}");
        }
        assert_eq!(
            find(&object, &parse(".status.phase").expect("parses")),
            None
        );
        assert_eq!(parse(".spec..x"), None);
        assert_eq!(parse("spec"), None);
    }

    #[test]
    fn cells_take_the_column_type() {
        let column = |kind: &str, path: &str| {
            Column::from_crd(&json!({"name": "c", "type": kind, "jsonPath": path}))
        };
        let object = json!({"spec": {"n": 2.7, "s": "x", "b": true}});
        assert_eq!(column("integer", ".spec.n").cell(&object), json!(2));
        assert_eq!(column("string", ".spec.b").cell(&object), json!("true"));
        assert_eq!(column("boolean", ".spec.s").cell(&object), Value::Null);
        assert_eq!(column("date", ".spec.s").cell(&object), json!("<invalid>"));
        assert_eq!(column("string", ".spec.missing").cell(&object), Value::Null);
    }
}
