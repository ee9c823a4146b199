//! The console's JSON routes that write: create a plan from the form,
//! start a run of a plan, cancel a run; and the itineraries the pages
//! draw and the confirmation dialogs describe. Reading goes through
//! [`super::watch`]. Every write is made with the user's token.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::User;
use super::error::ApiError;
use super::{inventory, Console};
use crate::controller::cluster::MigrationCluster;
use crate::controller::plan::MigrationPlan;
use crate::itinerary::itinerary;
use crate::migration::{RunKind, PLAN_LABEL};
use crate::plan::{check_dns_label, check_dns_subdomain, PlanFile, PlanFlags};

/// What each kind of run does, as the confirmation dialog says it before
/// the user starts one (the engine's itineraries, in words).
fn consequence(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Stage => {
            "Copies the plan's volumes (and internal images) to the destination while the \
             source application keeps running. It can be repeated: each run copies only what \
             changed since the last."
        }
        RunKind::Final => {
            "Quiesces the source application (scales its workloads to 0) unless the plan says \
             otherwise, copies the volumes and images a last time, then restores every other \
             resource of the namespaces on the destination with Velero and waits for the \
             application to be ready there."
        }
        RunKind::Rollback => {
            "Deletes what the migration created on the destination (the restored resources \
             and the copied PVCs), restarts the source application (scales its workloads back \
             up), and deletes the migration's Velero backups and restores."
        }
    }
}

/// What cancelling a run does.
const CANCEL: &str = "Stops the run where it is and removes its transfer pods (senders and \
     receivers, with their Services, Routes and Secrets) from both clusters. What was already \
     copied stays on the destination.";

/// `GET /api/itineraries`: each kind's steps with what they do, and what
/// a run of it (or a cancel) means for the user's application.
pub async fn itineraries() -> Json<Value> {
    let mut kinds = serde_json::Map::new();
    for kind in [RunKind::Stage, RunKind::Final, RunKind::Rollback] {
        let steps: Vec<Value> = itinerary(kind)
            .iter()
            .map(|s| json!({"name": s.name.as_str(), "description": s.description}))
            .collect();
        kinds.insert(
            kind.as_str().into(),
            json!({"steps": steps, "consequence": consequence(kind)}),
        );
    }
    kinds.insert("cancel".into(), json!({"consequence": CANCEL}));
    Json(Value::Object(kinds))
}

/// The new-plan form as the page sends it.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct NewPlan {
    pub name: String,
    pub source_cluster: String,
    pub destination_cluster: String,
    pub namespaces: Vec<String>,
    /// `namespace/name` of each PVC to copy.
    pub pvcs: Vec<String>,
}

/// The form's fields, as the page names them (`data-for`).
pub mod field {
    pub const NAME: &str = "plan-name";
    pub const SOURCE: &str = "source-cluster";
    pub const DESTINATION: &str = "destination-cluster";
    pub const NAMESPACE: &str = "namespace";
    pub const PVC: &str = "pvc";
}

/// What is wrong with the form on its own, by field; empty when nothing.
pub fn check_form(form: &NewPlan) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    let mut set = |field: &str, message: String| {
        errors.entry(field.to_string()).or_insert(message);
    };
    if form.name.is_empty() {
        set(field::NAME, "a plan needs a name".into());
    } else if let Err(e) = check_dns_label(&form.name) {
        set(field::NAME, e);
    }
    if form.source_cluster.is_empty() {
        set(field::SOURCE, "choose the cluster to migrate from".into());
    }
    if form.destination_cluster.is_empty() {
        set(
            field::DESTINATION,
            "choose the cluster to migrate to".into(),
        );
    } else if form.destination_cluster == form.source_cluster {
        set(
            field::DESTINATION,
            "the destination must be another cluster than the source".into(),
        );
    }
    if form.namespaces.is_empty() {
        set(field::NAMESPACE, "choose at least one namespace".into());
    }
    for ns in &form.namespaces {
        if let Err(e) = check_dns_label(ns) {
            set(field::NAMESPACE, e);
        }
    }
    for pvc in &form.pvcs {
        match pvc.split_once('/') {
            Some((ns, name)) if check_dns_subdomain(name).is_ok() => {
                if !form.namespaces.iter().any(|n| n == ns) {
                    set(
                        field::PVC,
                        format!("{pvc}: namespace {ns} is not one of the plan's"),
                    );
                }
            }
            _ => set(field::PVC, format!("{pvc:?} is not NAMESPACE/NAME")),
        }
    }
    errors
}

