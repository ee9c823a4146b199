//! A throw-away CA and certificates: a server certificate for TLS
//! registries and the API fault proxy on 127.0.0.1, and a signing
//! certificate for registry tokens.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct Pki {
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

/// A certificate with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    /// PKCS#8 DER, as ring loads it.
    pub key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "registry tests CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Pki {
            ca_pem: cert.pem(),
            ca: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "registry tests leaf");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}
