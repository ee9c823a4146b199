//! One SCC applied to one pod, as OpenShift's `simpleProvider` applies it:
//! first the pod is defaulted from the SCC's strategies (uid from the
//! namespace's range, fsGroup and supplemental groups from its groups,
//! SELinux level from its MCS label, seccomp profile, capabilities to drop,
//! privilege escalation), then validated against the SCC, each error
//! worded as the real provider words it.

use serde_json::{json, Map, Value};

use super::super::pod::CONTAINER_LISTS;
use super::field::{self, int64s, Bad, FieldError};
use super::namespace::{self, IdRange};

/// How the SCC chooses a container's uid.
#[derive(Debug, Clone)]
enum RunAsUser {
    MustRunAs(i64),
    MustRunAsRange(IdRange),
    MustRunAsNonRoot,
    RunAsAny,
}

/// Which seccomp profiles the SCC allows (`seccompProfiles`).
#[derive(Debug, Clone)]
struct Seccomp {
    allowed: Vec<String>,
    any: bool,
}

/// An SCC ready to apply in one namespace.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    scc: Value,
    run_as_user: RunAsUser,
    /// MustRunAs SELinux options (with the namespace's level), or RunAsAny.
    se_linux: Option<Value>,
    /// MustRunAs ranges, or RunAsAny.
    fs_group: Option<Vec<IdRange>>,
    supplemental_groups: Option<Vec<IdRange>>,
    seccomp: Seccomp,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn annotation<'a>(namespace: &'a Value, key: &str) -> Result<&'a str, String> {
    match namespace["metadata"]["annotations"][key].as_str() {
        Some("") => Err(format!("found annotation {key} but it was empty")),
        Some(value) => Ok(value),
        None => Err(format!("unable to find annotation {key}")),
    }
}

/// The namespace's supplemental group blocks (falling back to its uid
/// range).
fn namespace_groups(namespace: &Value) -> Result<Vec<IdRange>, String> {
    let text = annotation(namespace, namespace::SUPPLEMENTAL_GROUPS)
        .or_else(|_| annotation(namespace, namespace::UID_RANGE))?;
    text.split(',').map(namespace::parse_block).collect()
}

/// The ranges of a group strategy (`fsGroup`, `supplementalGroups`):
/// `None` for RunAsAny.
fn group_ranges(
    options: &Value,
    namespace: &Value,
    scc_name: &str,
    namespace_name: &str,
) -> Result<Option<Vec<IdRange>>, String> {
    match options["type"].as_str().unwrap_or("RunAsAny") {
        "RunAsAny" => Ok(None),
        "MustRunAs" => {
            let given: Vec<IdRange> = options["ranges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some(IdRange {
                        min: r["min"].as_i64()?,
                        max: r["max"].as_i64()?,
                    })
                })
                .collect();
            if !given.is_empty() {
                return Ok(Some(given));
            }
            namespace_groups(namespace).map(Some).map_err(|why| {
                format!("unable to find pre-allocated group annotation for namespace {namespace_name} while trying to configure SCC {scc_name}: {why}")
            })
        }
        other => Err(format!("Unrecognized group strategy type {other}")),
    }
}

