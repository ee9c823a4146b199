//! The opening exchange: the sender's `Hello`, the receiver's `Welcome`,
//! and what the two agree on.
//!
//! Peers one release apart must either work together or refuse at once with
//! a message naming both versions, never fail later on a message one of them
//! cannot read. Three things make that hold:
//!
//! - Both TLS ends offer the legacy ALPN `mover/1` beside their own (see
//!   [`crate::tls`]), so a peer of another version still completes TLS and
//!   hears why it is refused instead of a bare handshake alert.
//! - `Hello` and `Welcome` are variant 0 of their enums with `protocol` as
//!   their first field in every version, so [`foreign_version`] reads a
//!   peer's version before decoding a body whose shape may have changed.
//! - What a peer can do beyond the base protocol is a named [`Features`]
//!   set in both messages; a session uses only what both offered.

use super::frame::FrameError;
use super::io::{self as wio, Reader};
use super::message::{BlockGeometry, SyncOptions, ToReceiver, ToSender};
use super::PROTOCOL_VERSION;
use crate::failure::Failure;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use tokio::io::AsyncRead;

/// Optional abilities, by name; names one end does not know are ignored,
/// so a later release can add one without a version bump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features(Vec<String>);

impl Features {
    /// File data may arrive as `Compressed` (zstd frames).
    pub const ZSTD: &'static str = "zstd";
    /// The receiver honours [`SyncOptions::checksum`] and reads
    /// `Unchanged`.
    pub const CHECKSUM: &'static str = "checksum";
    /// The receiver honours [`SyncOptions::dry_run`].
    pub const DRY_RUN: &'static str = "dry-run";
    /// The receiver takes `Streams` and `Join`: one session over several
    /// connections ([`super::stripes`]).
    pub const STREAMS: &'static str = "streams";

    /// Everything this build supports.
    pub fn ours() -> Self {
        Features(
            [
                Features::ZSTD,
                Features::CHECKSUM,
                Features::DRY_RUN,
                Features::STREAMS,
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    pub fn none() -> Self {
        Features(Vec::new())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| f == name)
    }

    /// What both sets name: all a session may use.
    pub fn common(&self, other: &Features) -> Features {
        Features(self.0.iter().filter(|f| other.has(f)).cloned().collect())
    }

    /// Bytes of names held, for [`super::frame::Message::payload_len`].
    pub fn payload_len(&self) -> usize {
        self.0.iter().map(String::len).sum()
    }
}

/// The version a frame body announces if it is an opening message (variant
/// 0: `Hello` or `Welcome`) of a version other than ours. postcard writes
/// the variant index and then the first field, `protocol`, as varints.
pub fn foreign_version(body: &[u8]) -> Option<u32> {
    match postcard::from_bytes::<(u32, u32)>(body) {
        Ok((0, theirs)) if theirs != PROTOCOL_VERSION => Some(theirs),
        _ => None,
    }
}

/// Which end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sender,
    Receiver,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        })
    }
}

/// Why an opening exchange failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another protocol version: upgrade one of the two.
    #[error("{peer} speaks mover protocol {theirs}, this {us} speaks {PROTOCOL_VERSION}")]
    Version { peer: String, us: Role, theirs: u32 },
    /// The peer's first message was not the opening one.
    #[error("protocol error from {peer}: expected {expected} first, got {got}")]
    Unexpected {
        peer: String,
        expected: &'static str,
        got: &'static str,
    },
    /// The receiver lacks what an option needs, and would ignore it.
    #[error("the receiver does not support {flag} (feature `{feature}`); upgrade it or sync without {flag}")]
    Unsupported {
        flag: &'static str,
        feature: &'static str,
    },
    /// The receiver answered Hello with an error (busy volume, volume not
    /// granted, or a version it does not speak).
    #[error("the receiver refused the session: {message}")]
    Refused { message: String, retryable: bool },
}

impl From<HandshakeError> for Failure {
    fn from(e: HandshakeError) -> Failure {
        let retryable = matches!(
            e,
            HandshakeError::Refused {
                retryable: true,
                ..
            }
        );
        Failure {
            message: e.to_string(),
            retryable,
        }
    }
}

/// What a sender asks for at Hello.
#[derive(Debug, Clone)]
pub struct Request {
    pub volume: String,
    pub options: SyncOptions,
    /// The sender's features.
    pub features: Features,
    /// See [`ToReceiver::Hello`].
    pub reserved: Vec<u32>,
    /// A block copy's source; `None` for a tree sync.
    pub block: Option<BlockGeometry>,
}

impl Request {
    pub fn hello(self) -> ToReceiver {
        ToReceiver::Hello {
            protocol: PROTOCOL_VERSION,
            volume: self.volume,
            options: self.options,
            features: self.features,
            reserved: self.reserved,
            block: self.block,
        }
    }
}

/// The receiver's `Welcome`: to a session's `Hello`, or a data
/// connection's `Join`. A receiver reads every feature it offers, so it
/// needs nothing from the agreement itself.
pub fn welcome() -> ToSender {
    ToSender::Welcome {
        protocol: PROTOCOL_VERSION,
        features: Features::ours(),
    }
}

/// What a connection's first message asks for.
pub enum Opening {
    /// A new session.
    Hello(Request),
    /// A data connection for a session already open ([`super::stripes`]).
    Join { token: [u8; 32], lane: u32 },
}

