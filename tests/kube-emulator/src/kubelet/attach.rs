//! Which node each volume is attached to, as the attach/detach controller
//! keeps it: a volume whose PersistentVolume allows neither ReadWriteMany
//! nor ReadOnlyMany (so ReadWriteOnce) is attached to one node at a time,
//! and every pod of that node may use it; a pod of another node waits
//! (`Multi-Attach error`) until the last pod using it on the first node is
//! gone. A ReadWriteOncePod volume serves one pod at all. Volumes without
//! access modes attach anywhere.
//!
//! Both nodes of a cluster are run by one kubelet, so this one table is the
//! whole cluster's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::ResourceExt as _;

/// The pods using an attached volume, by uid: namespace and name.
type Users = BTreeMap<String, (String, String)>;

#[derive(Default)]
pub(super) struct Attachments {
    /// By PersistentVolume name: the node it is attached to and its users.
    volumes: Mutex<HashMap<String, (String, Users)>>,
}

/// Why a pod cannot use a volume yet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Conflict {
    /// Attached to another node for the pods using it there: the
    /// attach/detach controller's `FailedAttachVolume` message.
    MultiAttach(String),
    /// A ReadWriteOncePod volume another pod uses: the kubelet's
    /// `FailedMount` message.
    ReadWriteOncePod(String),
}

impl Attachments {
    /// Attaches `volume` to `node` for `pod`, or says why it cannot be.
    pub(super) fn attach(
        &self,
        volume: &PersistentVolume,
        node: &str,
        pod: &Pod,
    ) -> Result<(), Conflict> {
        let modes = volume
            .spec
            .as_ref()
            .and_then(|spec| spec.access_modes.clone())
            .unwrap_or_default();
        let shared = modes.is_empty()
            || modes
                .iter()
                .any(|mode| mode == "ReadWriteMany" || mode == "ReadOnlyMany");
        if shared {
            return Ok(());
        }
        let one_pod = modes.iter().any(|mode| mode == "ReadWriteOncePod");
        let name = volume.name_any();
        let uid = pod.uid().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_default();
        let mut volumes = self
            .volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (attached_to, users) = volumes
            .entry(name.clone())
            .or_insert_with(|| (node.to_string(), Users::new()));
        let others: Users = users
            .iter()
            .filter(|(other, _)| **other != uid)
            .map(|(other, user)| (other.clone(), user.clone()))
            .collect();
        if one_pod && !others.is_empty() {
            return Err(Conflict::ReadWriteOncePod(format!(
                "MountVolume.SetUp failed for volume \"{name}\" : the volume has the \
                 ReadWriteOncePod access mode and {}",
                used_by(&others, &namespace)
            )));
        }
        if attached_to != node {
            if !others.is_empty() {
                return Err(Conflict::MultiAttach(format!(
                    "Multi-Attach error for volume \"{name}\" {}",
                    used_by(&others, &namespace)
                )));
            }
            *attached_to = node.to_string();
        }
        users.insert(uid, (namespace, pod.name_any()));
        Ok(())
    }

    /// Detaches every volume the pod with `uid` was the last user of on
    /// its node.
    pub(super) fn release(&self, uid: &str) {
        let mut volumes = self
            .volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        volumes.retain(|_, (_, users)| {
            users.remove(uid);
            !users.is_empty()
        });
    }
}

/// `Volume is already used by pod(s) a, b`, naming only the pods of the
/// asking pod's namespace, as the real controller does (by name, where the
/// real one lists them in no particular order).
fn used_by(users: &Users, namespace: &str) -> String {
    let mut local: Vec<&str> = users
        .values()
        .filter(|(their, _)| their == namespace)
        .map(|(_, name)| name.as_str())
        .collect();
    local.sort_unstable();
    let elsewhere = users.len() - local.len();
    match (local.is_empty(), elsewhere) {
        (false, 0) => format!("Volume is already used by pod(s) {}", local.join(", ")),
        (false, _) => format!(
            "Volume is already used by pod(s) {} and {elsewhere} pod(s) in different namespaces",
            local.join(", ")
        ),
        (true, _) => {
            format!("Volume is already used by {elsewhere} pod(s) in different namespaces")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(
            json!({ "metadata": { "name": "pvc-1" }, "spec": { "accessModes": modes } }),
        )
        .unwrap()
    }

    fn pod(namespace: &str, name: &str) -> Pod {
        serde_json::from_value(json!({ "metadata": {
            "namespace": namespace, "name": name, "uid": format!("{namespace}-{name}"),
        } }))
        .unwrap()
    }

    #[test]
    fn read_write_once_is_shared_on_one_node_and_moves_when_released() {
        let attachments = Attachments::default();
        let rwo = volume(&["ReadWriteOnce"]);
        assert_eq!(attachments.attach(&rwo, "n1", &pod("app", "a")), Ok(()));
        assert_eq!(attachments.attach(&rwo, "n1", &pod("app", "b")), Ok(()));
        assert_eq!(
            attachments.attach(&rwo, "n2", &pod("app", "c")),
            Err(Conflict::MultiAttach(
                "Multi-Attach error for volume \"pvc-1\" Volume is already used by pod(s) a, b"
                    .to_string()
            ))
        );
        assert_eq!(
            attachments.attach(&rwo, "n2", &pod("other", "d")),
            Err(Conflict::MultiAttach(
                "Multi-Attach error for volume \"pvc-1\" Volume is already used by 2 pod(s) in \
                 different namespaces"
                    .to_string()
            ))
        );
        attachments.release("app-a");
        assert!(attachments.attach(&rwo, "n2", &pod("app", "c")).is_err());
        attachments.release("app-b");
        assert_eq!(attachments.attach(&rwo, "n2", &pod("app", "c")), Ok(()));
    }

    #[test]
    fn many_node_modes_attach_anywhere_and_read_write_once_pod_serves_one_pod() {
        let attachments = Attachments::default();
        for modes in [&["ReadWriteMany"][..], &["ReadOnlyMany"], &[]] {
            let shared = volume(modes);
            assert_eq!(attachments.attach(&shared, "n1", &pod("app", "a")), Ok(()));
            assert_eq!(attachments.attach(&shared, "n2", &pod("app", "b")), Ok(()));
        }
        let rwop = volume(&["ReadWriteOncePod"]);
        assert_eq!(attachments.attach(&rwop, "n1", &pod("app", "a")), Ok(()));
        assert_eq!(attachments.attach(&rwop, "n1", &pod("app", "a")), Ok(()));
        assert!(matches!(
            attachments.attach(&rwop, "n1", &pod("app", "b")),
            Err(Conflict::ReadWriteOncePod(_))
        ));
    }
}
