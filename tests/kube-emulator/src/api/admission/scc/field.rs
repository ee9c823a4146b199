//! Field errors worded as the API machinery's `field.Error` words them
//! (`path: Invalid value: 0: why`, `path: Required value`,
//! `path: Forbidden: why`), and their aggregation into one message
//! (duplicates dropped; several listed in brackets).

use std::fmt;

/// A bad value, printed as Go prints it in a field error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    Int(i64),
    Bool(bool),
    Text(String),
    /// A missing value (`null`).
    Null,
    /// Printed as given (`[]int64{0}`).
    Raw(String),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Int(n) => write!(f, "{n}"),
            Bad::Bool(b) => write!(f, "{b}"),
            Bad::Text(t) => write!(f, "{t:?}"),
            Bad::Null => write!(f, "\"null\""),
            Bad::Raw(r) => write!(f, "{r}"),
        }
    }
}

/// `[]int64{1, 2}`: a list of ids as Go's `%#v` prints it.
pub fn int64s(ids: &[i64]) -> Bad {
    let listed: Vec<String> = ids.iter().map(i64::to_string).collect();
    Bad::Raw(format!("[]int64{{{}}}", listed.join(", ")))
}

/// One field error, already worded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(pub String);

pub fn invalid(path: &str, value: Bad, detail: &str) -> FieldError {
    FieldError(format!("{path}: Invalid value: {value}: {detail}"))
}

pub fn required(path: &str, detail: &str) -> FieldError {
    if detail.is_empty() {
        FieldError(format!("{path}: Required value"))
    } else {
        FieldError(format!("{path}: Required value: {detail}"))
    }
}

pub fn forbidden(path: &str, detail: &str) -> FieldError {
    FieldError(format!("{path}: Forbidden: {detail}"))
}

/// One message for a list of errors: the single error alone, several in
/// brackets, each message once.
pub fn aggregate(errors: &[FieldError]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for error in errors {
        if !unique.contains(&error.0.as_str()) {
            unique.push(&error.0);
        }
    }
    match unique.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}
