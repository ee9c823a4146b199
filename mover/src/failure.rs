//! How a session fails, and the exit codes that tell a caller what to do
//! about it.
//!
//! A migration controller must not have to parse messages to decide whether
//! to retry: a dropped connection or a busy volume may succeed next time, a
//! refused certificate or a full disk will not. Every session error is a
//! [`Failure`] that knows which it is.

use std::fmt;

/// A session-ending error, with whether retrying may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    /// Reconnecting may help (network trouble, timeouts, a busy volume).
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
        }
    }

    /// Reconnecting will not help (bad credentials or input, disk full,
    /// protocol violations).
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
        }
    }

    /// A network-level error talking to `peer`: retryable.
    pub fn network(peer: &str, err: impl fmt::Display) -> Self {
        Failure::retryable(format!("connection to {peer}: {err}"))
    }

    /// The peer broke the protocol: permanent, since a retry would meet the
    /// same peer.
    pub fn protocol(peer: &str, what: impl fmt::Display) -> Self {
        Failure::permanent(format!("protocol error from {peer}: {what}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Process exit codes, documented in the README and `mover --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything was transferred and verified.
    Success = 0,
    /// Failed; retrying will not help (credentials, input, disk full).
    Permanent = 1,
    /// Command-line usage error.
    Usage = 2,
    /// Finished, but some source entries could not be read (listed on
    /// stderr and counted in the summary); retrying will not help.
    Partial = 23,
    /// Finished, but some source files vanished or changed while being
    /// read; the rest is in place. Usually fine for a live source.
    Vanished = 24,
    /// Failed; retrying may help (network, timeouts, busy volume).
    Retryable = 75,
}

impl ExitCode {
    pub fn of_failure(failure: &Failure) -> Self {
        if failure.retryable {
            ExitCode::Retryable
        } else {
            ExitCode::Permanent
        }
    }
}
