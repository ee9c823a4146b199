//! Content digests (`sha256:<64 hex>`) and the streaming check that a blob
//! or manifest really has the digest and size it was announced with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A content digest. Only sha256 is accepted: it is what every registry
/// computes, and a digest we cannot verify is one we would have to trust.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// The 64 lowercase hex characters after `sha256:`.
    hex: String,
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hash(Sha256::digest(data).as_slice())
    }

    fn from_hash(hash: &[u8]) -> Digest {
        use fmt::Write as _;
        let mut hex = String::with_capacity(64);
        for b in hash {
            let _ = write!(hex, "{b:02x}");
        }
        Digest { hex }
    }

    /// The hex part, as registries name blob directories.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Digest, String> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(format!(
                "digest {s:?} has no algorithm (expected sha256:<64 hex>)"
            ));
        };
        if algorithm != "sha256" {
            return Err(format!(
                "digest {s:?} uses {algorithm:?}; only sha256 digests are supported"
            ));
        }
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(format!(
                "digest {s:?} is not sha256 followed by 64 lowercase hex characters"
            ));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why content did not match what it was announced as.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("digest mismatch: the content hashes to {actual}, not to the expected {expected}")]
    Digest { expected: Digest, actual: Digest },
    #[error("size mismatch: {actual} bytes arrived where {expected} were expected")]
    Size { expected: u64, actual: u64 },
}

/// Hashes content as it streams past and decides, the moment the announced
/// size is reached, whether it is the announced content. Deciding at the
/// last byte (rather than at end of stream) lets an upload be failed before
/// its final bytes are sent, so a bad blob is never committed.
pub struct Verifier {
    expected: Digest,
    size: u64,
    seen: u64,
    hasher: Sha256,
    verified: bool,
}

impl Verifier {
    pub fn new(expected: Digest, size: u64) -> Verifier {
        Verifier {
            expected,
            size,
            seen: 0,
            hasher: Sha256::new(),
            verified: false,
        }
    }

    /// Feeds the next piece. Returns `Ok(true)` once the announced size is
    /// complete and the digest matches, `Ok(false)` while more is expected.
    pub fn update(&mut self, data: &[u8]) -> Result<bool, Mismatch> {
        let seen = self.seen + data.len() as u64;
        if seen > self.size {
            return Err(Mismatch::Size {
                expected: self.size,
                actual: seen,
            });
        }
        self.seen = seen;
        self.hasher.update(data);
        if seen < self.size {
            return Ok(false);
        }
        let actual = Digest::from_hash(self.hasher.clone().finalize().as_slice());
        if actual != self.expected {
            return Err(Mismatch::Digest {
                expected: self.expected.clone(),
                actual,
            });
        }
        self.verified = true;
        Ok(true)
    }

    /// The check before content is committed: all of it arrived and it is
    /// the announced content (for empty content, checked only here).
    pub fn finish(&mut self) -> Result<(), Mismatch> {
        if self.seen < self.size {
            return Err(Mismatch::Size {
                expected: self.size,
                actual: self.seen,
            });
        }
        if !self.verified {
            self.update(&[])?;
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_content_round_trips_through_text() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn malformed_digests_are_refused_with_the_reason() {
        let e = "sha512:abcd".parse::<Digest>().unwrap_err();
        assert!(e.contains("only sha256"), "{e}");
        let e = "e3b0c442".parse::<Digest>().unwrap_err();
        assert!(e.contains("no algorithm"), "{e}");
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(upper.parse::<Digest>().is_err());
        assert!(EMPTY[..EMPTY.len() - 1].parse::<Digest>().is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn verifier_accepts_the_announced_content_in_pieces() {
        let data = b"hello, registry";
        let mut v = Verifier::new(Digest::of(data), data.len() as u64);
        assert_eq!(v.update(&data[..5]), Ok(false));
        assert_eq!(
            v.finish(),
            Err(Mismatch::Size {
                expected: 15,
                actual: 5
            })
        );
        assert_eq!(v.update(&data[5..]), Ok(true));
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.seen(), 15);
    }

    #[test]
    fn verifier_rejects_other_content_and_overlong_content() {
        let mut v = Verifier::new(Digest::of(b"abc"), 3);
        match v.update(b"abd") {
            Err(Mismatch::Digest { expected, actual }) => {
                assert_eq!(expected, Digest::of(b"abc"));
                assert_eq!(actual, Digest::of(b"abd"));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        let mut v = Verifier::new(Digest::of(b"abc"), 0);
        assert_eq!(
            v.finish(),
            Err(Mismatch::Digest {
                expected: Digest::of(b"abc"),
                actual: Digest::of(b"")
            })
        );
        let mut v = Verifier::new(Digest::of(b""), 0);
        assert_eq!(v.finish(), Ok(()));
        let mut v = Verifier::new(Digest::of(b"abc"), 3);
        assert_eq!(
            v.update(b"abcd"),
            Err(Mismatch::Size {
                expected: 3,
                actual: 4
            })
        );
    }
}
