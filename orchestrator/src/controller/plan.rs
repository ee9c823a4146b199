//! The `MigrationPlan` resource: a plan file's fields with its clusters
//! given by reference (MigrationClusters of the same namespace), validated
//! continuously as MTC validates a MigPlan. Each pass sets the conditions
//! that hold now and drops the others:
//!
//! - `Ready`: the plan can run (True), or the first reason it cannot;
//! - `InvalidPlan`: the plan's fields, with the plan file's messages;
//! - `InvalidSourceCluster` / `InvalidDestinationCluster`: missing or not
//!   ready clusters;
//! - `NamespaceNotFound` (source), `StorageClassNotFound` (destination);
//! - `PlanConflict`: another plan holds one of its source namespaces;
//! - `PodsNotHealthy` (a warning: the plan stays Ready): source pods that
//!   are failing, which would fail the same way on the destination.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, CustomResource, Resource as _, ResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cluster::{self, MigrationCluster};
use super::conditions::{replace_all, Condition};
use super::Context;
use crate::plan::{self, Plan, PlanFile, PlanFlags};

/// A migration plan whose clusters are MigrationClusters.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "mover.io",
    version = "v1alpha1",
    kind = "MigrationPlan",
    namespaced,
    status = "MigrationPlanStatus",
    shortname = "mplan",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceCluster"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destinationCluster"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlanSpec {
    /// The MigrationCluster migrated from.
    pub source_cluster: String,
    /// The MigrationCluster migrated to.
    pub destination_cluster: String,
    /// The plan file's fields (namespaces, pvcs, storageClassMapping,
    /// endpoint, images, hooks, ...), as in a plan file, without its
    /// name (the resource's) and clusters (above).
    #[schemars(schema_with = "any_object")]
    pub plan: Value,
}

/// `plan` is checked by the controller, with the plan file's messages,
/// not by the API server's schema.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlanStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// How often a plan is validated again (clusters and namespaces change
/// without the plan changing).
const RECHECK: Duration = Duration::from_secs(30);

/// The plan a MigrationPlan describes, as the engine takes it; its
/// problems, as the plan file's resolver words them.
pub fn resolve(plan: &MigrationPlan) -> Result<Plan, Vec<String>> {
    let origin = format!(
        "MigrationPlan {}/{}",
        plan.namespace().unwrap_or_default(),
        plan.name_any()
    );
    let mut fields = plan.spec.plan.clone();
    if !fields.is_object() {
        return Err(vec![format!("{origin}: spec.plan must be an object")]);
    }
    for side in ["source", "destination", "name"] {
        if fields.get(side).is_some() {
            return Err(vec![format!(
                "{origin}: spec.plan.{side} is not allowed: the resource's name and \
                 spec.sourceCluster/spec.destinationCluster give it"
            )]);
        }
    }
    fields["name"] = json!(plan.name_any());
    let file: PlanFile =
        serde_json::from_value(fields).map_err(|e| vec![format!("{origin}: spec.plan: {e}")])?;
    plan::resolve(file, &PlanFlags::default(), &origin).map_err(|errors| errors.0)
}

