//! Migration hooks (placeholder until the hooks module lands).

use serde::{Deserialize, Serialize};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookPhase {
    PreBackup,
    PostBackup,
    PreRestore,
    PostRestore,
}
