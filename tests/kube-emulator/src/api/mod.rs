//! The Kubernetes HTTP API: discovery, CRUD, watch, patch, apply, status,
//! logs and finalizers over an in-memory store.

use std::sync::Arc;

use crate::context::PodLogs;

/// Serves the API on `listener` until the task is aborted. Pod logs come
/// from `logs` (the kubelet); without one, log requests get 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    logs: Option<Arc<dyn PodLogs>>,
) -> anyhow::Result<()> {
    let _ = (listener, logs);
    todo!("API server")
}
