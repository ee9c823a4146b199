//! Running a command in a pod's container for the API server's
//! `pods/{name}/exec`: `docker exec` in the container's current instance,
//! refused as the real kubelet refuses it when that instance is not
//! running.

use std::sync::Arc;

use super::logs::Current;
use crate::context::{ClusterContext, Exec};
use crate::docker;

pub(super) async fn start(
    ctx: Arc<ClusterContext>,
    namespace: String,
    pod: String,
    exec: Exec,
) -> anyhow::Result<tokio::process::Child> {
    let current = Current::find(&ctx, &namespace, &pod, Some(exec.container.clone())).await?;
    let running = match &current.id {
        Some(id) => docker::inspect(id).await?.state.running,
        None => false,
    };
    let (Some(id), true) = (current.id, running) else {
        anyhow::bail!("container not found ({:?})", current.name);
    };
    if exec.command.is_empty() {
        anyhow::bail!("you must specify at least 1 command");
    }
    Ok(docker::exec(&id, &exec.command, exec.stdin)?)
}
