//! Where a pod may run, as Kubernetes decides it: a pod's `nodeSelector`
//! and node affinity (and a volume's node affinity) against a node's
//! labels (`affinity`), a node's taints against a pod's tolerations
//! (`taints`). The scheduler, the kubelet's admission, the taint eviction
//! controller and the DaemonSet controller all decide with these.

pub mod affinity;
pub mod taints;
