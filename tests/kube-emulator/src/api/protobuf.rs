//! Kubernetes protobuf request bodies, for the few objects kubectl's
//! typed clients send that way (`kubectl create namespace`, `configmap`,
//! `secret`, `serviceaccount`, `role`, `clusterrole`, `rolebinding`,
//! `clusterrolebinding` and `token`, `kubectl auth can-i` (with `--list`)
//! and `kubectl auth whoami` encode with
//! `application/vnd.kubernetes.protobuf`, and client-go has no JSON
//! fallback). Every other client sends JSON; a protobuf body of another
//! kind, or with a field this decoder does not know, is refused with a
//! message saying so rather than half understood.

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How a field of a message becomes JSON.
#[derive(Clone, Copy)]
enum Field {
    Text(&'static str),
    /// `bytes`, base64 in JSON.
    Bytes(&'static str),
    Bool(&'static str),
    Texts(&'static str),
    /// `int64`/`int32`, a varint.
    Int(&'static str),
    TextMap(&'static str),
    BytesMap(&'static str),
    Message(&'static str, &'static [(u64, Field)]),
    /// A repeated message: a JSON list.
    Messages(&'static str, &'static [(u64, Field)]),
    /// Accepted and dropped (timestamps the server sets anyway).
    Ignored,
}

const OBJECT_META: &[(u64, Field)] = &[
    (1, Field::Text("name")),
    (2, Field::Text("generateName")),
    (3, Field::Text("namespace")),
    (8, Field::Ignored),
    (11, Field::TextMap("labels")),
    (12, Field::TextMap("annotations")),
    (14, Field::Texts("finalizers")),
];

const METADATA: (u64, Field) = (1, Field::Message("metadata", OBJECT_META));

const POLICY_RULES: (u64, Field) = (
    2,
    Field::Messages(
        "rules",
        &[
            (1, Field::Texts("verbs")),
            (2, Field::Texts("apiGroups")),
            (3, Field::Texts("resources")),
            (4, Field::Texts("resourceNames")),
            (5, Field::Texts("nonResourceURLs")),
        ],
    ),
);

const AGGREGATION_RULE: (u64, Field) = (
    3,
    Field::Message(
        "aggregationRule",
        &[(
            1,
            Field::Messages(
                "clusterRoleSelectors",
                &[
                    (1, Field::TextMap("matchLabels")),
                    (
                        2,
                        Field::Messages(
                            "matchExpressions",
                            &[
                                (1, Field::Text("key")),
                                (2, Field::Text("operator")),
                                (3, Field::Texts("values")),
                            ],
                        ),
                    ),
                ],
            ),
        )],
    ),
);

const BINDING: &[(u64, Field)] = &[
    METADATA,
    (
        2,
        Field::Messages(
            "subjects",
            &[
                (1, Field::Text("kind")),
                (2, Field::Text("apiGroup")),
                (3, Field::Text("name")),
                (4, Field::Text("namespace")),
            ],
        ),
    ),
    (
        3,
        Field::Message(
            "roleRef",
            &[
                (1, Field::Text("apiGroup")),
                (2, Field::Text("kind")),
                (3, Field::Text("name")),
            ],
        ),
    ),
];

/// `resourceAttributes` and `nonResourceAttributes` of an access review's
/// spec.
const REVIEWED_ATTRIBUTES: [(u64, Field); 2] = [
    (
        1,
        Field::Message(
            "resourceAttributes",
            &[
                (1, Field::Text("namespace")),
                (2, Field::Text("verb")),
                (3, Field::Text("group")),
                (4, Field::Text("version")),
                (5, Field::Text("resource")),
                (6, Field::Text("subresource")),
                (7, Field::Text("name")),
            ],
        ),
    ),
    (
        2,
        Field::Message(
            "nonResourceAttributes",
            &[(1, Field::Text("path")), (2, Field::Text("verb"))],
        ),
    ),
];

const SUBJECT_ACCESS_REVIEW: &[(u64, Field)] = &[
    METADATA,
    (
        2,
        Field::Message(
            "spec",
            &[
                REVIEWED_ATTRIBUTES[0],
                REVIEWED_ATTRIBUTES[1],
                (3, Field::Text("user")),
                (4, Field::Texts("groups")),
                (5, Field::Ignored),
                (6, Field::Text("uid")),
            ],
        ),
    ),
    (3, Field::Ignored),
];

/// The kinds understood, with their message layouts.
const KINDS: &[(&str, &[(u64, Field)])] = &[
    ("Role", &[METADATA, POLICY_RULES]),
    ("ClusterRole", &[METADATA, POLICY_RULES, AGGREGATION_RULE]),
    ("RoleBinding", BINDING),
    ("ClusterRoleBinding", BINDING),
    (
        "SelfSubjectAccessReview",
        &[
            METADATA,
            (2, Field::Message("spec", &REVIEWED_ATTRIBUTES)),
            (3, Field::Ignored),
        ],
    ),
    ("SubjectAccessReview", SUBJECT_ACCESS_REVIEW),
    ("LocalSubjectAccessReview", SUBJECT_ACCESS_REVIEW),
    (
        "SelfSubjectRulesReview",
        &[
            METADATA,
            (2, Field::Message("spec", &[(1, Field::Text("namespace"))])),
            (3, Field::Ignored),
        ],
    ),
    ("SelfSubjectReview", &[METADATA, (2, Field::Ignored)]),
    (
        "TokenRequest",
        &[
            METADATA,
            (
                2,
                Field::Message(
                    "spec",
                    &[
                        (1, Field::Texts("audiences")),
                        (
                            3,
                            Field::Message(
                                "boundObjectRef",
                                &[
                                    (1, Field::Text("kind")),
                                    (2, Field::Text("apiVersion")),
                                    (3, Field::Text("name")),
                                    (4, Field::Text("uid")),
                                ],
                            ),
                        ),
                        (4, Field::Int("expirationSeconds")),
                    ],
                ),
            ),
            (3, Field::Ignored),
        ],
    ),
    (
        "Namespace",
        &[
            METADATA,
            (
                2,
                Field::Message("spec", &[(1, Field::Texts("finalizers"))]),
            ),
            (3, Field::Message("status", &[(1, Field::Text("phase"))])),
        ],
    ),
    (
        "ConfigMap",
        &[
            METADATA,
            (2, Field::TextMap("data")),
            (3, Field::BytesMap("binaryData")),
            (4, Field::Bool("immutable")),
        ],
    ),
    (
        "Secret",
        &[
            METADATA,
            (2, Field::BytesMap("data")),
            (3, Field::Text("type")),
            (4, Field::TextMap("stringData")),
            (5, Field::Bool("immutable")),
        ],
    ),
    (
        "ServiceAccount",
        &[METADATA, (4, Field::Bool("automountServiceAccountToken"))],
    ),
];

/// Decodes a `k8s\0`-prefixed protobuf envelope into the JSON object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let refuse = |why: String| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "cannot decode this protobuf request body ({why}); send it as application/json"
            ),
        )
    };
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| refuse("it lacks the k8s protobuf envelope".into()))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, value) in fields(envelope).map_err(refuse)? {
        match (number, value) {
            (1, Wire::Len(type_meta)) => {
                for (number, value) in fields(type_meta).map_err(refuse)? {
                    match (number, value) {
                        (1, Wire::Len(v)) => api_version = text(v).map_err(refuse)?,
                        (2, Wire::Len(v)) => kind = text(v).map_err(refuse)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(bytes)) => raw = bytes,
            (3, Wire::Len(encoding)) if !encoding.is_empty() => {
                return Err(refuse("content encodings are not supported".into()))
            }
            _ => {}
        }
    }
    let layout = KINDS
        .iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, layout)| *layout)
        .ok_or_else(|| {
            let known: Vec<&str> = KINDS.iter().map(|(known, _)| *known).collect();
            refuse(format!("kind {kind:?} is not one of {}", known.join(", ")))
        })?;
    let mut object = message(raw, layout, &kind).map_err(refuse)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

fn message(bytes: &[u8], layout: &[(u64, Field)], context: &str) -> Result<Value, String> {
    let mut object = Map::new();
    for (number, value) in fields(bytes)? {
        let Some((_, field)) = layout.iter().find(|(n, _)| *n == number) else {
            if value.is_empty() {
                continue; // a zero value: Go's protobuf writes those
            }
            return Err(format!("field {number} of {context} is not understood"));
        };
        let Wire::Len(bytes) = value else {
            match (field, value) {
                (Field::Bool(name), Wire::Varint(v)) => {
                    object.insert(name.to_string(), json!(v != 0));
                }
                (Field::Int(name), Wire::Varint(v)) => {
                    // two's complement, as protobuf encodes negative ints
                    object.insert(name.to_string(), json!(v as i64));
                }
                (Field::Ignored, _) => {}
                _ => {
                    return Err(format!(
                        "field {number} of {context} has an unexpected wire type"
                    ))
                }
            }
            continue;
        };
        match *field {
            Field::Text(name) => {
                let value = text(bytes)?;
                if !value.is_empty() {
                    object.insert(name.into(), json!(value));
                }
            }
            Field::Bytes(name) => {
                // ByteString serializes as base64, as JSON carries bytes
                let encoded = serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
                    .map_err(|e| e.to_string())?;
                object.insert(name.into(), encoded);
            }
            Field::Texts(name) => push(&mut object, name, json!(text(bytes)?)),
            Field::TextMap(name) | Field::BytesMap(name) => {
                let entry = message(
                    bytes,
                    &[
                        (1, Field::Text("key")),
                        (
                            2,
                            if matches!(field, Field::TextMap(_)) {
                                Field::Text("value")
                            } else {
                                Field::Bytes("value")
                            },
                        ),
                    ],
                    name,
                )?;
                let key = entry["key"].as_str().unwrap_or_default().to_string();
                let value = entry.get("value").cloned().unwrap_or(json!(""));
                let map = object.entry(name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            Field::Message(name, layout) => {
                let inner = message(bytes, layout, name)?;
                if inner.as_object().is_some_and(|m| !m.is_empty()) {
                    object.insert(name.into(), inner);
                }
            }
            Field::Messages(name, layout) => {
                let inner = message(bytes, layout, name)?;
                push(&mut object, name, inner);
            }
            Field::Bool(_) | Field::Int(_) | Field::Ignored => {}
        }
    }
    Ok(Value::Object(object))
}

fn push(object: &mut Map<String, Value>, name: &str, value: Value) {
    if let Some(list) = object
        .entry(name)
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        list.push(value);
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// One field's value by wire type.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed,
    Len(&'a [u8]),
}

impl Wire<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, Wire::Varint(0)) || matches!(self, Wire::Len(b) if b.is_empty())
    }
}

fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let tag = varint(&mut bytes)?;
        let value = match tag & 7 {
            0 => Wire::Varint(varint(&mut bytes)?),
            1 | 5 => {
                let width = if tag & 7 == 1 { 8 } else { 4 };
                bytes = bytes.get(width..).ok_or("truncated fixed-width field")?;
                Wire::Fixed
            }
            2 => {
                let len =
                    usize::try_from(varint(&mut bytes)?).map_err(|_| "field length overflows")?;
                let value = bytes.get(..len).ok_or("truncated length-delimited field")?;
                bytes = &bytes[len..];
                Wire::Len(value)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        found.push((tag >> 3, value));
    }
    Ok(found)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("truncated varint")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [len_field(1, b"v1"), len_field(2, kind.as_bytes())].concat();
        [
            b"k8s\0".to_vec(),
            len_field(1, &type_meta),
            len_field(2, raw),
        ]
        .concat()
    }

    #[test]
    fn decodes_a_config_map() {
        let labels = [len_field(1, b"app"), len_field(2, b"web")].concat();
        let meta = [
            len_field(1, b"cfg"),
            len_field(8, b""),
            len_field(11, &labels),
        ]
        .concat();
        let entry = [len_field(1, b"k"), len_field(2, b"v")].concat();
        let raw = [len_field(1, &meta), len_field(2, &entry), vec![4 << 3, 1]].concat();
        let object = decode(&envelope("ConfigMap", &raw)).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "labels": {"app": "web"}},
                "data": {"k": "v"}, "immutable": true,
            })
        );
    }

    #[test]
    fn decodes_a_role_binding_and_an_access_review() {
        let meta = len_field(1, &len_field(1, b"view-x"));
        let subject = [len_field(1, b"User"), len_field(3, b"developer")].concat();
        let role_ref = [len_field(2, b"ClusterRole"), len_field(3, b"view")].concat();
        let raw = [meta, len_field(2, &subject), len_field(3, &role_ref)].concat();
        let binding = decode(&envelope("RoleBinding", &raw)).unwrap();
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "User", "name": "developer"}])
        );
        assert_eq!(
            binding["roleRef"],
            json!({"kind": "ClusterRole", "name": "view"})
        );

        let attributes = [
            len_field(1, b"x"),
            len_field(2, b"create"),
            len_field(5, b"pods"),
        ]
        .concat();
        let spec = len_field(1, &attributes);
        let review = decode(&envelope("SelfSubjectAccessReview", &len_field(2, &spec))).unwrap();
        assert_eq!(
            review["spec"]["resourceAttributes"],
            json!({"namespace": "x", "verb": "create", "resource": "pods"})
        );

        let spec = [len_field(1, b"api"), vec![4 << 3, 0xb0, 0x09]].concat();
        let token = decode(&envelope("TokenRequest", &len_field(2, &spec))).unwrap();
        assert_eq!(
            token["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 1200})
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        assert_eq!(decode(b"{}").unwrap_err().code, 415);
        assert_eq!(decode(&envelope("Pod", &[])).unwrap_err().code, 415);
        let unknown = len_field(9, b"x");
        let error = decode(&envelope("ConfigMap", &unknown)).unwrap_err();
        assert!(error.message.contains("field 9"), "{}", error.message);
        let truncated = [b"k8s\0".to_vec(), vec![(1 << 3) | 2, 50]].concat();
        assert_eq!(decode(&truncated).unwrap_err().code, 415);
    }
}
