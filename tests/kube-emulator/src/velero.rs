//! TODO(velero)

use std::sync::Arc;

use crate::context::ClusterContext;

pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let _ = ctx;
    todo!("velero")
}
