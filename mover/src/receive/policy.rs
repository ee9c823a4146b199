//! What a receiver's operator lets any holder of a valid client certificate
//! create on its volumes.
//!
//! By default a sync is exact: setuid and setgid bits, file capabilities
//! (with `--xattrs all`) and device nodes arrive as the source has them
//! (devices only when the receiver runs as root). A receiver whose volumes
//! will be mounted where a planted setuid-root binary or a device node
//! would matter can refuse them: `--no-setuid` clears the bits and drops
//! `security.capability`, `--no-devices` creates no character or block
//! device. Each is reported (once per kind of thing, in the warnings'
//! budget), never a failure.

use crate::entry::{Entry, Kind, SpecialKind};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Clear setuid/setgid on non-directories and drop file capabilities.
    pub no_setuid: bool,
    /// Create no character or block devices.
    pub no_devices: bool,
}

/// What the policy makes of one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// As the sender listed it.
    Keep,
    /// Admitted with less than the source has; the warning says what.
    Reduced(String),
    /// Not created at all; the warning says why.
    Refused(String),
}

impl Policy {
    pub fn admit(&self, entry: &mut Entry) -> Admission {
        if let Kind::Special {
            kind: SpecialKind::CharDevice | SpecialKind::BlockDevice,
            ..
        } = entry.kind
        {
            if self.no_devices {
                return Admission::Refused(format!(
                    "{}: device node not created (--no-devices)",
                    entry.path
                ));
            }
        }
        if !self.no_setuid || entry.kind == Kind::Dir {
            return Admission::Keep;
        }
        let bits = entry.meta.mode & 0o6000;
        let before = entry.meta.xattrs.len();
        entry.meta.mode &= !0o6000;
        entry
            .meta
            .xattrs
            .retain(|x| x.name != b"security.capability");
        if bits == 0 && entry.meta.xattrs.len() == before {
            return Admission::Keep;
        }
        Admission::Reduced(format!(
            "{}: setuid/setgid bits and file capabilities not set (--no-setuid)",
            entry.path
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Meta, RelPath, Xattr};

    fn entry(kind: Kind, mode: u32, caps: bool) -> Entry {
        let xattrs = caps
            .then(|| Xattr {
                name: b"security.capability".to_vec(),
                value: vec![1],
            })
            .into_iter()
            .chain([Xattr {
                name: b"user.keep".to_vec(),
                value: vec![2],
            }])
            .collect();
        Entry {
            path: RelPath::parse(b"bin/x").unwrap(),
            kind,
            meta: Meta {
                mode,
                uid: 0,
                gid: 0,
                mtime_sec: 0,
                mtime_nsec: 0,
                xattrs,
            },
        }
    }

    fn file() -> Kind {
        Kind::File {
            size: 1,
            sparse: false,
        }
    }

    #[test]
    fn default_keeps_everything() {
        let mut e = entry(file(), 0o4755, true);
        assert_eq!(Policy::default().admit(&mut e), Admission::Keep);
        assert_eq!((e.meta.mode, e.meta.xattrs.len()), (0o4755, 2));
    }

    #[test]
    fn no_setuid_clears_bits_and_capabilities_but_not_on_directories() {
        let policy = Policy {
            no_setuid: true,
            no_devices: false,
        };
        let mut e = entry(file(), 0o6755, true);
        assert!(matches!(policy.admit(&mut e), Admission::Reduced(w) if w.starts_with("bin/x: ")));
        assert_eq!(e.meta.mode, 0o755);
        assert_eq!(e.meta.xattrs.len(), 1, "user.keep stays");
        let mut plain = entry(file(), 0o755, false);
        assert_eq!(policy.admit(&mut plain), Admission::Keep);
        let mut dir = entry(Kind::Dir, 0o2775, false);
        assert_eq!(policy.admit(&mut dir), Admission::Keep);
        assert_eq!(
            dir.meta.mode, 0o2775,
            "setgid directories pass on their group"
        );
    }

    #[test]
    fn no_devices_refuses_devices_only() {
        let policy = Policy {
            no_setuid: false,
            no_devices: true,
        };
        let device = |kind| Kind::Special { kind, rdev: 0x103 };
        let mut e = entry(device(SpecialKind::CharDevice), 0o666, false);
        assert!(matches!(policy.admit(&mut e), Admission::Refused(_)));
        let mut e = entry(device(SpecialKind::BlockDevice), 0o660, false);
        assert!(matches!(policy.admit(&mut e), Admission::Refused(_)));
        let mut e = entry(device(SpecialKind::Fifo), 0o644, false);
        assert_eq!(policy.admit(&mut e), Admission::Keep);
    }
}
