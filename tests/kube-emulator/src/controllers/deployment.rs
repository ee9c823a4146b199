//! The Deployment controller: one ReplicaSet per pod template
//! (`<deploy>-<hash>`, with the `pod-template-hash` label in its selector
//! and template and the `deployment.kubernetes.io/revision` annotation),
//! rolled out by the RollingUpdate (maxSurge/maxUnavailable, 25% each by
//! default) or Recreate strategy as `pkg/controller/deployment` does;
//! old ReplicaSets are scaled to 0 and kept up to revisionHistoryLimit.
//! The status (replicas, updated, ready, available and unavailable
//! replicas, observedGeneration, the Available and Progressing
//! conditions) is what `kubectl rollout status` reads: NewReplicaSetAvailable
//! once the rollout is complete, ProgressDeadlineExceeded when it stalls.
//! `spec.paused` stops rollouts (the status says DeploymentPaused).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt as _};
use serde_json::json;

use super::owners;
use super::reconcile;
use crate::context::ClusterContext;

pub(super) const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

pub(super) async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    reconcile::run_owning::<Deployment, ReplicaSet, _>(ctx, "deployment", Rollout::reconcile).await
}

/// One round of the controller for one Deployment.
struct Rollout {
    ctx: Arc<ClusterContext>,
    deployment: Arc<Deployment>,
    api: Api<ReplicaSet>,
    replicas: i32,
    template: PodTemplateSpec,
    new: Option<ReplicaSet>,
    /// Every other ReplicaSet the Deployment controls, oldest first.
    old: Vec<ReplicaSet>,
}

