//! Image references: a repository and a tag or digest (`team/app:v1`,
//! `team/app@sha256:...`), optionally behind a registry host
//! (`registry.example:5000/team/app:v1`), checked against the grammar of
//! the distribution spec so that a bad name fails here, with its reason,
//! rather than as an odd 404 from a registry.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;

/// What a reference points at inside a repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

impl fmt::Display for Target {
    /// As it appears in a `/v2/<name>/manifests/<reference>` path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag(t) => f.write_str(t),
            Target::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A repository plus tag or digest, within one registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub repository: String,
    pub target: Target,
}

impl Reference {
    /// `repository:tag`, both checked.
    pub fn tag(repository: &str, tag: &str) -> Result<Reference, String> {
        check_repository(repository)?;
        check_tag(tag)?;
        Ok(Reference {
            repository: repository.to_string(),
            target: Target::Tag(tag.to_string()),
        })
    }

    /// `repository@digest`, the repository checked.
    pub fn digest(repository: &str, digest: Digest) -> Result<Reference, String> {
        check_repository(repository)?;
        Ok(Reference {
            repository: repository.to_string(),
            target: Target::Digest(digest),
        })
    }
}

impl FromStr for Reference {
    type Err = String;

    /// `repo:tag` or `repo@sha256:...`. A bare repository is refused: the
    /// implicit `latest` of docker is a guess this engine does not make.
    fn from_str(s: &str) -> Result<Reference, String> {
        let r = if let Some((repo, digest)) = s.split_once('@') {
            digest.parse().and_then(|d| Reference::digest(repo, d))
        } else {
            match s.rsplit_once(':') {
                // A ':' inside the last path component separates the tag.
                Some((repo, tag)) if !tag.contains('/') => Reference::tag(repo, tag),
                _ => Err("has neither a tag (:tag) nor a digest (@sha256:...)".to_string()),
            }
        };
        r.map_err(|e| format!("image reference {s:?}: {e}"))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "{}:{t}", self.repository),
            Target::Digest(d) => write!(f, "{}@{d}", self.repository),
        }
    }
}

/// A full image reference such as an ImageStream's
/// `image-registry.openshift-image-registry.svc:5000/ns/app@sha256:...`:
/// the registry host (when the first component names one) and the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]`, as written; None for a reference without a host.
    pub registry: Option<String>,
    pub reference: Reference,
}

impl FromStr for ImageReference {
    type Err = String;

    fn from_str(s: &str) -> Result<ImageReference, String> {
        // Docker's rule: the first component is a host when it has a '.'
        // or a ':' or is "localhost"; otherwise it is part of the path.
        let (registry, rest) = match s.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), rest)
            }
            _ => (None, s),
        };
        let reference = rest
            .parse()
            .map_err(|e: String| e.replacen(&format!("{rest:?}"), &format!("{s:?}"), 1))?;
        Ok(ImageReference {
            registry,
            reference,
        })
    }
}

/// Path components of lowercase alphanumerics joined by `.`, `_`, `__` or
/// runs of `-`, separated by `/`; at most 255 characters.
pub fn check_repository(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "repository name {name:?} is longer than 255 characters"
        ));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "repository name {name:?}: component {component:?} must be lowercase letters and \
                 digits, joined by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: exactly ".", "_", "__", or one or more "-".
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with \
             '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn tags_and_digests_parse_and_print_back() {
        let r: Reference = "team/app:v1.2".parse().unwrap();
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.target, Target::Tag("v1.2".into()));
        assert_eq!(r.to_string(), "team/app:v1.2");
        let r: Reference = format!("team/app@{D}").parse().unwrap();
        assert_eq!(r.target, Target::Digest(D.parse().unwrap()));
        assert_eq!(r.to_string(), format!("team/app@{D}"));
        assert_eq!(r.target.to_string(), D);
    }

    #[test]
    fn bad_references_name_what_is_wrong() {
        let e = "team/app".parse::<Reference>().unwrap_err();
        assert!(e.contains("neither a tag"), "{e}");
        let e = "Team/app:v1".parse::<Reference>().unwrap_err();
        assert!(e.contains("component \"Team\""), "{e}");
        let e = "team/app:-v1".parse::<Reference>().unwrap_err();
        assert!(e.contains("tag \"-v1\""), "{e}");
        let e = "team/app@sha256:1234".parse::<Reference>().unwrap_err();
        assert!(
            e.contains("team/app@sha256:1234") && e.contains("64"),
            "{e}"
        );
        for bad in [
            "a//b:t",
            "a/.b:t",
            "a/b.:t",
            "a/b..c:t",
            "a/b___c:t",
            ":t",
            "a/b:",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} was accepted");
        }
        for good in ["a:t", "a-b/c__d/e.f/g--h:T_1.x-y", "0/1:latest"] {
            assert!(good.parse::<Reference>().is_ok(), "{good} was refused");
        }
        assert!(check_tag(&"t".repeat(129)).is_err());
        assert!(check_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn registry_hosts_are_told_apart_from_path_components() {
        let r: ImageReference =
            format!("image-registry.openshift-image-registry.svc:5000/ns/app@{D}")
                .parse()
                .unwrap();
        assert_eq!(
            r.registry.as_deref(),
            Some("image-registry.openshift-image-registry.svc:5000")
        );
        assert_eq!(r.reference.repository, "ns/app");
        let r: ImageReference = "localhost/app:v1".parse().unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        let r: ImageReference = "ns/app:v1".parse().unwrap();
        assert_eq!(r.registry, None);
        assert_eq!(r.reference.repository, "ns/app");
        let r: ImageReference = "quay.io:443/ns/app:v1".parse().unwrap();
        assert_eq!(r.reference.to_string(), "ns/app:v1");
        let e = "quay.io/ns/App:v1".parse::<ImageReference>().unwrap_err();
        assert!(e.contains("quay.io/ns/App:v1"), "{e}");
    }
}
