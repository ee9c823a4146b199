//! Deletion as the real API server and its controllers do it: finalizers
//! hold an object (with a deletionTimestamp) until the last one is removed;
//! deleting a namespace deletes what is in it, then the namespace; deleting
//! an owner deletes its dependents (garbage collection); deleting a CRD
//! deletes its objects.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::meta::{self, has_finalizers, is_terminating};
use super::objects::State;
use super::resources::{Catalog, ResourceType};

/// The `DeleteOptions` the server honours.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `Orphan` keeps dependents; `Background` and `Foreground` delete
    /// them.
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// From a DeleteOptions body (possibly empty) and the query string's
    /// `propagationPolicy` / `dryRun`.
    pub fn parse(body: &Value, propagation: Option<&str>, dry_run: bool) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_string);
        Self {
            propagation: propagation
                .map(str::to_string)
                .or_else(|| text(&body["propagationPolicy"])),
            precondition_uid: text(&body["preconditions"]["uid"]),
            precondition_rv: text(&body["preconditions"]["resourceVersion"]),
            dry_run: dry_run || body["dryRun"].as_array().is_some_and(|d| !d.is_empty()),
        }
    }
}

/// What a delete did.
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// The object waits for finalizers (or its namespace's contents); this
    /// is it, with its deletionTimestamp.
    Pending(Value),
}

impl State {
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let object = self.get(rt, namespace, name)?;
        if let Some(uid) = &options.precondition_uid {
            if meta::text(&object, "uid") != uid {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::text(&object, "uid")
                    ),
                ));
            }
        }
        if let Some(rv) = &options.precondition_rv {
            if meta::text(&object, "resourceVersion") != rv {
                return Err(ApiError::conflict(rt, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta::text(&object, "resourceVersion"))));
            }
        }
        let is_namespace = rt.is_namespace();
        let waits =
            has_finalizers(&object) || (is_namespace && !self.store.in_namespace(name).is_empty());
        if options.dry_run {
            return Ok(if waits {
                Deleted::Pending(object)
            } else {
                Deleted::Gone(object)
            });
        }
        if !waits {
            let orphan = options.propagation.as_deref() == Some("Orphan");
            let gone = self.remove(rt, namespace, name, !orphan).unwrap_or(object);
            return Ok(Deleted::Gone(gone));
        }
        let mut marked = object;
        if !is_terminating(&marked) {
            marked["metadata"]["deletionTimestamp"] = json!(meta::now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_namespace {
                marked["status"]["phase"] = json!("Terminating");
            }
            marked = self.store.put(&rt.key(), marked);
        }
        if is_namespace {
            self.empty_namespace(name);
            if let Ok(current) = self.get(rt, "", name) {
                marked = current;
            } else {
                return Ok(Deleted::Gone(marked));
            }
        }
        Ok(Deleted::Pending(marked))
    }

    /// Whether a terminating object without finalizers can go now: a
    /// namespace waits until it is empty.
    pub fn may_finish(&self, rt: &ResourceType, object: &Value) -> bool {
        !rt.is_namespace()
            || self
                .store
                .in_namespace(meta::text(object, "name"))
                .is_empty()
    }

    /// Removes an object from the store, then what depended on it: its
    /// dependents (unless orphaned), a CRD's objects, and a terminating
    /// namespace it was the last object of. Returns its last state.
    pub fn remove(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        collect: bool,
    ) -> Option<Value> {
        let gone = self.store.remove(&rt.key(), namespace, name)?;
        self.applied
            .retain(|(uid, _, _), _| uid != meta::text(&gone, "uid"));
        if collect {
            self.delete_dependents(meta::text(&gone, "uid"));
        }
        if rt.is_crd() {
            if let Ok(defined) = super::resources::from_crd(&gone) {
                let doomed: Vec<(String, String)> = self
                    .store
                    .list(&defined.key(), None)
                    .map(super::store::object_key)
                    .collect();
                for (ns, name) in doomed {
                    self.store.remove(&defined.key(), &ns, &name);
                }
            }
        }
        self.after_write(rt, namespace);
        if !namespace.is_empty() {
            self.settle_namespace(namespace);
        }
        Some(gone)
    }

    /// Deletes everything in a terminating namespace (objects with
    /// finalizers get their deletionTimestamp and stay until released).
    fn empty_namespace(&mut self, namespace: &str) {
        for (key, object) in self.store.in_namespace(namespace) {
            let Some(rt) = self.catalog.by_key(&key).cloned() else {
                self.store
                    .remove(&key, namespace, meta::text(&object, "name"));
                continue;
            };
            // A concurrent cascade may have removed it already; that is fine.
            let _ = self.delete(
                &rt,
                namespace,
                meta::text(&object, "name"),
                &DeleteOptions::default(),
            );
        }
        self.settle_namespace(namespace);
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn settle_namespace(&mut self, namespace: &str) {
        let namespaces = Catalog::namespace_type();
        let Some(object) = self.store.get(&namespaces.key(), "", namespace) else {
            return;
        };
        if is_terminating(object)
            && !has_finalizers(object)
            && self.store.in_namespace(namespace).is_empty()
        {
            self.store.remove(&namespaces.key(), "", namespace);
        }
    }

    /// Garbage collection: deletes the objects whose ownerReferences name
    /// `uid`.
    fn delete_dependents(&mut self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let dependents: Vec<(ResourceType, String, String)> = self
            .store
            .everything()
            .filter(|(_, object)| {
                object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .filter_map(|(key, object)| {
                let rt = self.catalog.by_key(key)?.clone();
                let (ns, name) = super::store::object_key(object);
                Some((rt, ns, name))
            })
            .collect();
        for (rt, ns, name) in dependents {
            let _ = self.delete(&rt, &ns, &name, &DeleteOptions::default());
        }
    }
}
