//! What a cluster enforces beyond the generic object semantics: who may do
//! what (RBAC), which pods are admitted (Pod Security, OpenShift SCCs,
//! quotas), where pods run and which volumes they may attach.
//!
//! Every part is on by default, as on a real cluster, and most of them only
//! bite once a test configures something (a namespace label, a quota, a
//! taint, a non-admin user); each can be switched off per cluster for tests
//! that exercise something else.

/// Which distribution a cluster imitates. Both serve the OpenShift APIs the
/// orchestrator uses (Routes, ImageStreams, DeploymentConfigs); only an
/// OpenShift cluster runs SecurityContextConstraints admission and
/// annotates namespaces with their uid range, supplemental groups and MCS
/// labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    #[default]
    Kubernetes,
    OpenShift,
}

/// The enforcement switches of one cluster.
#[derive(Clone, Debug)]
pub struct Policy {
    pub flavour: Flavour,
    /// Authenticate every request and authorize it with RBAC; access
    /// reviews are answered from RBAC.
    pub authorization: bool,
    /// Pod Security Admission from the namespace's
    /// `pod-security.kubernetes.io/*` labels.
    pub pod_security: bool,
    /// SecurityContextConstraints admission (OpenShift flavour only).
    pub security_context_constraints: bool,
    /// ResourceQuota and LimitRange admission.
    pub quotas: bool,
    /// WaitForFirstConsumer binding, access modes enforced at attach time,
    /// block volumes only through `volumeDevices`.
    pub storage: bool,
    /// Taints and tolerations, resource requests against node capacity.
    pub scheduling: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            flavour: Flavour::Kubernetes,
            authorization: true,
            pod_security: true,
            security_context_constraints: true,
            quotas: true,
            storage: true,
            scheduling: true,
        }
    }
}

impl Policy {
    /// An OpenShift cluster enforcing everything.
    pub fn openshift() -> Self {
        Self {
            flavour: Flavour::OpenShift,
            ..Self::default()
        }
    }

    /// Whether SCC admission runs: an OpenShift cluster with it switched on.
    pub fn enforces_sccs(&self) -> bool {
        self.flavour == Flavour::OpenShift && self.security_context_constraints
    }
}