/// The form field an API server's cause names, when it is one.
fn form_field(api_field: &str) -> &str {
    let fields = [
        ("metadata.name", field::NAME),
        ("spec.sourceCluster", field::SOURCE),
        ("spec.destinationCluster", field::DESTINATION),
        ("spec.plan.namespaces", field::NAMESPACE),
        ("spec.plan.pvcs", field::PVC),
    ];
    fields
        .iter()
        .find(|(prefix, _)| api_field.starts_with(prefix))
        .map_or(api_field, |(_, field)| field)
}

/// Checks the form against the clusters: both registered and readable by
/// the user, the namespaces present on the source, each PVC present, and
/// at least one chosen when the namespaces have any (a plan naming none
/// copies them all).
async fn check_clusters(console: &Console, user: &User, form: &NewPlan) -> Result<(), ApiError> {
    let clusters = Api::<MigrationCluster>::namespaced(user.client.clone(), console.namespace());
    let mut errors = BTreeMap::new();
    for (field, name) in [
        (field::SOURCE, &form.source_cluster),
        (field::DESTINATION, &form.destination_cluster),
    ] {
        match clusters.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                errors.insert(field.to_string(), format!("no MigrationCluster {name}"));
            }
            Err(e) => {
                return Err(ApiError::kube(
                    &format!("reading MigrationCluster {name}"),
                    e,
                ))
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let source = inventory::registered(console, user, &form.source_cluster).await?;
    let present = inventory::namespace_names(source.clone(), &form.source_cluster).await?;
    let missing = absent(&form.namespaces, &present);
    if !missing.is_empty() {
        errors.insert(
            field::NAMESPACE.to_string(),
            format!(
                "not on cluster {}: {}",
                form.source_cluster,
                missing.join(", ")
            ),
        );
        return Err(ApiError::invalid(errors));
    }
    let found: Vec<String> = inventory::pvcs_of(&source, &form.namespaces)
        .await?
        .into_iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let unknown = absent(&form.pvcs, &found);
    if !unknown.is_empty() {
        errors.insert(
            field::PVC.to_string(),
            format!("no such PVC: {}", unknown.join(", ")),
        );
    } else if form.pvcs.is_empty() && !found.is_empty() {
        errors.insert(
            field::PVC.to_string(),
            "choose at least one PVC (a plan that names none copies all of them)".into(),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// The names of `wanted` that `present` lacks.
fn absent<'a>(wanted: &'a [String], present: &[String]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|name| !present.contains(name))
        .map(String::as_str)
        .collect()
}

/// `POST /api/plans`: creates a MigrationPlan from the form, as the user.
pub async fn create_plan(
    State(console): State<Console>,
    user: User,
    Json(form): Json<NewPlan>,
) -> Result<impl IntoResponse, ApiError> {
    let errors = check_form(&form);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    check_clusters(&console, &user, &form).await?;
    let fields = json!({"namespaces": form.namespaces, "pvcs": form.pvcs});
    // The plan file's own checks, with its messages, before anything is
    // created (the controller checks again against the clusters).
    let mut file = fields.clone();
    file["name"] = json!(form.name);
    let file: PlanFile = serde_json::from_value(file)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    crate::plan::resolve(file, &PlanFlags::default(), "the plan")
        .map_err(|errors| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, errors.to_string()))?;
    let plan: MigrationPlan = serde_json::from_value(json!({
        "apiVersion": "mover.io/v1alpha1",
        "kind": "MigrationPlan",
        "metadata": {"name": form.name},
        "spec": {
            "sourceCluster": form.source_cluster,
            "destinationCluster": form.destination_cluster,
            "plan": fields,
        },
    }))
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let plans = Api::<MigrationPlan>::namespaced(user.client.clone(), console.namespace());
    match plans.create(&PostParams::default(), &plan).await {
        Ok(_) => Ok((StatusCode::CREATED, Json(json!({"name": form.name})))),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(ApiError::invalid(
            [(
                field::NAME.to_string(),
                format!("a plan named {} exists", form.name),
            )]
            .into(),
        )),
        Err(e) => {
            let mut error = ApiError::kube(&format!("creating MigrationPlan {}", form.name), e);
            error.fields = std::mem::take(&mut error.fields)
                .into_iter()
                .map(|(field, message)| (form_field(&field).to_string(), message))
                .collect();
            Err(error)
        }
    }
}

#[derive(Deserialize)]
pub struct StartRun {
    kind: RunKind,
}

/// `POST /api/plans/NAME/runs`: creates a Migration of the plan, as the
/// user; the controller runs it.
pub async fn start_run(
    State(console): State<Console>,
    user: User,
    Path(plan): Path<String>,
    Json(run): Json<StartRun>,
) -> Result<impl IntoResponse, ApiError> {
    Api::<MigrationPlan>::namespaced(user.client.clone(), console.namespace())
        .get(&plan)
        .await
        .map_err(|e| ApiError::kube(&format!("reading MigrationPlan {plan}"), e))?;
    let kind = run.kind.as_str();
    let migration: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mover.io/v1alpha1",
        "kind": "Migration",
        "metadata": {
            "generateName": format!("{plan}-{kind}-"),
            "labels": {PLAN_LABEL: plan},
        },
        "spec": {"planRef": plan, "kind": kind},
    }))
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let created = migrations(&console, &user)
        .create(&PostParams::default(), &migration)
        .await
        .map_err(|e| ApiError::kube(&format!("starting a {kind} run of plan {plan}"), e))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": created.metadata.name})),
    ))
}

