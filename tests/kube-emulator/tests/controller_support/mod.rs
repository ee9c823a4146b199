//! What the router and Velero tests share.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// How long eventual state may take. Generous: the machine running the
/// tests may be busy; passing tests never wait this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing the test with `what`
/// and the last thing seen when it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not so after {PATIENCE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed test object")
}
