//! ownerReferences: the controller reference an owner puts on what it
//! makes, and the claiming the real controllers do (`ControllerRefManager`):
//! adopt orphans that match the selector, release dependents that no
//! longer match.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt as _};
use serde_json::json;

use super::pods::selects;

/// The controller reference to `owner` (controller and
/// blockOwnerDeletion true).
pub(super) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner.controller_owner_ref(&()).unwrap_or_default()
}

/// The uid of the object's controller, if it has one.
pub(super) fn controller_uid<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true))
        .map(|reference| reference.uid.as_str())
}

/// The owner's claim on its candidates: those it controls and that still
/// match, plus orphans that match (adopted now, unless the owner is being
/// deleted); those it controls that no longer match are released.
pub(super) async fn claim<K>(
    api_for: impl Fn(&str) -> Api<K>,
    owner: &OwnerReference,
    owner_deleting: bool,
    selector: &LabelSelector,
    candidates: Vec<K>,
) -> anyhow::Result<Vec<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut claimed = Vec::new();
    for candidate in candidates {
        let matches = selects(selector, candidate.labels());
        let api = api_for(&candidate.namespace().unwrap_or_default());
        match controller_uid(&candidate) {
            Some(uid) if uid == owner.uid => {
                if matches {
                    claimed.push(candidate);
                } else {
                    set_owners(&api, &candidate, None).await?;
                }
            }
            None if matches && !owner_deleting && candidate.meta().deletion_timestamp.is_none() => {
                if let Some(adopted) = set_owners(&api, &candidate, Some(owner)).await? {
                    claimed.push(adopted);
                }
            }
            _ => {}
        }
    }
    Ok(claimed)
}

/// Adds `owner` as the controller of `object` (or, with `None`, removes
/// its controller reference), guarded by the object's resourceVersion.
/// Returns the object as written; `None` when it changed or vanished
/// meanwhile (the next round sees it again).
async fn set_owners<K>(
    api: &Api<K>,
    object: &K,
    owner: Option<&OwnerReference>,
) -> anyhow::Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut references: Vec<OwnerReference> = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|reference| reference.controller != Some(true))
        .cloned()
        .collect();
    references.extend(owner.cloned());
    let patch = json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "ownerReferences": references,
        }
    });
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(None),
        Err(error) => Err(error.into()),
    }
}
