//! The itineraries: which steps a stage, final or rollback run takes, in
//! which order, and under which condition, as data (mig-controller's
//! itinerary tables). The engine walks a table from the step the
//! Migration's status names; what each step does lives in `engine::steps`.

use serde::{Deserialize, Serialize};

use crate::hooks::Phase as HookPhase;
use crate::migration::RunKind;

/// What preflight learned that decides which steps run. Computed once and
/// kept in the Migration's status, so a resumed run takes the same path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flags {
    /// The plan names registries: images move.
    pub images: bool,
    /// At least one PVC is selected.
    pub pvcs: bool,
    /// Resources move through Velero (a final run not limited to volumes).
    pub resources: bool,
    /// The source application is stopped before the final copy.
    pub quiesce: bool,
    /// The hook phases the plan has hooks for.
    pub hooks: Vec<HookPhase>,
}

impl Flags {
    /// The flags of a run of `kind` of `plan`, whose namespaces hold PVCs
    /// to copy when `pvcs`.
    pub fn for_plan(plan: &crate::plan::Plan, kind: RunKind, pvcs: bool) -> Self {
        let final_run = kind == RunKind::Final;
        let mut hooks: Vec<HookPhase> = if final_run {
            plan.hooks.iter().map(|h| h.phase).collect()
        } else {
            Vec::new()
        };
        hooks.sort();
        hooks.dedup();
        Flags {
            images: plan.images.is_some(),
            pvcs,
            resources: final_run && plan.resources,
            quiesce: final_run && plan.quiesce,
            hooks,
        }
    }
}

/// A step of an itinerary.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: StepName,
    /// What the user sees while it runs.
    pub description: &'static str,
    /// Whether the step runs for a migration with these flags.
    pub when: fn(&Flags) -> bool,
}

/// Every step any itinerary has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepName {
    Preflight,
    PreBackupHooks,
    CopyImages,
    Backup,
    PostBackupHooks,
    Quiesce,
    WaitForQuiesce,
    CopyVolumes,
    ReleaseVolumes,
    WaitForBackupSync,
    PreRestoreHooks,
    Restore,
    PostRestoreHooks,
    Verify,
    Cleanup,
    DeleteMigrated,
    Unquiesce,
    DeleteVeleroObjects,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Preflight => "Preflight",
            StepName::PreBackupHooks => "PreBackupHooks",
            StepName::CopyImages => "CopyImages",
            StepName::Backup => "Backup",
            StepName::PostBackupHooks => "PostBackupHooks",
            StepName::Quiesce => "Quiesce",
            StepName::WaitForQuiesce => "WaitForQuiesce",
            StepName::CopyVolumes => "CopyVolumes",
            StepName::ReleaseVolumes => "ReleaseVolumes",
            StepName::WaitForBackupSync => "WaitForBackupSync",
            StepName::PreRestoreHooks => "PreRestoreHooks",
            StepName::Restore => "Restore",
            StepName::PostRestoreHooks => "PostRestoreHooks",
            StepName::Verify => "Verify",
            StepName::Cleanup => "Cleanup",
            StepName::DeleteMigrated => "DeleteMigrated",
            StepName::Unquiesce => "Unquiesce",
            StepName::DeleteVeleroObjects => "DeleteVeleroObjects",
        }
    }
}

fn always(_: &Flags) -> bool {
    true
}
fn images(f: &Flags) -> bool {
    f.images
}
fn pvcs(f: &Flags) -> bool {
    f.pvcs
}
fn resources(f: &Flags) -> bool {
    f.resources
}
fn volumes_then_resources(f: &Flags) -> bool {
    f.pvcs && f.resources
}
fn quiesce(f: &Flags) -> bool {
    f.quiesce
}
fn pre_backup(f: &Flags) -> bool {
    f.hooks.contains(&HookPhase::PreBackup)
}
fn post_backup(f: &Flags) -> bool {
    f.hooks.contains(&HookPhase::PostBackup)
}
fn pre_restore(f: &Flags) -> bool {
    f.hooks.contains(&HookPhase::PreRestore)
}
fn post_restore(f: &Flags) -> bool {
    f.hooks.contains(&HookPhase::PostRestore)
}

const fn step(name: StepName, description: &'static str, when: fn(&Flags) -> bool) -> Step {
    Step {
        name,
        description,
        when,
    }
}

