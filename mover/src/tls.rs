//! TLS configuration for both ends of a transfer: TLS 1.3 only, mutual
//! authentication against the per-migration CA, and the volume grants that
//! client certificates carry (see [`crate::certs`]).
//!
//! Why TLS 1.3 only: both ends are this binary, so there is no old peer to
//! stay compatible with, and 1.3 drops everything that has gone wrong in
//! earlier versions (static RSA, CBC, renegotiation, unauthenticated
//! negotiation) while encrypting the certificates themselves, so a network
//! observer does not even learn which volumes a sender may write.
//!
//! Why the crypto provider is passed explicitly everywhere: rustls can use a
//! process-wide default provider, but then whether a config can be built
//! depends on whoever installed (or failed to install) that default first,
//! and a missing one is a panic. Every builder here names ring itself.
//!
//! Why no session resumption: a resumed session skips certificate
//! verification. The receiver refuses to hand out tickets so that every
//! connection's volume grants come from a certificate checked just now,
//! against the current revocation list.

use crate::certs;
use anyhow::{anyhow, bail, Context, Result};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// The application protocol this build speaks, `mover/` and
/// [`crate::wire::PROTOCOL_VERSION`]. Named so that a mover never mistakes
/// another TLS service on the same port for a receiver.
pub const ALPN: &[u8] = b"mover/5";

/// The protocol name every release offers beside its own, so that peers of
/// different versions still agree on one, complete TLS, and refuse each
/// other at hello with both versions named ([`crate::wire::hello`]) rather
/// than with a bare "no application protocol" alert.
pub const LEGACY_ALPN: &[u8] = b"mover/1";

/// What both ends offer, preferred first.
fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![ALPN.to_vec(), LEGACY_ALPN.to_vec()]
}

/// The protocol versions we allow: TLS 1.3 and nothing else.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The ring crypto provider, which every config here is built with, with
/// AES-128-GCM preferred. ring's default order puts AES-256-GCM first; with
/// AES-NI, AES-128-GCM seals 16 KiB records about 12% faster (3.4 µs to 3.9
/// µs in `cargo bench -p mover --bench pieces -- "tls record"`), and
/// ChaCha20 is about 3.7 times slower. Every byte of a volume goes through
/// it on both ends, and 128-bit AES is what TLS 1.3 makes mandatory. A peer
/// that prefers another suite still gets it: the server follows the
/// client's order.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// A certificate chain (end-entity first) and its private key.
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certs", &self.certs.len())
            .field("key", &"[elided]")
            .finish()
    }
}

impl Identity {
    /// Parses a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1), and checks that the key belongs to the first certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::parse(cert_pem, "the certificate PEM", key_pem, "the key PEM")
    }

    /// [`Identity::from_pem`] for a [`certs::Pem`].
    pub fn from_bundle(pem: &certs::Pem) -> Result<Self> {
        Self::from_pem(&pem.cert, &pem.key)
    }

    /// Reads a PEM certificate chain and a PEM private key from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        let cert_pem = read_pem_file(cert)?;
        let key_pem = read_pem_file(key)?;
        Self::parse(
            &cert_pem,
            &cert.display().to_string(),
            &key_pem,
            &key.display().to_string(),
        )
    }

    /// The certificate chain, end-entity first.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    fn parse(cert_pem: &str, cert_origin: &str, key_pem: &str, key_origin: &str) -> Result<Self> {
        let certs = parse_certs(cert_pem, cert_origin)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| anyhow!("malformed PEM in {key_origin}: {e}"))?
            .ok_or_else(|| anyhow!("no private key found in {key_origin}"))?;
        rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &crypto_provider())
            .map_err(|e| {
                anyhow!(
                    "the key in {key_origin} does not fit the certificate in {cert_origin}: {e}"
                )
            })?;
        Ok(Identity { certs, key })
    }
}

/// Reads trusted CA certificates from PEM text.
pub fn load_ca_pem(pem: &str) -> Result<RootCertStore> {
    roots(pem, "the CA PEM")
}

/// Reads trusted CA certificates from a PEM file.
pub fn load_ca_file(path: &Path) -> Result<RootCertStore> {
    roots(&read_pem_file(path)?, &path.display().to_string())
}

/// Reads certificate revocation lists from PEM text.
pub fn load_crls_pem(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    crls(pem, "the CRL PEM")
}

/// Reads certificate revocation lists from a PEM file.
pub fn load_crls_file(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    crls(&read_pem_file(path)?, &path.display().to_string())
}

