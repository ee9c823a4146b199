//! Velero's include/exclude lists, for namespaces and for resources.

use kube::api::ApiResource;

/// An include list and an exclude list. An empty include list, or `*` in
/// it, includes everything; the exclude list wins over the include list.
/// Matching ignores case.
#[derive(Debug, Default)]
pub(super) struct IncludesExcludes {
    includes: Vec<String>,
    excludes: Vec<String>,
}

impl IncludesExcludes {
    pub fn new(includes: Option<&Vec<String>>, excludes: Option<&Vec<String>>) -> Self {
        let lower = |list: Option<&Vec<String>>| {
            list.into_iter()
                .flatten()
                .map(|s| s.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        Self {
            includes: lower(includes),
            excludes: lower(excludes),
        }
    }

    /// Whether everything is included (nothing named, or `*`).
    pub fn includes_everything(&self) -> bool {
        self.excludes.is_empty()
            && (self.includes.is_empty() || self.includes.iter().any(|i| i == "*"))
    }

    /// Whether the thing known by any of `names` is included.
    pub fn includes(&self, names: &[String]) -> bool {
        let named = |list: &[String]| {
            list.iter()
                .any(|entry| entry == "*" || names.iter().any(|n| n.eq_ignore_ascii_case(entry)))
        };
        !named(&self.excludes) && (self.includes.is_empty() || named(&self.includes))
    }

    /// Whether the namespace `name` is included.
    pub fn includes_name(&self, name: &str) -> bool {
        self.includes(&[name.to_string()])
    }

    /// The namespaces named in both lists, which Velero refuses.
    pub fn overlap(&self) -> Vec<String> {
        self.includes
            .iter()
            .filter(|i| *i != "*" && self.excludes.contains(i))
            .cloned()
            .collect()
    }
}

/// The names a resource answers to in include/exclude lists: `plural`,
/// `plural.group`, the kind and `kind.group`, all lowercase (so
/// `persistentvolumeclaims`, `deployments.apps`, `imagestreams.image.openshift.io`
/// and `configmap` all work).
pub(super) fn resource_names(resource: &ApiResource) -> Vec<String> {
    let kind = resource.kind.to_ascii_lowercase();
    let mut names = vec![resource.plural.clone(), kind.clone()];
    if !resource.group.is_empty() {
        names.push(format!("{}.{}", resource.plural, resource.group));
        names.push(format!("{kind}.{}", resource.group));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: "v1".into(),
            api_version: if group.is_empty() {
                "v1".into()
            } else {
                format!("{group}/v1")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn resources_are_matched_by_plural_group_or_kind_and_excludes_win() {
        let imagestreams = resource_names(&resource(
            "image.openshift.io",
            "ImageStream",
            "imagestreams",
        ));
        let pvcs = resource_names(&resource(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
        ));
        let configmaps = resource_names(&resource("", "ConfigMap", "configmaps"));
        let filter = IncludesExcludes::new(
            None,
            list(&["persistentvolumeclaims", "imagestreams.image.openshift.io"]).as_ref(),
        );
        assert!(!filter.includes(&imagestreams));
        assert!(!filter.includes(&pvcs));
        assert!(filter.includes(&configmaps));
        let only = IncludesExcludes::new(list(&["ConfigMap", "imagestreams"]).as_ref(), None);
        assert!(
            only.includes(&configmaps) && only.includes(&imagestreams) && !only.includes(&pvcs)
        );
        let everything_but =
            IncludesExcludes::new(list(&["*"]).as_ref(), list(&["configmaps"]).as_ref());
        assert!(!everything_but.includes(&configmaps) && everything_but.includes(&pvcs));
        assert!(!everything_but.includes_everything());
        assert!(IncludesExcludes::new(list(&["*"]).as_ref(), None).includes_everything());
    }

    #[test]
    fn namespaces_in_both_lists_are_reported() {
        let filter = IncludesExcludes::new(list(&["a", "b"]).as_ref(), list(&["b"]).as_ref());
        assert_eq!(filter.overlap(), vec!["b".to_string()]);
        assert!(
            filter.includes_name("a") && !filter.includes_name("b") && !filter.includes_name("c")
        );
    }
}
