//! `kube-emu-incluster [PATH...]`: a client of the cluster's API from
//! inside a pod, for the emulator's tests of in-cluster access. It builds
//! kube-rs's `Config::incluster()` (the API server from
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, the token, `ca.crt` and `namespace`
//! under `/var/run/secrets/kubernetes.io/serviceaccount`), as a controller
//! running in a pod does, then prints one line per request:
//!
//! ```text
//! namespace default
//! whoami 201 system:serviceaccount:default:reader
//! GET /api/v1/namespaces/default/pods 200
//! ```
//!
//! `whoami` is a SelfSubjectReview. Exits 2 if the in-cluster
//! configuration cannot be built, 0 otherwise whatever the answers.

use kube::client::Body;
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = match kube::Config::incluster() {
        Ok(config) => config,
        Err(error) => {
            println!("incluster {error}");
            std::process::exit(2);
        }
    };
    println!("namespace {}", config.default_namespace);
    let client = match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(error) => {
            println!("client {error}");
            std::process::exit(2);
        }
    };
    let review = json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview" });
    let (status, body) = send(
        &client,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(review),
    )
    .await;
    let user = body["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or("-");
    println!("whoami {status} {user}");
    for path in std::env::args().skip(1) {
        let (status, _) = send(&client, "GET", &path, None).await;
        println!("GET {path} {status}");
    }
}

/// The status code (or the error, for a request that got no answer) and
/// the JSON body of one request.
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (String, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(
            body.map(|body| body.to_string().into_bytes())
                .unwrap_or_default(),
        ));
    let request = match request {
        Ok(request) => request,
        Err(error) => return (format!("bad-request:{error}"), Value::Null),
    };
    match client.send(request).await {
        Ok(response) => {
            let status = response.status().as_u16().to_string();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }
        Err(error) => (format!("error:{error}"), Value::Null),
    }
}
