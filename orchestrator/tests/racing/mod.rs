//! A proxy that plays a concurrent writer: it lets another client change
//! the cluster at the exact moment between the orchestrator's read and its
//! write, which no real race reproduces on demand. Used by the workload
//! tests to show that a stale write is refused by the API server (the
//! resourceVersion precondition) and decided again, never applied.

/// Something another writer does to the cluster.
pub type Write = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A client for the API server `upstream` talks to (an emulated cluster's,
/// over HTTPS as its administrator) through a proxy that, just before
/// forwarding the first PATCH whose path ends with `path`, lets `writer`
/// change the cluster: a concurrent writer (a user, an HPA) acting between
/// the orchestrator's read and its write, at exactly that moment. The API
/// server itself then answers the stale write.
pub async fn client(
    upstream: kube::Client,
    path: &'static str,
    writer: impl FnOnce() -> Write + Send + 'static,
) -> kube::Client {
    use axum::extract::Request;
    use std::sync::{Arc, Mutex};

    type Writer = Box<dyn FnOnce() -> Write + Send>;
    let writer: Arc<Mutex<Option<Writer>>> = Arc::new(Mutex::new(Some(Box::new(writer))));
    let app = axum::Router::new().fallback(move |request: Request| {
        let (writer, upstream) = (writer.clone(), upstream.clone());
        async move {
            let (parts, body) = request.into_parts();
            if parts.method == axum::http::Method::PATCH && parts.uri.path().ends_with(path) {
                let write = writer.lock().unwrap().take();
                if let Some(write) = write {
                    write().await;
                }
            }
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut forward = axum::http::Request::builder()
                .method(parts.method)
                .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            for (name, value) in &parts.headers {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let forward = forward
                .body(kube::client::Body::from(body.to_vec()))
                .unwrap();
            let answer = upstream.send(forward).await.unwrap();
            answer.map(axum::body::Body::new)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}
