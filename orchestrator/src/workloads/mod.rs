//! What the migration does to the application's own workloads, as
//! one-pass building blocks for the engine's steps: stopping them on the
//! source and starting them again ([`quiesce`]), finding the pods that
//! still use a PVC ([`users`]), and deciding whether the restored
//! workloads came up on the destination ([`verify`]).
//!
//! Nothing here waits or sleeps: each function looks once, acts once and
//! returns what it saw, so the engine keeps the deadlines (in the
//! Migration's status) and a `kill -9` loses nothing. API failures are
//! `anyhow` errors, which the engine retries; domain outcomes (a pod still
//! running, a rollout failed) are plain values. Pure decisions are
//! separate functions over k8s-openapi objects, tested without a cluster.

pub mod quiesce;
pub mod users;
pub mod verify;
