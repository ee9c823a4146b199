//! Registry-to-registry image copy over the OCI distribution API: the
//! engine of direct image migration (DIM).
//!
//! ```no_run
//! # async fn f() -> Result<(), orchestrator::registry::Error> {
//! use orchestrator::registry::*;
//! let src = Registry::new(RegistryConfig {
//!     url: "https://registry.source.example".into(),
//!     credentials: Credentials::Token("<service-account token>".into()),
//!     ..Default::default()
//! })?;
//! let dst = Registry::new(RegistryConfig {
//!     url: "https://registry.dest.example".into(),
//!     trust: Trust::CaBundle("ingress-ca.pem".into()),
//!     ..Default::default()
//! })?;
//! let from: Reference = "team/app:v1".parse().expect("a valid reference");
//! let to: Reference = "team-new/app:v1".parse().expect("a valid reference");
//! let report = copy_image(&src, &from, &dst, &to, &|p: ImageProgress| {
//!     eprintln!("{}/{} blobs, {}/{} bytes", p.blobs_done, p.blobs_total, p.bytes_done, p.bytes_total)
//! })
//! .await?;
//! println!("{} uploaded, {} mounted, {} already there", report.uploaded, report.mounted, report.existing);
//! # Ok(()) }
//! ```
//!
//! Modules, in the order a copy uses them: [`reference`] (names),
//! `client` (one registry: URL, TLS, auth, retries), `auth`, `tls`,
//! `manifest` (media types, reading and writing manifests), `blob` (exists,
//! mount, verified streaming upload), `copy` (the order that keeps a
//! failure from publishing a tag), `digest`, `error`, `retry`.

mod auth;
mod blob;
mod client;
mod copy;
mod digest;
mod error;
mod manifest;
pub mod reference;
mod retry;
mod tls;

pub use auth::Credentials;
pub use client::{Registry, RegistryConfig, Tuning};
pub use copy::{copy_image, CopyReport, ImageProgress};
pub use digest::{Digest, Mismatch};
pub use error::{Error, ErrorKind};
pub use manifest::{media_type, Content, Descriptor, Manifest, Platform};
pub use reference::{ImageReference, Reference, Target};
pub use retry::RetryPolicy;
pub use tls::Trust;
