//! Who the transfer pods run as, chosen so that the cluster admits them:
//! Pod Security Admission levels from namespace labels, OpenShift's
//! SecurityContextConstraints, and the identity the application's own
//! containers use.
//!
//! The choices, in one place (the README's "What runs privileged" says the
//! same for users):
//! - A **sender** runs as the container that mounts its PVC (its own
//!   `runAsUser` over the pod's), with that pod's service account (so on
//!   OpenShift it gets exactly the SCCs the application has) and no token.
//!   A non-root application gives a sender every restricted namespace
//!   admits. An application running as root, or whose user is unknown, is
//!   read by a root sender whose only capability is to read any file
//!   (`DAC_READ_SEARCH`; `DAC_OVERRIDE` where the level or SCC allows no
//!   other), on a read-only mount. Where root is not admitted, a sender
//!   with an unknown identity runs as the image's unprivileged user with the
//!   pod's groups, and the plan says it may not read files private to
//!   another user.
//! - A **receiver** runs as root with only the capabilities that give
//!   every file its source owner (baseline admits that), unless the
//!   destination namespace enforces `restricted`, or is on OpenShift where
//!   the user may not grant the `anyuid` SCC: then it runs as the
//!   application's user and every file arrives owned by that user, which is
//!   what the application needs to read it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Namespace, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The label Pod Security Admission enforces from.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// The OpenShift SCC that lets a pod run as any user (root included),
/// and the ClusterRole whose `use` of it a RoleBinding grants.
pub const ANYUID_SCC: &str = "anyuid";
pub const ANYUID_ROLE: &str = "system:openshift:scc:anyuid";

/// Capabilities a container runtime gives a container unless told
/// otherwise (Docker's and CRI-O's defaults together). On OpenShift an SCC
/// refuses added capabilities it does not list, so there a pod keeps what
/// it needs of these by dropping the others.
const RUNTIME_DEFAULTS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Pod Security Admission levels, least restrictive first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// The level a namespace's labels enforce (privileged when unlabelled,
    /// as a default cluster does).
    pub fn enforced_by(labels: Option<&BTreeMap<String, String>>) -> Self {
        match labels
            .and_then(|l| l.get(ENFORCE_LABEL))
            .map(String::as_str)
        {
            Some("restricted") => Self::Restricted,
            Some("baseline") => Self::Baseline,
            _ => Self::Privileged,
        }
    }

    pub fn of(namespace: &Namespace) -> Self {
        Self::enforced_by(namespace.metadata.labels.as_ref())
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// What admits pods in one namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Admission {
    pub level: Level,
    /// The cluster runs SCC admission (OpenShift).
    pub openshift: bool,
}

/// How a receiver runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverMode {
    /// Root with the capabilities to set owners, modes and times; on
    /// OpenShift through the `anyuid` SCC granted to its own service
    /// account.
    Owners,
    /// As the application's user (`None`: as the cluster assigns it, on
    /// OpenShift the namespace's first uid): every file arrives owned by
    /// that user.
    AsApplication(Option<Box<PodSecurityContext>>),
}

/// How a sender runs.
#[derive(Clone, Debug, PartialEq)]
pub enum SenderMode {
    /// As the application's non-root container.
    Application(PodSecurityContext),
    /// Root, allowed only to read any file; the groups of the application.
    RootReader(Option<PodSecurityContext>),
    /// The image's unprivileged user with the application's groups, where
    /// root is not admitted and the application's user is unknown.
    Unprivileged(Option<PodSecurityContext>),
}

impl SenderMode {
    /// Chooses how to read a volume whose users run as `identity` in a
    /// namespace admitted by `admission`.
    pub fn choose(identity: Option<&PodSecurityContext>, admission: Admission) -> Self {
        let user = identity.and_then(|i| i.run_as_user);
        let non_root_claimed = identity.and_then(|i| i.run_as_non_root) == Some(true);
        match user {
            Some(uid) if uid != 0 => Self::Application(identity.cloned().unwrap_or_default()),
            _ if admission.level == Level::Restricted || (user.is_none() && non_root_claimed) => {
                Self::Unprivileged(identity.cloned())
            }
            _ => Self::RootReader(identity.cloned()),
        }
    }

    /// One line for `orchestrator plan`.
    pub fn describe(&self) -> String {
        match self {
            Self::Application(id) => format!(
                "as the application (uid {}{})",
                id.run_as_user.unwrap_or_default(),
                id.run_as_group
                    .map(|g| format!(", gid {g}"))
                    .unwrap_or_default()
            ),
            Self::RootReader(_) => {
                "as root allowed only to read (the application runs as root or an unknown user)"
                    .to_string()
            }
            Self::Unprivileged(_) => "as an unprivileged user with the application's groups \
                 (its user is unknown and root is not admitted: files private to the \
                 application's user cannot be read)"
                .to_string(),
        }
    }

