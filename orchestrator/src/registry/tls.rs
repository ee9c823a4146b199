//! TLS trust per registry: the platform's roots by default, a given CA
//! bundle instead (cluster routes are often signed by the cluster's own
//! ingress CA), or, when explicitly asked for, no verification at all.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt;

/// How a registry's certificate is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots.
    #[default]
    Platform,
    /// Only the CA certificates in this PEM file.
    CaBundle(std::path::PathBuf),
    /// Any certificate: for registries with self-signed certificates that
    /// the user chose not to verify.
    Insecure,
}

/// A rustls client configuration with ring (no aws-lc on our builders),
/// HTTP/1.1 only: parallel blobs then use parallel connections, each with
/// a full TCP window, instead of sharing one HTTP/2 connection.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        Trust::Platform => builder
            .with_platform_verifier()
            .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?
            .with_no_client_auth(),
        Trust::CaBundle(path) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let what = || format!("CA bundle {}", path.display());
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", what()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", what()))?;
        store
            .add(cert)
            .map_err(|e| format!("{}: unusable certificate: {e}", what()))?;
    }
    if store.is_empty() {
        return Err(format!("{} holds no PEM certificate", what()));
    }
    Ok(store)
}

/// Accepts any certificate, but still checks that the server holds its
/// key (the handshake signature), so "insecure" means "unauthenticated",
/// not "anything goes on the wire".
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = client_config(&Trust::CaBundle(p.clone())).unwrap_err();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("no PEM"),
            "{e}"
        );
        let e = client_config(&Trust::CaBundle(dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn every_trust_mode_builds_an_http1_config() {
        for t in [Trust::Platform, Trust::Insecure] {
            let c = client_config(&t).unwrap();
            assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
    }
}