/// Receiver side: the sender's `Hello`, or a data connection's `Join`.
/// `peer` names the sender's address.
pub async fn read_opening<R: AsyncRead + Unpin>(
    reader: &mut Reader<R, ToReceiver, ToSender>,
    idle: Duration,
    peer: &str,
) -> Result<Opening, Failure> {
    let unexpected = |got| HandshakeError::Unexpected {
        peer: peer.to_string(),
        expected: "Hello",
        got,
    };
    match opening(reader, idle, peer, Role::Receiver).await? {
        ToReceiver::Hello {
            protocol: _,
            volume,
            options,
            features,
            reserved,
            block,
        } => Ok(Opening::Hello(Request {
            volume,
            options,
            features,
            reserved,
            block,
        })),
        ToReceiver::Join { token, lane } => Ok(Opening::Join { token, lane }),
        ToReceiver::Entry { .. } => Err(unexpected("Entry").into()),
        _ => Err(unexpected("a data message").into()),
    }
}

/// Sender side: the receiver's answer to `Hello`; returns the features the
/// session may use.
pub async fn read_welcome<R: AsyncRead + Unpin>(
    reader: &mut Reader<R, ToSender, ToReceiver>,
    idle: Duration,
    ours: &Features,
) -> Result<Features, Failure> {
    let peer = "receiver";
    match opening(reader, idle, peer, Role::Sender).await? {
        ToSender::Welcome {
            protocol: _,
            features,
        } => Ok(ours.common(&features)),
        ToSender::Error { message, retryable } => {
            Err(HandshakeError::Refused { message, retryable }.into())
        }
        _ => Err(HandshakeError::Unexpected {
            peer: peer.to_string(),
            expected: "Welcome",
            got: "another message",
        }
        .into()),
    }
}

/// Sender side: fails unless the receiver's `features` cover everything
/// `options` ask for, so that no option is silently ignored.
pub fn check_options(options: &SyncOptions, features: &Features) -> Result<(), HandshakeError> {
    match options
        .required_features()
        .find(|(feature, _)| !features.has(feature))
    {
        Some((feature, flag)) => Err(HandshakeError::Unsupported { flag, feature }),
        None => Ok(()),
    }
}

/// The first message from `peer`, with a foreign version reported as such
/// rather than as a malformed frame.
async fn opening<R, In, Out>(
    reader: &mut Reader<R, In, Out>,
    idle: Duration,
    peer: &str,
    us: Role,
) -> Result<In, Failure>
where
    R: AsyncRead + Unpin,
    In: super::frame::Message,
{
    match wio::next_frame(reader, idle, peer).await? {
        Some(Err(FrameError::Version(theirs))) => Err(HandshakeError::Version {
            peer: peer.to_string(),
            us,
            theirs,
        }
        .into()),
        frame => wio::received(frame, peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_features_are_the_intersection() {
        let ours = Features::ours();
        assert!(ours.common(&Features::none()) == Features::none());
        let theirs = Features(vec!["zstd".into(), "from-the-future".into()]);
        assert_eq!(ours.common(&theirs), Features(vec!["zstd".into()]));
        assert!(ours.common(&theirs).has(Features::ZSTD));
        assert!(!ours.common(&theirs).has(Features::DRY_RUN));
    }

    #[test]
    fn options_need_the_receivers_features() {
        let options = SyncOptions {
            checksum: true,
            dry_run: true,
            ..SyncOptions::default()
        };
        assert_eq!(check_options(&options, &Features::ours()), Ok(()));
        assert_eq!(
            check_options(&SyncOptions::default(), &Features::none()),
            Ok(())
        );
        let old = Features(vec![Features::ZSTD.into(), Features::CHECKSUM.into()]);
        let refused: Failure = check_options(&options, &old).unwrap_err().into();
        assert_eq!(
            refused.message,
            "the receiver does not support --dry-run (feature `dry-run`); \
             upgrade it or sync without --dry-run"
        );
        assert!(!refused.retryable);
    }

    #[test]
    fn opening_versions_are_read_before_the_body() {
        // A v2 Hello: variant 0, protocol 2, then a body v3 cannot decode.
        assert_eq!(
            foreign_version(&[0, 2, 4, b'v', b'o', b'l', b'1', 0]),
            Some(2)
        );
        // A Hello from the future with fields we do not know.
        assert_eq!(foreign_version(&[0, 0x80, 0x01, 9, 9, 9]), Some(128));
        let ours = postcard::to_stdvec(
            &Request {
                volume: "vol1".into(),
                options: SyncOptions {
                    delete: true,
                    xattrs: crate::wire::message::XattrPolicy::User,
                    ..SyncOptions::default()
                },
                features: Features::ours(),
                reserved: vec![1],
                block: None,
            }
            .hello(),
        )
        .unwrap();
        assert_eq!(foreign_version(&ours), None);
        // Other variants are never taken for an opening message.
        assert_eq!(foreign_version(&[3]), None);
        assert_eq!(foreign_version(&[1, 2, 3]), None);
    }

    #[test]
    fn version_errors_name_both_versions_and_are_permanent() {
        let failure: Failure = HandshakeError::Version {
            peer: "sender 10.0.0.1:4000".into(),
            us: Role::Receiver,
            theirs: 2,
        }
        .into();
        assert_eq!(
            failure.message,
            format!(
                "sender 10.0.0.1:4000 speaks mover protocol 2, this receiver speaks {PROTOCOL_VERSION}"
            )
        );
        assert!(!failure.retryable);
    }
}
