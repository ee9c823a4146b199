//! kube-rs's exec and port-forward against the emulator: the same
//! streaming subresources kubectl uses (tests/kubectl.rs), in the
//! protocols kube-rs speaks (`v5.channel.k8s.io` for exec, the channel
//! protocol with `?ports=` for port-forward).

mod cluster_support;

use cluster_support::TestCluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_execs_and_forwards_ports() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("streams").await?;
    let serve = "mkdir -p /www && echo page > /www/index.html && exec httpd -f -p 8080 -h /www";
    test.pod(
        "web",
        json!({"containers": [{"name": "web", "command": ["sh", "-c", serve]}]}),
    )
    .await?;
    test.running("web").await?;
    let pods = test.api::<Pod>();

    // stdout, stderr and the exit code in the status
    let params = AttachParams::default().stderr(true);
    let command = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    let mut process = pods.exec("web", command, &params).await?;
    let (mut out, mut err) = (String::new(), String::new());
    process.stdout().unwrap().read_to_string(&mut out).await?;
    process.stderr().unwrap().read_to_string(&mut err).await?;
    let status = process.take_status().unwrap().await.unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].message.as_deref(), Some("3"));
    process.join().await?;

    // stdin, closed with v5's close signal
    let params = AttachParams::default().stdin(true).stderr(false);
    let mut process = pods.exec("web", ["tr", "a-z", "A-Z"], &params).await?;
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"piped\n").await?;
    stdin.shutdown().await?;
    drop(stdin);
    let mut out = String::new();
    process.stdout().unwrap().read_to_string(&mut out).await?;
    assert_eq!(out, "PIPED\n");
    let status = process.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    process.join().await?;

    // port-forward
    let mut forwarder = pods.portforward("web", &[8080]).await?;
    let mut stream = forwarder.take_stream(8080).unwrap();
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    assert!(
        answer.starts_with("HTTP/1.") && answer.ends_with("page\n"),
        "{answer:?}"
    );
    drop(stream);
    forwarder.abort();

    // a port nothing listens on: the error channel says so
    let mut forwarder = pods.portforward("web", &[9999]).await?;
    let error = forwarder.take_error(9999).unwrap();
    let message = error.await.unwrap_or_default();
    assert!(
        message.contains("error forwarding port 9999"),
        "{message:?}"
    );
    forwarder.abort();
    Ok(())
}
