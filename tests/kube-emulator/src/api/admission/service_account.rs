//! The ServiceAccount admission plugin's token mount: a pod created to run
//! as a ServiceAccount gets the projected volume `kube-api-access-XXXXX`
//! (a bound token, the cluster CA from `kube-root-ca.crt`, the namespace)
//! and every container a read-only mount of it at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, unless
//! `automountServiceAccountToken` is false on the pod (or, when the pod
//! says nothing, on the ServiceAccount). The spec is changed as the real
//! plugin changes it, so `kubectl get pod -o yaml` shows the same; the
//! kubelet fills the volume (`kubelet::projected`).
//!
//! Unlike the real plugin, a pod whose ServiceAccount does not exist is
//! admitted (without the token) rather than refused: the emulator runs no
//! ServiceAccount controller, so namespaces have no `default` account.

use serde_json::{json, Value};

use super::super::objects::State;
use super::super::resources::{Catalog, ResourceType};
use super::pod::CONTAINER_LISTS;

/// Where containers find the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The name prefix of the token volume.
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime the plugin asks for: the real one's
/// (`WarnOnlyBoundTokenExpirationSeconds`, an hour and 7 seconds).
const EXPIRATION_SECONDS: i64 = 3607;
/// The annotation of the static pods' mirrors, which get no token.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Mounts the pod's ServiceAccount token into a pod being created.
pub fn admit(state: &State, rt: &ResourceType, old: Option<&Value>, object: &mut Value) {
    if !rt.is("", "pods") || old.is_some() {
        return;
    }
    if !object["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return;
    }
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &mut object["spec"];
    let name = spec["serviceAccountName"]
        .as_str()
        .filter(|name| !name.is_empty())
        .unwrap_or("default")
        .to_string();
    let accounts = Catalog::builtin("", "serviceaccounts");
    let Some(account) = state.store.get(&accounts.key(), &namespace, &name).cloned() else {
        return;
    };
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or(account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
}

/// Adds the token volume (unless the pod has one) and its mount to every
/// container that has nothing mounted at [`MOUNT_PATH`].
fn mount_token(spec: &mut Value) {
    let existing = spec["volumes"].as_array().and_then(|volumes| {
        volumes.iter().find_map(|volume| {
            volume["name"]
                .as_str()
                .filter(|name| name.starts_with(VOLUME_PREFIX))
                .map(str::to_string)
        })
    });
    let volume = existing.clone().unwrap_or_else(volume_name);
    let mount = json!({ "name": volume, "readOnly": true, "mountPath": MOUNT_PATH });
    let mut needed = false;
    // Ephemeral containers are added later, through their own subresource.
    for list in &CONTAINER_LISTS[..2] {
        for container in spec[*list].as_array_mut().into_iter().flatten() {
            let taken = container["volumeMounts"]
                .as_array()
                .is_some_and(|mounts| mounts.iter().any(|m| m["mountPath"] == MOUNT_PATH));
            if taken {
                continue;
            }
            if !container["volumeMounts"].is_array() {
                container["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(json!({ "name": volume, "projected": token_source() }));
        }
    }
}

/// The real plugin's projected volume source.
fn token_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            { "serviceAccountToken": { "expirationSeconds": EXPIRATION_SECONDS, "path": "token" } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{
                "path": "namespace",
                "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" },
            }] } },
        ],
    })
}

/// `kube-api-access-` and five characters of the alphabet Kubernetes'
/// generated names use.
fn volume_name() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("{VOLUME_PREFIX}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_gets_the_mount_once_and_the_pod_one_volume() {
        let mut spec = json!({
            "initContainers": [{ "name": "init" }],
            "containers": [
                { "name": "app", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
                { "name": "own", "volumeMounts": [{ "name": "mine", "mountPath": MOUNT_PATH }] },
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        });
        mount_token(&mut spec);
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(volumes[1]["projected"]["defaultMode"], 420);
        let mount = json!({ "name": name, "readOnly": true, "mountPath": MOUNT_PATH });
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "a container with its own mount there keeps it"
        );
        let again = spec.clone();
        mount_token(&mut spec);
        assert_eq!(spec, again, "a pod that has the volume gets nothing more");
    }
}
