//! Leader election with a `coordination.k8s.io` Lease, the way client-go's
//! `leaderelection` does it, so that two controller replicas never drive
//! the same migration.
//!
//! The lease names a holder and when it last renewed. A candidate takes it
//! when nobody holds it, or when the holder has not renewed it for a whole
//! lease duration as measured by the candidate's own clock from when it
//! last saw the record change (never by comparing the holder's timestamps
//! with the local clock, so clock skew between nodes cannot hand the lease
//! to two replicas). Every write carries the resourceVersion read, so of
//! two candidates racing, the API server lets exactly one win (409 for the
//! other).
//!
//! The crates that package this (`kube-leader-election`,
//! `kube-lease-manager`) are built against older kube releases than ours.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The Lease's name in the controller's namespace.
pub const LEASE: &str = "mover-controller";
/// How long a holder that stopped renewing keeps the lease (client-go's
/// default).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A holder that could not renew for this long stops leading, before
/// anybody else may take the lease.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try and the holder renews.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One candidate for the lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    /// The lease record last seen (holder and renew time) and when this
    /// process saw it change.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Elector {
    pub fn new(host: kube::Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(host, namespace),
            identity,
            observed: Mutex::new(None),
        }
    }

    /// This candidate's identity, as the lease records it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Keeps renewing the lease; returns (saying why) once it could not be
    /// renewed for [`RENEW_DEADLINE`] or another holder took it. The
    /// caller must then stop acting as leader at once.
    pub async fn hold(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return format!("lease {LEASE} was taken by another replica"),
                Err(e) if renewed.elapsed() >= RENEW_DEADLINE => {
                    return format!(
                        "lease {LEASE} could not be renewed for {}s: {e}",
                        RENEW_DEADLINE.as_secs()
                    )
                }
                Err(e) => tracing::warn!("renewing lease {LEASE}: {e}"),
            }
        }
    }

    /// Gives the lease up (on shutdown), so a standby replica takes over
    /// at once rather than after a lease duration.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(LEASE, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!("releasing lease {LEASE}: {e}");
        }
    }

    /// One round: takes or renews the lease if it may. `Ok(false)` when
    /// another replica holds it (or won a race for it).
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(LEASE).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_lost(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !self.expired(spec).await {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(now);
        conflict_is_lost(
            self.api
                .replace(LEASE, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Whether another holder's record has stood unchanged, as this
    /// process saw it, for longer than its lease duration.
    async fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = format!(
            "{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0)
        );
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        let mut observed = self.observed.lock().await;
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => since.elapsed() > duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }
}

/// A write that lost a race (409 Conflict, or 409 AlreadyExists) means
/// another candidate holds the lease now.
fn conflict_is_lost(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if crate::kubeops::status_code(&e) == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// This process's identity for the lease: the pod's name (the Deployment
/// passes it with the downward API) and a random suffix, so a restarted
/// container never mistakes its predecessor's lease for its own.
pub fn identity() -> String {
    let pod = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "orchestrator".into());
    let random = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|_| std::process::id().to_string());
    format!("{pod}_{random}")
}
