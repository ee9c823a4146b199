//! The write path every object goes through: create, update (main
//! resource or `/status`), and the checks and server-owned metadata that
//! come with them. Deletion lives in `deletion.rs`, patching in
//! `patch.rs`/`apply.rs`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::admission::{self, Write};
use super::defaults;
use super::error::{ApiError, ApiResult};
use super::meta::{self, has_finalizers, is_terminating};
use super::resources::{self, Catalog, ResourceType};
use super::store::Store;
use crate::policy::Policy;

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The main resource: everything but `.status` when the resource has a
    /// status subresource.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
}

/// Where a write goes: a resource served at a version, and the object's
/// namespace (`""` when cluster-scoped) and name.
#[derive(Clone, Copy)]
pub struct Location<'a> {
    pub rt: &'a ResourceType,
    pub version: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The whole cluster state behind one lock.
pub struct State {
    pub store: Store,
    pub catalog: Catalog,
    /// What each field manager last applied (server-side apply), by object
    /// uid, manager and part: a field it applied before and no longer
    /// applies is removed.
    pub applied: HashMap<(String, String, Part), Value>,
    /// What the cluster enforces: the admission chain reads it.
    pub policy: Policy,
}

/// Metadata only the server sets; writes cannot change it.
const SERVER_METADATA: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
];

