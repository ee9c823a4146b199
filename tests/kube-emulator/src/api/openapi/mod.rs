//! The OpenAPI v3 description, per group version: the PATCH operation of
//! every resource with its `fieldValidation` parameter, which is what
//! kubectl looks for to learn that the server validates fields itself
//! (without it, `kubectl apply` insists on validating client-side), and
//! the kinds' schemas (`schemas`), which `kubectl explain` reads.
//!
//! The PATCH operations declare no request bodies, so kubectl does not
//! compute strategic merge patches from these schemas (they lack the
//! patch strategies of the upstream ones): it uses its compiled-in types
//! for built-in kinds and JSON merge patches for the rest, as it does
//! with a real server's CRDs.

mod schemas;

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::resources::Catalog;

/// `GET /openapi/v3`: where each group version's document is.
pub fn index(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1"}),
    );
    for (group, versions) in catalog.groups() {
        for version in versions {
            let path = format!("apis/{group}/{version}");
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`.
/// `crds` are the stored CustomResourceDefinitions, whose schemas the
/// document of their group version carries.
pub fn group_version<'a>(
    catalog: &Catalog,
    crds: impl Iterator<Item = &'a Value>,
    group: &str,
    version: &str,
) -> ApiResult<Value> {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    for rt in catalog.group_version_types(group, version) {
        let path = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{prefix}/{}/{{name}}", rt.plural)
        };
        let patch = json!({
            "x-kubernetes-group-version-kind": {"group": rt.group, "version": version, "kind": rt.kind},
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(path, json!({"patch": patch}));
    }
    if paths.is_empty() {
        return Err(ApiError::no_such_path());
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-emulator)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas::components(group, version, crds)},
    }))
}
