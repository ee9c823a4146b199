//! What the kubelet knows about each container of a pod across its
//! restarts: its state as the pod status reports it, and when to (re)start
//! it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// The first and the longest delay before restarting a container that
/// exited. The real kubelet's are 10 s and 5 min; the emulator's are short
/// so that tests of restarts are quick.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// A container that ran this long before exiting is restarted after the
/// first back-off again.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Why a container is not running yet: the reason and message of its
/// `waiting` state.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Waiting {
    pub reason: &'static str,
    pub message: String,
}

impl Waiting {
    /// The container's configuration refers to something missing or wrong.
    pub(super) fn config(message: String) -> Self {
        Self {
            reason: "CreateContainerConfigError",
            message,
        }
    }

    /// Something the container needs is not ready yet.
    pub(super) fn creating(message: String) -> Self {
        Self {
            reason: "ContainerCreating",
            message,
        }
    }
}

/// A container's current state.
#[derive(Clone, Debug)]
pub(super) enum State {
    Waiting(Waiting),
    Running { id: String, started_at: Timestamp },
    Terminated(Terminated),
}

#[derive(Clone, Debug)]
pub(super) struct Terminated {
    /// The Docker container, if one was created.
    pub id: Option<String>,
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

/// One container of the pod spec across its restarts.
pub(super) struct Slot {
    pub spec: Container,
    pub state: State,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    pub image_id: Option<String>,
    /// Docker containers created for it so far.
    pub created: u32,
    /// When to try starting it (again).
    pub retry_at: Instant,
    /// The delay before its next restart after an exit.
    backoff: Duration,
    /// Its readiness probe's verdict on the running instance.
    pub readiness: super::probes::Readiness,
}

impl Slot {
    pub(super) fn new(spec: &Container, reason: &'static str) -> Self {
        Self {
            spec: spec.clone(),
            state: State::Waiting(Waiting {
                reason,
                message: String::new(),
            }),
            last_state: None,
            restart_count: 0,
            image_id: None,
            created: 0,
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
            readiness: super::probes::Readiness::default(),
        }
    }

    /// Schedules the restart of a container that ended and returns the
    /// delay: the real kubelet's doubling back-off, starting over after a
    /// container that ran for a while.
    pub(super) fn back_off(&mut self, terminated: &Terminated) -> Duration {
        let ran = terminated
            .started_at
            .and_then(|started| {
                terminated
                    .finished_at
                    .duration_since(started)
                    .try_into()
                    .ok()
            })
            .unwrap_or(Duration::ZERO);
        if ran >= BACKOFF_RESET {
            self.backoff = FIRST_BACKOFF;
        }
        let delay = self.backoff;
        self.retry_at = Instant::now() + delay;
        self.backoff = (delay * 2).min(MAX_BACKOFF);
        delay
    }
}