/// One validation pass; the conditions it finds replace the old ones.
pub async fn reconcile(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let namespace = plan.namespace().unwrap_or_default();
    let conditions = validate(&plan, &namespace, &ctx).await?;
    let old = plan.status.clone().unwrap_or_default();
    let status = MigrationPlanStatus {
        conditions: replace_all(&old.conditions, conditions),
        observed_generation: plan.meta().generation,
    };
    if status != old {
        Api::<MigrationPlan>::namespaced(ctx.host.clone(), &namespace)
            .patch_status(
                &plan.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(Action::requeue(RECHECK))
}

/// The conditions that hold now. `Err` only when the host cluster itself
/// could not be read (the reconcile is retried).
async fn validate(
    plan: &MigrationPlan,
    namespace: &str,
    ctx: &Context,
) -> Result<Vec<Condition>, kube::Error> {
    let mut problems: Vec<Condition> = Vec::new();
    let resolved = match resolve(plan) {
        Ok(resolved) => Some(resolved),
        Err(errors) => {
            problems.push(problem("InvalidPlan", &errors.join("; ")));
            None
        }
    };
    let source = ready_cluster(
        ctx,
        namespace,
        &plan.spec.source_cluster,
        "InvalidSourceCluster",
    )
    .await?;
    let destination = ready_cluster(
        ctx,
        namespace,
        &plan.spec.destination_cluster,
        "InvalidDestinationCluster",
    )
    .await?;
    let plans = Api::<MigrationPlan>::namespaced(ctx.host.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let mut warnings = Vec::new();
    if let Some(resolved) = &resolved {
        if let Some(conflict) = conflict(plan, resolved, &plans.items) {
            problems.push(conflict);
        }
        if let (Ok(source), Ok(destination)) = (&source, &destination) {
            problems.extend(check_clusters(resolved, source, destination).await);
            if let Some(pods) = unhealthy_pods(resolved, source).await {
                warnings.push(Condition::new(
                    "PodsNotHealthy",
                    true,
                    "PodsNotHealthy",
                    &pods,
                ));
            }
        }
    }
    problems.extend([source.err(), destination.err()].into_iter().flatten());
    let ready = match problems.first() {
        None => Condition::new("Ready", true, "Ready", "the plan can run"),
        Some(first) => Condition::new("Ready", false, &first.type_, &first.message),
    };
    Ok([vec![ready], problems, warnings].concat())
}

/// A problem condition: `True` means the problem is there.
fn problem(type_: &str, message: &str) -> Condition {
    Condition::new(type_, true, type_, message)
}

/// A client of MigrationCluster `name` if it exists and is Ready; else the
/// problem, as a condition of `type_`.
async fn ready_cluster(
    ctx: &Context,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Result<Result<kube::Client, Condition>, kube::Error> {
    let Some(found) = Api::<MigrationCluster>::namespaced(ctx.host.clone(), namespace)
        .get_opt(name)
        .await?
    else {
        return Ok(Err(problem(
            type_,
            &format!("MigrationCluster {namespace}/{name} not found"),
        )));
    };
    let not_ready = found
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status != "True")
        .map(|c| c.message.clone());
    if let Some(why) = not_ready {
        return Ok(Err(problem(
            type_,
            &format!("MigrationCluster {namespace}/{name} is not ready: {why}"),
        )));
    }
    Ok(cluster::connect(&found.spec, namespace, &ctx.host)
        .await
        .map_err(|why| {
            problem(
                type_,
                &format!("MigrationCluster {namespace}/{name}: {why}"),
            )
        }))
}

/// An older plan of the namespace holding one of this plan's source
/// namespaces, as MTC refuses two MigPlans over one namespace. The older
/// plan stays ready: creating a duplicate does not stop the plan already
/// in use.
fn conflict(plan: &MigrationPlan, resolved: &Plan, plans: &[MigrationPlan]) -> Option<Condition> {
    let mine: BTreeSet<&str> = resolved
        .namespaces
        .iter()
        .map(|m| m.source.as_str())
        .collect();
    let age = |p: &MigrationPlan| (p.metadata.creation_timestamp.clone(), p.name_any());
    let mut clashes = Vec::new();
    for other in plans {
        if age(other) >= age(plan) || other.spec.source_cluster != plan.spec.source_cluster {
            continue;
        }
        let Ok(theirs) = resolve(other) else { continue };
        let shared: Vec<&str> = theirs
            .namespaces
            .iter()
            .map(|m| m.source.as_str())
            .filter(|ns| mine.contains(ns))
            .collect();
        if !shared.is_empty() {
            clashes.push(format!(
                "MigrationPlan {} also migrates {}",
                other.name_any(),
                shared.join(", ")
            ));
        }
    }
    (!clashes.is_empty()).then(|| problem("PlanConflict", &clashes.join("; ")))
}

/// Source namespaces that do not exist, and storage classes the
/// destination lacks.
async fn check_clusters(
    plan: &Plan,
    source: &kube::Client,
    destination: &kube::Client,
) -> Vec<Condition> {
    let mut problems = Vec::new();
    let namespaces = Api::<Namespace>::all(source.clone());
    let mut missing = Vec::new();
    for mapping in &plan.namespaces {
        match namespaces.get_opt(&mapping.source).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(mapping.source.clone()),
            Err(e) => missing.push(format!("{} ({e})", mapping.source)),
        }
    }
    if !missing.is_empty() {
        problems.push(problem(
            "NamespaceNotFound",
            &format!("not found on the source cluster: {}", missing.join(", ")),
        ));
    }
    // The classes the destination PVCs will get: each source PVC's class,
    // through the plan's mapping.
    let mut wanted = BTreeSet::new();
    for mapping in &plan.namespaces {
        let pvcs = Api::<PersistentVolumeClaim>::namespaced(source.clone(), &mapping.source)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for pvc in pvcs {
            let class = pvc
                .spec
                .and_then(|s| s.storage_class_name)
                .unwrap_or_default();
            let mapped = plan
                .storage_class_mapping
                .get(&class)
                .cloned()
                .unwrap_or(class);
            if !mapped.is_empty() {
                wanted.insert(mapped);
            }
        }
    }
    let classes = Api::<StorageClass>::all(destination.clone());
    let mut absent = Vec::new();
    for class in wanted {
        if let Ok(None) = classes.get_opt(&class).await {
            absent.push(class);
        }
    }
    if !absent.is_empty() {
        problems.push(problem(
            "StorageClassNotFound",
            &format!(
                "not found on the destination cluster: {} (map them with storageClassMapping)",
                absent.join(", ")
            ),
        ));
    }
    problems
}

/// Source pods that are failing (phase Failed or Unknown, or a container
/// waiting in CrashLoopBackOff, ImagePullBackOff, ErrImagePull), as
/// `namespace/pod (reason)`.
async fn unhealthy_pods(plan: &Plan, source: &kube::Client) -> Option<String> {
    let mut found = Vec::new();
    for mapping in &plan.namespaces {
        let Ok(pods) = Api::<Pod>::namespaced(source.clone(), &mapping.source)
            .list(&ListParams::default())
            .await
        else {
            continue;
        };
        for pod in pods.items {
            if let Some(why) = unhealthy(&pod) {
                found.push(format!("{}/{} ({why})", mapping.source, pod.name_any()));
            }
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

fn unhealthy(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Unknown")) = status.phase.as_deref() {
        return Some(phase.to_string());
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|reason| {
            matches!(
                reason.as_str(),
                "CrashLoopBackOff" | "ImagePullBackOff" | "ErrImagePull"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, fields: Value) -> MigrationPlan {
        let mut plan = MigrationPlan::new(
            name,
            MigrationPlanSpec {
                source_cluster: "source".into(),
                destination_cluster: "host".into(),
                plan: fields,
            },
        );
        plan.metadata.namespace = Some("mover-system".into());
        plan
    }

    #[test]
    fn the_plan_fields_are_checked_with_the_plan_files_messages() {
        let resolved = resolve(&plan("shop", json!({"namespaces": ["shop:shop-prod"]}))).unwrap();
        assert_eq!(resolved.name, "shop");
        assert_eq!(resolved.namespaces[0].destination, "shop-prod");
        let errors =
            resolve(&plan("shop", json!({"namespaces": ["shop"], "colour": 1}))).unwrap_err();
        assert!(
            errors[0]
                .starts_with("MigrationPlan mover-system/shop: spec.plan: unknown field `colour`"),
            "{errors:?}"
        );
        let errors =
            resolve(&plan("shop", json!({"namespaces": ["shop"], "source": {}}))).unwrap_err();
        assert!(
            errors[0].contains("spec.plan.source is not allowed"),
            "{errors:?}"
        );
    }

    #[test]
    fn plans_sharing_a_source_namespace_conflict() {
        let mine = plan("a", json!({"namespaces": ["shop", "db"]}));
        let resolved = resolve(&mine).unwrap();
        let others = vec![
            mine.clone(),
            plan("b", json!({"namespaces": ["db:db2"]})),
            plan("c", json!({"namespaces": ["other"]})),
        ];
        // Without creation times, the names order them: "a" is older.
        assert!(conflict(&mine, &resolved, &others).is_none());
        let newer = others[1].clone();
        let found = conflict(&newer, &resolve(&newer).unwrap(), &others).unwrap();
        assert_eq!(found.message, "MigrationPlan a also migrates db");
        assert!(conflict(&newer, &resolve(&newer).unwrap(), &others[1..]).is_none());
    }
}