/// The receiver's config: TLS 1.3 only, a client certificate from `ca_roots`
/// is mandatory, ALPN [`ALPN`] (or [`LEGACY_ALPN`]), no resumption.
///
/// When `crls` is non-empty, client certificates they revoke are refused,
/// and so is any client certificate whose revocation status they cannot
/// decide (no CRL from its issuer): once you revoke, an unknown status is
/// not good enough.
pub fn server_config(
    identity: &Identity,
    ca_roots: RootCertStore,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>> {
    if ca_roots.is_empty() {
        bail!("no CA certificate to verify clients against");
    }
    let provider = crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots), provider.clone())
            .with_crls(crls)
            .build()
            .context("setting up client certificate verification")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .context("enabling TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .context("loading the server certificate and key")?;
    config.alpn_protocols = alpn_protocols();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The sender's config: TLS 1.3 only, the receiver must present a
/// certificate from `ca_roots` valid for the name we connect to, we present
/// `identity`, ALPN [`ALPN`] (or [`LEGACY_ALPN`]).
pub fn client_config(identity: &Identity, ca_roots: RootCertStore) -> Result<Arc<ClientConfig>> {
    if ca_roots.is_empty() {
        bail!("no CA certificate to verify the server against");
    }
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)
        .context("enabling TLS 1.3")?
        .with_root_certificates(ca_roots)
        .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())
        .context("loading the client certificate and key")?;
    config.alpn_protocols = alpn_protocols();
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// The volumes a (verified) client certificate grants: the names in its
/// `mover:volume:<NAME>` URI SANs, in certificate order, without
/// duplicates. Other SANs are ignored; a volume grant with an invalid name
/// is an error rather than silently dropped, since it means the issuer is
/// not what we think it is.
///
/// This does not verify the certificate; call it on a peer certificate the
/// TLS handshake has already verified.
pub fn authorized_volumes(peer_cert: &CertificateDer<'_>) -> Result<Vec<String>> {
    let (rest, x509) = x509_parser::parse_x509_certificate(peer_cert)
        .map_err(|e| anyhow!("peer certificate is not valid X.509: {e}"))?;
    if !rest.is_empty() {
        bail!("peer certificate has trailing bytes after the DER structure");
    }
    let Some(san) = x509
        .subject_alternative_name()
        .map_err(|e| anyhow!("peer certificate has a malformed subjectAltName: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let mut volumes: Vec<String> = Vec::new();
    for name in &san.value.general_names {
        let x509_parser::extensions::GeneralName::URI(uri) = name else {
            continue;
        };
        match certs::volume_from_uri(uri) {
            Some(Err(e)) => bail!("peer certificate subjectAltName {uri:?}: {e}"),
            Some(Ok(volume)) if !volumes.iter().any(|v| v == volume) => {
                volumes.push(volume.to_owned());
            }
            _ => {}
        }
    }
    Ok(volumes)
}

/// [`authorized_volumes`] of the client certificate on an established
/// server-side connection.
pub fn peer_volumes(conn: &rustls::ServerConnection) -> Result<Vec<String>> {
    let cert = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    authorized_volumes(cert)
}

/// The name a sender checks the receiver's certificate against (and sends
/// as SNI when it is a DNS name): an IP address when `s` parses as one
/// (`[::1]` brackets allowed), otherwise a DNS name.
pub fn server_name(s: &str) -> Result<ServerName<'static>> {
    let bare = s
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(s);
    ServerName::try_from(bare.to_owned()).map_err(|e| anyhow!("invalid server name {s:?}: {e}"))
}

/// Throw-away server and client configs for `mover sync`, which runs both
/// ends in one process: a fresh CA, a server certificate for `localhost`,
/// `127.0.0.1` and `::1`, and a client certificate granting `volumes`.
/// Nothing is written to disk; the CA key is dropped on return, so no
/// further certificate can ever be issued under it.
pub fn ephemeral(volumes: &[String]) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let validity = certs::Validity::days(1);
    let ca = certs::Authority::new("mover sync ephemeral CA", validity)?;
    let sans = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let server = Identity::from_bundle(&ca.server(&sans, validity)?)?;
    let client = Identity::from_bundle(&ca.client("mover-sync", volumes, validity)?)?;
    let server_config = server_config(&server, load_ca_pem(ca.cert_pem())?, Vec::new())?;
    let client_config = client_config(&client, load_ca_pem(ca.cert_pem())?)?;
    Ok((server_config, client_config))
}

fn read_pem_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_certs(pem: &str, origin: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("malformed PEM in {origin}: {e}"))?;
    if certs.is_empty() {
        bail!("no certificate found in {origin}");
    }
    Ok(certs)
}

