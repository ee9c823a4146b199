//! The Pod Security Standards' checks, as the upstream
//! `pod-security-admission` library words and versions them: each check
//! looks at a pod's metadata and spec and says why it is forbidden, if it
//! is. Checks run in the library's order (baseline checks by id, then
//! restricted ones by id), and at the restricted level some restricted
//! checks replace a baseline one.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::pod::{containers, containers_phrase, join_quoted, name, pluralize};
use super::{Level, Version};

/// Why a pod fails one check: the short reason and the detail the message
/// puts in parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// What a check sees: the pod's metadata and spec, and the version of the
/// standard it is checked against.
pub struct Pod<'a> {
    pub metadata: &'a Value,
    pub spec: &'a Value,
    pub version: Version,
}

impl Pod<'_> {
    fn security(&self) -> &Value {
        &self.spec["securityContext"]
    }

    fn is_windows(&self) -> bool {
        self.spec["os"]["name"] == "windows"
    }

    /// Pods in their own user namespace (`hostUsers: false`) are spared
    /// the root checks from v1.35.
    fn user_namespaced(&self) -> bool {
        self.version.at_least(35) && self.spec["hostUsers"] == false
    }

    /// Restricted checks from v1.25 do not apply to Windows pods.
    fn windows_exempt(&self) -> bool {
        self.version.at_least(25) && self.is_windows()
    }

    /// The names of the containers for which `bad` holds.
    fn containers_where(&self, bad: impl Fn(&Value) -> bool) -> Vec<String> {
        containers(self.spec)
            .filter(|c| bad(c))
            .map(|c| name(c).to_string())
            .collect()
    }
}

/// One check: its id (which orders it), level, first version, the
/// baseline check it replaces at the restricted level, and its test.
pub struct Check {
    pub id: &'static str,
    pub level: Level,
    pub since: u32,
    pub replaces: Option<&'static str>,
    pub run: fn(&Pod) -> Option<Violation>,
}

const fn check(
    id: &'static str,
    level: Level,
    since: u32,
    replaces: Option<&'static str>,
    run: fn(&Pod) -> Option<Violation>,
) -> Check {
    Check {
        id,
        level,
        since,
        replaces,
        run,
    }
}

use Level::{Baseline, Restricted};

/// Every check, in evaluation order.
#[rustfmt::skip]
pub const CHECKS: &[Check] = &[
    check("appArmorProfile", Baseline, 0, None, app_armor),
    check("capabilities_baseline", Baseline, 0, None, capabilities_baseline),
    check("hostNamespaces", Baseline, 0, None, host_namespaces),
    check("hostPathVolumes", Baseline, 0, None, host_path_volumes),
    check("hostPorts", Baseline, 0, None, host_ports),
    check("hostProbesAndHostLifecycle", Baseline, 34, None, host_probes),
    check("privileged", Baseline, 0, None, privileged),
    check("procMount", Baseline, 0, None, proc_mount_baseline),
    check("seLinuxOptions", Baseline, 0, None, se_linux_options),
    check("seccompProfile_baseline", Baseline, 0, None, seccomp_baseline),
    check("sysctls", Baseline, 0, None, sysctls),
    check("windowsHostProcess", Baseline, 0, None, windows_host_process),
    check("allowPrivilegeEscalation", Restricted, 8, None, allow_privilege_escalation),
    check("capabilities_restricted", Restricted, 22, Some("capabilities_baseline"), capabilities_restricted),
    check("procMount_restricted", Restricted, 35, Some("procMount"), proc_mount),
    check("restrictedVolumes", Restricted, 0, Some("hostPathVolumes"), restricted_volumes),
    check("runAsNonRoot", Restricted, 0, None, run_as_non_root),
    check("runAsUser", Restricted, 23, None, run_as_user),
    check("seccompProfile_restricted", Restricted, 19, Some("seccompProfile_baseline"), seccomp_restricted),
];

/// The violations of `pod` against `level` at `pod.version`.
pub fn evaluate(level: Level, pod: &Pod) -> Vec<Violation> {
    let applies = |c: &Check| c.level <= level && pod.version.at_least(c.since);
    let replaced: Vec<&str> = CHECKS
        .iter()
        .filter(|c| applies(c))
        .filter_map(|c| c.replaces)
        .collect();
    CHECKS
        .iter()
        .filter(|c| applies(c) && !replaced.contains(&c.id))
        .filter_map(|c| (c.run)(pod))
        .collect()
}

/// `a "x" and containers "b", "c"`: who set something forbidden.
fn setters(pod_set: bool, containers: &[String]) -> Vec<String> {
    let mut setters = Vec::new();
    if pod_set {
        setters.push("pod".to_string());
    }
    if !containers.is_empty() {
        setters.push(containers_phrase(containers));
    }
    setters
}

fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value[field].as_str()
}

/// Go's `%q` for the plain strings annotations hold.
fn go_quote(value: &str) -> String {
    format!("{:?}", value)
}

fn app_armor(pod: &Pod) -> Option<Violation> {
    let allowed_type = |profile: &Value| {
        matches!(
            profile["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let mut values = BTreeSet::new();
    let profile = &pod.security()["appArmorProfile"];
    let pod_bad = profile.is_object() && !allowed_type(profile);
    if pod_bad {
        values.insert(text(profile, "type").unwrap_or_default().to_string());
    }
    let bad_containers = pod.containers_where(|c| {
        let profile = &c["securityContext"]["appArmorProfile"];
        profile.is_object() && !allowed_type(profile)
    });
    for c in containers(pod.spec) {
        let profile = &c["securityContext"]["appArmorProfile"];
        if profile.is_object() && !allowed_type(profile) {
            values.insert(text(profile, "type").unwrap_or_default().to_string());
        }
    }
    let mut listed: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = pod.metadata["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter_map(|(key, value)| {
            let value = value.as_str().unwrap_or_default();
            let allowed =
                value.is_empty() || value == "runtime/default" || value.starts_with("localhost/");
            (!allowed).then(|| format!("{key}={}", go_quote(value)))
        })
        .collect();
    let mut who = setters(pod_bad, &bad_containers);
    if !annotations.is_empty() {
        annotations.sort();
        who.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        listed.extend(annotations);
    }
    if who.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            listed.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            who.join(" and "),
            join_quoted(&listed)
        ),
    )
}

/// The capabilities the baseline level lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(container: &Value) -> impl Iterator<Item = &str> {
    container["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(pod: &Pod) -> Option<Violation> {
    let not_default = |c: &str| !BASELINE_CAPABILITIES.contains(&c);
    let bad = pod.containers_where(|c| added_capabilities(c).any(not_default));
    if bad.is_empty() {
        return None;
    }
    let capabilities: BTreeSet<&str> = containers(pod.spec)
        .flat_map(added_capabilities)
        .filter(|c| not_default(c))
        .collect();
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quoted(capabilities)
        ),
    )
}

fn host_namespaces(pod: &Pod) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|field| pod.spec[*field] == true)
        .map(|field| format!("{field}=true"))
        .collect();
    (!set.is_empty()).then(|| Violation {
        reason: "host namespaces".into(),
        detail: set.join(", "),
    })
}

fn volumes<'a>(pod: &Pod<'a>) -> impl Iterator<Item = &'a Value> {
    pod.spec["volumes"].as_array().into_iter().flatten()
}

/// The volume's source type: its one field besides `name`.
fn volume_type(volume: &Value) -> &str {
    volume
        .as_object()
        .and_then(|v| v.keys().find(|k| *k != "name"))
        .map(String::as_str)
        .unwrap_or("unknown")
}

fn host_path_volumes(pod: &Pod) -> Option<Violation> {
    let host: Vec<&str> = volumes(pod)
        .filter(|v| v["hostPath"].is_object())
        .map(name)
        .collect();
    (!host.is_empty()).then(|| Violation {
        reason: "hostPath volumes".into(),
        detail: format!(
            "{} {}",
            pluralize("volume", "volumes", host.len()),
            join_quoted(&host)
        ),
    })
}

fn host_ports(pod: &Pod) -> Option<Violation> {
    let host_port = |port: &Value| port["hostPort"].as_i64().filter(|p| *p != 0);
    let ports_of = |c: &'_ Value| -> Vec<i64> {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(host_port)
            .collect()
    };
    let bad = pod.containers_where(|c| !ports_of(c).is_empty());
    if bad.is_empty() {
        return None;
    }
    let ports: BTreeSet<String> = containers(pod.spec)
        .flat_map(ports_of)
        .map(|p| p.to_string())
        .collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// The hosts a container's probes and lifecycle hooks name.
fn probe_hosts(container: &Value) -> Vec<String> {
    let handlers = [
        &container["livenessProbe"],
        &container["readinessProbe"],
        &container["startupProbe"],
        &container["lifecycle"]["postStart"],
        &container["lifecycle"]["preStop"],
    ];
    handlers
        .into_iter()
        .flat_map(|h| [&h["httpGet"]["host"], &h["tcpSocket"]["host"]])
        .filter_map(Value::as_str)
        .filter(|host| !host.is_empty())
        .map(str::to_string)
        .collect()
}