impl Rollout {
    async fn reconcile(
        deployment: Arc<Deployment>,
        ctx: Arc<ClusterContext>,
    ) -> anyhow::Result<Action> {
        let namespace = deployment.namespace().unwrap_or_default();
        let spec = deployment.spec.clone();
        let selector = spec.selector.clone();
        if selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty)
        {
            reconcile::event(
                &ctx,
                deployment.as_ref(),
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required."
                    .to_string(),
            )
            .await;
            return Ok(Action::await_change());
        }
        if deployment.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let client = ctx.client.clone();
        let mut claimed = owners::claim(
            |ns| Api::<ReplicaSet>::namespaced(client.clone(), ns),
            &owners::controller_ref(deployment.as_ref()),
            false,
            &selector,
            api.list(&Default::default()).await?.items,
        )
        .await?;
        claimed.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let template = spec.template.clone();
        let (new, old): (Vec<ReplicaSet>, Vec<ReplicaSet>) = claimed
            .into_iter()
            .partition(|rs| same_template(rs.spec.template.as_ref(), &template));
        let mut rollout = Rollout {
            ctx,
            api,
            replicas: spec.replicas.unwrap_or(1),
            template,
            new: new.into_iter().next(),
            old,
            deployment,
        };
        let created = rollout.step(spec.paused == Some(true)).await?;
        rollout.clean_up_history().await?;
        rollout.sync_revision().await?;
        rollout.report(created).await
    }

    fn spec(&self) -> k8s_openapi::api::apps::v1::DeploymentSpec {
        self.deployment.spec.clone()
    }

    /// Moves the rollout on by one step; returns the name of the
    /// ReplicaSet it created, if it did.
    async fn step(&mut self, paused: bool) -> anyhow::Result<Option<String>> {
        if paused {
            // Only scaling happens while paused.
            if let Some(new) = self.new.clone() {
                if self.old.iter().all(|rs| spec_replicas(rs) == 0) {
                    self.scale(&new, self.replicas).await?;
                }
            }
            return Ok(None);
        }
        let recreate = self
            .spec()
            .strategy
            .and_then(|strategy| strategy.type_)
            .as_deref()
            == Some("Recreate");
        if recreate {
            return self.recreate().await;
        }
        let mut created = None;
        if self.new.is_none() {
            let (surge, _) = self.limits();
            let current: i32 = self.old.iter().map(spec_replicas).sum();
            let room = (self.replicas + surge - current).max(0);
            created = Some(self.create_new(room.min(self.replicas)).await?);
        } else {
            self.scale_new_up().await?;
        }
        self.scale_old_down().await?;
        Ok(created)
    }

    /// Recreate: every old pod goes before the new ReplicaSet is made or
    /// scaled up.
    async fn recreate(&mut self) -> anyhow::Result<Option<String>> {
        for rs in self.old.clone() {
            if spec_replicas(&rs) > 0 {
                self.scale(&rs, 0).await?;
            }
        }
        if self.old.iter().any(|rs| status_replicas(rs) > 0) {
            return Ok(None);
        }
        match self.new.clone() {
            Some(new) => {
                self.scale(&new, self.replicas).await?;
                Ok(None)
            }
            None => Ok(Some(self.create_new(self.replicas).await?)),
        }
    }

    /// maxSurge and maxUnavailable resolved against `replicas` (surge
    /// rounded up, unavailability down, never both 0).
    fn limits(&self) -> (i32, i32) {
        let rolling = self
            .spec()
            .strategy
            .and_then(|strategy| strategy.rolling_update)
            .unwrap_or_default();
        let quarter = IntOrString::String("25%".to_string());
        let surge = resolve(
            rolling.max_surge.as_ref().unwrap_or(&quarter),
            self.replicas,
            true,
        );
        let unavailable = resolve(
            rolling.max_unavailable.as_ref().unwrap_or(&quarter),
            self.replicas,
            false,
        );
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }

    async fn create_new(&mut self, replicas: i32) -> anyhow::Result<String> {
        let deployment = self.deployment.clone();
        let collisions = deployment
            .status
            .as_ref()
            .and_then(|status| status.collision_count)
            .unwrap_or(0);
        let hash = reconcile::template_hash(&(&self.template, collisions));
        let name = format!("{}-{hash}", deployment.name_any());
        let mut template = self.template.clone();
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.to_string(), hash.clone());
        let mut selector = self.spec().selector;
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.to_string(), hash.clone());
        let (surge, _) = self.limits();
        let revision = self.max_old_revision() + 1;
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: deployment.namespace(),
                labels: meta.labels.clone(),
                annotations: Some(BTreeMap::from([
                    (REVISION.to_string(), revision.to_string()),
                    (DESIRED_REPLICAS.to_string(), self.replicas.to_string()),
                    (
                        MAX_REPLICAS.to_string(),
                        (self.replicas + surge).to_string(),
                    ),
                ])),
                owner_references: Some(vec![owners::controller_ref(deployment.as_ref())]),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: self.spec().min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        match self.api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                reconcile::event(
                    &self.ctx,
                    deployment.as_ref(),
                    "Normal",
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {replicas}"),
                )
                .await;
                self.new = Some(created);
                Ok(name)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // A ReplicaSet of that name with another template: a hash
                // collision, resolved by counting it (the next hash differs).
                let api: Api<Deployment> = Api::namespaced(
                    self.ctx.client.clone(),
                    &deployment.namespace().unwrap_or_default(),
                );
                let patch = json!({"status": {"collisionCount": collisions + 1}});
                api.patch_status(
                    &deployment.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                anyhow::bail!(
                    "ReplicaSet {name} exists with another template: hash collision, retrying"
                )
            }
            Err(error) => {
                reconcile::event(
                    &self.ctx,
                    deployment.as_ref(),
                    "Warning",
                    "FailedCreate",
                    format!("Failed to create new replica set {name}: {error}"),
                )
                .await;
                Err(error.into())
            }
        }
    }

    /// RollingUpdate: the new ReplicaSet grows as far as maxSurge allows
    /// (or shrinks to `replicas`).
    async fn scale_new_up(&mut self) -> anyhow::Result<()> {
        let Some(new) = self.new.clone() else {
            return Ok(());
        };
        let current = spec_replicas(&new);
        if current == self.replicas {
            return Ok(());
        }
        if current > self.replicas {
            return self.scale(&new, self.replicas).await;
        }
        let (surge, _) = self.limits();
        let total: i32 = self.old.iter().map(spec_replicas).sum::<i32>() + current;
        let room = self.replicas + surge - total;
        if room > 0 {
            self.scale(&new, current + room.min(self.replicas - current))
                .await?;
        }
        Ok(())
    }

    /// RollingUpdate: old ReplicaSets shrink as far as maxUnavailable
    /// allows, their unavailable pods first, oldest ReplicaSet first.
    async fn scale_old_down(&mut self) -> anyhow::Result<()> {
        let old_total: i32 = self.old.iter().map(spec_replicas).sum();
        if old_total == 0 {
            return Ok(());
        }
        let new_spec = self.new.as_ref().map_or(0, spec_replicas);
        let new_available = self.new.as_ref().map_or(0, available_replicas);
        let all = old_total + new_spec;
        let (_, unavailable) = self.limits();
        let min_available = self.replicas - unavailable;
        let mut allowed = all - min_available - (new_spec - new_available);
        if allowed <= 0 {
            return Ok(());
        }
        let mut wanted: Vec<i32> = self.old.iter().map(spec_replicas).collect();
        for (index, rs) in self.old.iter().enumerate() {
            let unhealthy = wanted[index] - available_replicas(rs);
            if allowed <= 0 {
                break;
            }
            if unhealthy > 0 {
                let cut = unhealthy.min(allowed);
                wanted[index] -= cut;
                allowed -= cut;
            }
        }
        let available: i32 = self.old.iter().map(available_replicas).sum::<i32>() + new_available;
        let mut cut_more = available - min_available;
        for want in &mut wanted {
            if cut_more <= 0 {
                break;
            }
            let cut = (*want).min(cut_more);
            *want -= cut;
            cut_more -= cut;
        }
        for (rs, want) in self.old.clone().iter().zip(wanted) {
            if want != spec_replicas(rs) {
                self.scale(rs, want).await?;
            }
        }
        Ok(())
    }

    /// Sets a ReplicaSet's replicas (and the annotations saying what the
    /// Deployment wanted), with an Event as the real controller records.
    async fn scale(&mut self, rs: &ReplicaSet, replicas: i32) -> anyhow::Result<()> {
        let from = spec_replicas(rs);
        let (surge, _) = self.limits();
        let annotations = rs.annotations();
        let desired = self.replicas.to_string();
        let max = (self.replicas + surge).to_string();
        if from == replicas
            && annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && annotations.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": replicas},
        });
        let written = self
            .api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        if from != replicas {
            let direction = if replicas > from { "up" } else { "down" };
            reconcile::event(
                &self.ctx,
                self.deployment.as_ref(),
                "Normal",
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {replicas}",
                    rs.name_any()
                ),
            )
            .await;
        }
        let uid = written.uid();
        for held in self.new.iter_mut().chain(self.old.iter_mut()) {
            if held.uid() == uid {
                *held = written.clone();
            }
        }
        Ok(())
    }

    fn max_old_revision(&self) -> i64 {
        self.old.iter().map(revision).max().unwrap_or(0)
    }

    /// The new ReplicaSet carries the highest revision (a rollback to an
    /// old template makes its ReplicaSet the newest revision again), and
    /// the Deployment carries its revision.
    async fn sync_revision(&mut self) -> anyhow::Result<()> {
        let Some(new) = self.new.clone() else {
            return Ok(());
        };
        let max_old = self.max_old_revision();
        let mut current = revision(&new);
        if current <= max_old {
            current = max_old + 1;
            let patch = json!({"metadata": {"annotations": {REVISION: current.to_string()}}});
            self.new = Some(
                self.api
                    .patch(
                        &new.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?,
            );
        }
        if self.deployment.annotations().get(REVISION) != Some(&current.to_string()) {
            let api: Api<Deployment> = Api::namespaced(
                self.ctx.client.clone(),
                &self.deployment.namespace().unwrap_or_default(),
            );
            let patch = json!({"metadata": {"annotations": {REVISION: current.to_string()}}});
            api.patch(
                &self.deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the oldest revisions beyond revisionHistoryLimit among the
    /// old ReplicaSets that are fully scaled down.
    async fn clean_up_history(&mut self) -> anyhow::Result<()> {
        let limit = usize::try_from(self.spec().revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut idle: Vec<&ReplicaSet> = self
            .old
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0
                    && status_replicas(rs) == 0
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision(rs));
        let doomed: Vec<String> = idle[..idle.len() - limit]
            .iter()
            .map(|rs| rs.name_any())
            .collect();
        for name in doomed {
            match self.api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                result => drop(result?),
            }
            self.old.retain(|rs| rs.name_any() != name);
        }
        Ok(())
    }

    /// Writes the status and says when to look again.
    async fn report(&self, created: Option<String>) -> anyhow::Result<Action> {
        let deployment = self.deployment.as_ref();
        let spec = self.spec();
        let all: Vec<&ReplicaSet> = self.new.iter().chain(self.old.iter()).collect();
        let sum = |field: fn(&ReplicaSet) -> i32| all.iter().map(|rs| field(rs)).sum::<i32>();
        let replicas = sum(status_replicas);
        let updated = self.new.as_ref().map_or(0, status_replicas);
        let ready = sum(ready_replicas);
        let available = sum(available_replicas);
        let unavailable = (sum(spec_replicas) - available).max(0);
        let (_, max_unavailable) = self.limits();
        let now = self.ctx.shared.clock.now();
        let previous = deployment.status.clone().unwrap_or_default();
        let old_condition = |type_: &str| {
            previous
                .conditions
                .iter()
                .flatten()
                .find(|condition| condition.type_.as_deref() == Some(type_))
                .cloned()
        };
        let condition =
            |type_: &str, status: &str, reason: &str, message: String, updated_now: bool| {
                let old = old_condition(type_);
                let transition = old
                    .as_ref()
                    .filter(|old| old.status.as_deref() == Some(status))
                    .and_then(|old| old.last_transition_time.clone())
                    .map_or(json!(now.to_string()), |time| json!(time.0.to_string()));
                let update = match old.as_ref().and_then(|old| old.last_update_time.clone()) {
                    Some(time)
                        if !updated_now
                            && old
                                .as_ref()
                                .is_some_and(|o| o.reason.as_deref() == Some(reason)) =>
                    {
                        json!(time.0.to_string())
                    }
                    _ => json!(now.to_string()),
                };
                json!({"type": type_, "status": status, "reason": reason, "message": message,
                   "lastUpdateTime": update, "lastTransitionTime": transition})
            };
        let available_condition = if available >= self.replicas - max_unavailable {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_string(),
                false,
            )
        } else {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".to_string(),
                false,
            )
        };
        let new_name = self
            .new
            .as_ref()
            .map(|rs| rs.name_any())
            .unwrap_or_default();
        let generation = deployment.metadata.generation;
        let complete = updated == self.replicas
            && replicas == self.replicas
            && available == self.replicas
            && self.new.is_some();
        let progressed = updated > previous.updated_replicas.unwrap_or(0)
            || replicas < previous.replicas.unwrap_or(0)
            || ready > previous.ready_replicas.unwrap_or(0)
            || available > previous.available_replicas.unwrap_or(0);
        let deadline = spec.progress_deadline_seconds.unwrap_or(600);
        let old_progressing = old_condition("Progressing");
        let mut wake = reconcile::RESYNC;
        let progressing = if spec.paused == Some(true) {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".to_string(),
                true,
            )
        } else if let Some(name) = created {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{name}\""),
                true,
            )
        } else if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                false,
            )
        } else if progressed
            || old_progressing
                .as_ref()
                .is_none_or(|c| c.status.as_deref() != Some("True"))
                && old_progressing
                    .as_ref()
                    .is_none_or(|c| c.reason.as_deref() != Some("ProgressDeadlineExceeded"))
        {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                true,
            )
        } else {
            let since = old_progressing
                .as_ref()
                .and_then(|c| c.last_update_time.as_ref())
                .map_or(now, |time| time.0);
            let limit = since + SignedDuration::from_secs(i64::from(deadline));
            if old_progressing
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                || limit <= now
            {
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    false,
                )
            } else {
                wake = wake.min(Duration::try_from(limit - now).unwrap_or_default());
                let mut kept = serde_json::to_value(old_progressing.clone()).unwrap_or_default();
                kept["message"] = json!(format!("ReplicaSet \"{new_name}\" is progressing."));
                kept
            }
        };
        let status = json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": unavailable,
            "conditions": [available_condition, progressing],
        });
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &deployment.namespace().unwrap_or_default(),
        );
        reconcile::write_status(&api, deployment, status).await?;
        Ok(Action::requeue(wake))
    }
}

