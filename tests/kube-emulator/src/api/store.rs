//! The object store: every object as JSON, one resourceVersion counter for
//! the whole cluster, and a bounded history of change events that watches
//! replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::resources::TypeKey;

/// How many events the history keeps by default. A watch resuming from an older
/// resourceVersion gets 410 Gone and must relist.
pub const HISTORY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change. Every write makes exactly one event, whose resourceVersion
/// is the object's new one (a deleted object carries the deletion's).
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: TypeKey,
    /// The object after the change (for `Deleted`, the last state).
    pub object: Arc<Value>,
    /// The object before a `Modified` change: a watch with a selector
    /// turns a change into or out of its selection into ADDED or DELETED.
    pub previous: Option<Arc<Value>>,
}

/// Where an object lives within its resource: `("", name)` when cluster
/// scoped. Ordered as etcd orders keys, so lists come out sorted.
pub type ObjectKey = (String, String);

pub struct Store {
    rv: u64,
    objects: HashMap<TypeKey, BTreeMap<ObjectKey, Value>>,
    /// Where each object is, by uid: the garbage collector looks owners up
    /// by the uid their dependents' ownerReferences name.
    uids: HashMap<String, (TypeKey, ObjectKey)>,
    history: VecDeque<Event>,
    /// How many events `history` keeps.
    capacity: usize,
    /// Every event with a resourceVersion above this one is in `history`.
    floor: u64,
    /// Tells watches the newest resourceVersion.
    notify: tokio::sync::watch::Sender<u64>,
}

/// What `Store::events_since` found.
pub enum Since {
    Events(Vec<Event>),
    /// The history no longer reaches back to the asked resourceVersion.
    Expired,
}

impl Store {
    pub fn new(capacity: usize) -> Self {
        Self {
            rv: 0,
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            capacity: capacity.max(1),
            floor: 0,
            notify: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The cluster's current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn get(&self, key: &TypeKey, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The objects of a resource, in one namespace or (with `None`) all.
    pub fn list<'a>(
        &'a self,
        key: &TypeKey,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(key)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .map(|(_, object)| object)
    }

    /// Every object (of every resource) in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<(TypeKey, Value)> {
        let mut found = Vec::new();
        for (key, objects) in &self.objects {
            for ((ns, _), object) in objects {
                if ns == namespace {
                    found.push((key.clone(), object.clone()));
                }
            }
        }
        found
    }

    /// The object whose uid is `uid`, with its resource.
    pub fn by_uid(&self, uid: &str) -> Option<(&TypeKey, &Value)> {
        let (key, at) = self.uids.get(uid)?;
        Some((key, self.objects.get(key)?.get(at)?))
    }

    /// Every object of every resource (for garbage collection).
    pub fn everything(&self) -> impl Iterator<Item = (&TypeKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(key, objects)| objects.values().map(move |object| (key, object)))
    }

    /// Stores `object` under a new resourceVersion (written into it) and
    /// records the event. Returns the stored object.
    pub fn put(&mut self, key: &TypeKey, mut object: Value) -> Value {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let at = object_key(&object);
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.uids.insert(uid.to_string(), (key.clone(), at.clone()));
        }
        let previous = self
            .objects
            .entry(key.clone())
            .or_default()
            .insert(at, object.clone());
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            kind,
            key: key.clone(),
            object: Arc::new(object.clone()),
            previous: previous.map(Arc::new),
        });
        object
    }

    /// Removes an object; returns its last state, carrying the deletion's
    /// resourceVersion.
    pub fn remove(&mut self, key: &TypeKey, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .get_mut(key)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.uids.remove(uid);
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(Event {
            rv,
            kind: EventType::Deleted,
            key: key.clone(),
            object: Arc::new(object.clone()),
            previous: None,
        });
        Some(object)
    }

    /// The events after resourceVersion `rv` of resource `key`.
    pub fn events_since(&self, key: &TypeKey, rv: u64) -> Since {
        if rv < self.floor {
            return Since::Expired;
        }
        let start = self.history.partition_point(|event| event.rv <= rv);
        Since::Events(
            self.history
                .range(start..)
                .filter(|event| event.key == *key)
                .cloned()
                .collect(),
        )
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, event: Event) {
        let rv = event.rv;
        self.history.push_back(event);
        while self.history.len() > self.capacity {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        self.notify.send_replace(rv);
    }
}

/// `(namespace, name)` of a stored object.
pub fn object_key(object: &Value) -> ObjectKey {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (text("namespace"), text("name"))
}
