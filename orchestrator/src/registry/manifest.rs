//! Manifests: the four media types copied (Docker schema 2 and OCI image
//! manifests; Docker manifest lists and OCI indexes), content negotiation,
//! and reading and writing them with their digests checked.
//!
//! A manifest is copied as the exact bytes the source served: re-encoding
//! JSON would change its digest, and the digest is the image's identity.

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::Scope;
use super::client::{Body, Registry};
use super::digest::{Digest, Mismatch};
use super::error::{Error, ErrorKind};
use super::reference::{Reference, Target};

/// Media types of the manifests this engine copies.
pub mod media_type {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
}
use media_type::*;

/// Sent with every manifest request, so a registry serves what it stores
/// instead of converting (or refusing) it.
const ACCEPTED: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Registries refuse manifests over 4 MiB; so do we, rather than buffer
/// whatever a broken server sends.
const MAX_MANIFEST: usize = 4 << 20;

/// A reference to content: a blob or a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Where a non-distributable (foreign) layer is downloaded from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// Layers that registries do not hold (Windows base layers): they are
    /// fetched from their `urls`, so they are not copied, as with skopeo.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What a manifest refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An image: config and layers, all blobs.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list: one manifest per platform.
    Index { manifests: Vec<Descriptor> },
}

/// A manifest as served: its bytes, media type, digest and what it refers to.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: Digest,
    pub body: Bytes,
    pub content: Content,
}

impl Manifest {
    /// Parses `body`, served with `content_type`. The media type is the
    /// body's own `mediaType` when it has one (that is what the digest
    /// covers), else the Content-Type, else (OCI allows leaving it out)
    /// told by shape.
    pub fn parse(body: Bytes, content_type: Option<&str>) -> Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            config: Option<Descriptor>,
            layers: Option<Vec<Descriptor>>,
            manifests: Option<Vec<Descriptor>>,
        }
        let raw: Raw = serde_json::from_slice(&body).map_err(|e| format!("not a manifest: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err(format!(
                "schema version {:?}: only schema 2 (Docker v2 and OCI) manifests are supported",
                raw.schema_version
            ));
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| {
                [
                    DOCKER_MANIFEST,
                    DOCKER_MANIFEST_LIST,
                    OCI_MANIFEST,
                    OCI_INDEX,
                ]
                .contains(c)
            });
        let media_type = match (raw.media_type, header) {
            (Some(m), _) => m,
            (None, Some(h)) => h.to_string(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, None) => OCI_MANIFEST.to_string(),
        };
        let content = match media_type.as_str() {
            DOCKER_MANIFEST | OCI_MANIFEST => Content::Image {
                config: raw
                    .config
                    .ok_or_else(|| format!("{media_type} without a config"))?,
                layers: raw.layers.unwrap_or_default(),
            },
            DOCKER_MANIFEST_LIST | OCI_INDEX => Content::Index {
                manifests: raw
                    .manifests
                    .ok_or_else(|| format!("{media_type} without a manifests list"))?,
            },
            other => {
                return Err(format!(
                    "media type {other:?} is not a manifest type this engine copies"
                ))
            }
        };
        Ok(Manifest {
            media_type,
            digest: Digest::of(&body),
            body,
            content,
        })
    }

    /// The blobs an image manifest needs in its repository (config first),
    /// without foreign layers; none for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.content {
            Content::Image { config, layers } => std::iter::once(config)
                .chain(layers.iter().filter(|l| !l.is_foreign()))
                .collect(),
            Content::Index { .. } => Vec::new(),
        }
    }
}

fn manifest_path(r: &Reference) -> String {
    format!("/v2/{}/manifests/{}", r.repository, r.target)
}

fn object(r: &Reference) -> String {
    format!("manifest {}", r.target)
}

