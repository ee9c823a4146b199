//! Small, generic operations on Kubernetes objects that every stage uses:
//! idempotent apply, create-if-missing, delete-and-wait, and polling for a
//! condition with a deadline.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The field manager for server-side apply.
pub const FIELD_MANAGER: &str = "mover-orchestrator";

/// How often to look again while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Server-side applies `object` (it must carry its name): creates it, or
/// makes an existing one match. Running a migration again converges
/// instead of failing on "already exists".
pub async fn apply<K>(api: &Api<K>, object: &K) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Creates `object` unless one of that name exists; returns whichever is
/// there.
pub async fn create_if_missing<K>(api: &Api<K>, object: &K) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok(existing);
    }
    match api.create(&PostParams::default(), object).await {
        Err(e) if status_code(&e) == Some(409) => api.get(&name).await,
        other => other,
    }
}

/// Deletes `name` if it exists and waits until it is gone (finalizers
/// done), so that a new object of the same name can be created.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, timeout: Duration) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("deleting {name}: {e}")),
    }
    poll(api, name, timeout, "to be deleted", |found| {
        found.is_none().then_some(())
    })
    .await
}

/// Looks at object `name` every half second until `check` returns a value
/// (it sees `None` while the object does not exist), or fails after
/// `timeout` saying what it was waiting for.
pub async fn poll<K, T>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(Option<&K>) -> Option<T>,
) -> anyhow::Result<T>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found = api.get_opt(name).await?;
        if let Some(value) = check(found.as_ref()) {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {}s waiting for {name} {what}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