/// `DELETE /api/migrations/NAME`: the controller's finalizer stops the
/// run and removes its transfer pods before the Migration goes.
pub async fn cancel(
    State(console): State<Console>,
    user: User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    migrations(&console, &user)
        .delete(&name, &DeleteParams::default())
        .await
        .map_err(|e| ApiError::kube(&format!("cancelling Migration {name}"), e))?;
    Ok(Json(json!({})))
}

fn migrations(console: &Console, user: &User) -> Api<DynamicObject> {
    Api::namespaced_with(
        user.client.clone(),
        console.namespace(),
        &crate::migration::resource(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> NewPlan {
        NewPlan {
            name: "app".into(),
            source_cluster: "source".into(),
            destination_cluster: "host".into(),
            namespaces: vec!["shop".into()],
            pvcs: vec!["shop/data".into()],
        }
    }

    #[test]
    fn a_complete_form_passes() {
        assert!(check_form(&form()).is_empty());
    }

    #[test]
    fn each_problem_is_told_at_its_field() {
        let bad = NewPlan {
            name: "App_1".into(),
            source_cluster: "x".into(),
            destination_cluster: "x".into(),
            namespaces: vec![],
            pvcs: vec!["other/data".into(), "nope".into()],
        };
        let errors = check_form(&bad);
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                field::DESTINATION,
                field::NAMESPACE,
                field::NAME,
                field::PVC
            ]
        );
        assert!(errors[field::NAME].contains("App_1"));
        assert!(errors[field::PVC].contains("other/data"));
    }

    #[test]
    fn api_causes_map_to_form_fields() {
        assert_eq!(form_field("metadata.name"), field::NAME);
        assert_eq!(form_field("spec.plan.pvcs[2]"), field::PVC);
        assert_eq!(form_field("spec.other"), "spec.other");
    }
}
