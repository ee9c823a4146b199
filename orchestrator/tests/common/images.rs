//! Test images: random layers, a config and a manifest (Docker schema 2 or
//! OCI), or an index of such per platform, pushed into a registry with the
//! engine's upload code.

use bytes::Bytes;
use orchestrator::registry::{media_type, Digest, Reference, Registry};

/// Deterministic pseudo-random bytes (xorshift64*): distinct seeds give
/// distinct, incompressible blobs.
pub fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

impl Format {
    fn manifest(self) -> &'static str {
        match self {
            Format::Docker => media_type::DOCKER_MANIFEST,
            Format::Oci => media_type::OCI_MANIFEST,
        }
    }
    fn index(self) -> &'static str {
        match self {
            Format::Docker => media_type::DOCKER_MANIFEST_LIST,
            Format::Oci => media_type::OCI_INDEX,
        }
    }
    fn config(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.container.image.v1+json",
            Format::Oci => "application/vnd.oci.image.config.v1+json",
        }
    }
    fn layer(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Format::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

/// An image as pushed.
pub struct Image {
    pub digest: Digest,
    pub size: usize,
    pub media_type: &'static str,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

impl Image {
    /// Config and layers.
    pub fn blobs(&self) -> Vec<Digest> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

fn descriptor(media: &str, d: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media, "digest": d.to_string(), "size": size })
}

/// Pushes an image made of `layers` under `target` (a tag, or nothing
/// but its digest when `target` is None) of `repository`.
pub async fn push_image(
    reg: &Registry,
    repository: &str,
    target: Option<&str>,
    layers: &[Bytes],
    arch: &str,
    format: Format,
) -> Image {
    let mut layer_digests = Vec::new();
    for l in layers {
        layer_digests.push(
            reg.push_blob(repository, l.clone())
                .await
                .expect("push a layer"),
        );
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Labels": { "layers": layer_digests.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",") } },
        "rootfs": { "type": "layers", "diff_ids": layer_digests.iter().map(|d| d.to_string()).collect::<Vec<_>>() },
    });
    let config = Bytes::from(config.to_string());
    let config_digest = reg
        .push_blob(repository, config.clone())
        .await
        .expect("push the config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": format.manifest(),
        "config": descriptor(format.config(), &config_digest, config.len()),
        "layers": layers.iter().zip(&layer_digests)
            .map(|(l, d)| descriptor(format.layer(), d, l.len()))
            .collect::<Vec<_>>(),
    });
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest).expect("JSON"));
    let digest = Digest::of(&body);
    let r = match target {
        Some(tag) => Reference::tag(repository, tag),
        None => Reference::digest(repository, digest.clone()),
    }
    .expect("a valid reference");
    let put = reg
        .put_manifest(&r, format.manifest(), body.clone())
        .await
        .expect("push the manifest");
    assert_eq!(put, digest);
    Image {
        digest,
        size: body.len(),
        media_type: format.manifest(),
        config: config_digest,
        layers: layer_digests,
    }
}

/// An index as pushed, with its platform images.
pub struct Index {
    pub digest: Digest,
    pub platforms: Vec<Image>,
}

/// Pushes one image per `(architecture, layers)` by digest, then an index
/// of them under `tag`.
pub async fn push_index(
    reg: &Registry,
    repository: &str,
    tag: &str,
    platforms: &[(&str, Vec<Bytes>)],
    format: Format,
) -> Index {
    let mut images = Vec::new();
    for (arch, layers) in platforms {
        images.push(push_image(reg, repository, None, layers, arch, format).await);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": format.index(),
        "manifests": platforms.iter().zip(&images).map(|((arch, _), img)| {
            let mut d = descriptor(img.media_type, &img.digest, img.size);
            d["platform"] = serde_json::json!({ "architecture": arch, "os": "linux" });
            d
        }).collect::<Vec<_>>(),
    });
    let body = Bytes::from(index.to_string());
    let digest = reg
        .put_manifest(
            &Reference::tag(repository, tag).expect("a valid reference"),
            format.index(),
            body,
        )
        .await
        .expect("push the index");
    Index {
        digest,
        platforms: images,
    }
}
