//! Test equipment for the registry tests: real registries (Debian's
//! `docker-registry`) started on loopback, a token server for the bearer
//! flow, a fault-injecting proxy, a PKI, and test images pushed with the
//! engine's own upload code; and for the Kubernetes client's tests, a
//! proxy that makes an emulated API server misbehave (`api_faults`).

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod api_faults;
pub mod fault_proxy;
pub mod images;
pub mod pki;
pub mod process;
pub mod token_server;

use std::time::Duration;

use orchestrator::registry::{Credentials, Registry, RegistryConfig, RetryPolicy, Trust, Tuning};

/// Installs ring as rustls's process-wide provider, for the plain reqwest
/// clients of the test equipment (the engine configures its own).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Tuning for tests: small chunks (so multi-chunk uploads happen with
/// small blobs) and short retry pauses.
pub fn test_tuning() -> Tuning {
    Tuning {
        parallel_blobs: 4,
        chunk_size: 1 << 20,
        retry: RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
    }
}

pub fn client(url: &str, credentials: Credentials, trust: Trust) -> Registry {
    Registry::new(RegistryConfig {
        url: url.to_string(),
        credentials,
        trust,
        tuning: test_tuning(),
    })
    .expect("a valid registry configuration")
}

/// Requests a test proxy saw, by method and path.
#[derive(Default)]
pub struct RequestCounts(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl RequestCounts {
    /// Counts a request; returns how many times its method and path were
    /// seen, this one included.
    pub fn seen(&self, method: &str, path: &str) -> usize {
        let mut counts = self.0.lock().unwrap();
        let count = counts.entry(format!("{method} {path}")).or_insert(0);
        *count += 1;
        *count
    }

    /// How many times `method path` was seen.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let counts = self.0.lock().unwrap();
        counts
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }
}