impl State {
    /// A fresh cluster: the usual namespaces and the `kubernetes` Service
    /// (and, on OpenShift, the default SecurityContextConstraints).
    pub fn new(history: usize, policy: Policy) -> Self {
        let mut state = Self {
            store: Store::new(history),
            catalog: Catalog::for_flavour(policy.flavour),
            applied: HashMap::new(),
            policy,
        };
        let namespaces = Catalog::namespace_type();
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace = json!({"metadata": {"name": name}});
            state
                .create(&namespaces, "v1", "", namespace, &mut Write::system())
                .expect("the built-in namespaces are valid");
        }
        admission::install_defaults(&mut state);
        let service = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": defaults::KUBERNETES_SERVICE_IP, "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        });
        let services = state
            .catalog
            .find("", "v1", "services")
            .cloned()
            .expect("services are built in");
        state
            .create(&services, "v1", "default", service, &mut Write::system())
            .expect("the kubernetes Service is valid");
        state
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> ApiResult<Value> {
        self.store
            .get(&rt.key(), namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Creates an object in `namespace` (`""` for cluster-scoped
    /// resources) from a request body, through the admission chain.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        mut object: Value,
        write: &mut Write,
    ) -> ApiResult<Value> {
        meta::check_type(rt, version, &mut object)?;
        check_namespace_field(rt, namespace, &mut object)?;
        let metadata = meta::metadata_mut(&mut object)?;
        let mut name = metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = metadata
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = loop {
                let candidate = format!("{prefix}{}", meta::name_suffix());
                if self.store.get(&rt.key(), namespace, &candidate).is_none() {
                    break candidate;
                }
            };
        }
        meta::check_name(rt, &name)?;
        if rt.namespaced {
            self.check_namespace_open(namespace)?;
        }
        if self.store.get(&rt.key(), namespace, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let metadata = meta::metadata_mut(&mut object)?;
        metadata.insert("name".into(), json!(name));
        for field in SERVER_METADATA {
            metadata.remove(field);
        }
        metadata.insert("uid".into(), json!(meta::uid()));
        metadata.insert("creationTimestamp".into(), json!(meta::now()));
        metadata.insert("generation".into(), json!(1));
        if rt.status {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        meta::check_shape(rt, &object)?;
        super::validation::check(rt, None, &object)?;
        self.check_crd(rt, &object)?;
        defaults::on_create(&self.store, rt, &mut object)?;
        admission::admit(self, rt, None, &mut object, write)?;
        if write.dry_run {
            return Ok(object);
        }
        let stored = self.store.put(&rt.key(), object);
        self.after_write(rt, namespace);
        self.collect_orphan(rt, &stored);
        Ok(stored)
    }

    /// Replaces an object (PUT) with `object`, after checking that it is
    /// the one at the path and that its resourceVersion, when given, is the
    /// current one.
    pub fn update(
        &mut self,
        at: Location,
        mut object: Value,
        part: Part,
        write: &mut Write,
    ) -> ApiResult<Value> {
        let Location {
            rt,
            version,
            namespace,
            name,
        } = at;
        meta::check_type(rt, version, &mut object)?;
        check_namespace_field(rt, namespace, &mut object)?;
        let body_name = meta::text(&object, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get(rt, namespace, name)?;
        check_resource_version(rt, &old, &object)?;
        self.commit(rt, old, object, part, write)
    }

    /// Writes `new` over `old` (which is current): keeps what the write may
    /// not change, runs the main resource's writes through the admission
    /// chain, bumps the generation on a spec change, skips no-op writes,
    /// and finishes the deletion of a terminating object whose last
    /// finalizer went.
    pub fn commit(
        &mut self,
        rt: &ResourceType,
        old: Value,
        new: Value,
        part: Part,
        write: &mut Write,
    ) -> ApiResult<Value> {
        let mut new = match part {
            Part::Main => {
                let mut new = new;
                if rt.status {
                    set_or_remove(&mut new, "status", old.get("status"));
                }
                new
            }
            Part::Status => {
                let mut status_only = old.clone();
                set_or_remove(&mut status_only, "status", new.get("status"));
                if let Some(v) = new.get("apiVersion") {
                    status_only["apiVersion"] = v.clone();
                }
                status_only
            }
        };
        let metadata = meta::metadata_mut(&mut new)?;
        for field in SERVER_METADATA
            .iter()
            .chain(&["name", "namespace"])
            .copied()
        {
            match old["metadata"].get(field) {
                Some(value) => metadata.insert(field.to_string(), value.clone()),
                None => metadata.remove(field),
            };
        }
        if is_terminating(&old) {
            let old_finalizers = old["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let added = new["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| !old_finalizers.contains(f));
            if let Some(added) = added {
                return Err(ApiError::invalid(
                    rt,
                    meta::text(&old, "name"),
                    "metadata.finalizers",
                    &format!("Forbidden: no new finalizers ({added}) can be added if the object is being deleted"),
                ));
            }
        }
        meta::check_shape(rt, &new)?;
        super::validation::check(rt, Some(&old), &new)?;
        self.check_crd(rt, &new)?;
        defaults::on_update(&self.store, rt, &old, &mut new)?;
        if part == Part::Main {
            admission::admit(self, rt, Some(&old), &mut new, write)?;
        }
        if spec_of(&new) != spec_of(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        if new == old {
            return Ok(old);
        }
        if write.dry_run {
            return Ok(new);
        }
        if is_terminating(&new) && !has_finalizers(&new) && self.may_finish(rt, &new) {
            let (namespace, name) = super::store::object_key(&new);
            let mut last = self.store.put(&rt.key(), new);
            if let Some(removed) = self.remove(rt, &namespace, &name, true) {
                last = removed;
            }
            return Ok(last);
        }
        let (namespace, _) = super::store::object_key(&new);
        let owners_changed =
            new["metadata"]["ownerReferences"] != old["metadata"]["ownerReferences"];
        let stored = self.store.put(&rt.key(), new);
        self.after_write(rt, &namespace);
        if owners_changed {
            self.collect_orphan(rt, &stored);
        }
        Ok(stored)
    }

    /// Namespaced objects can only be made in a namespace that exists and
    /// is not being deleted.
    fn check_namespace_open(&self, namespace: &str) -> ApiResult<()> {
        let namespaces = Catalog::namespace_type();
        let found = self
            .store
            .get(&namespaces.key(), "", namespace)
            .ok_or_else(|| ApiError::not_found(&namespaces, namespace))?;
        if is_terminating(found) {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    fn check_crd(&self, rt: &ResourceType, object: &Value) -> ApiResult<()> {
        if rt.is_crd() {
            resources::from_crd(object).map_err(|why| {
                let (field, why) = why.split_once(": ").unwrap_or(("spec", &why));
                ApiError::invalid(rt, meta::text(object, "name"), field, why)
            })?;
        }
        Ok(())
    }

    /// Keeps derived state in step with a write (or removal) in
    /// `namespace`: CRDs define what is served, and the namespace's
    /// ResourceQuotas report what is used.
    pub fn after_write(&mut self, rt: &ResourceType, namespace: &str) {
        admission::after_write(self, namespace);
        if rt.is_crd() {
            let defined: Vec<ResourceType> = self
                .store
                .list(&rt.key(), None)
                .filter_map(|crd| resources::from_crd(crd).ok())
                .collect();
            self.catalog.set_custom(defined.into_iter());
        }
    }
}

/// A namespaced object's `metadata.namespace` must be the path's (it is
/// filled in when missing); cluster-scoped objects have none.
fn check_namespace_field(rt: &ResourceType, namespace: &str, object: &mut Value) -> ApiResult<()> {
    let metadata = meta::metadata_mut(object)?;
    if !rt.namespaced {
        metadata.remove("namespace");
        return Ok(());
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != namespace => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({given}) does not match the namespace sent on the request ({namespace})"
        ))),
        _ => {
            metadata.insert("namespace".into(), json!(namespace));
            Ok(())
        }
    }
}

/// A write that names a resourceVersion must name the current one.
pub fn check_resource_version(
    rt: &ResourceType,
    current: &Value,
    written: &Value,
) -> ApiResult<()> {
    let asked = meta::text(written, "resourceVersion");
    if !asked.is_empty() && asked != meta::text(current, "resourceVersion") {
        return Err(ApiError::conflict(
            rt,
            meta::text(current, "name"),
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(field.to_string(), value.clone()),
            None => map.remove(field),
        };
    }
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(map) = spec.as_object_mut() {
        for field in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(field);
        }
    }
    spec
}