impl Provider {
    /// The provider of `scc` in `namespace`, whose pre-allocated ranges
    /// fill in what the SCC leaves to the namespace.
    pub fn new(scc: &Value, namespace: &Value) -> Result<Self, String> {
        let name = scc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace_name = namespace["metadata"]["name"].as_str().unwrap_or_default();
        let preallocated = |what: &str, why: String| {
            format!("unable to find pre-allocated {what} annotation for namespace {namespace_name} while trying to configure SCC {name}: {why}")
        };
        let user = &scc["runAsUser"];
        let run_as_user = match user["type"].as_str().unwrap_or_default() {
            "MustRunAs" => {
                RunAsUser::MustRunAs(user["uid"].as_i64().ok_or("MustRunAs requires a UID")?)
            }
            "MustRunAsRange" => {
                match (user["uidRangeMin"].as_i64(), user["uidRangeMax"].as_i64()) {
                    (Some(min), Some(max)) => RunAsUser::MustRunAsRange(IdRange { min, max }),
                    (None, None) => RunAsUser::MustRunAsRange(
                        annotation(namespace, namespace::UID_RANGE)
                            .and_then(namespace::parse_block)
                            .map_err(|why| preallocated("uid", why))?,
                    ),
                    _ => {
                        return Err("MustRunAsRange requires a UIDRangeMin and a UIDRangeMax".into())
                    }
                }
            }
            "MustRunAsNonRoot" => RunAsUser::MustRunAsNonRoot,
            "RunAsAny" => RunAsUser::RunAsAny,
            other => return Err(format!("Unrecognized RunAsUser strategy type {other}")),
        };
        let context = &scc["seLinuxContext"];
        let se_linux = match context["type"].as_str().unwrap_or_default() {
            "MustRunAs" => {
                let mut options = context["seLinuxOptions"].clone();
                if !options.is_object() {
                    options = json!({});
                }
                if options["level"].as_str().unwrap_or_default().is_empty() {
                    let level = annotation(namespace, namespace::MCS)
                        .map_err(|why| preallocated("mcs", why))?;
                    options["level"] = json!(level);
                }
                Some(options)
            }
            "RunAsAny" => None,
            other => return Err(format!("Unrecognized SELinuxContext strategy type {other}")),
        };
        let fs_group = group_ranges(&scc["fsGroup"], namespace, &name, namespace_name)?;
        let supplemental_groups =
            group_ranges(&scc["supplementalGroups"], namespace, &name, namespace_name)?;
        let profiles = strings(&scc["seccompProfiles"]);
        let seccomp = Seccomp {
            any: profiles.iter().any(|p| p == "*"),
            allowed: profiles.into_iter().filter(|p| p != "*").collect(),
        };
        Ok(Provider {
            users: strings(&scc["users"]),
            groups: strings(&scc["groups"]),
            name,
            scc: scc.clone(),
            run_as_user,
            se_linux,
            fs_group,
            supplemental_groups,
            seccomp,
        })
    }

    fn allows(&self, field: &str) -> bool {
        self.scc[field] == true
    }

    pub fn priority(&self) -> i64 {
        self.scc["priority"].as_i64().unwrap_or(0)
    }

    /// How permissive the SCC is (lower is more restrictive), scored as
    /// OpenShift scores SCCs to order those of equal priority.
    pub fn points(&self) -> i64 {
        let mut points = 0;
        if self.allows("allowPrivilegedContainer") {
            points += 1_600_000;
        }
        let volumes = strings(&self.scc["volumes"]);
        let trivial = [
            "secret",
            "configMap",
            "emptyDir",
            "downwardAPI",
            "projected",
            "none",
        ];
        if volumes.iter().any(|v| v == "hostPath" || v == "*") {
            points += 200_000;
        } else if volumes.iter().any(|v| !trivial.contains(&v.as_str())) {
            points += 100_000;
        }
        if self.allows("allowHostNetwork") {
            points += 400_000;
        }
        if self.allows("allowHostPorts") {
            points += 800_000;
        }
        let has = |list: &[String], cap: &str| list.iter().any(|c| c.to_uppercase() == cap);
        let allowed = strings(&self.scc["allowedCapabilities"]);
        let drop = strings(&self.scc["requiredDropCapabilities"]);
        let mut caps = 5000 + 300 * strings(&self.scc["defaultAddCapabilities"]).len() as i64;
        caps += if has(&allowed, "*") || has(&allowed, "ALL") {
            4000
        } else {
            10 * allowed.len() as i64
        };
        caps += if has(&drop, "ALL") {
            -3000
        } else {
            -50 * drop.len() as i64
        };
        points += caps.clamp(0, 9999);
        let strategy = |kind: &Value| match kind.as_str() {
            Some("RunAsAny") => 40_000,
            Some("MustRunAsNonRoot") => 30_000,
            Some("MustRunAsRange") => 20_000,
            Some("MustRunAs") => 10_000,
            _ => 0,
        };
        points
            + strategy(&self.scc["seLinuxContext"]["type"])
            + strategy(&self.scc["runAsUser"]["type"])
    }