fn host_probes(pod: &Pod) -> Option<Violation> {
    let bad: BTreeSet<String> = pod
        .containers_where(|c| !probe_hosts(c).is_empty())
        .into_iter()
        .collect();
    if bad.is_empty() {
        return None;
    }
    let hosts: BTreeSet<String> = containers(pod.spec).flat_map(probe_hosts).collect();
    let bad: Vec<String> = bad.into_iter().collect();
    violation(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quoted(&hosts)
        ),
    )
}

fn privileged(pod: &Pod) -> Option<Violation> {
    let bad = pod.containers_where(|c| c["securityContext"]["privileged"] == true);
    (!bad.is_empty()).then(|| Violation {
        reason: "privileged".into(),
        detail: format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    })
}

fn proc_mount_baseline(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    proc_mount(pod)
}

fn proc_mount(pod: &Pod) -> Option<Violation> {
    let mount = |c: &Value| {
        c["securityContext"]["procMount"]
            .as_str()
            .map(str::to_string)
    };
    let bad = pod.containers_where(|c| mount(c).is_some_and(|m| m != "Default"));
    if bad.is_empty() {
        return None;
    }
    let types: BTreeSet<String> = containers(pod.spec)
        .filter_map(mount)
        .filter(|m| m != "Default")
        .collect();
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quoted(types)
        ),
    )
}

fn se_linux_options(pod: &Pod) -> Option<Violation> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if pod.version.at_least(31) {
        allowed.push("container_engine_t");
    }
    let mut bad_types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |options: &Value| {
        let kind = text(options, "type").unwrap_or_default();
        let mut ok = true;
        if !allowed.contains(&kind) {
            bad_types.insert(kind.to_string());
            ok = false;
        }
        if !text(options, "user").unwrap_or_default().is_empty() {
            user = true;
            ok = false;
        }
        if !text(options, "role").unwrap_or_default().is_empty() {
            role = true;
            ok = false;
        }
        ok
    };
    let pod_options = &pod.security()["seLinuxOptions"];
    let pod_bad = pod_options.is_object() && !valid(pod_options);
    let mut bad = Vec::new();
    for c in containers(pod.spec) {
        let options = &c["securityContext"]["seLinuxOptions"];
        if options.is_object() && !valid(options) {
            bad.push(name(c).to_string());
        }
    }
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    if !bad_types.is_empty() {
        what.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quoted(&bad_types)
        ));
    }
    if user {
        what.push("user may not be set".to_string());
    }
    if role {
        what.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            who.join(" and "),
            what.join("; ")
        ),
    )
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION: &str = "container.seccomp.security.alpha.kubernetes.io/";

fn seccomp_type(security: &Value) -> Option<&str> {
    let profile = &security["seccompProfile"];
    profile
        .is_object()
        .then(|| text(profile, "type").unwrap_or_default())
}

fn valid_seccomp(kind: &str) -> bool {
    kind == "Localhost" || kind == "RuntimeDefault"
}

fn seccomp_baseline(pod: &Pod) -> Option<Violation> {
    if !pod.version.at_least(19) {
        return seccomp_annotations(pod);
    }
    seccomp_fields(pod, false)
}

/// Before v1.19 seccomp was set by annotations.
fn seccomp_annotations(pod: &Pod) -> Option<Violation> {
    let annotations = &pod.metadata["annotations"];
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let mut forbidden = BTreeSet::new();
    let keys = std::iter::once(SECCOMP_POD_ANNOTATION.to_string())
        .chain(containers(pod.spec).map(|c| format!("{SECCOMP_CONTAINER_ANNOTATION}{}", name(c))));
    for key in keys {
        if let Some(value) = annotations[&key].as_str().filter(|v| !valid(v)) {
            forbidden.insert(format!("{key}={}", go_quote(value)));
        }
    }
    (!forbidden.is_empty()).then(|| Violation {
        reason: "seccompProfile".into(),
        detail: format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            forbidden.into_iter().collect::<Vec<_>>().join(", ")
        ),
    })
}

/// The seccomp check on fields; `required` (restricted) also refuses
/// containers that set no profile where the pod sets none either.
fn seccomp_fields(pod: &Pod, required: bool) -> Option<Violation> {
    let mut values = BTreeSet::new();
    let pod_type = seccomp_type(pod.security());
    let pod_bad = pod_type.is_some_and(|t| !valid_seccomp(t));
    if let Some(t) = pod_type.filter(|t| !valid_seccomp(t)) {
        values.insert(t.to_string());
    }
    let pod_set = pod_type.is_some_and(valid_seccomp);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(pod.spec) {
        match seccomp_type(&c["securityContext"]) {
            Some(t) if !valid_seccomp(t) => {
                explicit.push(name(c).to_string());
                values.insert(t.to_string());
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c).to_string()),
            None => {}
        }
    }
    let who = setters(pod_bad, &explicit);
    if !who.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                who.join(" and "),
                join_quoted(&values)
            ),
        );
    }
    if required && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn seccomp_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows_exempt() {
        return None;
    }
    seccomp_fields(pod, true)
}

