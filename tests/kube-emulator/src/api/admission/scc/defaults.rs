//! The SecurityContextConstraints an OpenShift 4 cluster starts with, with
//! their real fields and priorities, and the RBAC that makes
//! `restricted-v2` the SCC of every authenticated user (and so of every
//! service account).

use serde_json::{json, Value};

use super::super::super::objects::State;
use super::super::super::resources::Catalog;
use super::super::Write;

/// An SCC with the fields every default one shares (no host access, no
/// privileged containers, SELinux MustRunAs), overridden by `fields`.
fn scc(name: &str, description: &str, fields: Value) -> Value {
    let mut scc = json!({
        "apiVersion": "security.openshift.io/v1",
        "kind": "SecurityContextConstraints",
        "metadata": {"name": name, "annotations": {"kubernetes.io/description": description}},
        "allowHostDirVolumePlugin": false,
        "allowHostIPC": false,
        "allowHostNetwork": false,
        "allowHostPID": false,
        "allowHostPorts": false,
        "allowPrivilegeEscalation": true,
        "allowPrivilegedContainer": false,
        "allowedCapabilities": null,
        "defaultAddCapabilities": null,
        "fsGroup": {"type": "RunAsAny"},
        "groups": [],
        "priority": null,
        "readOnlyRootFilesystem": false,
        "requiredDropCapabilities": ["KILL", "MKNOD", "SETUID", "SETGID"],
        "runAsUser": {"type": "MustRunAsRange"},
        "seLinuxContext": {"type": "MustRunAs"},
        "supplementalGroups": {"type": "RunAsAny"},
        "users": [],
        "volumes": ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"],
    });
    for (key, value) in fields.as_object().into_iter().flatten() {
        scc[key] = value.clone();
    }
    scc
}

/// What the `-v2` SCCs add to their legacy namesakes: drop every
/// capability, no privilege escalation, seccomp RuntimeDefault.
fn v2(fields: Value) -> Value {
    let mut v2 = json!({
        "allowPrivilegeEscalation": false,
        "allowedCapabilities": ["NET_BIND_SERVICE"],
        "requiredDropCapabilities": ["ALL"],
        "seccompProfiles": ["runtime/default"],
    });
    for (key, value) in fields.as_object().into_iter().flatten() {
        v2[key] = value.clone();
    }
    v2
}

fn default_sccs() -> Vec<Value> {
    vec![
        scc(
            "restricted-v2",
            "restricted-v2 denies access to all host features and requires pods to be run with a UID, and SELinux context that are allocated to the namespace. This is the most restrictive SCC and it is used by default for authenticated users. On top of the legacy 'restricted' SCC, it also requires to drop ALL capabilities and does not allow privilege escalation binaries. It will also default the seccomp profile to runtime/default if unset, otherwise this seccomp profile is required.",
            v2(json!({"fsGroup": {"type": "MustRunAs"}})),
        ),
        scc(
            "restricted",
            "restricted denies access to all host features and requires pods to be run with a UID, and SELinux context that are allocated to the namespace.",
            json!({"fsGroup": {"type": "MustRunAs"}}),
        ),
        scc(
            "nonroot-v2",
            "nonroot provides all features of the restricted SCC but allows users to run with any non-root UID.  The user must specify the UID or it must be specified on the by the manifest of the container runtime. On top of the legacy 'nonroot' SCC, it also requires to drop ALL capabilities and does not allow privilege escalation binaries. It will also default the seccomp profile to runtime/default if unset, otherwise this seccomp profile is required.",
            v2(json!({"runAsUser": {"type": "MustRunAsNonRoot"}})),
        ),
        scc(
            "nonroot",
            "nonroot provides all features of the restricted SCC but allows users to run with any non-root UID.  The user must specify the UID or it must be specified on the by the manifest of the container runtime.",
            json!({"runAsUser": {"type": "MustRunAsNonRoot"}}),
        ),
        scc(
            "anyuid",
            "anyuid provides all features of the restricted SCC but allows users to run with any UID and any GID.",
            json!({
                "groups": ["system:cluster-admins"],
                "priority": 10,
                "requiredDropCapabilities": ["MKNOD"],
                "runAsUser": {"type": "RunAsAny"},
            }),
        ),
        scc(
            "hostmount-anyuid",
            "hostmount-anyuid provides all the features of the\nrestricted SCC but allows host mounts and any UID by a pod.  This is primarily\nused by the persistent volume recycler. WARNING: this SCC allows host file\nsystem access as any UID, including UID 0.  Grant with caution.",
            json!({
                "allowHostDirVolumePlugin": true,
                "requiredDropCapabilities": ["MKNOD"],
                "runAsUser": {"type": "RunAsAny"},
                "users": ["system:serviceaccount:openshift-infra:pv-recycler-controller"],
                "volumes": ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "hostPath", "nfs", "persistentVolumeClaim", "projected", "secret"],
            }),
        ),
        scc(
            "privileged",
            "privileged allows access to all privileged and host features and the ability to run as any user, any group, any fsGroup, and with any SELinux context.  WARNING: this is the most relaxed SCC and should be used only for cluster administration. Grant with caution.",
            json!({
                "allowHostDirVolumePlugin": true,
                "allowHostIPC": true,
                "allowHostNetwork": true,
                "allowHostPID": true,
                "allowHostPorts": true,
                "allowPrivilegedContainer": true,
                "allowedCapabilities": ["*"],
                "allowedUnsafeSysctls": ["*"],
                "groups": ["system:cluster-admins", "system:nodes", "system:masters"],
                "requiredDropCapabilities": null,
                "runAsUser": {"type": "RunAsAny"},
                "seLinuxContext": {"type": "RunAsAny"},
                "seccompProfiles": ["*"],
                "users": ["system:admin", "system:serviceaccount:openshift-infra:build-controller"],
                "volumes": ["*"],
            }),
        ),
    ]
}

/// The role and binding through which every authenticated user may use
/// `restricted-v2`.
const RESTRICTED_V2_ROLE: &str = "system:openshift:scc:restricted-v2";

/// Creates the default SCCs and the `restricted-v2` RBAC.
pub fn install(state: &mut State) {
    let sccs = Catalog::builtin("security.openshift.io", "securitycontextconstraints");
    let roles = Catalog::builtin("rbac.authorization.k8s.io", "clusterroles");
    let bindings = Catalog::builtin("rbac.authorization.k8s.io", "clusterrolebindings");
    let role = json!({
        "metadata": {"name": RESTRICTED_V2_ROLE},
        "rules": [{"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"], "resourceNames": ["restricted-v2"], "verbs": ["use"]}],
    });
    let binding = json!({
        "metadata": {"name": RESTRICTED_V2_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RESTRICTED_V2_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    });
    let objects = default_sccs()
        .into_iter()
        .map(|scc| (&sccs, scc))
        .chain([(&roles, role), (&bindings, binding)]);
    for (rt, object) in objects {
        let version = rt.versions[0].clone();
        state
            .create(rt, &version, "", object, &mut Write::system())
            .expect("the default SCCs and their RBAC are valid");
    }
}
