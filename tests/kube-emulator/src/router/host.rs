//! Route host names as OpenShift checks them.
//!
//! A host must be a DNS-1123 subdomain (at most 253 characters) made of
//! DNS-1123 labels (each at most 63 characters). The API server refuses a
//! Route naming another (`api::validation`), and the router refuses to
//! admit a Route whose host fails the same checks (`InvalidHost`): that is
//! what happens to a Route without a host whose generated one,
//! `<name>-<namespace>.<apps domain>`, has a first label over 63
//! characters.
//!
//! The messages are the real ones, field error bodies such as
//! `Invalid value: "<host>": must be no more than 63 characters`.

/// The annotation that exempts a Route's host from the label checks at
/// the API (the subdomain check still applies).
pub(crate) const ALLOW_NON_DNS_COMPLIANT: &str = "route.openshift.io/allow-non-dns-compliant-host";

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// What is wrong with `host`, as field error bodies for `spec.host`;
/// empty when it is a valid host. `labels` says whether each label is
/// checked too (the API skips that for exempted Routes).
pub(crate) fn problems(host: &str, labels: bool) -> Vec<String> {
    let invalid = |why: &str| format!("Invalid value: {}: {why}", quoted(host));
    let mut problems = Vec::new();
    if host.len() > SUBDOMAIN_MAX || !host.split('.').all(is_label_shaped) {
        problems.push(invalid(
            "host must conform to DNS 952 subdomain conventions",
        ));
    }
    if labels {
        for label in host.split('.') {
            problems.extend(label_problems(label).iter().map(|why| invalid(why)));
        }
    }
    problems
}

/// The field errors of `problems(host, ..)` as the router reports them in
/// an `InvalidHost` condition.
pub(crate) fn rejection(problems: &[String]) -> String {
    let errors: Vec<String> = problems.iter().map(|p| format!("spec.host: {p}")).collect();
    format!("host name validation errors: {}", errors.join(", "))
}

/// Whether every label of `host` is a valid DNS-1123 label.
pub(crate) fn has_valid_labels(host: &str) -> bool {
    host.split('.')
        .all(|label| label_problems(label).is_empty())
}

/// Why `label` is not a DNS-1123 label, as apimachinery's `IsDNS1123Label`
/// says it.
fn label_problems(label: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if label.len() > LABEL_MAX {
        problems.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !is_label_shaped(label) {
        problems.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    problems
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, whatever the length.
fn is_label_shaped(label: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    label.starts_with(alphanumeric)
        && label.ends_with(alphanumeric)
        && label.chars().all(|c| alphanumeric(c) || c == '-')
}

/// `value` quoted as Go's `%q` quotes it in field errors.
fn quoted(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts_have_no_problems() {
        for host in ["a.test", "receiver-app.apps.source.emu.test", "1-2.x"] {
            assert_eq!(problems(host, true), Vec::<String>::new(), "{host}");
        }
    }

    #[test]
    fn a_label_over_63_characters_is_named_with_the_real_message() {
        let host = format!("{}.apps.test", "a".repeat(64));
        assert_eq!(
            problems(&host, true),
            [format!(
                "Invalid value: \"{host}\": must be no more than 63 characters"
            )]
        );
        assert!(problems(&host, false).is_empty(), "only labels are wrong");
        assert!(!has_valid_labels(&host));
        assert_eq!(
            rejection(&problems(&host, true)),
            format!(
                "host name validation errors: spec.host: Invalid value: \"{host}\": must be no more than 63 characters"
            )
        );
    }

    #[test]
    fn malformed_and_overlong_hosts_are_not_subdomains() {
        for host in ["Upper.test", "a..b", "-a.test", "a_b.test"] {
            let found = problems(host, false);
            assert_eq!(found.len(), 1, "{host}: {found:?}");
            assert!(
                found[0].ends_with("DNS 952 subdomain conventions"),
                "{found:?}"
            );
        }
        let long = ["a".repeat(60).as_str(); 5].join(".");
        assert_eq!(
            problems(&long, true).len(),
            1,
            "254 characters of good labels"
        );
    }
}
