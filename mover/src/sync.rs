//! `mover sync SRC DST`: both ends in one process, across a real TLS 1.3
//! connection on loopback with throw-away certificates, so a local sync
//! exercises exactly the code a cross-cluster one does.

use crate::failure::Failure;
use crate::net::Dial;
use crate::progress::Counters;
use crate::receive::volumes::Volumes;
use crate::receive::ReceiveConfig;
use crate::send::{self, SendConfig, SendReport};
use crate::server::{self, Server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The volume name the local receiver serves the destination as.
const LOCAL_VOLUME: &str = "local";

pub async fn run(
    source: PathBuf,
    dest: PathBuf,
    mut config: SendConfig,
    session: ReceiveConfig,
    counters: Arc<Counters>,
) -> Result<SendReport, Failure> {
    config.source = source;
    config.volume = LOCAL_VOLUME.to_string();
    let (server_tls, client_tls) = crate::tls::ephemeral(&[LOCAL_VOLUME.to_string()])
        .map_err(|e| Failure::permanent(e.to_string()))?;
    let volumes = Volumes::new(vec![(LOCAL_VOLUME.to_string(), dest)], config.block)
        .map_err(Failure::permanent)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::permanent(format!("binding a loopback port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::permanent(format!("loopback port: {e}")))?;
    let server = Arc::new(Server {
        tls: server_tls,
        volumes,
        exit_when_done: true,
        handshake_timeout: Duration::from_secs(10),
        // The session, its data connections, and one to spare.
        max_connections: 2 + crate::wire::stripes::MAX_STREAMS as usize,
        session,
    });
    let serving = tokio::spawn(server::serve(listener, server));
    let dial = {
        let (addr, counters) = (addr.to_string(), counters.clone());
        Dial::new(move || {
            let (addr, tls, counters) = (addr.clone(), client_tls.clone(), counters.clone());
            async move {
                crate::net::connect(&addr, "localhost", tls, counters, Duration::from_secs(10))
                    .await
            }
        })
    };
    let stream = dial.open().await?;
    // The receiver sends `Finished` only once everything is durable, so the
    // sender's report is the whole story; the server has nothing left to do.
    let report = send::run(stream, Some(dial), config, counters).await;
    serving.abort();
    report
}
