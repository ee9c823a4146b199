//! Velero's include/exclude lists (pkg/util/collections/includes_excludes.go)
//! for namespaces and resources.
//!
//! Entries are globs (`*` alone includes everything); excludes win.
//! Resource entries are first resolved through the cluster's discovery as
//! Velero's `discovery.Helper.ResourceFor` does, so a short name
//! (`deploy`), the plural, the singular, the kind (`Deployment`) and
//! `name.group` forms all stand for the `plural.group` the items are filed
//! under; an entry the cluster does not know stays as written.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use kube::ResourceExt as _;

use super::glob::Glob;

/// An include list and an exclude list.
#[derive(Debug, Default, Clone)]
pub(super) struct IncludesExcludes {
    includes: Vec<String>,
    excludes: Vec<String>,
    include_globs: Vec<Glob>,
    exclude_globs: Vec<Glob>,
}

impl IncludesExcludes {
    pub fn new(includes: Option<&Vec<String>>, excludes: Option<&Vec<String>>) -> Self {
        let list = |list: Option<&Vec<String>>| list.cloned().unwrap_or_default();
        Self::of(list(includes), list(excludes))
    }

    fn of(includes: Vec<String>, excludes: Vec<String>) -> Self {
        // An entry that is not a valid glob matches only itself.
        let globs = |list: &[String]| {
            list.iter()
                .map(|entry| {
                    Glob::compile(entry, None)
                        .or_else(|_| Glob::compile(&escape(entry), None))
                        .unwrap_or_else(|_| Glob::compile("", None).expect("empty glob"))
                })
                .collect()
        };
        Self {
            include_globs: globs(&includes),
            exclude_globs: globs(&excludes),
            includes,
            excludes,
        }
    }

    /// The resource lists with their entries resolved by `resolver`.
    pub fn resources(
        includes: Option<&Vec<String>>,
        excludes: Option<&Vec<String>>,
        resolver: &Resolver,
    ) -> Self {
        let resolve = |list: Option<&Vec<String>>| {
            list.into_iter()
                .flatten()
                .map(|entry| resolver.resolve(entry))
                .collect()
        };
        Self::of(resolve(includes), resolve(excludes))
    }

    /// `IncludeEverything`: nothing excluded, and nothing or only `*`
    /// included.
    pub fn includes_everything(&self) -> bool {
        self.excludes.is_empty()
            && (self.includes.is_empty() || (self.includes.len() == 1 && self.includes[0] == "*"))
    }

    /// `ShouldInclude`.
    pub fn includes(&self, name: &str) -> bool {
        if self.exclude_globs.iter().any(|g| g.matches(name)) {
            return false;
        }
        self.includes.is_empty()
            || self.includes.iter().any(|i| i == "*")
            || self.include_globs.iter().any(|g| g.matches(name))
    }

    /// The included entries (`GetIncludes`).
    pub fn included(&self) -> &[String] {
        &self.includes
    }

    /// `ValidateIncludesExcludes`: what Velero refuses in a pair of lists.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.includes.len() > 1 && self.includes.iter().any(|i| i == "*") {
            problems.push(
                "includes list must either contain '*' only, or a non-empty list of items".into(),
            );
        }
        if self.excludes.iter().any(|e| e == "*") {
            problems.push("excludes list cannot contain '*'".into());
        }
        let mut excludes = self.excludes.clone();
        excludes.sort();
        excludes.dedup();
        for item in excludes {
            if self.includes.contains(&item) {
                problems.push(format!(
                    "excludes list cannot contain an item in the includes list: {item}"
                ));
            }
        }
        problems
    }
}

fn escape(entry: &str) -> String {
    entry
        .chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | ',' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The cluster's resource names, read from its discovery documents (with
/// their short names) over HTTP as Velero's discovery helper reads them.
#[derive(Debug, Default)]
pub(super) struct Resolver {
    /// Every lowercase name a resource answers to -> its `plural[.group]`.
    aliases: HashMap<String, String>,
}

impl Resolver {
    /// The cluster's names; none (every entry as written) when discovery
    /// fails, as Velero keeps an entry it cannot resolve.
    pub async fn discover_or_empty(client: &kube::Client) -> Self {
        Self::discover(client).await.unwrap_or_else(|error| {
            tracing::warn!("velero: discovering resource names: {error}");
            Self::default()
        })
    }

    async fn discover(client: &kube::Client) -> Result<Self, kube::Error> {
        let mut resolver = Self::default();
        let core = client.list_core_api_resources("v1").await?;
        resolver.add("", &core.resources);
        for group in client.list_api_groups().await?.groups {
            let Some(version) = group
                .preferred_version
                .as_ref()
                .or_else(|| group.versions.first())
            else {
                continue;
            };
            match client
                .list_api_group_resources(&version.group_version)
                .await
            {
                Ok(list) => resolver.add(&group.name, &list.resources),
                Err(error) => tracing::debug!("velero: discovering {}: {error}", group.name),
            }
        }
        Ok(resolver)
    }

    fn add(
        &mut self,
        group: &str,
        resources: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource],
    ) {
        for resource in resources.iter().filter(|r| !r.name.contains('/')) {
            let full = group_resource(group, &resource.name);
            let mut names = vec![
                resource.name.clone(),
                resource.singular_name.clone(),
                resource.kind.to_ascii_lowercase(),
            ];
            names.extend(resource.short_names.iter().flatten().cloned());
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                let name = name.to_ascii_lowercase();
                if !group.is_empty() {
                    self.aliases
                        .entry(format!("{name}.{group}"))
                        .or_insert_with(|| full.clone());
                }
                // A bare name means the first group that has it (the core
                // group comes first, as in Velero's sorted discovery).
                self.aliases.entry(name).or_insert_with(|| full.clone());
            }
        }
    }

    /// The `plural[.group]` an include/exclude entry stands for.
    pub fn resolve(&self, entry: &str) -> String {
        if entry == "*" {
            return entry.to_string();
        }
        let lower = entry.to_ascii_lowercase();
        self.aliases.get(&lower).cloned().unwrap_or(lower)
    }
}

