//! Whether a node is one a pod (or a volume) may use: a pod's
//! `nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution` node
//! affinity, a PersistentVolume's `nodeAffinity`. Node selector terms are
//! ORed; the requirements of one term are ANDed (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`, `Gt`, `Lt` on labels; `In`/`NotIn` on the
//! `metadata.name` field); a term without requirements matches no node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, Pod, PodSpec,
};
use kube::ResourceExt as _;

/// Whether the pod's nodeSelector and required node affinity both accept
/// the node.
pub fn pod_fits(pod: &Pod, node: &Node) -> bool {
    pod.spec.as_ref().is_none_or(|spec| spec_fits(spec, node))
}

/// [`pod_fits`] for a pod spec (a template's).
pub fn spec_fits(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.labels();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selected && required.is_none_or(|selector| selector_matches(selector, node))
}

/// Whether the volume's node affinity (if any) accepts the node.
pub fn volume_fits(volume: &PersistentVolume, node: &Node) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
        .and_then(|affinity| affinity.required.as_ref())
        .is_none_or(|selector| selector_matches(selector, node))
}

fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, node))
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let name = BTreeMap::from([("metadata.name".to_string(), node.name_any())]);
    expressions
        .iter()
        .all(|requirement| requirement_matches(requirement, node.labels()))
        && fields.iter().all(|requirement| {
            matches!(requirement.operator.as_str(), "In" | "NotIn")
                && requirement_matches(requirement, &name)
        })
}

fn requirement_matches(
    requirement: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let value = labels.get(&requirement.key);
    let compare = |wanted: fn(i64, i64) -> bool| {
        let [bound] = values else {
            return false;
        };
        match (
            value.map(|value| value.parse::<i64>()),
            bound.parse::<i64>(),
        ) {
            (Some(Ok(value)), Ok(bound)) => wanted(value, bound),
            _ => false,
        }
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.contains(value)),
        "NotIn" => value.is_none_or(|value| !values.contains(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(|value, bound| value > bound),
        "Lt" => compare(|value, bound| value < bound),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "p" }, "spec": spec })).unwrap()
    }

    fn requiring(expressions: serde_json::Value) -> Pod {
        pod(json!({ "containers": [], "affinity": { "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": expressions }],
            },
        } } }))
    }

    #[test]
    fn match_expressions_use_every_operator() {
        let ssd = node("n1", json!({ "disk": "ssd", "cores": "8" }));
        let accepts = |expressions| pod_fits(&requiring(expressions), &ssd);
        assert!(accepts(
            json!([{ "key": "disk", "operator": "In", "values": ["ssd", "nvme"] }])
        ));
        assert!(!accepts(
            json!([{ "key": "disk", "operator": "In", "values": ["hdd"] }])
        ));
        assert!(accepts(
            json!([{ "key": "disk", "operator": "NotIn", "values": ["hdd"] }])
        ));
        assert!(accepts(
            json!([{ "key": "zone", "operator": "NotIn", "values": ["a"] }])
        ));
        assert!(accepts(json!([{ "key": "disk", "operator": "Exists" }])));
        assert!(!accepts(
            json!([{ "key": "disk", "operator": "DoesNotExist" }])
        ));
        assert!(accepts(
            json!([{ "key": "zone", "operator": "DoesNotExist" }])
        ));
        assert!(accepts(
            json!([{ "key": "cores", "operator": "Gt", "values": ["4"] }])
        ));
        assert!(!accepts(
            json!([{ "key": "cores", "operator": "Lt", "values": ["4"] }])
        ));
        assert!(!accepts(
            json!([{ "key": "disk", "operator": "Gt", "values": ["4"] }])
        ));
        assert!(!accepts(json!([
            { "key": "disk", "operator": "Exists" },
            { "key": "zone", "operator": "Exists" },
        ])));
    }

    #[test]
    fn terms_are_ored_and_an_empty_term_matches_nothing() {
        let n1 = node("n1", json!({ "disk": "ssd" }));
        let terms = |terms| {
            pod(json!({ "containers": [], "affinity": { "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": terms },
            } } }))
        };
        assert!(pod_fits(
            &terms(json!([
                { "matchExpressions": [{ "key": "disk", "operator": "In", "values": ["hdd"] }] },
                { "matchFields": [{ "key": "metadata.name", "operator": "In", "values": ["n1"] }] },
            ])),
            &n1
        ));
        assert!(!pod_fits(&terms(json!([{}])), &n1));
    }

    #[test]
    fn the_node_selector_and_the_affinity_must_both_match() {
        let n1 = node("n1", json!({ "disk": "ssd" }));
        let mut both = requiring(json!([{ "key": "disk", "operator": "Exists" }]));
        assert!(pod_fits(&both, &n1));
        both.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "hdd".to_string())].into());
        assert!(!pod_fits(&both, &n1));
    }
}