    /// The pod-level security context.
    pub fn pod_context(&self, admission: Admission) -> PodSecurityContext {
        let groups_of = |id: &Option<PodSecurityContext>| PodSecurityContext {
            fs_group: id.as_ref().and_then(|i| i.fs_group),
            supplemental_groups: id.as_ref().and_then(|i| i.supplemental_groups.clone()),
            se_linux_options: id.as_ref().and_then(|i| i.se_linux_options.clone()),
            ..PodSecurityContext::default()
        };
        let mut context = match self {
            Self::Application(id) => PodSecurityContext {
                run_as_user: id.run_as_user,
                run_as_group: id.run_as_group,
                run_as_non_root: Some(true),
                ..groups_of(&Some(id.clone()))
            },
            Self::RootReader(id) => PodSecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                run_as_non_root: Some(false),
                ..groups_of(id)
            },
            Self::Unprivileged(id) => PodSecurityContext {
                run_as_non_root: Some(true),
                ..groups_of(id)
            },
        };
        context.seccomp_profile = seccomp(admission, !matches!(self, Self::RootReader(_)));
        context
    }

    /// The container's security context.
    pub fn container_context(&self, admission: Admission) -> SecurityContext {
        let capabilities = match self {
            Self::RootReader(_) => {
                // DAC_READ_SEARCH is neither baseline nor a runtime default.
                let reader = if admission.level == Level::Privileged && !admission.openshift {
                    "DAC_READ_SEARCH"
                } else {
                    "DAC_OVERRIDE"
                };
                keep_only(&[reader], admission)
            }
            _ => keep_only(&[], admission),
        };
        restricted_container(capabilities)
    }
}

impl ReceiverMode {
    /// The capabilities a receiver keeping owners needs: owners, modes and
    /// times of any file, and reading back what it wrote. Device nodes
    /// (MKNOD) only where the level admits adding it.
    fn owner_capabilities(admission: Admission) -> Capabilities {
        if admission.openshift {
            keep_only(&["CHOWN", "FOWNER", "FSETID", "DAC_OVERRIDE"], admission)
        } else {
            keep_only(
                &["CHOWN", "FOWNER", "FSETID", "DAC_OVERRIDE", "MKNOD"],
                admission,
            )
        }
    }

    /// Whether the receiver may create device nodes (`--no-devices` when
    /// not).
    pub fn creates_devices(&self, admission: Admission) -> bool {
        *self == Self::Owners && !admission.openshift
    }

    pub fn pod_context(&self, admission: Admission) -> PodSecurityContext {
        match self {
            Self::Owners => PodSecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                run_as_non_root: Some(false),
                seccomp_profile: seccomp(admission, false),
                ..PodSecurityContext::default()
            },
            Self::AsApplication(id) => PodSecurityContext {
                run_as_user: id.as_ref().and_then(|i| i.run_as_user).filter(|u| *u != 0),
                run_as_group: id.as_ref().and_then(|i| i.run_as_group),
                fs_group: id.as_ref().and_then(|i| i.fs_group),
                supplemental_groups: id.as_ref().and_then(|i| i.supplemental_groups.clone()),
                run_as_non_root: Some(true),
                seccomp_profile: seccomp(admission, true),
                ..PodSecurityContext::default()
            },
        }
    }

    pub fn container_context(&self, admission: Admission) -> SecurityContext {
        match self {
            Self::Owners => restricted_container(Self::owner_capabilities(admission)),
            Self::AsApplication(_) => restricted_container(keep_only(&[], admission)),
        }
    }

    /// One line for `orchestrator plan`.
    pub fn describe(&self) -> String {
        match self {
            Self::Owners => "as root, keeping every file's owner".to_string(),
            Self::AsApplication(id) => format!(
                "as the application's user ({}): every file arrives owned by it",
                id.as_ref()
                    .and_then(|i| i.run_as_user)
                    .map(|u| format!("uid {u}"))
                    .unwrap_or_else(|| "the uid the cluster assigns".to_string())
            ),
        }
    }
}

/// A container context every level admits the rest of: no privilege
/// escalation, a read-only root filesystem, and `capabilities`.
fn restricted_container(capabilities: Capabilities) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(capabilities),
        ..SecurityContext::default()
    }
}

/// Capabilities reduced to `keep`: on Kubernetes by dropping ALL and
/// adding them back (what Pod Security expects); on OpenShift, where an
/// SCC refuses added capabilities it does not list, by dropping every
/// runtime default but those (which must then be runtime defaults).
fn keep_only(keep: &[&str], admission: Admission) -> Capabilities {
    if admission.openshift && !keep.is_empty() {
        Capabilities {
            drop: Some(
                RUNTIME_DEFAULTS
                    .iter()
                    .filter(|c| !keep.contains(c))
                    .map(|c| c.to_string())
                    .collect(),
            ),
            add: None,
        }
    } else {
        Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!keep.is_empty()).then(|| keep.iter().map(|c| c.to_string()).collect()),
        }
    }
}

