//! RBAC policy rules: what one rule of a Role or ClusterRole grants, and
//! whether a set of rules covers another (the escalation check).

use std::fmt::Write as _;

use serde_json::Value;

use super::Attributes;

/// `*` in verbs, apiGroups, resources and nonResourceURLs.
const ALL: &str = "*";

/// One `rules[]` entry of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn has(set: &[String], wanted: &str) -> bool {
    set.iter().any(|s| s == wanted)
}

impl Rule {
    pub fn from_json(rule: &Value) -> Self {
        Self {
            verbs: strings(&rule["verbs"]),
            api_groups: strings(&rule["apiGroups"]),
            resources: strings(&rule["resources"]),
            resource_names: strings(&rule["resourceNames"]),
            non_resource_urls: strings(&rule["nonResourceURLs"]),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn all_of(role: &Value) -> Vec<Self> {
        role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Self::from_json)
            .collect()
    }

    /// Whether this rule allows the request `attributes` describe.
    pub fn allows(&self, attributes: &Attributes<'_>) -> bool {
        let verb = has(&self.verbs, ALL) || has(&self.verbs, attributes.verb);
        if !verb {
            return false;
        }
        if attributes.is_resource_request() {
            let group = has(&self.api_groups, ALL) || has(&self.api_groups, attributes.group);
            let name = self.resource_names.is_empty()
                || (!attributes.name.is_empty() && has(&self.resource_names, attributes.name));
            group && name && self.matches_resource(attributes.resource, attributes.subresource)
        } else {
            self.non_resource_urls
                .iter()
                .any(|url| url_covers(url, attributes.path))
        }
    }

    fn matches_resource(&self, resource: &str, subresource: &str) -> bool {
        let combined = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        self.resources.iter().any(|granted| {
            granted == ALL
                || *granted == combined
                || (!subresource.is_empty() && granted.strip_prefix("*/") == Some(subresource))
        })
    }

    /// This rule split into rules of one verb on one group and resource
    /// (and name), or on one non-resource URL: what a coverage check and
    /// an escalation message talk about.
    pub fn atoms(&self) -> Vec<Rule> {
        let mut atoms = Vec::new();
        let one = |s: &String| vec![s.clone()];
        for group in &self.api_groups {
            for resource in &self.resources {
                for verb in &self.verbs {
                    let atom = |names: Vec<String>| Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: names,
                        non_resource_urls: Vec::new(),
                    };
                    if self.resource_names.is_empty() {
                        atoms.push(atom(Vec::new()));
                    } else {
                        atoms.extend(self.resource_names.iter().map(|n| atom(one(n))));
                    }
                }
            }
        }
        for url in &self.non_resource_urls {
            for verb in &self.verbs {
                atoms.push(Rule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Rule::default()
                });
            }
        }
        atoms
    }

    /// Whether this rule grants everything `atom` (one of `atoms()`) does.
    fn covers(&self, atom: &Rule) -> bool {
        let all_in =
            |set: &[String], wanted: &[String]| has(set, ALL) || wanted.iter().all(|w| has(set, w));
        let resources = atom.resources.iter().all(|wanted| {
            has(&self.resources, ALL)
                || has(&self.resources, wanted)
                || wanted
                    .split_once('/')
                    .is_some_and(|(_, sub)| has(&self.resources, &format!("*/{sub}")))
        });
        let urls = atom.non_resource_urls.iter().all(|wanted| {
            self.non_resource_urls
                .iter()
                .any(|url| url_covers(url, wanted))
        });
        let names = self.resource_names.is_empty()
            || (!atom.resource_names.is_empty()
                && atom
                    .resource_names
                    .iter()
                    .all(|n| has(&self.resource_names, n)));
        all_in(&self.verbs, &atom.verbs)
            && (atom.api_groups.is_empty() || all_in(&self.api_groups, &atom.api_groups))
            && resources
            && urls
            && names
    }

    /// The rule as the real server prints it in escalation errors
    /// (`{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`).
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        for (label, values) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !values.is_empty() {
                let mut part = String::new();
                let _ = write!(part, "{label}:{}", go_quoted(values));
                parts.push(part);
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// A list of strings as Go's `%q` prints it: `["a" "b"]`.
pub fn go_quoted(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// Whether a rule's nonResourceURL (`/healthz`, `/api/*`, `*`) covers
/// `path`.
fn url_covers(url: &str, path: &str) -> bool {
    url == ALL
        || url == path
        || url
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// What of `wanted` the rules `held` do not grant, compacted (one rule per
/// group, resource and name with the verbs merged) and described as the
/// real server describes them, sorted; empty when `held` covers it all.
pub fn missing(held: &[Rule], wanted: &[Rule]) -> Vec<String> {
    let mut missing: Vec<Rule> = Vec::new();
    for atom in wanted.iter().flat_map(Rule::atoms) {
        if held.iter().any(|rule| rule.covers(&atom)) {
            continue;
        }
        let same_target = missing.iter_mut().find(|m| {
            m.api_groups == atom.api_groups
                && m.resources == atom.resources
                && m.resource_names == atom.resource_names
                && m.non_resource_urls == atom.non_resource_urls
        });
        match same_target {
            Some(rule) if !has(&rule.verbs, &atom.verbs[0]) => {
                rule.verbs.push(atom.verbs[0].clone())
            }
            Some(_) => {}
            None => missing.push(atom),
        }
    }
    let mut described: Vec<String> = missing.iter().map(Rule::compact_string).collect();
    described.sort();
    described.dedup();
    described
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(value: Value) -> Rule {
        Rule::from_json(&value)
    }

    fn attributes<'a>(
        verb: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            resource,
            subresource: sub,
            name,
            namespace: "shop",
            ..Attributes::default()
        }
    }

    #[test]
    fn resource_names_and_subresources_match_as_rbac_does() {
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]}),
        );
        assert!(named.allows(&attributes("get", "pods", "", "web")));
        assert!(!named.allows(&attributes("get", "pods", "", "db")));
        assert!(!named.allows(&attributes("list", "pods", "", "")));
        assert!(!named.allows(&attributes("get", "pods", "log", "web")));
        let logs = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}));
        assert!(logs.allows(&attributes("get", "pods", "log", "web")));
        assert!(!logs.allows(&attributes("get", "pods", "", "web")));
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}));
        let path = Attributes {
            verb: "get",
            path: "/apis/apps",
            ..Attributes::default()
        };
        assert!(urls.allows(&path));
    }

    #[test]
    fn missing_rights_are_compacted_and_described_like_the_real_server() {
        let held = [rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let wanted = [rule(
            json!({"verbs": ["get", "create", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}),
        )];
        assert_eq!(
            missing(&held, &wanted),
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "create" "delete"]}"#,
            ]
        );
        let star = [rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        assert!(missing(&star, &wanted).is_empty());
    }
}
