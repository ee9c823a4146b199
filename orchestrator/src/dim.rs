//! Direct image migration (DESIGN.md stage 2): the images that a plan's
//! ImageStreams hold in the source cluster's internal registry are copied,
//! registry route to registry route, to `<destination>/<namespace>/<stream>:<tag>`,
//! and the destination ImageStreams are made to point at them.
//!
//! For each tag, the history items are copied oldest first, so the tag
//! ends on the newest image, as it is in the source. References into any
//! other registry (external images) are not copied: the destination
//! ImageStream keeps pointing at them, and the report lists them as
//! skipped. One failed image never stops the others.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::Api;
use serde::Serialize;
use serde_json::{json, Value};

use crate::clusters::Cluster;
use crate::display::Board;
use crate::kubeops::{apply, create_if_missing};
use crate::manifests;
use crate::plan::{ImagesPlan, NamespaceMapping, Plan, RegistrySpec};
use crate::registry::{
    copy_image, CopyReport, Credentials, ImageProgress, ImageReference, Reference, Registry,
    RegistryConfig, Trust,
};
use crate::report::human_bytes;

/// The OpenShift ImageStream type.
pub fn image_stream_resource() -> ApiResource {
    ApiResource {
        group: "image.openshift.io".into(),
        version: "v1".into(),
        api_version: "image.openshift.io/v1".into(),
        kind: "ImageStream".into(),
        plural: "imagestreams".into(),
    }
}

/// What happened to one history item of one tag.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub namespace: String,
    pub image_stream: String,
    pub tag: String,
    /// The reference as the source ImageStream holds it.
    pub reference: String,
    /// Where it goes: `registry/namespace/stream:tag` (none if skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub state: ImageState,
    /// What the copy did (digest, blobs uploaded, mounted, present, bytes).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Copied,
    /// An external image: not in the source's internal registry.
    Skipped,
    Failed,
}

/// Connects to a registry as a plan describes it.
pub fn registry(side: &str, spec: &RegistrySpec) -> Result<Registry, String> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("images.{side}: reading {}: {e}", path.display()))
    };
    let credentials = match (&spec.username, &spec.password_file, &spec.token_file) {
        (Some(username), Some(password), _) => Credentials::Basic {
            username: username.clone(),
            password: read(password)?,
        },
        (_, _, Some(token)) => Credentials::Token(read(token)?),
        _ => Credentials::Anonymous,
    };
    let trust = match (&spec.ca_bundle, spec.insecure) {
        (Some(bundle), _) => Trust::CaBundle(bundle.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::Platform,
    };
    Registry::new(RegistryConfig {
        url: spec.url.clone(),
        credentials,
        trust,
        ..RegistryConfig::default()
    })
    .map_err(|e| format!("images.{side} registry {}: {e}", spec.url))
}