/// The sysctls the baseline level allows, with the version each came in.
const SAFE_SYSCTLS: [(&str, u32); 14] = [
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
    ("net.ipv4.tcp_slow_start_after_idle", 37),
    ("net.ipv4.tcp_notsent_lowat", 37),
];

fn sysctls(pod: &Pod) -> Option<Violation> {
    let allowed = |name: &str| {
        SAFE_SYSCTLS
            .iter()
            .any(|(s, since)| *s == name && pod.version.at_least(*since))
    };
    let forbidden: Vec<&str> = pod.security()["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or_default())
        .filter(|s| !allowed(s))
        .collect();
    (!forbidden.is_empty()).then(|| Violation {
        reason: "forbidden sysctls".into(),
        detail: forbidden.join(", "),
    })
}

fn windows_host_process(pod: &Pod) -> Option<Violation> {
    let host_process = |security: &Value| security["windowsOptions"]["hostProcess"] == true;
    let bad = pod.containers_where(|c| host_process(&c["securityContext"]));
    let who = setters(host_process(pod.security()), &bad);
    (!who.is_empty()).then(|| Violation {
        reason: "hostProcess".into(),
        detail: format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            who.join(" and ")
        ),
    })
}

fn allow_privilege_escalation(pod: &Pod) -> Option<Violation> {
    if pod.windows_exempt() {
        return None;
    }
    let bad = pod.containers_where(|c| c["securityContext"]["allowPrivilegeEscalation"] != false);
    (!bad.is_empty()).then(|| Violation {
        reason: "allowPrivilegeEscalation != false".into(),
        detail: format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    })
}

fn capabilities_restricted(pod: &Pod) -> Option<Violation> {
    if pod.windows_exempt() {
        return None;
    }
    let drops_all = |c: &Value| {
        c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|drop| drop.iter().any(|d| d == "ALL"))
    };
    let adds_forbidden = |c: &Value| added_capabilities(c).any(|a| a != "NET_BIND_SERVICE");
    let missing_drop = pod.containers_where(|c| !drops_all(c));
    let adding = pod.containers_where(adds_forbidden);
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let forbidden: BTreeSet<&str> = containers(pod.spec)
            .flat_map(added_capabilities)
            .filter(|a| *a != "NET_BIND_SERVICE")
            .collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quoted(forbidden)
        ));
    }
    (!details.is_empty()).then(|| Violation {
        reason: "unrestricted capabilities".into(),
        detail: details.join("; "),
    })
}

/// The volume types the restricted level allows.
const RESTRICTED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The volume types the restricted check names when it refuses them.
const KNOWN_VOLUMES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(pod: &Pod) -> Option<Violation> {
    let bad: Vec<&Value> = volumes(pod)
        .filter(|v| !RESTRICTED_VOLUMES.contains(&volume_type(v)))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let types: BTreeSet<&str> = bad
        .iter()
        .map(|v| volume_type(v))
        .map(|t| {
            if KNOWN_VOLUMES.contains(&t) {
                t
            } else {
                "unknown"
            }
        })
        .collect();
    let names: Vec<&str> = bad.iter().map(|v| name(v)).collect();
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quoted(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quoted(types)
        ),
    )
}

fn run_as_non_root(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    let pod_value = &pod.security()["runAsNonRoot"];
    let pod_bad = *pod_value == false;
    let pod_set = *pod_value == true;
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(pod.spec) {
        match c["securityContext"]["runAsNonRoot"].as_bool() {
            Some(false) => explicit.push(name(c).to_string()),
            Some(true) => {}
            None if !pod_set => implicit.push(name(c).to_string()),
            None => {}
        }
    }
    let who = setters(pod_bad, &explicit);
    if !who.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                who.join(" and ")
            ),
        );
    }
    (!implicit.is_empty()).then(|| Violation {
        reason: "runAsNonRoot != true".into(),
        detail: format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    })
}

fn run_as_user(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    let root = |security: &Value| security["runAsUser"].as_i64() == Some(0);
    let bad = pod.containers_where(|c| root(&c["securityContext"]));
    let who = setters(root(pod.security()), &bad);
    (!who.is_empty()).then(|| Violation {
        reason: "runAsUser=0".into(),
        detail: format!("{} must not set runAsUser=0", who.join(" and ")),
    })
}