/// `RuntimeDefault`, which restricted requires and every level admits;
/// left unset on OpenShift for root pods, whose SCCs (anyuid) may list no
/// seccomp profiles a pod can ask for.
fn seccomp(admission: Admission, non_root: bool) -> Option<SeccompProfile> {
    (!admission.openshift || non_root).then(|| SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K8S: fn(Level) -> Admission = |level| Admission {
        level,
        openshift: false,
    };

    fn id(user: Option<i64>, non_root: Option<bool>) -> PodSecurityContext {
        PodSecurityContext {
            run_as_user: user,
            run_as_non_root: non_root,
            fs_group: Some(2000),
            ..PodSecurityContext::default()
        }
    }

    #[test]
    fn senders_read_as_the_application_or_as_a_reading_root() {
        let app = id(Some(1001), None);
        assert!(matches!(
            SenderMode::choose(Some(&app), K8S(Level::Restricted)),
            SenderMode::Application(_)
        ));
        assert!(matches!(
            SenderMode::choose(Some(&id(Some(0), None)), K8S(Level::Baseline)),
            SenderMode::RootReader(_)
        ));
        assert!(matches!(
            SenderMode::choose(None, K8S(Level::Privileged)),
            SenderMode::RootReader(_)
        ));
        // Unknown user claimed non-root, or a namespace admitting no root.
        assert!(matches!(
            SenderMode::choose(Some(&id(None, Some(true))), K8S(Level::Privileged)),
            SenderMode::Unprivileged(_)
        ));
        assert!(matches!(
            SenderMode::choose(None, K8S(Level::Restricted)),
            SenderMode::Unprivileged(_)
        ));
    }

    #[test]
    fn restricted_modes_satisfy_the_restricted_level() {
        let admission = K8S(Level::Restricted);
        for (pod, container) in [
            {
                let mode = SenderMode::Application(id(Some(1001), None));
                (
                    mode.pod_context(admission),
                    mode.container_context(admission),
                )
            },
            {
                let mode = SenderMode::Unprivileged(None);
                (
                    mode.pod_context(admission),
                    mode.container_context(admission),
                )
            },
            {
                let mode = ReceiverMode::AsApplication(Some(Box::new(id(Some(1001), None))));
                (
                    mode.pod_context(admission),
                    mode.container_context(admission),
                )
            },
        ] {
            assert_eq!(pod.run_as_non_root, Some(true));
            assert_ne!(pod.run_as_user, Some(0));
            assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
            assert_eq!(container.allow_privilege_escalation, Some(false));
            let caps = container.capabilities.unwrap();
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
            assert_eq!(caps.add, None);
        }
    }

    #[test]
    fn root_modes_keep_only_what_they_need() {
        let reader = SenderMode::RootReader(None);
        let caps = |c: SecurityContext| c.capabilities.unwrap();
        let privileged = caps(reader.container_context(K8S(Level::Privileged)));
        assert_eq!(privileged.add, Some(vec!["DAC_READ_SEARCH".to_string()]));
        let baseline = caps(reader.container_context(K8S(Level::Baseline)));
        assert_eq!(baseline.add, Some(vec!["DAC_OVERRIDE".to_string()]));

        let openshift = Admission {
            level: Level::Privileged,
            openshift: true,
        };
        let receiver = caps(ReceiverMode::Owners.container_context(openshift));
        assert_eq!(receiver.add, None, "an SCC refuses added capabilities");
        let dropped = receiver.drop.unwrap();
        for kept in ["CHOWN", "FOWNER", "FSETID", "DAC_OVERRIDE"] {
            assert!(!dropped.iter().any(|d| d == kept), "{kept} dropped");
        }
        assert!(dropped.iter().any(|d| d == "SETUID"));
        assert!(ReceiverMode::Owners
            .pod_context(openshift)
            .seccomp_profile
            .is_none());
        assert!(!ReceiverMode::Owners.creates_devices(openshift));
        assert!(ReceiverMode::Owners.creates_devices(K8S(Level::Baseline)));
    }

    #[test]
    fn levels_come_from_the_enforce_label() {
        let labels = |v: &str| BTreeMap::from([(ENFORCE_LABEL.to_string(), v.to_string())]);
        assert_eq!(
            Level::enforced_by(Some(&labels("restricted"))),
            Level::Restricted
        );
        assert_eq!(
            Level::enforced_by(Some(&labels("baseline"))),
            Level::Baseline
        );
        assert_eq!(Level::enforced_by(None), Level::Privileged);
    }
}