/// Preflight: both registries answer `/v2/` with the given credentials.
pub async fn preflight(images: &ImagesPlan) -> Vec<String> {
    let mut problems = Vec::new();
    for (side, spec) in [
        ("source", &images.source),
        ("destination", &images.destination),
    ] {
        match registry(side, spec) {
            Ok(registry) => {
                if let Err(e) = registry.check().await {
                    problems.push(format!(
                        "the {side} registry {} does not answer /v2/ with the given credentials: {e}",
                        spec.url
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    problems
}

/// Copies the internal images of every ImageStream in the plan's
/// namespaces and updates the destination ImageStreams.
pub async fn run(
    plan: &Plan,
    images: &ImagesPlan,
    source: &Cluster,
    destination: &Cluster,
    board: &Board,
) -> (Vec<ImageReport>, Vec<String>) {
    let (src, dst) = match (
        registry("source", &images.source),
        registry("destination", &images.destination),
    ) {
        (Ok(src), Ok(dst)) => (src, dst),
        (Err(e), _) | (_, Err(e)) => return (Vec::new(), vec![e]),
    };
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for mapping in &plan.namespaces {
        match migrate_namespace(
            plan,
            images,
            mapping,
            source,
            destination,
            &src,
            &dst,
            board,
        )
        .await
        {
            Ok(mut done) => reports.append(&mut done),
            Err(e) => errors.push(format!("images of namespace {}: {e:#}", mapping.source)),
        }
    }
    (reports, errors)
}

#[allow(clippy::too_many_arguments)]
async fn migrate_namespace(
    plan: &Plan,
    images: &ImagesPlan,
    mapping: &NamespaceMapping,
    source: &Cluster,
    destination: &Cluster,
    src: &Registry,
    dst: &Registry,
    board: &Board,
) -> anyhow::Result<Vec<ImageReport>> {
    let resource = image_stream_resource();
    let streams =
        Api::<DynamicObject>::namespaced_with(source.client.clone(), &mapping.source, &resource)
            .list(&ListParams::default())
            .await?
            .items;
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let namespaces = Api::all(destination.client.clone());
    let source_ns = Api::all(source.client.clone()).get(&mapping.source).await?;
    create_if_missing(
        &namespaces,
        &manifests::destination_namespace(&source_ns, &mapping.destination, &plan.name),
    )
    .await?;

    let internal = images.source.internal_hosts();
    let dest_host = images
        .destination
        .internal_hosts()
        .into_iter()
        .next()
        .unwrap_or_default();
    let dest_streams = Api::<DynamicObject>::namespaced_with(
        destination.client.clone(),
        &mapping.destination,
        &resource,
    );
    let mut reports = Vec::new();
    for stream in streams {
        let name = stream.metadata.name.clone().unwrap_or_default();
        let mut spec_tags = Vec::new();
        for tag in history(&stream) {
            let mut newest = None;
            // Oldest first: the tag ends on the newest image.
            for item in tag.items.iter().rev() {
                let report =
                    copy_item(mapping, &name, &tag.name, item, &internal, src, dst, board).await;
                if report.state == ImageState::Skipped {
                    newest = Some(item.clone());
                } else if let Some(digest) = report.copy.as_ref().map(|c| &c.digest) {
                    newest = Some(format!(
                        "{dest_host}/{}/{name}@{digest}",
                        mapping.destination
                    ));
                }
                reports.push(report);
            }
            if let Some(reference) = newest {
                spec_tags.push(json!({
                    "name": tag.name,
                    "from": {"kind": "DockerImage", "name": reference},
                    "referencePolicy": {"type": "Local"},
                }));
            }
        }
        let mut object = DynamicObject::new(&name, &resource)
            .within(&mapping.destination)
            .data(json!({"spec": {"lookupPolicy": stream.data["spec"]["lookupPolicy"].clone(), "tags": spec_tags}}));
        object.metadata.labels = Some(BTreeMap::from([(
            crate::names::MIGRATED_BY_LABEL.to_string(),
            plan.name.clone(),
        )]));
        apply(&dest_streams, &object).await.map_err(|e| {
            anyhow::anyhow!(
                "updating ImageStream {}/{name} in {}: {e}",
                mapping.destination,
                destination.describe()
            )
        })?;
    }
    Ok(reports)
}

/// A tag's history, newest item first (as ImageStreams keep it).
struct TagHistory {
    name: String,
    items: Vec<String>,
}

fn history(stream: &DynamicObject) -> Vec<TagHistory> {
    let tags = stream.data["status"]["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tags.iter()
        .filter_map(|tag| {
            let name = tag.get("tag")?.as_str()?.to_string();
            let items = tag
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.get("dockerImageReference")?.as_str().map(String::from))
                .collect();
            Some(TagHistory { name, items })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn copy_item(
    mapping: &NamespaceMapping,
    stream: &str,
    tag: &str,
    item: &str,
    internal: &[String],
    src: &Registry,
    dst: &Registry,
    board: &Board,
) -> ImageReport {
    let mut report = ImageReport {
        namespace: mapping.source.clone(),
        image_stream: stream.to_string(),
        tag: tag.to_string(),
        reference: item.to_string(),
        target: None,
        state: ImageState::Skipped,
        copy: None,
        error: None,
    };
    let parsed: ImageReference = match item.parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            report.state = ImageState::Failed;
            report.error = Some(format!("unreadable image reference: {e}"));
            return report;
        }
    };
    if !parsed
        .registry
        .as_ref()
        .is_some_and(|host| internal.contains(host))
    {
        board.println(&format!(
            "image {}/{stream}:{tag}: {item} is external, skipped",
            mapping.source
        ));
        return report;
    }
    let target = Reference::tag(&format!("{}/{stream}", mapping.destination), tag);
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            report.state = ImageState::Failed;
            report.error = Some(format!("destination name: {e}"));
            return report;
        }
    };
    report.target = Some(format!("{}/{target}", dst.name()));
    let key = format!("image {}/{stream}:{tag}", mapping.source);
    let progress = |p: ImageProgress| {
        board.set_line(
            &key,
            &format!(
                "{key:<40} copying  {}/{} blobs {}/{}",
                p.blobs_done,
                p.blobs_total,
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            ),
            false,
        );
    };
    match copy_image(src, &parsed.reference, dst, &target, &progress).await {
        Ok(copied) => {
            report.state = ImageState::Copied;
            board.set_line(
                &key,
                &format!(
                    "{key:<40} copied   {} blobs ({} uploaded, {} mounted, {} present) {}",
                    copied.blobs,
                    copied.uploaded,
                    copied.mounted,
                    copied.existing,
                    human_bytes(copied.bytes)
                ),
                true,
            );
            report.copy = Some(copied);
        }
        Err(e) => {
            report.state = ImageState::Failed;
            report.error = Some(e.to_string());
            board.set_line(&key, &format!("{key:<40} failed   {e}"), true);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reads_tags_newest_first() {
        let stream = DynamicObject::new("app", &image_stream_resource()).data(json!({
            "status": {"tags": [
                {"tag": "latest", "items": [
                    {"dockerImageReference": "image-registry.svc:5000/shop/app@sha256:bbbb"},
                    {"dockerImageReference": "image-registry.svc:5000/shop/app@sha256:aaaa"},
                ]},
                {"tag": "base", "items": [{"dockerImageReference": "quay.io/x/base@sha256:cccc"}]},
                {"items": []},
            ]}
        }));
        let tags = history(&stream);
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].name, "latest");
        assert_eq!(
            tags[0].items[0],
            "image-registry.svc:5000/shop/app@sha256:bbbb"
        );
        assert_eq!(
            tags[1].items,
            vec!["quay.io/x/base@sha256:cccc".to_string()]
        );
    }

    #[test]
    fn registry_reads_secrets_from_files_and_names_missing_ones() {
        let spec = RegistrySpec {
            url: "https://reg.example:5000".into(),
            token_file: Some("/nonexistent/token".into()),
            ..RegistrySpec::default()
        };
        let err = registry("source", &spec).err().unwrap();
        assert!(
            err.contains("images.source: reading /nonexistent/token"),
            "{err}"
        );
    }
}