/// Whether a ReplicaSet's template is the Deployment's, ignoring the
/// `pod-template-hash` label the controller added.
fn same_template(rs_template: Option<&PodTemplateSpec>, template: &PodTemplateSpec) -> bool {
    rs_template
        .is_some_and(|rs_template| reconcile::same_template(rs_template, template, &[HASH_LABEL]))
}

/// An IntOrString count or percentage of `total`.
fn resolve(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => (*n).max(0),
        IntOrString::String(text) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = percent * i64::from(total);
            let result = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            i32::try_from(result.max(0)).unwrap_or(i32::MAX)
        }
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(super) fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |status| status.replicas)
}

fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.available_replicas)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        let quarter = IntOrString::String("25%".to_string());
        assert_eq!(resolve(&quarter, 3, true), 1);
        assert_eq!(resolve(&quarter, 3, false), 0);
        assert_eq!(resolve(&quarter, 8, false), 2);
        assert_eq!(resolve(&IntOrString::Int(2), 8, true), 2);
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}
        })).unwrap();
        let mut hashed = template.clone();
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "abc".into());
        assert!(same_template(Some(&hashed), &template));
        let mut changed = template.clone();
        changed.spec.as_mut().unwrap().containers[0].image = Some("j".into());
        assert!(!same_template(Some(&changed), &template));
    }
}
