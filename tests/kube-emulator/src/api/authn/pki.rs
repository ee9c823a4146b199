//! A cluster's certificate authority: the CA the API server's serving
//! certificate and every client certificate chain to, as kubeadm makes one
//! per cluster (`/etc/kubernetes/pki/ca.crt`).
//!
//! A client certificate names a user: the subject's CommonName is the
//! user name and each Organization a group, as the API server's x509
//! authenticator reads it.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::super::authz::UserInfo;
use super::super::defaults::KUBERNETES_SERVICE_IP as SERVICE_IP;

/// The DNS names of a real API server's serving certificate (kubeadm's),
/// with `localhost`.
const SERVING_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct KeyPairPem {
    pub cert: String,
    pub key: String,
}

/// One cluster's CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// Addresses besides loopback the serving certificate names: where
    /// the cluster's pods reach the API server.
    serving_addresses: Vec<IpAddr>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A fresh CA for the cluster `cluster` (named in its subject, so
    /// that the CAs of a pair are told apart in errors).
    pub fn new(cluster: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("kube-emulator-{cluster}-ca"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("signing the CA")?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            serving_addresses: Vec::new(),
        })
    }

    /// This CA, with the API server's serving certificate also naming
    /// `address` (the address the cluster's pods reach it at).
    pub fn serving_also(mut self, address: IpAddr) -> Self {
        if !self.serving_addresses.contains(&address) {
            self.serving_addresses.push(address);
        }
        self
    }

    /// The CA certificate, PEM (a kubeconfig's `certificate-authority-data`,
    /// decoded).
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER (`kube::Config::root_cert`).
    pub fn ca_der(&self) -> Vec<u8> {
        self.cert_der.to_vec()
    }

    /// A client certificate for `user` in `groups` (CommonName and
    /// Organization). At most one group: the subjects rcgen writes hold one
    /// value per attribute (a token, `Authenticator::token_for`, carries
    /// any number).
    pub fn client(&self, user: &str, groups: &[&str]) -> anyhow::Result<KeyPairPem> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        match groups {
            [] => {}
            [group] => name.push(DnType::OrganizationName, *group),
            _ => anyhow::bail!(
                "a client certificate names at most one group ({user:?} in {groups:?}); use a token for more"
            ),
        }
        name.push(DnType::CommonName, user);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
            .with_context(|| format!("issuing a client certificate for {user:?}"))
    }

    /// The TLS configuration of the API server: a serving certificate for
    /// `127.0.0.1`, `localhost`, the addresses of [`Authority::serving_also`]
    /// and the names and Service IP a real one carries (`kubernetes`,
    /// `kubernetes.default.svc...`, `10.96.0.1`), and client certificates of this CA
    /// accepted but not required (requests without one authenticate with a
    /// bearer token or as anonymous).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut params = CertificateParams::default();
        let mut names = vec![
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            SanType::IpAddress(SERVICE_IP.parse()?),
        ];
        names.extend(
            self.serving_addresses
                .iter()
                .copied()
                .map(SanType::IpAddress),
        );
        for dns in SERVING_NAMES {
            names.push(SanType::DnsName(dns.try_into()?));
        }
        params.subject_alt_names = names;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = self
            .issue(params)
            .context("issuing the serving certificate")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let key = KeyPair::from_pem(&serving.key)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let chain = vec![pem_der(&serving.cert)?, self.cert_der.clone()];
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn issue(&self, mut params: CertificateParams) -> anyhow::Result<KeyPairPem> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(KeyPairPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn pem_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
}

/// The user a verified client certificate names: CommonName the user,
/// each Organization a group. `None` when the subject has no CommonName
/// (the real authenticator refuses such a certificate as well).
pub fn certificate_user(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_names_its_user_and_groups() {
        let ca = Authority::new("test").unwrap();
        let issued = ca.client("alice", &["dev"]).unwrap();
        let user = certificate_user(&pem_der(&issued.cert).unwrap()).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev"]);
        assert!(ca.client("alice", &["dev", "ops"]).is_err());
    }
}
