//! The Docker engine, driven through the `docker` command line.

use std::net::IpAddr;

/// Creates the bridge network `name` labelled with the emulator instance
/// and returns its gateway IP (the host's address on it).
pub async fn create_network(name: &str, instance: &str) -> anyhow::Result<IpAddr> {
    let _ = (name, instance);
    todo!("docker network")
}

/// Removes every container of this instance on `network`, then the
/// network. Called from `Drop`, so it is synchronous and best effort.
pub fn remove_cluster_objects(instance: &str, network: &str) {
    let _ = (instance, network);
}
