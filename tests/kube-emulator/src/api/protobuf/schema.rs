//! The protobuf messages the decoder knows, read from `schema.txt` once:
//! by message name, each field's number, JSON name, shape (one value, a
//! list, a map keyed by strings) and type.

use std::collections::HashMap;
use std::sync::OnceLock;

const SCHEMA: &str = include_str!("schema.txt");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    One,
    List,
    Map,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message(&'static str),
}

#[derive(Debug)]
pub struct Field {
    pub json: &'static str,
    pub shape: Shape,
    pub kind: Type,
}

pub struct Schema {
    messages: HashMap<&'static str, HashMap<u64, Field>>,
}

impl Schema {
    /// The schema, or why `schema.txt` cannot be read (a unit test keeps
    /// that from happening).
    pub fn get() -> Result<&'static Schema, String> {
        static SCHEMA_READ: OnceLock<Result<Schema, String>> = OnceLock::new();
        SCHEMA_READ
            .get_or_init(|| Schema::parse(SCHEMA))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn parse(text: &'static str) -> Result<Schema, String> {
        let mut messages: HashMap<&str, HashMap<u64, Field>> = HashMap::new();
        let mut current = None;
        for (index, line) in text.lines().enumerate() {
            let bad = || format!("schema.txt line {}: {line:?}", index + 1);
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                messages.entry(line.trim()).or_default();
                current = Some(line.trim());
                continue;
            }
            let words: Vec<&'static str> = line.split_whitespace().collect();
            let (Some(message), [number, json, shape, kind]) = (current, &words[..]) else {
                return Err(bad());
            };
            let (json, kind): (&'static str, &'static str) = (json, kind);
            let field = Field {
                json,
                shape: match *shape {
                    "one" => Shape::One,
                    "list" => Shape::List,
                    "map" => Shape::Map,
                    _ => return Err(bad()),
                },
                kind: match kind {
                    "string" => Type::String,
                    "bytes" => Type::Bytes,
                    "bool" => Type::Bool,
                    "int32" => Type::Int32,
                    "int64" => Type::Int64,
                    "double" => Type::Double,
                    message => Type::Message(message),
                },
            };
            let number: u64 = number.parse().map_err(|_| bad())?;
            messages.entry(message).or_default().insert(number, field);
        }
        let schema = Schema { messages };
        for fields in schema.messages.values() {
            for field in fields.values() {
                if let Type::Message(name) = field.kind {
                    if !schema.has(name) {
                        return Err(format!("schema.txt: message {name} is not defined"));
                    }
                }
            }
        }
        Ok(schema)
    }

    pub fn has(&self, message: &str) -> bool {
        self.messages.contains_key(message)
    }

    pub fn field(&self, message: &str, number: u64) -> Option<&Field> {
        self.messages.get(message)?.get(&number)
    }
}

/// The message of a kind of `api_version`: `apps/v1` `Deployment` is
/// `api.apps.v1.Deployment`, `v1` `Pod` is `api.core.v1.Pod`,
/// `rbac.authorization.k8s.io/v1` `Role` is `api.rbac.v1.Role`.
pub fn message_name(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("api.{package}.{version}.{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_reads_whole() {
        let schema = Schema::get().unwrap();
        let spec = schema.field("api.apps.v1.Deployment", 2).unwrap();
        assert_eq!(
            (spec.json, spec.kind),
            ("spec", Type::Message("api.apps.v1.DeploymentSpec"))
        );
        let ip = schema.field("api.core.v1.PodStatus", 6).unwrap();
        assert_eq!(ip.json, "podIP");
        assert_eq!(
            message_name("rbac.authorization.k8s.io/v1", "Role"),
            "api.rbac.v1.Role"
        );
        assert_eq!(message_name("v1", "Pod"), "api.core.v1.Pod");
    }
}
