//! TODO(kubelet)

use std::sync::Arc;

use crate::context::{ClusterContext, PodLogs};

pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let _ = ctx;
    todo!("kubelet")
}

/// The API server's source of pod logs.
pub fn log_source(ctx: Arc<ClusterContext>) -> Arc<dyn PodLogs> {
    let _ = ctx;
    todo!("kubelet logs")
}
