//! The orchestrator library: what `orchestrator` runs, split by stage.
//! See shared/DESIGN.md ("orchestrator") for the stages and their order.

pub mod cleanup;
pub mod client;
pub mod clusters;
pub mod console;
pub mod controller;
pub mod dim;
pub mod display;
pub mod dvm;
pub mod engine;
pub mod hooks;
pub mod itinerary;
pub mod kubeops;
pub mod manifests;
pub mod migrate;
pub mod migration;
pub mod names;
pub mod plan;
pub mod preflight;
pub mod registry;
pub mod report;
pub mod security;
pub mod submit;
pub mod velero;
pub mod workloads;
