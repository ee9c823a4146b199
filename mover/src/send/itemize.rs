//! How a dry run shows what a sync would change: one line per change on
//! stdout as it arrives (never collected, so a volume of any size lists in
//! flat memory), as text or as JSON `change` events beside the progress
//! events.

use crate::entry::RelPath;
use crate::wire::message::{Change, EntryType, MetaChange};
use indicatif::HumanBytes;
use serde::Serialize;
use std::io::Write;

/// The form of the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Itemize {
    /// `content   d (1.2 MiB -> 1.3 MiB)`: a word, the path, details.
    #[default]
    Text,
    /// `{"event":"change","volume":..,"path":..,"change":"content",..}`.
    Json,
}

impl Itemize {
    /// Prints one change for `path` of `volume`.
    pub fn print(self, volume: &str, path: &RelPath, change: &Change) {
        let line = match self {
            Itemize::Text => text(path, change),
            Itemize::Json => json(volume, path, change),
        };
        // A closed stdout loses only the listing, never the run.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// The leading word of a change: what happens.
fn word(change: &Change) -> &'static str {
    match change {
        Change::Create { .. } => "new",
        Change::Delete { .. } => "delete",
        Change::Content { .. } => "content",
        Change::Replace { .. } => "replace",
        Change::Target => "target",
        Change::Meta(_) => "meta",
        Change::Link { .. } => "hardlink",
        Change::Unlink => "unlink",
    }
}

fn type_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Dir => "dir",
        EntryType::File => "file",
        EntryType::Symlink => "symlink",
        EntryType::Special => "special",
    }
}

/// `a/b`, or `a/b/` for a directory, as rsync shows them.
fn shown(path: &RelPath, change: &Change) -> String {
    let dir = matches!(
        change,
        Change::Create {
            kind: EntryType::Dir,
            ..
        } | Change::Delete {
            kind: EntryType::Dir
        }
    );
    if dir && !path.is_root() {
        format!("{path}/")
    } else {
        path.to_string()
    }
}

/// The parenthesised details, if any.
fn details(change: &Change) -> Option<String> {
    match change {
        Change::Create {
            kind: EntryType::File,
            size,
        } => Some(HumanBytes(*size).to_string()),
        Change::Content { old_size, new_size } => Some(format!(
            "{} -> {}",
            HumanBytes(*old_size),
            HumanBytes(*new_size)
        )),
        Change::Replace { old, new } => Some(format!("{} -> {}", type_name(*old), type_name(*new))),
        Change::Meta(meta) => Some(meta_details(meta)),
        Change::Link { target } => Some(format!("=> {target}")),
        Change::Create { .. } | Change::Delete { .. } | Change::Target | Change::Unlink => None,
    }
}

fn meta_details(meta: &MetaChange) -> String {
    let mut parts = Vec::new();
    if let Some((old, new)) = meta.mode {
        parts.push(format!("mode {old:04o} -> {new:04o}"));
    }
    if let Some(((ou, og), (nu, ng))) = meta.owner {
        parts.push(format!("owner {ou}:{og} -> {nu}:{ng}"));
    }
    if meta.mtime {
        parts.push("mtime".to_string());
    }
    parts.join(", ")
}

/// One text line: `new dir   a/`, `content   d (1.2 MiB -> 1.3 MiB)`.
pub fn text(path: &RelPath, change: &Change) -> String {
    let word = match change {
        Change::Create { kind, .. } => format!("new {}", type_name(*kind)),
        other => word(other).to_string(),
    };
    let shown = shown(path, change);
    match details(change) {
        Some(details) => format!("{word:<11} {shown} ({details})"),
        None => format!("{word:<11} {shown}"),
    }
}

#[derive(Serialize)]
struct ChangeEvent<'a> {
    event: &'static str,
    volume: &'a str,
    path: String,
    change: &'static str,
    /// The entry's type for `new` and `delete`; the new type for `replace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_size: Option<u64>,
    /// What the text form shows in parentheses.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// One JSON `change` event.
pub fn json(volume: &str, path: &RelPath, change: &Change) -> String {
    let (kind, old_size, new_size) = match change {
        Change::Create { kind, size } => (
            Some(*kind),
            None,
            (*kind == EntryType::File).then_some(*size),
        ),
        Change::Delete { kind } => (Some(*kind), None, None),
        Change::Replace { new, .. } => (Some(*new), None, None),
        Change::Content { old_size, new_size } => (None, Some(*old_size), Some(*new_size)),
        Change::Target | Change::Meta(_) | Change::Link { .. } | Change::Unlink => {
            (None, None, None)
        }
    };
    serde_json::to_string(&ChangeEvent {
        event: "change",
        volume,
        path: path.to_string(),
        change: word(change),
        kind: kind.map(type_name),
        old_size,
        new_size,
        detail: details(change),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> RelPath {
        RelPath::parse(p.as_bytes()).unwrap()
    }

    #[test]
    fn text_lines_name_the_change_path_and_details() {
        let cases = [
            (
                "a/b",
                Change::Create {
                    kind: EntryType::File,
                    size: 2048,
                },
                "new file    a/b (2.00 KiB)",
            ),
            (
                "c",
                Change::Delete {
                    kind: EntryType::Dir,
                },
                "delete      c/",
            ),
            (
                "d",
                Change::Content {
                    old_size: 1 << 20,
                    new_size: 3 << 19,
                },
                "content     d (1.00 MiB -> 1.50 MiB)",
            ),
            (
                "e",
                Change::Meta(MetaChange {
                    mode: Some((0o644, 0o600)),
                    owner: Some(((0, 0), (1000, 1000))),
                    mtime: true,
                }),
                "meta        e (mode 0644 -> 0600, owner 0:0 -> 1000:1000, mtime)",
            ),
            (
                "f",
                Change::Replace {
                    old: EntryType::Dir,
                    new: EntryType::Symlink,
                },
                "replace     f (dir -> symlink)",
            ),
            (
                "g",
                Change::Link {
                    target: path("a/b"),
                },
                "hardlink    g (=> a/b)",
            ),
            (
                "",
                Change::Meta(MetaChange {
                    mtime: true,
                    ..MetaChange::default()
                }),
                "meta        . (mtime)",
            ),
        ];
        for (p, change, line) in cases {
            assert_eq!(text(&path(p), &change), line);
        }
    }

    #[test]
    fn json_events_carry_structured_fields() {
        let event: serde_json::Value = serde_json::from_str(&json(
            "vol",
            &path("d"),
            &Change::Content {
                old_size: 1,
                new_size: 2,
            },
        ))
        .unwrap();
        assert_eq!(event["event"], "change");
        assert_eq!(event["volume"], "vol");
        assert_eq!(event["path"], "d");
        assert_eq!(event["change"], "content");
        assert_eq!(
            (event["old_size"].as_u64(), event["new_size"].as_u64()),
            (Some(1), Some(2))
        );
        assert!(event.get("kind").is_none());
    }
}