/// `plural.group`, or `plural` for the core group: how Velero names
/// resources in a backup and in include/exclude lists.
pub(super) fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// The label selector, or each of the `orLabelSelectors` (any must
/// match; none: everything), with what cannot be parsed added to `errors`.
pub(super) fn selectors(
    label_selector: Option<&LabelSelector>,
    or_label_selectors: Option<&Vec<LabelSelector>>,
    errors: &mut Vec<String>,
) -> Vec<Selector> {
    let mut selectors = Vec::new();
    for selector in label_selector
        .into_iter()
        .chain(or_label_selectors.into_iter().flatten())
    {
        match Selector::try_from(selector.clone()) {
            Ok(selector) => selectors.push(selector),
            Err(error) => errors.push(format!("invalid label selector: {error}")),
        }
    }
    selectors
}

/// Whether `object` carries `velero.io/exclude-from-backup=true`.
pub(super) fn excluded_from_backup(object: &kube::api::DynamicObject) -> bool {
    object
        .labels()
        .get("velero.io/exclude-from-backup")
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn api_resource(name: &str, singular: &str, kind: &str, short: &[&str]) -> APIResource {
        APIResource {
            name: name.into(),
            singular_name: singular.into(),
            kind: kind.into(),
            short_names: Some(short.iter().map(|s| s.to_string()).collect()),
            ..APIResource::default()
        }
    }

    #[test]
    fn resource_entries_resolve_by_short_name_kind_singular_and_group() {
        let mut resolver = Resolver::default();
        resolver.add(
            "",
            &[api_resource(
                "persistentvolumeclaims",
                "persistentvolumeclaim",
                "PersistentVolumeClaim",
                &["pvc"],
            )],
        );
        resolver.add(
            "apps",
            &[api_resource(
                "deployments",
                "deployment",
                "Deployment",
                &["deploy"],
            )],
        );
        resolver.add(
            "image.openshift.io",
            &[api_resource(
                "imagestreams",
                "imagestream",
                "ImageStream",
                &["is"],
            )],
        );
        for entry in [
            "deploy",
            "Deployment",
            "deployments",
            "deployment.apps",
            "deployments.apps",
        ] {
            assert_eq!(resolver.resolve(entry), "deployments.apps", "{entry}");
        }
        assert_eq!(resolver.resolve("pvc"), "persistentvolumeclaims");
        assert_eq!(
            resolver.resolve("imagestreams.image.openshift.io"),
            "imagestreams.image.openshift.io"
        );
        assert_eq!(
            resolver.resolve("unknown.example.com"),
            "unknown.example.com"
        );
        let filter = IncludesExcludes::resources(None, list(&["pvc", "is"]).as_ref(), &resolver);
        assert!(
            !filter.includes("persistentvolumeclaims")
                && !filter.includes("imagestreams.image.openshift.io")
        );
        assert!(filter.includes("configmaps"));
    }

    #[test]
    fn globs_match_and_excludes_win() {
        let filter =
            IncludesExcludes::new(list(&["shop-*"]).as_ref(), list(&["shop-old"]).as_ref());
        assert!(
            filter.includes("shop-new")
                && !filter.includes("shop-old")
                && !filter.includes("other")
        );
        assert!(!filter.includes_everything());
        assert!(IncludesExcludes::new(list(&["*"]).as_ref(), None).includes_everything());
    }

    #[test]
    fn invalid_lists_get_velero_messages() {
        let filter = IncludesExcludes::new(list(&["*", "a"]).as_ref(), list(&["*", "a"]).as_ref());
        assert_eq!(
            filter.problems(),
            vec![
                "includes list must either contain '*' only, or a non-empty list of items"
                    .to_string(),
                "excludes list cannot contain '*'".to_string(),
                "excludes list cannot contain an item in the includes list: *".to_string(),
                "excludes list cannot contain an item in the includes list: a".to_string(),
            ]
        );
    }
}