    /// Defaults `pod` from the SCC and validates it; the errors name this
    /// provider (`provider NAME: .containers[0].runAsUser`).
    pub fn assign(&self, pod: &mut Value) -> Vec<FieldError> {
        let root = format!("provider {}: ", self.name);
        let pod_path = format!("{root}.spec.securityContext");
        self.default_pod(pod);
        let mut errors = self.validate_pod(pod, &pod_path);
        for list in CONTAINER_LISTS {
            let count = pod["spec"][list].as_array().map_or(0, Vec::len);
            for index in 0..count {
                let path = format!("{root}.{list}[{index}]");
                let pod_security = pod["spec"]["securityContext"].clone();
                let container = &mut pod["spec"][list][index];
                self.default_container(&pod_security, container);
                let container = pod["spec"][list][index].clone();
                errors.extend(self.validate_container(pod, &container, &path));
            }
        }
        errors
    }

    fn default_pod(&self, pod: &mut Value) {
        let mut security = pod["spec"]["securityContext"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let unset = |s: &Map<String, Value>, field: &str| s.get(field).is_none_or(Value::is_null);
        if unset(&security, "supplementalGroups") {
            if let Some(ranges) = &self.supplemental_groups {
                security.insert("supplementalGroups".into(), json!([ranges[0].min]));
            }
        }
        if unset(&security, "fsGroup") {
            if let Some(ranges) = &self.fs_group {
                security.insert("fsGroup".into(), json!(ranges[0].min));
            }
        }
        if unset(&security, "seLinuxOptions") {
            if let Some(options) = &self.se_linux {
                security.insert("seLinuxOptions".into(), options.clone());
            }
        }
        let profile = match security.get("seccompProfile").filter(|p| p.is_object()) {
            Some(field) => profile_name(field),
            None => self.seccomp.allowed.first().cloned().unwrap_or_default(),
        };
        if !profile.is_empty() {
            match profile_field(&profile) {
                Some(field) => security.insert("seccompProfile".into(), field),
                None => security.remove("seccompProfile"),
            };
        }
        if !security.is_empty() || pod["spec"]["securityContext"].is_object() {
            pod["spec"]["securityContext"] = Value::Object(security);
        }
    }

    fn validate_pod(&self, pod: &Value, path: &str) -> Vec<FieldError> {
        let security = &pod["spec"]["securityContext"];
        let mut errors = Vec::new();
        for (field, ranges) in [
            ("fsGroup", &self.fs_group),
            ("supplementalGroups", &self.supplemental_groups),
        ] {
            let Some(ranges) = ranges else { continue };
            let groups: Vec<i64> = match &security[field] {
                Value::Array(list) => list.iter().filter_map(Value::as_i64).collect(),
                other => other.as_i64().into_iter().collect(),
            };
            let at = format!("{path}.{field}");
            if groups.is_empty() {
                errors.push(field::invalid(
                    &at,
                    int64s(&groups),
                    "unable to validate empty groups against required ranges",
                ));
            }
            for group in &groups {
                if !ranges.iter().any(|r| r.min <= *group && *group <= r.max) {
                    errors.push(field::invalid(
                        &at,
                        int64s(&groups),
                        &format!("{group} is not an allowed group"),
                    ));
                }
            }
        }
        let pod_profile = seccomp_annotation(pod, "seccomp.security.alpha.kubernetes.io/pod")
            .unwrap_or_else(|| field_profile(security));
        errors.extend(self.check_seccomp(
            "pod.metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
            &pod_profile,
        ));
        errors.extend(self.check_se_linux(
            &format!("{path}.seLinuxOptions"),
            &security["seLinuxOptions"],
        ));
        errors.extend(self.host_namespaces(&pod["spec"], path));
        errors.extend(self.check_sysctls(security));
        errors.extend(self.check_volumes(&pod["spec"]));
        errors
    }

    /// Host network, PID and IPC, which the provider checks for the pod
    /// and again for each container.
    fn host_namespaces(&self, spec: &Value, path: &str) -> Vec<FieldError> {
        [
            (
                "allowHostNetwork",
                "hostNetwork",
                "Host network is not allowed to be used",
            ),
            (
                "allowHostPID",
                "hostPID",
                "Host PID is not allowed to be used",
            ),
            (
                "allowHostIPC",
                "hostIPC",
                "Host IPC is not allowed to be used",
            ),
        ]
        .into_iter()
        .filter(|(allow, field, _)| !self.allows(allow) && spec[*field] == true)
        .map(|(_, field, why)| field::invalid(&format!("{path}.{field}"), Bad::Bool(true), why))
        .collect()
    }

    fn check_seccomp(&self, path: &str, profile: &str) -> Option<FieldError> {
        let allowed = &self.seccomp.allowed;
        if !self.seccomp.any && allowed.is_empty() && !profile.is_empty() {
            return Some(field::forbidden(path, "seccomp may not be set"));
        }
        if self.seccomp.any || allowed.is_empty() && profile.is_empty() {
            return None;
        }
        let runtime_default = |p: &str| p == "runtime/default" || p == "docker/default";
        let fine = allowed.iter().any(|p| p == profile)
            || allowed.iter().any(|p| runtime_default(p)) && runtime_default(profile);
        (!fine).then(|| {
            field::forbidden(
                path,
                &format!(
                    "{profile} is not an allowed seccomp profile. Valid values are [{}]",
                    allowed.join(" ")
                ),
            )
        })
    }

    fn check_se_linux(&self, path: &str, options: &Value) -> Vec<FieldError> {
        let Some(wanted) = &self.se_linux else {
            return Vec::new();
        };
        if !options.is_object() {
            return vec![field::required(path, "")];
        }
        let text = |v: &Value, f: &str| v[f].as_str().unwrap_or_default().to_string();
        let mut errors = Vec::new();
        if !same_level(&text(wanted, "level"), &text(options, "level")) {
            errors.push(field::invalid(
                &format!("{path}.level"),
                Bad::Text(text(options, "level")),
                &format!("must be {}", text(wanted, "level")),
            ));
        }
        for part in ["role", "type", "user"] {
            if text(options, part) != text(wanted, part) {
                errors.push(field::invalid(
                    &format!("{path}.{part}"),
                    Bad::Text(text(options, part)),
                    &format!("must be {}", text(wanted, part)),
                ));
            }
        }
        errors
    }

    fn check_sysctls(&self, security: &Value) -> Vec<FieldError> {
        let matches = |patterns: &[String], name: &str| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            })
        };
        let forbidden = strings(&self.scc["forbiddenSysctls"]);
        let unsafe_allowed = strings(&self.scc["allowedUnsafeSysctls"]);
        let mut errors = Vec::new();
        for (index, sysctl) in security["sysctls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = sysctl["name"].as_str().unwrap_or_default();
            let path = format!("pod.spec.securityContext.sysctls[{index}]");
            if matches(&forbidden, name) {
                errors.push(field::forbidden(
                    &path,
                    &format!("sysctl {name:?} is not allowed"),
                ));
            } else if !SAFE_SYSCTLS.contains(&name) && !matches(&unsafe_allowed, name) {
                errors.push(field::forbidden(
                    &path,
                    &format!("unsafe sysctl {name:?} is not allowed"),
                ));
            }
        }
        errors
    }

    fn check_volumes(&self, spec: &Value) -> Vec<FieldError> {
        let allowed = strings(&self.scc["volumes"]);
        if allowed.iter().any(|v| v == "*") {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (index, volume) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
            let path = format!("spec.volumes[{index}]");
            let Some(kind) = volume_type(volume) else {
                errors.push(field::invalid(
                    &path,
                    Bad::Text(String::new()),
                    "unknown volume type",
                ));
                continue;
            };
            let token_only = kind == "projected"
                && allowed.iter().any(|v| v == "secret")
                && volume["projected"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|s| {
                        s["serviceAccountToken"].is_object()
                            || s["configMap"].is_object()
                            || s["downwardAPI"].is_object()
                    });
            if !allowed.iter().any(|v| v == kind) && !token_only {
                errors.push(field::invalid(
                    &path,
                    Bad::Text(kind.to_string()),
                    &format!("{kind} volumes are not allowed to be used"),
                ));
            }
        }
        errors
    }

    /// The container's security context after defaulting, with the pod's
    /// as fallback for what both may set.
    fn default_container(&self, pod_security: &Value, container: &mut Value) {
        let mut own = container["securityContext"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let effective = |own: &Map<String, Value>, field: &str| -> Value {
            match own.get(field).filter(|v| !v.is_null()) {
                Some(v) => v.clone(),
                None => pod_security[field].clone(),
            }
        };
        let set = |own: &mut Map<String, Value>, field: &str, value: Value| {
            if effective(own, field) != value {
                own.insert(field.to_string(), value);
            }
        };
        if effective(&own, "runAsUser").is_null() {
            let uid = match &self.run_as_user {
                RunAsUser::MustRunAs(uid) => Some(*uid),
                RunAsUser::MustRunAsRange(range) => Some(range.min),
                _ => None,
            };
            if let Some(uid) = uid {
                set(&mut own, "runAsUser", json!(uid));
            }
        }
        if effective(&own, "seLinuxOptions").is_null() {
            if let Some(options) = &self.se_linux {
                set(&mut own, "seLinuxOptions", options.clone());
            }
        }
        if effective(&own, "runAsNonRoot").is_null() {
            let non_root = match effective(&own, "runAsUser").as_i64() {
                None => matches!(self.run_as_user, RunAsUser::MustRunAsNonRoot),
                Some(uid) => uid > 0,
            };
            if non_root {
                set(&mut own, "runAsNonRoot", json!(true));
            }
        }
        if let Some(capabilities) = self.capabilities(&own) {
            own.insert("capabilities".into(), capabilities);
        }
        if self.allows("readOnlyRootFilesystem") && own.get("readOnlyRootFilesystem").is_none() {
            own.insert("readOnlyRootFilesystem".into(), json!(true));
        }
        let privileged = own.get("privileged") == Some(&json!(true));
        let sys_admin = strings(&own.get("capabilities").cloned().unwrap_or_default()["add"])
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN");
        let escalation_unset = own
            .get("allowPrivilegeEscalation")
            .is_none_or(Value::is_null);
        let default = &self.scc["defaultAllowPrivilegeEscalation"];
        if default.is_boolean() && escalation_unset && !privileged && !sys_admin {
            own.insert("allowPrivilegeEscalation".into(), default.clone());
        }
        let escalation_unset = own
            .get("allowPrivilegeEscalation")
            .is_none_or(Value::is_null);
        if self.scc["allowPrivilegeEscalation"] == false && escalation_unset {
            own.insert("allowPrivilegeEscalation".into(), json!(false));
        }
        if !own.is_empty() || container["securityContext"].is_object() {
            container["securityContext"] = Value::Object(own);
        }
    }

    /// The container's capabilities with the SCC's default additions and
    /// required drops merged in; `None` when they already hold them.
    fn capabilities(&self, own: &Map<String, Value>) -> Option<Value> {
        let current = own.get("capabilities").cloned().unwrap_or_default();
        let mut add = strings(&current["add"]);
        let mut drop = strings(&current["drop"]);
        let (own_add, own_drop) = (add.len(), drop.len());
        for cap in strings(&self.scc["defaultAddCapabilities"]) {
            if !drop.contains(&cap) && !add.contains(&cap) {
                add.push(cap);
            }
        }
        for cap in strings(&self.scc["requiredDropCapabilities"]) {
            if !drop.contains(&cap) {
                drop.push(cap);
            }
        }
        if add.len() == own_add && drop.len() == own_drop {
            return None;
        }
        add.sort();
        add.dedup();
        drop.sort();
        drop.dedup();
        let mut capabilities = json!({});
        if !add.is_empty() {
            capabilities["add"] = json!(add);
        }
        if !drop.is_empty() {
            capabilities["drop"] = json!(drop);
        }
        Some(capabilities)
    }

    fn validate_container(&self, pod: &Value, container: &Value, path: &str) -> Vec<FieldError> {
        let pod_security = &pod["spec"]["securityContext"];
        let own = &container["securityContext"];
        let effective = |field: &str| match &own[field] {
            Value::Null => &pod_security[field],
            set => set,
        };
        let mut errors = self.check_run_as_user(
            path,
            effective("runAsNonRoot").as_bool(),
            effective("runAsUser").as_i64(),
        );
        errors.extend(self.check_se_linux(
            &format!("{path}.seLinuxOptions"),
            effective("seLinuxOptions"),
        ));
        let name = container["name"].as_str().unwrap_or_default();
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{name}");
        let profile = if own["seccompProfile"].is_object() {
            field_profile(own)
        } else {
            seccomp_annotation(pod, &key).unwrap_or_else(|| {
                seccomp_annotation(pod, "seccomp.security.alpha.kubernetes.io/pod")
                    .filter(|_| !pod_security["seccompProfile"].is_object())
                    .unwrap_or_else(|| field_profile(pod_security))
            })
        };
        errors.extend(self.check_seccomp(&format!("pod.metadata.annotations[{key}]"), &profile));
        if !self.allows("allowPrivilegedContainer") && own["privileged"] == true {
            errors.push(field::invalid(
                &format!("{path}.privileged"),
                Bad::Bool(true),
                "Privileged containers are not allowed",
            ));
        }
        errors.extend(self.check_capabilities(path, &own["capabilities"]));
        let spec = &pod["spec"];
        errors.extend(
            self.host_namespaces(spec, path)
                .into_iter()
                .filter(|e| e.0.contains(".hostNetwork")),
        );
        if !self.allows("allowHostPorts") {
            for list in CONTAINER_LISTS {
                for (index, other) in spec[list].as_array().into_iter().flatten().enumerate() {
                    for port in other["ports"].as_array().into_iter().flatten() {
                        if let Some(host_port) = port["hostPort"].as_i64().filter(|p| *p > 0) {
                            errors.push(field::invalid(
                                &format!("{path}.{list}[{index}].hostPort"),
                                Bad::Int(host_port),
                                "Host ports are not allowed to be used",
                            ));
                        }
                    }
                }
            }
        }
        errors.extend(
            self.host_namespaces(spec, path)
                .into_iter()
                .filter(|e| !e.0.contains(".hostNetwork")),
        );
        if self.allows("readOnlyRootFilesystem") {
            let at = format!("{path}.readOnlyRootFilesystem");
            match own["readOnlyRootFilesystem"].as_bool() {
                None => errors.push(field::invalid(
                    &at,
                    Bad::Null,
                    "ReadOnlyRootFilesystem may not be nil and must be set to true",
                )),
                Some(false) => errors.push(field::invalid(
                    &at,
                    Bad::Bool(false),
                    "ReadOnlyRootFilesystem must be set to true",
                )),
                Some(true) => {}
            }
        }
        if self.scc["allowPrivilegeEscalation"] == false {
            let at = format!("{path}.allowPrivilegeEscalation");
            let why = "Allowing privilege escalation for containers is not allowed";
            match own["allowPrivilegeEscalation"].as_bool() {
                None => errors.push(field::invalid(&at, Bad::Null, why)),
                Some(true) => errors.push(field::invalid(&at, Bad::Bool(true), why)),
                Some(false) => {}
            }
        }
        errors
    }

    fn check_run_as_user(
        &self,
        path: &str,
        non_root: Option<bool>,
        uid: Option<i64>,
    ) -> Vec<FieldError> {
        let at = |field: &str| format!("{path}.{field}");
        let error = match (&self.run_as_user, uid) {
            (RunAsUser::RunAsAny, _) => None,
            (RunAsUser::MustRunAs(_) | RunAsUser::MustRunAsRange(_), None) => {
                Some(field::required(&at("runAsUser"), ""))
            }
            (RunAsUser::MustRunAs(wanted), Some(uid)) => (*wanted != uid).then(|| {
                field::invalid(
                    &at("runAsUser"),
                    Bad::Int(uid),
                    &format!("must be: {wanted}"),
                )
            }),
            (RunAsUser::MustRunAsRange(range), Some(uid)) => (uid < range.min || uid > range.max)
                .then(|| {
                    field::invalid(
                        &at("runAsUser"),
                        Bad::Int(uid),
                        &format!("must be in the ranges: [{}, {}]", range.min, range.max),
                    )
                }),
            (RunAsUser::MustRunAsNonRoot, uid) => match (non_root, uid) {
                (None, None) => Some(field::required(&at("runAsNonRoot"), "must be true")),
                (Some(false), _) => Some(field::invalid(
                    &at("runAsNonRoot"),
                    Bad::Bool(false),
                    "must be true",
                )),
                (_, Some(0)) => Some(field::invalid(
                    &at("runAsUser"),
                    Bad::Int(0),
                    "running with the root UID is forbidden",
                )),
                _ => None,
            },
        };
        error.into_iter().collect()
    }

    fn check_capabilities(&self, path: &str, capabilities: &Value) -> Vec<FieldError> {
        let default_add = strings(&self.scc["defaultAddCapabilities"]);
        let required_drop = strings(&self.scc["requiredDropCapabilities"]);
        if !capabilities.is_object() {
            if default_add.is_empty() && required_drop.is_empty() {
                return Vec::new();
            }
            return vec![field::invalid(
                &format!("{path}.capabilities"),
                Bad::Null,
                "required capabilities are not set on the securityContext",
            )];
        }
        let allowed = strings(&self.scc["allowedCapabilities"]);
        if allowed.iter().any(|c| c == "*") {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for cap in strings(&capabilities["add"]) {
            if !default_add.contains(&cap) && !allowed.contains(&cap) {
                errors.push(field::invalid(
                    &format!("{path}.capabilities.add"),
                    Bad::Text(cap),
                    "capability may not be added",
                ));
            }
        }
        let drops = strings(&capabilities["drop"]);
        for cap in required_drop.iter().filter(|c| !drops.contains(c)) {
            let listed: Vec<String> = drops.iter().map(|d| format!("{d:?}")).collect();
            errors.push(field::invalid(
                &format!("{path}.capabilities.drop"),
                Bad::Raw(format!("[]core.Capability{{{}}}", listed.join(", "))),
                &format!("{cap} is required to be dropped but was not found"),
            ));
        }
        errors
    }
}

/// The sysctls every pod may set.
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The SCC volume type of a volume: its source field, named as SCCs name
/// it.
fn volume_type(volume: &Value) -> Option<&str> {
    let source = volume.as_object()?.keys().find(|k| *k != "name")?;
    Some(match source.as_str() {
        "cephfs" => "cephFS",
        "storageos" => "storageOS",
        other => other,
    })
}

/// Two SELinux levels are the same when their sensitivity and their set
/// of categories are.
fn same_level(wanted: &str, actual: &str) -> bool {
    if wanted == actual {
        return true;
    }
    match (wanted.split_once(':'), actual.split_once(':')) {
        (Some((ws, wc)), Some((s, c))) => {
            let sorted = |c: &str| {
                let mut parts: Vec<&str> = c.split(',').collect();
                parts.sort();
                parts.join(",")
            };
            ws == s && sorted(wc) == sorted(c)
        }
        _ => false,
    }
}

fn seccomp_annotation(pod: &Value, key: &str) -> Option<String> {
    pod["metadata"]["annotations"][key]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The annotation-style name of a security context's seccomp profile
/// (`runtime/default`), `""` when it sets none.
fn field_profile(security: &Value) -> String {
    let profile = &security["seccompProfile"];
    if profile.is_object() {
        profile_name(profile)
    } else {
        String::new()
    }
}

fn profile_name(profile: &Value) -> String {
    match profile["type"].as_str() {
        Some("Unconfined") => "unconfined".into(),
        Some("RuntimeDefault") => "runtime/default".into(),
        Some("Localhost") => match profile["localhostProfile"].as_str() {
            Some(path) => format!("localhost/{path}"),
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// The `seccompProfile` field for an annotation-style profile name.
fn profile_field(name: &str) -> Option<Value> {
    match name {
        "unconfined" => Some(json!({"type": "Unconfined"})),
        "runtime/default" | "docker/default" => Some(json!({"type": "RuntimeDefault"})),
        other => other
            .strip_prefix("localhost/")
            .filter(|p| !p.is_empty())
            .map(|p| json!({"type": "Localhost", "localhostProfile": p})),
    }
}
