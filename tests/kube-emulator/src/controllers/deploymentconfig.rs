//! stub
use std::sync::Arc;
pub(super) async fn run(_ctx: Arc<crate::context::ClusterContext>) -> anyhow::Result<()> { std::future::pending().await }
