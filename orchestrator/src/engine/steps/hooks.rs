//! The hook steps: every hook of the plan for one phase, one after the
//! other in the plan's order, each a Job on its cluster (`crate::hooks`).
//! A failing hook fails the migration with the hook's reason and log; the
//! logs of all hooks are kept in the Migration's records for the report.

use std::time::Duration;

use serde_json::json;

use super::{wait_until, Waiting};
use crate::engine::{Context, Outcome};
use crate::hooks::{self, HookState, Phase, Side};
use crate::itinerary::StepName;

/// Beyond the Job's own deadline: time for the Job controller to notice.
const GRACE: Duration = Duration::from_secs(120);

pub(super) async fn run(ctx: &Context<'_>, phase: Phase) -> anyhow::Result<Outcome> {
    let step = match phase {
        Phase::PreBackup => StepName::PreBackupHooks,
        Phase::PostBackup => StepName::PostBackupHooks,
        Phase::PreRestore => StepName::PreRestoreHooks,
        Phase::PostRestore => StepName::PostRestoreHooks,
    };
    let mut done = Vec::new();
    for hook in ctx.plan.hooks.iter().filter(|h| h.phase == phase) {
        let cluster = match hook.cluster {
            Side::Source => ctx.source,
            Side::Destination => ctx.destination,
        };
        let deadline = hook
            .active_deadline_seconds
            .unwrap_or(hooks::DEFAULT_DEADLINE_SECONDS)
            .max(0) as u64;
        let limit = Duration::from_secs(deadline) + GRACE;
        let waited = wait_until(ctx, step, limit, async || {
            Ok(match hooks::ensure(cluster, &ctx.plan.name, hook).await? {
                HookState::Running { waiting } => Waiting::Wait(format!(
                    "hook {} is running{}",
                    hook.name,
                    waiting.map(|w| format!(" ({w})")).unwrap_or_default()
                )),
                finished => Waiting::Ready(finished),
            })
        })
        .await?;
        let (succeeded, reason, log) = match waited {
            Ok(HookState::Succeeded { log }) => (true, None, log),
            Ok(HookState::Failed { reason, log }) => (false, Some(reason), log),
            Ok(HookState::Running { .. }) => unreachable!("a running hook is not ready"),
            Err(last) => (false, Some(last), String::new()),
        };
        let record = json!({
            "name": hook.name,
            "phase": phase,
            "cluster": hook.cluster.as_str(),
            "namespace": hook.namespace,
            "succeeded": succeeded,
            "reason": reason,
            "log": log,
        });
        ctx.update(|s| {
            let hooks = s.records.entry("hooks".into()).or_insert_with(|| json!([]));
            if let Some(list) = hooks.as_array_mut() {
                list.retain(|h| !(h["name"] == record["name"] && h["phase"] == record["phase"]));
                list.push(record);
            }
        })
        .await?;
        if let Some(reason) = reason {
            return Ok(Outcome::Failed(format!(
                "hook {} failed: {reason}{}",
                hook.name,
                if log.is_empty() {
                    String::new()
                } else {
                    format!("; its log ends: {}", tail(&log))
                }
            )));
        }
        done.push(hook.name.clone());
    }
    Ok(Outcome::Done(Some(format!("ran {}", done.join(", ")))))
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
