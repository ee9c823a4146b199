//! Deletion as the real API server and its controllers do it: finalizers
//! hold an object (with a deletionTimestamp) until the last one is removed;
//! deleting a namespace deletes what is in it, then the namespace; deleting
//! an owner deletes its dependents (garbage collection); deleting a CRD
//! deletes its objects; an object written with owners that are all gone
//! is deleted too, and references to gone owners are dropped from one that
//! still has others (what the real collector does shortly after such a
//! write; here at once). A pod running on a node is deleted gracefully
//! where a kubelet runs it: it is marked (deletionTimestamp, with its
//! grace period) and stays until the kubelet has stopped its containers,
//! released its volumes and deleted it with a grace period of 0.

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
    /// `gracePeriodSeconds`: 0 deletes a pod at once (the kubelet's final
    /// delete, or `kubectl delete --force --grace-period=0`).
    pub grace_period: Option<i64>,
    /// Whether a kubelet finishes pods' deletions (a cluster with nodes
    /// that run containers); without one, pods go at once.
    pub kubelet: bool,
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
            grace_period: body["gracePeriodSeconds"].as_i64(),
            kubelet: false,
        }
    }

    /// The grace period a deletion of `object` gets, if it is a pod the
    /// kubelet must stop first: as the API server decides, none for a pod
    /// no node runs or that has finished, else the request's or the pod's
    /// `terminationGracePeriodSeconds` (30 by default).
    fn pod_grace(&self, rt: &ResourceType, object: &Value) -> Option<i64> {
        let running = object["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && !matches!(
                object["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        let grace = self.grace_period.unwrap_or_else(|| {
            object["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        });
        (self.kubelet && rt.is("", "pods") && running && grace > 0).then_some(grace)
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
        let grace = options.pod_grace(rt, &object);
        let waits = has_finalizers(&object)
            || (is_namespace && !self.store.in_namespace(name).is_empty())
            || grace.is_some();
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
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace.unwrap_or(0));
            if is_namespace {
                marked["status"]["phase"] = json!("Terminating");
            }
            marked = self.store.put(&rt.key(), marked);
        } else if options.grace_period == Some(0)
            && marked["metadata"]["deletionGracePeriodSeconds"].as_i64() != Some(0)
        {
            // The kubelet's final delete of a pod that also waits for
            // finalizers: it goes once they are removed.
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
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
    /// namespace waits until it is empty, a pod deleted gracefully until
    /// its kubelet deletes it for good.
    pub fn may_finish(&self, rt: &ResourceType, object: &Value) -> bool {
        if rt.is_namespace() {
            return self
                .store
                .in_namespace(meta::text(object, "name"))
                .is_empty();
        }
        object["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            == 0
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

    /// Garbage collection of a dependent just written: what the real
    /// collector does when it finds an object whose ownerReferences name
    /// owners that do not exist (a controller that made it while its owner
    /// was being deleted, or adopted it then). With none of its owners left
    /// it is deleted (its own dependents with it); with some left, the
    /// references to the others are removed. An owner is present when an
    /// object with its uid exists where a reference may point: cluster
    /// scoped, or in the dependent's namespace.
    pub fn collect_orphan(&mut self, rt: &ResourceType, written: &Value) {
        let Some(references) = written["metadata"]["ownerReferences"].as_array() else {
            return;
        };
        if references.is_empty() || is_terminating(written) {
            return;
        }
        let (namespace, name) = super::store::object_key(written);
        let present = |reference: &Value| {
            let uid = reference["uid"].as_str().unwrap_or_default();
            self.store.by_uid(uid).is_some_and(|(_, owner)| {
                let at = meta::text(owner, "namespace");
                at.is_empty() || at == namespace
            })
        };
        let kept: Vec<Value> = references.iter().filter(|r| present(r)).cloned().collect();
        if kept.len() == references.len() {
            return;
        }
        if kept.is_empty() {
            let _ = self.delete(rt, &namespace, &name, &DeleteOptions::default());
            return;
        }
        let mut pruned = written.clone();
        pruned["metadata"]["ownerReferences"] = Value::Array(kept);
        self.store.put(&rt.key(), pruned);
    }
}