fn roots(pem: &str, origin: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in parse_certs(pem, origin)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| anyhow!("certificate #{} in {origin} is not a usable CA: {e}", i + 1))?;
    }
    Ok(roots)
}

fn crls(pem: &str, origin: &str) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let crls = rustls_pemfile::crls(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("malformed PEM in {origin}: {e}"))?;
    if crls.is_empty() {
        bail!("no certificate revocation list found in {origin}");
    }
    // Parse now, so that a broken CRL is reported with its file name rather
    // than later as an anonymous verifier error.
    for (i, crl) in crls.iter().enumerate() {
        x509_parser::parse_x509_crl(crl)
            .map_err(|e| anyhow!("CRL #{} in {origin} is not valid: {e}", i + 1))?;
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::{Authority, Validity};
    use rustls::{AlertDescription, CertificateError};
    use std::io;
    use std::time::Duration;
    use time::OffsetDateTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const LIMIT: Duration = Duration::from_secs(20);

    fn vols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A CA with a receiver identity for `localhost`/`127.0.0.1`.
    struct Pki {
        ca: Authority,
        server: Identity,
    }

    impl Pki {
        fn new(ca_name: &str) -> Self {
            let ca = Authority::new(ca_name, Validity::days(1)).unwrap();
            let server = ca
                .server(&vols(&["localhost", "127.0.0.1"]), Validity::days(1))
                .unwrap();
            Pki {
                server: Identity::from_bundle(&server).unwrap(),
                ca,
            }
        }

        fn roots(&self) -> RootCertStore {
            load_ca_pem(self.ca.cert_pem()).unwrap()
        }

        fn client(&self, volumes: &[&str], validity: Validity) -> Identity {
            let pem = self.ca.client("sender", &vols(volumes), validity).unwrap();
            Identity::from_bundle(&pem).unwrap()
        }

        fn server_config(&self) -> Arc<ServerConfig> {
            server_config(&self.server, self.roots(), Vec::new()).unwrap()
        }

        fn client_config(&self, client: &Identity) -> Arc<ClientConfig> {
            client_config(client, self.roots()).unwrap()
        }
    }

    /// Runs one handshake over loopback TCP. The server reports the volumes
    /// its peer may write and sends `ok`; the client reads until EOF. In TLS
    /// 1.3 the client finishes its handshake before the server has judged
    /// its certificate, so a refusal shows on the client as a failed read.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> (io::Result<Vec<String>>, io::Result<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
            assert_eq!(
                tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
            let volumes = peer_volumes(tls.get_ref().1).map_err(io::Error::other)?;
            tls.write_all(b"ok").await?;
            tls.shutdown().await?;
            Ok(volumes)
        });
        let name = server_name(name).unwrap();
        let client_side = async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok(buf)
        };
        let client_result = tokio::time::timeout(LIMIT, client_side)
            .await
            .expect("client timed out");
        let server_result = tokio::time::timeout(LIMIT, server_side)
            .await
            .expect("server timed out")
            .unwrap();
        (server_result, client_result)
    }

    fn tls_error(e: &io::Error) -> &rustls::Error {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .unwrap_or_else(|| panic!("not a TLS error: {e:?}"))
    }

    fn refused_cert(e: &io::Error) -> &CertificateError {
        match tls_error(e) {
            rustls::Error::InvalidCertificate(c) => c,
            other => panic!("expected a certificate error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn good_handshake_grants_cert_volumes() {
        let pki = Pki::new("test CA");
        let client = pki.client(&["data", "logs"], Validity::days(1));
        let (server, client) =
            handshake(pki.server_config(), pki.client_config(&client), "localhost").await;
        assert_eq!(server.unwrap(), ["data", "logs"]);
        assert_eq!(client.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn ip_server_name_works() {
        let pki = Pki::new("test CA");
        let client = pki.client(&["v"], Validity::days(1));
        let (server, client) =
            handshake(pki.server_config(), pki.client_config(&client), "127.0.0.1").await;
        assert_eq!(server.unwrap(), ["v"]);
        assert_eq!(client.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn client_from_another_ca_is_refused() {
        let pki = Pki::new("test CA");
        // A rogue CA under another name, and one that copies our CA's name
        // (its signatures still do not verify under our CA's key).
        for (rogue_name, expected) in [
            ("rogue CA", CertificateError::UnknownIssuer),
            ("test CA", CertificateError::BadSignature),
        ] {
            let rogue = Pki::new(rogue_name);
            let rogue_client = rogue.client(&["data"], Validity::days(1));
            // The rogue client trusts the real receiver, but holds a
            // certificate from its own CA.
            let client_config = client_config(&rogue_client, pki.roots()).unwrap();
            let (server, client) = handshake(pki.server_config(), client_config, "localhost").await;
            let err = server.unwrap_err();
            assert_eq!(refused_cert(&err), &expected, "{rogue_name}");
            assert!(client.is_err());
        }
    }

    #[tokio::test]
    async fn expired_client_is_refused() {
        let pki = Pki::new("test CA");
        let now = OffsetDateTime::now_utc();
        let past =
            Validity::new(now - time::Duration::days(3), now - time::Duration::days(1)).unwrap();
        let client = pki.client(&["data"], past);
        let (server, client) =
            handshake(pki.server_config(), pki.client_config(&client), "localhost").await;
        let err = server.unwrap_err();
        assert!(
            matches!(
                refused_cert(&err),
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "{err:?}"
        );
        let err = client.unwrap_err();
        assert!(
            matches!(
                tls_error(&err),
                rustls::Error::AlertReceived(AlertDescription::CertificateExpired)
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn revoked_client_is_refused() {
        let pki = Pki::new("test CA");
        let revoked = pki.client(&["data"], Validity::days(1));
        let kept = pki.client(&["data"], Validity::days(1));
        let crl_pem = pki
            .ca
            .crl(&revoked.certs()[..1], 1, Validity::days(1))
            .unwrap();
        let crls = load_crls_pem(&crl_pem).unwrap();
        let server = server_config(&pki.server, pki.roots(), crls).unwrap();

        let (result, client) =
            handshake(server.clone(), pki.client_config(&revoked), "localhost").await;
        let err = result.unwrap_err();
        assert!(
            matches!(refused_cert(&err), CertificateError::Revoked),
            "{err:?}"
        );
        let err = client.unwrap_err();
        assert!(
            matches!(
                tls_error(&err),
                rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
            ),
            "{err:?}"
        );

        // A certificate the CRL does not list still gets in.
        let (result, client) = handshake(server, pki.client_config(&kept), "localhost").await;
        assert_eq!(result.unwrap(), ["data"]);
        assert_eq!(client.unwrap(), b"ok");
    }

    #[test]
    fn alpn_names_the_protocol_version() {
        let current = format!("mover/{}", crate::wire::PROTOCOL_VERSION);
        assert_eq!(ALPN, current.as_bytes());
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let pki = Pki::new("test CA");
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let (server, client) = handshake(pki.server_config(), Arc::new(config), "localhost").await;
        let err = server.unwrap_err();
        assert!(
            matches!(tls_error(&err), rustls::Error::NoCertificatesPresented),
            "{err:?}"
        );
        assert!(client.is_err());
    }

    #[tokio::test]
    async fn server_certificate_is_not_a_client_certificate() {
        let pki = Pki::new("test CA");
        let (server, client) = handshake(
            pki.server_config(),
            pki.client_config(&pki.server.clone()),
            "localhost",
        )
        .await;
        let err = server.unwrap_err();
        assert!(
            matches!(
                refused_cert(&err),
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            ),
            "{err:?}"
        );
        assert!(client.is_err());
    }

    #[tokio::test]
    async fn client_refuses_wrong_server() {
        let pki = Pki::new("test CA");
        let client = pki.client(&["data"], Validity::days(1));
        // A server with a certificate from another CA.
        let rogue = Pki::new("rogue CA");
        let rogue_server = server_config(&rogue.server, pki.roots(), Vec::new()).unwrap();
        let (_, result) = handshake(rogue_server, pki.client_config(&client), "localhost").await;
        let err = result.unwrap_err();
        assert!(
            matches!(refused_cert(&err), CertificateError::UnknownIssuer),
            "{err:?}"
        );
        // The right server under a name its certificate does not carry.
        let (_, result) = handshake(
            pki.server_config(),
            pki.client_config(&client),
            "example.com",
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                refused_cert(&err),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            "{err:?}"
        );
    }

    /// A hand-made TLS 1.2 ClientHello: legacy version 1.2, 1.2-only ECDHE
    /// suites, and no supported_versions extension, which is how a client
    /// that cannot speak 1.3 says so. (This build of rustls has no TLS 1.2
    /// support, so we cannot use it as the old client.)
    fn tls12_client_hello() -> Vec<u8> {
        fn ext(id: u16, body: &[u8]) -> Vec<u8> {
            let mut out = id.to_be_bytes().to_vec();
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(body);
            out
        }
        let mut exts = Vec::new();
        // supported_groups: x25519, secp256r1
        exts.extend(ext(0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]));
        // ec_point_formats: uncompressed
        exts.extend(ext(0x000b, &[0x01, 0x00]));
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
        exts.extend(ext(0x000d, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]));
        // server_name: localhost
        let host = b"localhost";
        let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
        sni.push(0);
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host);
        exts.extend(ext(0x0000, &sni));

        let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
        body.extend_from_slice(&[0x42; 32]); // random
        body.push(0); // empty session id
                      // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
        body.extend_from_slice(&[0x01, 0x00]); // compression: null
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend(exts);

        let len = body.len() as u32;
        let mut handshake = vec![0x01]; // client_hello
        handshake.extend_from_slice(&len.to_be_bytes()[1..]);
        handshake.extend(body);

        let mut record = vec![0x16, 0x03, 0x01]; // handshake record, version 1.0
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[tokio::test]
    async fn tls12_client_is_refused() {
        let pki = Pki::new("test CA");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            acceptor.accept(tcp).await.map(|_| ())
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&tls12_client_hello()).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(LIMIT, tcp.read_to_end(&mut reply))
            .await
            .expect("client timed out")
            .unwrap();
        // One fatal alert record: protocol_version (70).
        assert_eq!(reply.first(), Some(&0x15), "not an alert: {reply:02x?}");
        assert_eq!(&reply[reply.len() - 2..], &[2, 70], "{reply:02x?}");

        let err = tokio::time::timeout(LIMIT, server_side)
            .await
            .expect("server timed out")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(tls_error(&err), rustls::Error::PeerIncompatible(_)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn ephemeral_configs_handshake() {
        let (server, client) = ephemeral(&vols(&["src"])).unwrap();
        let (result, client) = handshake(server, client, "localhost").await;
        assert_eq!(result.unwrap(), ["src"]);
        assert_eq!(client.unwrap(), b"ok");
        assert!(ephemeral(&vols(&["bad/name"])).is_err());
    }

    #[test]
    fn authorized_volumes_reads_only_volume_uris() {
        let pki = Pki::new("test CA");
        // The server certificate has DNS/IP SANs only.
        assert!(authorized_volumes(&pki.server.certs()[0])
            .unwrap()
            .is_empty());
        let client = pki.client(&["b", "a"], Validity::days(1));
        assert_eq!(authorized_volumes(&client.certs()[0]).unwrap(), ["b", "a"]);
        assert!(authorized_volumes(&CertificateDer::from(vec![0x30, 0x00])).is_err());
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("receiver.apps.example.com").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("10.1.2.3").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        let err = server_name("bad name").unwrap_err();
        assert!(err.to_string().contains("\"bad name\""), "{err}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new("test CA");
        let pem = pki
            .ca
            .client("sender", &vols(&["v"]), Validity::days(1))
            .unwrap();
        let other = pki
            .ca
            .client("other", &vols(&["v"]), Validity::days(1))
            .unwrap();
        let cert = tmp.path().join("c.crt");
        let key = tmp.path().join("c.key");
        let empty = tmp.path().join("empty.crt");
        let other_key = tmp.path().join("other.key");
        std::fs::write(&cert, &pem.cert).unwrap();
        std::fs::write(&key, &pem.key).unwrap();
        std::fs::write(&empty, "nothing here\n").unwrap();
        std::fs::write(&other_key, &other.key).unwrap();

        Identity::from_files(&cert, &key).unwrap();
        let msg = |e: anyhow::Error| format!("{e:#}");
        let e = msg(Identity::from_files(&empty, &key).unwrap_err());
        assert!(
            e.contains("no certificate found in") && e.contains("empty.crt"),
            "{e}"
        );
        let e = msg(Identity::from_files(&cert, &cert).unwrap_err());
        assert!(
            e.contains("no private key found in") && e.contains("c.crt"),
            "{e}"
        );
        let e = msg(Identity::from_files(&cert, &other_key).unwrap_err());
        assert!(e.contains("other.key") && e.contains("c.crt"), "{e}");
        let missing = tmp.path().join("missing.crt");
        let e = msg(Identity::from_files(&missing, &key).unwrap_err());
        assert!(e.contains("missing.crt"), "{e}");
        let e = msg(load_ca_file(&empty).unwrap_err());
        assert!(e.contains("empty.crt"), "{e}");
        let e = msg(load_crls_file(&cert).unwrap_err());
        assert!(
            e.contains("no certificate revocation list") && e.contains("c.crt"),
            "{e}"
        );
        assert!(server_config(&pki.server, RootCertStore::empty(), Vec::new()).is_err());
    }
}
