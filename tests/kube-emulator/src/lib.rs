//! Test equipment: an emulated pair of Kubernetes/OpenShift clusters.
//!
//! Each emulated cluster is an HTTP API server that kube-rs and kubectl use
//! unchanged (`api`), plus the controllers a migration touches, each of which
//! talks to that API over HTTP exactly as a real controller would:
//!
//! - `kubelet`: runs pods as Docker containers on the cluster's own Docker
//!   network, reports their status and serves their logs;
//! - `binder`: binds PVCs to fresh host directories (the emulated PVs);
//! - `router`: OpenShift Routes with TLS passthrough, dispatched by SNI on
//!   port 443 of the cluster's router address, and LoadBalancer/NodePort
//!   Services;
//! - `controllers`: the workload controllers (Deployments, ReplicaSets,
//!   StatefulSets, Jobs, CronJobs, DaemonSets, ReplicationControllers,
//!   DeploymentConfigs), which need no Docker;
//! - `velero`: Backups to, and Restores from, a directory shared by the pair.
//!
//! `ClusterPair::start` brings up a source and a destination cluster and
//! writes a kubeconfig with the contexts `source` and `destination`. The
//! emulator is not shipped; it only needs to be faithful where the
//! orchestrator depends on Kubernetes behaviour.

pub mod api;
pub mod binder;
pub mod cluster;
pub mod context;
pub mod controllers;
pub mod docker;
pub mod events;
pub mod kubelet;
pub mod placement;
pub mod policy;
pub mod quantity;
pub mod router;
pub mod testing;
pub mod velero;

pub use cluster::{Cluster, ClusterOptions, ClusterPair, Credentials, PairOptions};
pub use context::{ClusterContext, Exec, InCluster, PodStreams, Shared};
pub use policy::{Flavour, Policy};
pub use velero::VeleroOptions;