/// A final migration. Pre-backup hooks come first so that a failing one
/// stops the migration before the destination is touched; the backup is
/// taken before quiescing so that it holds the original replica counts.
pub const FINAL: &[Step] = &[
    step(StepName::Preflight, "checking both clusters", always),
    step(
        StepName::PreBackupHooks,
        "running pre-backup hooks",
        pre_backup,
    ),
    step(StepName::CopyImages, "copying internal images", images),
    step(
        StepName::Backup,
        "backing up the source's resources",
        resources,
    ),
    step(
        StepName::PostBackupHooks,
        "running post-backup hooks",
        post_backup,
    ),
    step(
        StepName::Quiesce,
        "stopping the source application",
        quiesce,
    ),
    step(
        StepName::WaitForQuiesce,
        "waiting until no pod uses the PVCs",
        quiesce,
    ),
    step(StepName::CopyVolumes, "copying volumes", pvcs),
    // Before anything is restored: a receiver still mounting a ReadWriteOnce
    // volume would keep the restored pod on another node from attaching it.
    step(
        StepName::ReleaseVolumes,
        "removing the transfer pods so the restored application can mount its volumes",
        volumes_then_resources,
    ),
    step(
        StepName::WaitForBackupSync,
        "waiting for the backup on the destination",
        resources,
    ),
    step(
        StepName::PreRestoreHooks,
        "running pre-restore hooks",
        pre_restore,
    ),
    step(
        StepName::Restore,
        "restoring resources on the destination",
        resources,
    ),
    step(
        StepName::PostRestoreHooks,
        "running post-restore hooks",
        post_restore,
    ),
    step(
        StepName::Verify,
        "waiting for the application to be ready",
        resources,
    ),
    step(StepName::Cleanup, "removing transfer objects", always),
];

/// A stage migration: images and volumes while the application runs.
pub const STAGE: &[Step] = &[
    step(StepName::Preflight, "checking both clusters", always),
    step(StepName::CopyImages, "copying internal images", images),
    step(StepName::CopyVolumes, "copying volumes", pvcs),
    step(StepName::Cleanup, "removing transfer objects", always),
];

/// A rollback: the destination loses what the migration made, the source
/// gets its application back as it was.
pub const ROLLBACK: &[Step] = &[
    step(StepName::Preflight, "checking both clusters", always),
    step(
        StepName::DeleteMigrated,
        "deleting what the migration created on the destination",
        always,
    ),
    step(
        StepName::Unquiesce,
        "restarting the source application",
        always,
    ),
    step(StepName::Cleanup, "removing transfer objects", always),
    step(
        StepName::DeleteVeleroObjects,
        "deleting the migration's backups and restores",
        always,
    ),
];

/// The itinerary of a kind of run.
pub fn itinerary(kind: RunKind) -> &'static [Step] {
    match kind {
        RunKind::Stage => STAGE,
        RunKind::Final => FINAL,
        RunKind::Rollback => ROLLBACK,
    }
}

/// The steps that run for `flags`, in order.
pub fn steps_for(kind: RunKind, flags: &Flags) -> Vec<StepName> {
    itinerary(kind)
        .iter()
        .filter(|s| (s.when)(flags))
        .map(|s| s.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepName::*;

    fn all() -> Flags {
        Flags {
            images: true,
            pvcs: true,
            resources: true,
            quiesce: true,
            hooks: vec![
                HookPhase::PreBackup,
                HookPhase::PostBackup,
                HookPhase::PreRestore,
                HookPhase::PostRestore,
            ],
        }
    }

    #[test]
    fn a_full_final_run_takes_every_step_in_order() {
        assert_eq!(
            steps_for(RunKind::Final, &all()),
            vec![
                Preflight,
                PreBackupHooks,
                CopyImages,
                Backup,
                PostBackupHooks,
                Quiesce,
                WaitForQuiesce,
                CopyVolumes,
                ReleaseVolumes,
                WaitForBackupSync,
                PreRestoreHooks,
                Restore,
                PostRestoreHooks,
                Verify,
                Cleanup
            ]
        );
    }

    #[test]
    fn flags_turn_steps_off() {
        let volumes_only = Flags {
            pvcs: true,
            ..Flags::default()
        };
        assert_eq!(
            steps_for(RunKind::Final, &volumes_only),
            vec![Preflight, CopyVolumes, Cleanup]
        );
        let no_quiesce = Flags {
            quiesce: false,
            hooks: vec![],
            ..all()
        };
        let steps = steps_for(RunKind::Final, &no_quiesce);
        assert!(!steps.contains(&Quiesce) && !steps.contains(&WaitForQuiesce));
        assert!(steps.contains(&Restore));
    }

    #[test]
    fn stage_never_quiesces_or_restores() {
        let steps = steps_for(RunKind::Stage, &all());
        assert_eq!(steps, vec![Preflight, CopyImages, CopyVolumes, Cleanup]);
    }

    #[test]
    fn rollback_ignores_flags() {
        assert_eq!(
            steps_for(RunKind::Rollback, &Flags::default()),
            steps_for(RunKind::Rollback, &all())
        );
    }

    #[test]
    fn step_names_are_unique_within_each_itinerary() {
        for kind in [RunKind::Stage, RunKind::Final, RunKind::Rollback] {
            let names: Vec<&str> = itinerary(kind).iter().map(|s| s.name.as_str()).collect();
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{kind:?}");
        }
    }
}
