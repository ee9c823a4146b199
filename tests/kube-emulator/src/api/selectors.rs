//! Label selectors (`app=x,tier!=db,env in (a,b),!legacy`) and field
//! selectors (`metadata.name=x,status.phase!=Running`), as lists and
//! watches filter by them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
        };
        let mut requirements = Vec::new();
        loop {
            parser.skip_spaces();
            if parser.done() {
                break;
            }
            requirements.push(parser.requirement()?);
            parser.skip_spaces();
            if parser.done() {
                break;
            }
            parser.expect(',')?;
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value),
            Requirement::NotEquals(key, value) => label(key) != Some(value),
            Requirement::In(key, values) => {
                label(key).is_some_and(|l| values.iter().any(|v| v == l))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|l| values.iter().all(|v| v != l))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
        })
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), String> {
        self.skip_spaces();
        match self.peek() {
            Some(c) if c == wanted => {
                self.at += 1;
                Ok(())
            }
            Some(c) => Err(format!(
                "expected {wanted:?} at position {} but found {c:?}",
                self.at
            )),
            None => Err(format!("expected {wanted:?} at the end")),
        }
    }

    /// A label key or value: letters, digits and `-_./`.
    fn word(&mut self) -> String {
        self.skip_spaces();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        self.skip_spaces();
        if self.peek() == Some('!') {
            self.at += 1;
            let key = self.key()?;
            return Ok(Requirement::NotExists(key));
        }
        let key = self.key()?;
        self.skip_spaces();
        let rest: String = self.chars[self.at..].iter().collect();
        if rest.starts_with("==") || rest.starts_with("!=") {
            self.at += 2;
            let value = self.word();
            return Ok(if rest.starts_with('!') {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            });
        }
        if rest.starts_with('=') {
            self.at += 1;
            return Ok(Requirement::Equals(key, self.word()));
        }
        if rest.is_empty() || rest.starts_with(',') {
            return Ok(Requirement::Exists(key));
        }
        let operator = self.word();
        let values = match operator.as_str() {
            "in" | "notin" => self.value_set()?,
            other => return Err(format!("unknown operator {other:?} after label {key:?}")),
        };
        Ok(if operator == "in" {
            Requirement::In(key, values)
        } else {
            Requirement::NotIn(key, values)
        })
    }

    fn key(&mut self) -> Result<String, String> {
        let key = self.word();
        if key.is_empty() {
            return Err(format!("expected a label key at position {}", self.at));
        }
        Ok(key)
    }

    fn value_set(&mut self) -> Result<Vec<String>, String> {
        self.expect('(')?;
        let mut values = Vec::new();
        loop {
            values.push(self.word());
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(')') => {
                    self.at += 1;
                    return Ok(values);
                }
                _ => return Err("unterminated value set: expected ',' or ')'".to_string()),
            }
        }
    }
}

/// A parsed field selector: `label=value` / `label==value` /
/// `label!=value` terms. A label is a dotted path into the object, unless
/// `translate` has mapped it onto the paths it reads for a resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<FieldTerm>);

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    /// Dotted paths into the object: the first with a non-empty value is
    /// the field's value.
    paths: Vec<String>,
    equal: bool,
    value: String,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((path, value)) = term.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = term.split_once("==") {
                (path, true, value)
            } else if let Some((path, value)) = term.split_once('=') {
                (path, true, value)
            } else {
                return Err(format!(
                    "invalid field selector term {term:?}: expected field=value or field!=value"
                ));
            };
            terms.push(FieldTerm {
                paths: vec![path.trim().to_string()],
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(Self(terms))
    }

    /// Replaces each term's label with the paths `paths_of` gives for it,
    /// or fails with its error (an unsupported label).
    pub fn translate(
        self,
        paths_of: impl Fn(&str) -> Result<Vec<String>, String>,
    ) -> Result<Self, String> {
        self.0
            .into_iter()
            .map(|term| {
                let paths = paths_of(&term.paths[0])?;
                Ok(FieldTerm { paths, ..term })
            })
            .collect::<Result<_, String>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|term| {
            let found = term
                .paths
                .iter()
                .map(|path| field_text(object, path))
                .find(|text| !text.is_empty())
                .unwrap_or_default();
            (found == term.value) == term.equal
        })
    }
}

/// The value at a dotted path as a field selector compares it: strings as
/// they are, a missing field or null as `""`.
fn field_text(object: &Value, path: &str) -> String {
    path.split('.')
        .try_fold(object, |v, part| v.get(part))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let object = labelled(json!({"app": "web", "tier": "front"}));
        let matches = |s: &str| LabelSelector::parse(s).unwrap().matches(&object);
        assert!(matches(""));
        assert!(matches("app=web"));
        assert!(matches("app==web,tier"));
        assert!(!matches("app!=web"));
        assert!(matches("app in (db, web)"));
        assert!(!matches("app notin (db,web)"));
        assert!(matches("env notin (prod)"));
        assert!(matches("!env"));
        assert!(!matches("!app"));
        assert!(matches("tier,app in (web),!env"));
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for bad in ["app in web", "app in (web", "app >< 3", "=x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_paths() {
        let object = labelled(json!({}));
        let matches = |s: &str| FieldSelector::parse(s).unwrap().matches(&object);
        assert!(matches("metadata.name=a,status.phase==Running"));
        assert!(matches("spec.nodeName!=n1"));
        assert!(matches("spec.nodeName="));
        assert!(!matches("metadata.name!=a"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn a_translated_label_reads_its_first_non_empty_path() {
        let object = json!({"source": {}, "reportingComponent": "ctl"});
        let selector = FieldSelector::parse("source=ctl")
            .unwrap()
            .translate(|_| Ok(vec!["source.component".into(), "reportingComponent".into()]))
            .unwrap();
        assert!(selector.matches(&object));
        let refused = FieldSelector::parse("nope=1")
            .unwrap()
            .translate(|label| Err(format!("field label not supported: {label}")));
        assert_eq!(refused.unwrap_err(), "field label not supported: nope");
    }
}
