//! Errors of registry operations. Every error names the registry and, when
//! it concerns one, the repository and the object (blob or manifest), so
//! that a report line says where to look without a debug log.

use std::fmt;

use super::digest::Mismatch;

/// A failed registry operation and where it failed.
#[derive(Debug)]
pub struct Error {
    /// `host[:port]` of the registry.
    pub registry: String,
    pub repository: Option<String>,
    /// What was being read or written, e.g. `blob sha256:...`,
    /// `manifest v1`.
    pub object: Option<String>,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
pub enum ErrorKind {
    /// The registry or its token server refused the credentials (HTTP 401
    /// after authenticating as the registry asked).
    Unauthorized(String),
    /// Authenticated, but not allowed (HTTP 403).
    Denied(String),
    /// HTTP 404: no such repository, manifest or blob.
    NotFound(String),
    /// Any other HTTP status, with the registry's own error codes.
    Status { status: u16, message: String },
    /// The connection failed, was reset or timed out.
    Transport(String),
    /// The TLS handshake failed (untrusted or mismatched certificate).
    Tls(String),
    /// Content that does not match its digest or size.
    Content(Mismatch),
    /// A manifest that cannot be copied (malformed, unsupported type).
    Manifest(String),
    /// The registry answered in a way the protocol does not allow
    /// (missing Location, bad challenge, wrong digest header, ...).
    Protocol(String),
    /// The registry's configuration given to us is unusable.
    Config(String),
    /// A transient failure that outlasted every retry.
    GaveUp { attempts: u32, last: Box<ErrorKind> },
}

impl ErrorKind {
    /// Whether trying again may help: connection trouble, 408, 429 and the
    /// 5xx that mean "busy" or "broken gateway". A refusal (other 4xx), bad
    /// content or a bad certificate will be the same next time.
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Transport(_) => true,
            ErrorKind::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// This failure as the last of `attempts` tries.
    pub fn after(self, attempts: u32) -> ErrorKind {
        if attempts > 1 {
            ErrorKind::GaveUp {
                attempts,
                last: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// HTTP statuses worth retrying.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl Error {
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Whether the registry said "not found" (404), e.g. for a tag that does
    /// not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "registry {}", self.registry)?;
        if let Some(r) = &self.repository {
            write!(f, ", repository {r}")?;
        }
        if let Some(o) = &self.object {
            write!(f, ", {o}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            ErrorKind::Denied(m) => write!(f, "access denied: {m}"),
            ErrorKind::NotFound(m) => write!(f, "not found: {m}"),
            ErrorKind::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            ErrorKind::Transport(m) => write!(f, "connection failed: {m}"),
            ErrorKind::Tls(m) => write!(f, "TLS failed: {m}"),
            ErrorKind::Content(m) => write!(f, "{m}"),
            ErrorKind::Manifest(m) => write!(f, "unusable manifest: {m}"),
            ErrorKind::Protocol(m) => write!(f, "protocol error: {m}"),
            ErrorKind::Config(m) => write!(f, "bad registry configuration: {m}"),
            ErrorKind::GaveUp { attempts, last } => {
                write!(f, "{last} (gave up after {attempts} attempts)")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Classifies a reqwest failure: TLS trouble is permanent, anything else
/// on the way (connect, reset, timeout, cut body) is transient. The whole
/// source chain goes into the message, since reqwest's own line ("error
/// sending request") hides the cause.
pub fn from_reqwest(e: &reqwest::Error) -> ErrorKind {
    let mut msg = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    if caused_by_tls(e) {
        ErrorKind::Tls(msg)
    } else {
        ErrorKind::Transport(msg)
    }
}

/// Whether a rustls error is anywhere in the chain, including inside
/// `io::Error`s (which hide their payload from `source()`, and which
/// hyper and tokio-rustls nest).
fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    let inside_io = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| caused_by_tls(inner));
    inside_io || e.source().is_some_and(caused_by_tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_registry_repository_and_object() {
        let e = Error {
            registry: "reg.example:5000".into(),
            repository: Some("team/app".into()),
            object: Some("blob sha256:ab".into()),
            kind: ErrorKind::NotFound("BLOB_UNKNOWN: blob unknown to registry".into()),
        };
        assert_eq!(
            e.to_string(),
            "registry reg.example:5000, repository team/app, blob sha256:ab: not found: \
             BLOB_UNKNOWN: blob unknown to registry"
        );
        assert!(e.is_not_found());
        assert!(!e.is_transient());
    }

    #[test]
    fn only_busy_and_broken_connections_are_transient() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 416, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
        assert!(ErrorKind::Transport("reset".into()).is_transient());
        assert!(!ErrorKind::Tls("unknown issuer".into()).is_transient());
        assert!(!ErrorKind::Unauthorized("no".into()).is_transient());
        let busy = || ErrorKind::Status {
            status: 503,
            message: "busy".into(),
        };
        assert!(busy().after(1).is_transient());
        let gave_up = busy().after(3);
        assert!(!gave_up.is_transient());
        assert_eq!(
            gave_up.to_string(),
            "HTTP 503: busy (gave up after 3 attempts)"
        );
    }
}