impl Registry {
    /// Reads a manifest, checking its digest: against the reference when
    /// that is a digest, and against the registry's Docker-Content-Digest.
    pub async fn get_manifest(&self, r: &Reference) -> Result<Manifest, Error> {
        let repo = Some(r.repository.as_str());
        let mut req = self.request(
            Method::GET,
            &manifest_path(r),
            Scope::pull(&r.repository),
            repo,
            Some(object(r)),
        );
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(ACCEPTED));
        let resp = self.send(req).await?;
        let resp = self
            .expect(resp, &[StatusCode::OK], repo, Some(object(r)))
            .await?;
        let fail = |kind| self.error(repo, Some(object(r)), kind);
        let content_type = header(&resp, CONTENT_TYPE.as_str());
        let claimed = header(&resp, "docker-content-digest");
        let body = read_limited(resp)
            .await
            .map_err(|m| fail(ErrorKind::Manifest(m)))?;
        let m = Manifest::parse(body, content_type.as_deref())
            .map_err(|m| fail(ErrorKind::Manifest(m)))?;
        let expected =
            match (&r.target, claimed) {
                (Target::Digest(d), _) => Some(d.clone()),
                (Target::Tag(_), Some(c)) => Some(c.parse().map_err(|e| {
                    fail(ErrorKind::Protocol(format!("Docker-Content-Digest: {e}")))
                })?),
                (Target::Tag(_), None) => None,
            };
        if let Some(expected) = expected.filter(|e| *e != m.digest) {
            return Err(fail(ErrorKind::Content(Mismatch::Digest {
                expected,
                actual: m.digest,
            })));
        }
        Ok(m)
    }

    /// The digest a tag (or digest) resolves to, or None when there is no
    /// such manifest. A HEAD: nothing is downloaded.
    pub async fn manifest_digest(&self, r: &Reference) -> Result<Option<Digest>, Error> {
        let repo = Some(r.repository.as_str());
        let mut req = self.request(
            Method::HEAD,
            &manifest_path(r),
            Scope::pull(&r.repository),
            repo,
            Some(object(r)),
        );
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(ACCEPTED));
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .expect(resp, &[StatusCode::OK], repo, Some(object(r)))
            .await?;
        match header(&resp, "docker-content-digest") {
            Some(d) => d.parse().map(Some).map_err(|e| {
                self.error(
                    repo,
                    Some(object(r)),
                    ErrorKind::Protocol(format!("Docker-Content-Digest: {e}")),
                )
            }),
            // Not every registry sends it on HEAD: read the manifest.
            None => Ok(Some(self.get_manifest(r).await?.digest)),
        }
    }

    /// Stores a manifest under a tag or its digest. The registry checks
    /// that everything it refers to is already in the repository, so
    /// callers put blobs and child manifests first. Returns the digest,
    /// checked against the registry's answer.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest, Error> {
        let repo = Some(r.repository.as_str());
        let fail = |kind| self.error(repo, Some(object(r)), kind);
        let digest = Digest::of(&body);
        if let Target::Digest(d) = &r.target {
            if *d != digest {
                return Err(fail(ErrorKind::Content(Mismatch::Digest {
                    expected: d.clone(),
                    actual: digest,
                })));
            }
        }
        let mut req = self.request(
            Method::PUT,
            &manifest_path(r),
            Scope::push(&r.repository),
            repo,
            Some(object(r)),
        );
        let ct = HeaderValue::from_str(media_type).map_err(|_| {
            fail(ErrorKind::Manifest(format!(
                "media type {media_type:?} is not a header value"
            )))
        })?;
        req.headers.insert(CONTENT_TYPE, ct);
        req.body = Body::Bytes(body);
        let resp = self.send(req).await?;
        let resp = self
            .expect(resp, &[StatusCode::CREATED], repo, Some(object(r)))
            .await?;
        if let Some(stored) = header(&resp, "docker-content-digest") {
            if stored != digest.to_string() {
                return Err(fail(ErrorKind::Protocol(format!(
                    "the registry stored the manifest as {stored}, but its content is {digest}"
                ))));
            }
        }
        Ok(digest)
    }
}

pub(crate) fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn read_limited(mut resp: Response) -> Result<Bytes, String> {
    let mut body = Vec::new();
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the manifest: {}", super::error::from_reqwest(&e)))?
    {
        if body.len() + c.len() > MAX_MANIFEST {
            return Err(format!("larger than {MAX_MANIFEST} bytes"));
        }
        body.extend_from_slice(&c);
    }
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn image(media: Option<&str>) -> String {
        let mt = media.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}},
            {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":5,"urls":["https://x/l"]}}]}}"#,
            d(1),
            d(2),
            d(3)
        )
    }

    #[test]
    fn image_manifests_list_their_blobs_without_foreign_layers() {
        let body = Bytes::from(image(Some(DOCKER_MANIFEST)));
        let m = Manifest::parse(body.clone(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST, "the body's type wins");
        assert_eq!(m.digest, Digest::of(&body));
        let blobs: Vec<String> = m.blobs().iter().map(|b| b.digest.to_string()).collect();
        assert_eq!(blobs, vec![d(1), d(2)]);
        let m = Manifest::parse(
            Bytes::from(image(None)),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let m = Manifest::parse(Bytes::from(image(None)), Some("application/json")).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST, "told by shape");
    }

    #[test]
    fn indexes_list_their_platform_manifests() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            d(4)
        );
        let m = Manifest::parse(Bytes::from(body), Some(DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST_LIST);
        let Content::Index { manifests } = &m.content else {
            panic!("not an index")
        };
        assert_eq!(
            manifests[0].platform.as_ref().unwrap().variant.as_deref(),
            Some("v8")
        );
        assert!(m.blobs().is_empty());
    }

    #[test]
    fn unsupported_and_malformed_manifests_say_why() {
        let cases = [
            (
                r#"{"schemaVersion":1,"name":"x"}"#.to_string(),
                "schema version Some(1)",
            ),
            ("[]".to_string(), "not a manifest"),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#),
                "without a config",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                "without a manifests list",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/x-other"}"#.to_string(),
                "application/x-other",
            ),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha512:00","size":1}}"#.to_string(),
                "only sha256",
            ),
        ];
        for (body, why) in cases {
            let e = Manifest::parse(Bytes::from(body.clone()), None).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }
}
