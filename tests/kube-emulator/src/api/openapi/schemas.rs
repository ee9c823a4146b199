//! The schemas `/openapi/v3` publishes under `components.schemas`, which
//! `kubectl explain` reads: the built-in Kubernetes kinds' from
//! k8s-openapi (generated from the upstream OpenAPI documents, so with
//! their descriptions; `$ref`s with siblings are wrapped in `allOf`, as
//! upstream does), and each custom kind's from its CRD's
//! `openAPIV3Schema`. A kind's own schema carries
//! `x-kubernetes-group-version-kind`, by which clients find it. The
//! OpenShift and Velero kinds the emulator serves as built-ins have none
//! (k8s-openapi does not carry them).

use std::sync::OnceLock;

use k8s_openapi::api::{
    apps, authentication, authorization, batch, coordination, core, events, networking, policy,
    rbac, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Resource;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// A built-in kind and the name of its schema.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    schema: String,
}

struct Builtins {
    kinds: Vec<Kind>,
    /// Every schema the kinds refer to, by name.
    definitions: Map<String, Value>,
}

/// Generates the schemas of the listed kinds, and lists them.
macro_rules! kinds {
    ($generator:ident; $($kind:ty),* $(,)?) => {
        vec![$({
            $generator.subschema_for::<$kind>();
            Kind {
                group: <$kind as Resource>::GROUP,
                version: <$kind as Resource>::VERSION,
                kind: <$kind as Resource>::KIND,
                schema: <$kind as JsonSchema>::schema_name().into_owned(),
            }
        }),*]
    };
}

fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        // Custom kinds refer to it for their metadata.
        generator.subschema_for::<ObjectMeta>();
        let kinds = kinds![generator;
            core::v1::Namespace, core::v1::Pod, core::v1::Service, core::v1::Endpoints,
            core::v1::Secret, core::v1::ConfigMap, core::v1::PersistentVolumeClaim,
            core::v1::PersistentVolume, core::v1::Node, core::v1::ServiceAccount,
            core::v1::Event, core::v1::LimitRange, core::v1::ResourceQuota,
            core::v1::ReplicationController,
            apps::v1::Deployment, apps::v1::StatefulSet, apps::v1::ReplicaSet,
            apps::v1::DaemonSet,
            batch::v1::Job, batch::v1::CronJob,
            events::v1::Event, coordination::v1::Lease, policy::v1::PodDisruptionBudget,
            storage::v1::StorageClass,
            rbac::v1::Role, rbac::v1::RoleBinding, rbac::v1::ClusterRole,
            rbac::v1::ClusterRoleBinding,
            authorization::v1::SelfSubjectAccessReview,
            authorization::v1::SelfSubjectRulesReview,
            authorization::v1::SubjectAccessReview,
            authorization::v1::LocalSubjectAccessReview,
            authentication::v1::SelfSubjectReview,
            networking::v1::Ingress, networking::v1::NetworkPolicy,
            CustomResourceDefinition,
        ];
        Builtins {
            kinds,
            definitions: generator.take_definitions(true),
        }
    })
}

/// `components.schemas` of the document of `group`/`version`: every
/// built-in schema, the kinds of this group version marked with their
/// GVK, and the custom kinds of the group version defined by `crds`.
pub fn components<'a>(
    group: &str,
    version: &str,
    crds: impl Iterator<Item = &'a Value>,
) -> Map<String, Value> {
    let builtins = builtins();
    let mut schemas = builtins.definitions.clone();
    for kind in &builtins.kinds {
        if kind.group != group || kind.version != version {
            continue;
        }
        if let Some(Value::Object(schema)) = schemas.get_mut(&kind.schema) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk(group, version, kind.kind),
            );
        }
    }
    for crd in crds.filter(|crd| crd["spec"]["group"] == group) {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let served = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == version && v["served"] != false);
        let Some(served) = served else { continue };
        schemas.insert(
            custom_name(group, version, kind),
            custom(group, version, kind, served),
        );
    }
    schemas
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "version": version, "kind": kind}])
}

/// A custom kind's schema name as the real server gives it: the group
/// reversed, then version and kind (`com.example.v1.Widget`).
fn custom_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The CRD version's schema with the fields every object has, described
/// as the real server describes them.
fn custom(group: &str, version: &str, kind: &str, served: &Value) -> Value {
    let mut schema = served["schema"]["openAPIV3Schema"].clone();
    if !schema.is_object() {
        schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    }
    let properties = &mut schema["properties"];
    if !properties.is_object() {
        *properties = json!({});
    }
    properties["apiVersion"] = json!({
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    });
    properties["kind"] = json!({
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
    });
    properties["metadata"] = json!({
        "allOf": [{"$ref": format!("#/components/schemas/{}", ObjectMeta::schema_name())}],
        "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    });
    schema["x-kubernetes-group-version-kind"] = gvk(group, version, kind);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_in_kind_is_found_by_its_gvk_with_its_fields() {
        let schemas = components("", "v1", std::iter::empty());
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"], gvk("", "v1", "Pod"));
        assert!(pod["properties"]["spec"]
            .to_string()
            .contains("io.k8s.api.core.v1.PodSpec"));
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert!(containers["description"]
            .as_str()
            .unwrap()
            .contains("containers"));
        // Only this group version's kinds are marked.
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert!(deployment.get("x-kubernetes-group-version-kind").is_none());
    }

    #[test]
    fn a_custom_kind_gets_its_crd_schema_and_the_common_fields() {
        let crd = json!({"spec": {
            "group": "example.com",
            "names": {"kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "description": "the widget"}},
            }}}],
        }});
        let schemas = components("example.com", "v1", [&crd].into_iter());
        let widget = &schemas["com.example.v1.Widget"];
        assert_eq!(widget["properties"]["spec"]["description"], "the widget");
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
        assert!(widget["properties"]["metadata"]
            .to_string()
            .contains("ObjectMeta"));
        assert!(components("example.com", "v2", [&crd].into_iter())
            .get("com.example.v2.Widget")
            .is_none());
    }
}
