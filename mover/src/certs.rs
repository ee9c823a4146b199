//! The per-migration PKI: one private CA per migration, a server certificate
//! for the receiver and one client certificate per sender (see the security
//! model in `shared/DESIGN.md`).
//!
//! Why a private CA per migration rather than the cluster's or a public one:
//! the only party that may talk to a receiver is a sender of the same
//! migration, so trust is rooted in a key that exists for exactly that
//! migration and is thrown away with it. Nothing else in the world chains to
//! it, so a certificate that verifies was issued by us, for this migration.
//!
//! Why the volumes a client may write are URI SANs (`mover:volume:<NAME>`):
//! the authorization then travels inside the signed certificate, so the
//! receiver needs no side channel (tokens, config maps) to decide which
//! volumes a sender may write, and a stolen client key is only good for the
//! volumes its certificate names. URI SANs are a standard, repeatable
//! extension that every X.509 parser understands; a custom extension would
//! need a private OID and a private encoding for the same information.
//!
//! Keys are ECDSA P-256 (rcgen's default): cheap to make, cheap to verify,
//! and supported by every TLS 1.3 stack.

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, DnsName};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Prefix of the URI SAN that grants a client certificate one volume.
pub const VOLUME_URI_PREFIX: &str = "mover:volume:";
/// Longest volume name (a DNS-name-sized limit; Kubernetes PVC names fit).
pub const MAX_VOLUME_NAME_LEN: usize = 253;
/// Longest client name. Client names become file names in a bundle and the
/// certificate's common name, which X.509 limits to 64 characters.
pub const MAX_CLIENT_NAME_LEN: usize = 64;
/// How far back a new certificate's validity starts, so that a peer whose
/// clock is a little behind ours does not reject a certificate made just now.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Longest validity [`Validity::days`] gives: 100 years.
pub const MAX_DAYS: u32 = 36_600;

/// File names inside a bundle directory written by [`write_bundle`].
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVER_CERT_FILE: &str = "server.crt";
pub const SERVER_KEY_FILE: &str = "server.key";

/// A certificate and its private key, both PEM encoded. The key is PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .field("key", &"[elided]")
            .finish()
    }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from [`CLOCK_SKEW`] ago until `days` days from now. `days` is
    /// capped at [`MAX_DAYS`], so that a silly number from the command line
    /// cannot push the date past what X.509 (and the `time` crate) can
    /// represent.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(days.min(MAX_DAYS))),
        }
    }

    /// An explicit window; `not_after` must be later than `not_before`.
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self> {
        if not_after <= not_before {
            bail!("validity ends ({not_after}) before it starts ({not_before})");
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// Checks a volume name against `[A-Za-z0-9._-]{1,253}`, excluding `.` and
/// `..`.
///
/// The set is narrow on purpose: volume names end up in URIs, log lines and
/// possibly directory names on the receiver, and none of those should need
/// escaping. `.` and `..` are refused as well because a name that means
/// "this directory" or "the parent" has no business naming a volume.
pub fn validate_volume_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > MAX_VOLUME_NAME_LEN || !ok_chars {
        return Err(format!(
            "invalid volume name {name:?}: must be 1-{MAX_VOLUME_NAME_LEN} characters \
             from A-Z a-z 0-9 . _ -"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "invalid volume name {name:?}: `.` and `..` are reserved"
        ));
    }
    Ok(())
}

/// The URI SAN that grants access to volume `name`.
pub fn volume_uri(name: &str) -> Result<String, String> {
    validate_volume_name(name)?;
    Ok(format!("{VOLUME_URI_PREFIX}{name}"))
}

/// The volume named by a URI SAN: `None` when the URI is not a mover volume
/// grant at all, `Some(Err)` when it is one but the name is invalid.
pub fn volume_from_uri(uri: &str) -> Option<Result<&str, String>> {
    let name = uri.strip_prefix(VOLUME_URI_PREFIX)?;
    Some(validate_volume_name(name).map(|()| name))
}

/// Checks a client name against `[A-Za-z0-9._-]{1,64}` not starting with
/// `.`: it becomes the common name and, in a bundle, the file names
/// `<name>.crt` and `<name>.key`, so it must be a plain, visible file name.
pub fn validate_client_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > MAX_CLIENT_NAME_LEN || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "invalid client name {name:?}: must be 1-{MAX_CLIENT_NAME_LEN} characters \
             from A-Z a-z 0-9 . _ - and not start with `.`"
        ));
    }
    Ok(())
}

/// A certificate authority that can issue server and client certificates and
/// revocation lists.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    subject_der: Vec<u8>,
    not_after: OffsetDateTime,
}

impl Authority {
    /// Makes a new self-signed CA with a fresh key.
    ///
    /// The CA may sign certificates and CRLs only, and may not sign other
    /// CAs (path length 0): nothing but end-entity certificates ever hangs
    /// off a migration CA.
    pub fn new(common_name: &str, validity: Validity) -> Result<Self> {
        if common_name.is_empty() {
            bail!("CA common name is empty");
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "mover");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        let cert_pem = cert.pem();
        let subject_der = subject_of(cert.der(), "the new CA certificate")?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem,
            subject_der,
            not_after: validity.not_after,
        })
    }

    /// Loads an existing CA (certificate and PKCS#8 private key, both PEM),
    /// so that more certificates can be issued from it later, e.g. one more
    /// client after the server is already running.
    ///
    /// Checks that the certificate is a CA, that it may sign certificates,
    /// and that the key belongs to it. The issuer name of certificates issued
    /// here is rebuilt from the CA's subject; only single-valued RDNs in
    /// UTF8String, PrintableString or IA5String are supported (which covers
    /// every CA made by [`Authority::new`]).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let der = first_cert(cert_pem, "CA certificate PEM")?;
        let (rest, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow!("CA certificate is not valid X.509: {e}"))?;
        if !rest.is_empty() {
            bail!("CA certificate has trailing bytes after the DER structure");
        }
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| anyhow!("CA certificate has malformed basicConstraints: {e}"))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            bail!("CA certificate is not a CA (basicConstraints CA flag not set)");
        }
        let key_usage = x509
            .key_usage()
            .map_err(|e| anyhow!("CA certificate has malformed keyUsage: {e}"))?
            .map(|ku| *ku.value);
        let key_usages = match key_usage {
            // No keyUsage extension: not restricted.
            None => Vec::new(),
            Some(ku) => {
                if !ku.key_cert_sign() {
                    bail!("CA certificate's keyUsage does not allow keyCertSign");
                }
                let mut usages = vec![KeyUsagePurpose::KeyCertSign];
                if ku.crl_sign() {
                    usages.push(KeyUsagePurpose::CrlSign);
                }
                if ku.digital_signature() {
                    usages.push(KeyUsagePurpose::DigitalSignature);
                }
                usages
            }
        };
        let key_identifier_method = x509
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let distinguished_name = distinguished_name(x509.subject())?;
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .context("CA certificate's notAfter is out of range")?;

        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| anyhow!("CA key is not a PEM PKCS#8 private key: {e}"))?;
        if key.der_bytes() != &x509.public_key().subject_public_key.data[..] {
            bail!("CA key does not belong to the CA certificate");
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name;
        params.key_usages = key_usages;
        params.key_identifier_method = key_identifier_method;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem: rcgen_pem(&der),
            subject_der: x509.subject().as_raw().to_vec(),
            not_after,
        })
    }

    /// The CA certificate and its private key.
    pub fn ca_pem(&self) -> Pem {
        Pem {
            cert: self.cert_pem.clone(),
            key: self.issuer.key().serialize_pem(),
        }
    }

    /// The CA certificate alone, what both ends need to verify each other.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA, and so everything it issued, stops being valid.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues the receiver's certificate. Each SAN is an IP address SAN when
    /// it parses as one and a DNS name SAN otherwise (a leading `*.` label is
    /// allowed); senders check the name they connect to against these.
    pub fn server(&self, sans: &[String], validity: Validity) -> Result<Pem> {
        if sans.is_empty() {
            bail!("server certificate needs at least one DNS name or IP address");
        }
        let mut params = CertificateParams::default();
        for san in sans {
            params.subject_alt_names.push(server_san(san)?);
        }
        params.distinguished_name = common_name("mover receiver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity)
            .context("issuing the server certificate")
    }

    /// Issues a sender's certificate granting write access to `volumes`.
    ///
    /// The certificate carries only the clientAuth purpose, so it cannot be
    /// used to impersonate a receiver, and the server certificate (serverAuth
    /// only) cannot be used as a client.
    pub fn client(&self, name: &str, volumes: &[String], validity: Validity) -> Result<Pem> {
        validate_client_name(name).map_err(|e| anyhow!(e))?;
        if volumes.is_empty() {
            bail!("client {name:?} needs at least one volume");
        }
        let mut params = CertificateParams::default();
        for volume in volumes {
            let uri = volume_uri(volume).map_err(|e| anyhow!("client {name:?}: {e}"))?;
            let san = SanType::URI(
                uri.try_into()
                    .map_err(|e| anyhow!("client {name:?}: volume {volume:?}: {e}"))?,
            );
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.distinguished_name = common_name(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
            .with_context(|| format!("issuing the certificate for client {name:?}"))
    }

    /// Makes a CRL (PEM) that revokes `revoked`, which must all have been
    /// issued by this CA. Give it to the receiver to shut out a sender whose
    /// key leaked without making a new CA. `crl_number` must grow with each
    /// CRL this CA issues.
    pub fn crl(
        &self,
        revoked: &[CertificateDer<'_>],
        crl_number: u64,
        validity: Validity,
    ) -> Result<String> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for (i, der) in revoked.iter().enumerate() {
            let (_, x509) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| anyhow!("revoked certificate #{}: not valid X.509: {e}", i + 1))?;
            if x509.issuer().as_raw() != self.subject_der.as_slice() {
                bail!(
                    "revoked certificate #{} ({}) was not issued by this CA",
                    i + 1,
                    x509.subject()
                );
            }
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&x509.serial.to_bytes_be()),
                revocation_time: OffsetDateTime::now_utc(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: validity.not_before,
            next_update: validity.not_after,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .context("signing the revocation list")?;
        crl.pem().context("encoding the revocation list")
    }

    /// Signs an end-entity certificate with a fresh key.
    ///
    /// A validity that outlasts the CA is cut to the CA's: webpki would
    /// accept the longer one, but it would be a promise the CA cannot keep.
    fn issue(&self, mut params: CertificateParams, validity: Validity) -> Result<Pem> {
        if OffsetDateTime::now_utc() >= self.not_after {
            bail!(
                "the CA expired at {}; make a new CA (and new certificates)",
                self.not_after
            );
        }
        params.not_before = validity.not_before;
        params.not_after = validity.not_after.min(self.not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        // TLS 1.3 uses certificate keys only to sign the handshake.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a key")?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn server_san(san: &str) -> Result<SanType> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let host = san.strip_prefix("*.").unwrap_or(san);
    if DnsName::try_from(host).is_err() {
        bail!("invalid server name {san:?}: neither an IP address nor a DNS name");
    }
    let ia5 = san
        .try_into()
        .map_err(|e| anyhow!("invalid server name {san:?}: {e}"))?;
    Ok(SanType::DnsName(ia5))
}

/// The DER of the first certificate in a PEM string.
fn first_cert(pem: &str, origin: &str) -> Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow!("no certificate found in {origin}"))?
        .map_err(|e| anyhow!("malformed PEM in {origin}: {e}"))
}

fn subject_of(der: &[u8], origin: &str) -> Result<Vec<u8>> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("{origin} is not valid X.509: {e}"))?;
    Ok(x509.subject().as_raw().to_vec())
}

/// PEM-encodes a certificate the way rcgen does, so that a loaded CA prints
/// the same as a new one.
fn rcgen_pem(der: &[u8]) -> String {
    use std::fmt::Write as _;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Rebuilds rcgen's view of an X.509 name, keeping each attribute's string
/// type so that the issuer name of new certificates matches the CA's subject
/// byte for byte (webpki compares names as bytes).
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            bail!("CA subject {name} has an empty or multi-valued RDN, which is not supported");
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| anyhow!("CA subject {name} has an attribute OID out of range"))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            bail!("CA subject {name} repeats an attribute type, which is not supported");
        }
        let value = attr.attr_value();
        let text = std::str::from_utf8(value.data)
            .map_err(|_| anyhow!("CA subject {name} has an attribute that is not text"))?;
        let unsupported = || anyhow!("CA subject {name} uses an unsupported string type");
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|_| unsupported())?)
            }
            Tag::Ia5String => DnValue::Ia5String(text.try_into().map_err(|_| unsupported())?),
            _ => return Err(unsupported()),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Writes a certificate bundle for running `mover receive` and `mover send`
/// by hand, and returns the paths it wrote.
///
/// `dir` gets (created 0700 if missing):
/// - `ca.crt`, `ca.key`: the migration CA. **If `dir` already holds both,
///   that CA is loaded and reused rather than replaced**, so running this
///   again with new clients issues more client certificates that the running
///   receiver (which trusts the old `ca.crt`) accepts. If only one of the two
///   exists, nothing is written: that is a damaged bundle, not one to guess
///   about. `force` never replaces an existing CA; delete it to start over.
/// - `server.crt`, `server.key` when `server_sans` is non-empty.
/// - `<client>.crt`, `<client>.key` for each `(client, volumes)` in
///   `clients`.
///
/// Private keys are created with mode 0600, certificates 0644. Existing
/// files are never overwritten unless `force`; all names are checked, all
/// certificates are made in memory, and only then is anything written, so
/// a refusal leaves the directory untouched. Files are created exclusively
/// (`O_EXCL`), so a symlink planted at a target name is not followed.
pub fn write_bundle(
    dir: &Path,
    server_sans: &[String],
    clients: &[(String, Vec<String>)],
    validity: Validity,
    force: bool,
) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in clients {
        validate_client_name(name).map_err(|e| anyhow!(e))?;
        if name == "ca" || name == "server" {
            bail!("client name {name:?} is reserved (it would clash with {name}.crt)");
        }
        if !seen.insert(name.as_str()) {
            bail!("client name {name:?} is given twice");
        }
    }

    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let mut files: Vec<(PathBuf, String, u32)> = Vec::new();
    let authority = match (exists(&ca_cert_path)?, exists(&ca_key_path)?) {
        (true, true) => {
            let cert = read(&ca_cert_path)?;
            let key = read(&ca_key_path)?;
            Authority::load(&cert, &key).with_context(|| {
                format!(
                    "reusing the CA in {} and {}",
                    ca_cert_path.display(),
                    ca_key_path.display()
                )
            })?
        }
        (false, false) => {
            // A random suffix keeps CA names apart, so that a peer that
            // trusts several migration CAs is never confused about which
            // one issued a certificate.
            let mut id = [0u8; 8];
            rustls::crypto::ring::default_provider()
                .secure_random
                .fill(&mut id)
                .map_err(|_| anyhow!("no random numbers for the CA name"))?;
            let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let authority = Authority::new(&format!("mover migration CA {id}"), validity)?;
            let pem = authority.ca_pem();
            files.push((ca_cert_path, pem.cert, 0o644));
            files.push((ca_key_path, pem.key, 0o600));
            authority
        }
        (true, false) => bail!(
            "{} exists but {} does not; refusing to guess which CA to use",
            ca_cert_path.display(),
            ca_key_path.display()
        ),
        (false, true) => bail!(
            "{} exists but {} does not; refusing to guess which CA to use",
            ca_key_path.display(),
            ca_cert_path.display()
        ),
    };

    if !server_sans.is_empty() {
        let pem = authority.server(server_sans, validity)?;
        files.push((dir.join(SERVER_CERT_FILE), pem.cert, 0o644));
        files.push((dir.join(SERVER_KEY_FILE), pem.key, 0o600));
    }
    for (name, volumes) in clients {
        let pem = authority.client(name, volumes, validity)?;
        files.push((dir.join(format!("{name}.crt")), pem.cert, 0o644));
        files.push((dir.join(format!("{name}.key")), pem.key, 0o600));
    }

    if !force {
        for (path, _, _) in &files {
            if exists(path)? {
                bail!(
                    "{} already exists; not overwriting it (use --force to replace \
                     certificates and keys; the CA is always reused)",
                    path.display()
                );
            }
        }
    }

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::with_capacity(files.len());
    for (path, contents, mode) in files {
        write_new(&path, &contents, mode, force)?;
        written.push(path);
    }
    Ok(written)
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Creates `path` exclusively with `mode` (so a key is never readable by
/// others, not even for a moment), replacing an existing file when `force`.
fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> Result<()> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
        }
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn der(pem: &str) -> CertificateDer<'static> {
        first_cert(pem, "test PEM").unwrap()
    }

    /// Verifies `client_pem` as a client certificate against `ca_pem`
    /// exactly as the receiver's verifier does, without a network.
    fn verify_client(ca_pem: &str, client_pem: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca_pem)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&der(client_pem), &[], UnixTime::now())
            .map(|_| ())
    }

    fn volumes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn sans_of(pem: &str) -> Vec<String> {
        let der = der(pem);
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn volume_names() {
        for good in ["data", "pvc-0", "a.b_c-D9", &"x".repeat(253)] {
            assert_eq!(validate_volume_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "vol\0",
            "é",
            "a:b",
            &"x".repeat(254),
        ] {
            let err = validate_volume_name(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(volume_uri("data").unwrap(), "mover:volume:data");
        assert_eq!(volume_from_uri("mover:volume:data"), Some(Ok("data")));
        assert_eq!(volume_from_uri("https://example.com"), None);
        assert!(matches!(volume_from_uri("mover:volume:../x"), Some(Err(_))));
    }

    #[test]
    fn client_rejects_invalid_volume_naming_it() {
        let ca = Authority::new("test CA", Validity::days(1)).unwrap();
        let err = ca
            .client("sender", &volumes(&["good", "../etc"]), Validity::days(1))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("\"../etc\""), "{msg}");
        assert!(ca.client("sender", &[], Validity::days(1)).is_err());
        assert!(ca
            .client("../x", &volumes(&["a"]), Validity::days(1))
            .is_err());
    }

    #[test]
    fn client_cert_names_volumes_as_uri_sans() {
        let ca = Authority::new("test CA", Validity::days(1)).unwrap();
        let pem = ca
            .client("sender", &volumes(&["a", "b", "a"]), Validity::days(1))
            .unwrap();
        assert_eq!(
            sans_of(&pem.cert),
            ["URI(mover:volume:a)", "URI(mover:volume:b)"]
        );
        verify_client(&ca.ca_pem().cert, &pem.cert).unwrap();
    }

    #[test]
    fn server_sans_are_ip_or_dns() {
        let ca = Authority::new("test CA", Validity::days(1)).unwrap();
        let pem = ca
            .server(
                &volumes(&[
                    "mover.apps.example.com",
                    "10.0.0.1",
                    "::1",
                    "*.apps.example.com",
                ]),
                Validity::days(1),
            )
            .unwrap();
        assert_eq!(
            sans_of(&pem.cert),
            [
                "DNSName(mover.apps.example.com)",
                "IPAddress(0a:00:00:01)",
                "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
                "DNSName(*.apps.example.com)",
            ]
        );
        assert!(ca.server(&[], Validity::days(1)).is_err());
        let err = ca
            .server(&volumes(&["bad name"]), Validity::days(1))
            .unwrap_err();
        assert!(format!("{err:#}").contains("\"bad name\""), "{err:#}");
        // A server certificate is not a client certificate.
        assert!(verify_client(&ca.ca_pem().cert, &pem.cert).is_err());
    }

    #[test]
    fn validity_is_checked_and_leaf_is_cut_to_ca() {
        let now = OffsetDateTime::now_utc();
        assert!(Validity::new(now, now).is_err());
        let v = Validity::days(3);
        assert!(v.not_before() < now && now - v.not_before() <= CLOCK_SKEW);
        assert!(v.not_after() > now + Duration::days(2));

        let far = Validity::days(u32::MAX);
        assert!(far.not_after() - now <= Duration::days(i64::from(MAX_DAYS)) + CLOCK_SKEW);

        let ca = Authority::new("short CA", Validity::days(1)).unwrap();
        let pem = ca
            .client("sender", &volumes(&["a"]), Validity::days(30))
            .unwrap();
        let der = der(&pem.cert);
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(x509.validity().not_after.timestamp() <= ca.not_after().unix_timestamp());
    }

    #[test]
    fn load_round_trips_and_checks_key() {
        let ca = Authority::new("test CA", Validity::days(1)).unwrap();
        let pem = ca.ca_pem();
        let loaded = Authority::load(&pem.cert, &pem.key).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let client = loaded
            .client("later", &volumes(&["v"]), Validity::days(1))
            .unwrap();
        verify_client(&pem.cert, &client.cert).unwrap();
        // A CRL from the loaded CA is accepted too (it keeps cRLSign).
        loaded
            .crl(&[der(&client.cert)], 1, Validity::days(1))
            .unwrap();

        let other = Authority::new("other CA", Validity::days(1)).unwrap();
        let err = Authority::load(&pem.cert, &other.ca_pem().key).unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
        let leaf = ca
            .client("sender", &volumes(&["v"]), Validity::days(1))
            .unwrap();
        let err = Authority::load(&leaf.cert, &leaf.key).unwrap_err();
        assert!(format!("{err:#}").contains("not a CA"), "{err:#}");
        let err = Authority::load("", &pem.key).unwrap_err();
        assert!(
            format!("{err:#}").contains("no certificate found"),
            "{err:#}"
        );
        let err = other
            .crl(&[der(&client.cert)], 1, Validity::days(1))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not issued by this CA"),
            "{err:#}"
        );
    }

    #[test]
    fn bundle_writes_private_keys_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        let clients = vec![("sender-a".to_string(), volumes(&["data", "logs"]))];
        let sans = volumes(&["receiver.example.com", "127.0.0.1"]);
        let written = write_bundle(&dir, &sans, &clients, Validity::days(1), false).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ca.crt",
                "ca.key",
                "server.crt",
                "server.key",
                "sender-a.crt",
                "sender-a.key"
            ]
        );
        for path in &written {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            if path.extension().unwrap() == "key" {
                assert_eq!(mode, 0o600, "{}", path.display());
            } else {
                assert_eq!(mode & 0o022, 0, "{}", path.display());
            }
        }
        let ca_cert = fs::read_to_string(dir.join("ca.crt")).unwrap();
        let client_a = fs::read_to_string(dir.join("sender-a.crt")).unwrap();
        verify_client(&ca_cert, &client_a).unwrap();

        // Same request again: refused, nothing changed.
        let err = write_bundle(&dir, &sans, &clients, Validity::days(1), false).unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(
            fs::read_to_string(dir.join("sender-a.crt")).unwrap(),
            client_a
        );

        // With force: leaf files replaced, keys still 0600, CA kept.
        let again = write_bundle(&dir, &sans, &clients, Validity::days(1), true).unwrap();
        assert_eq!(again.len(), 4, "{again:?}");
        assert_ne!(
            fs::read_to_string(dir.join("sender-a.crt")).unwrap(),
            client_a
        );
        let mode = fs::metadata(dir.join("sender-a.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), ca_cert);
    }

    #[test]
    fn bundle_reuses_existing_ca_for_later_clients() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = vec![("a".to_string(), volumes(&["one"]))];
        write_bundle(
            dir,
            &volumes(&["localhost"]),
            &first,
            Validity::days(1),
            false,
        )
        .unwrap();
        let ca_cert = fs::read_to_string(dir.join("ca.crt")).unwrap();
        let ca_key = fs::read_to_string(dir.join("ca.key")).unwrap();

        let later = vec![("b".to_string(), volumes(&["two"]))];
        let written = write_bundle(dir, &[], &later, Validity::days(1), false).unwrap();
        assert_eq!(written, [dir.join("b.crt"), dir.join("b.key")]);
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), ca_cert);
        assert_eq!(fs::read_to_string(dir.join("ca.key")).unwrap(), ca_key);
        let client_b = fs::read_to_string(dir.join("b.crt")).unwrap();
        verify_client(&ca_cert, &client_b).unwrap();
        // And it does not verify against some other CA.
        let other = Authority::new("other", Validity::days(1)).unwrap();
        assert!(verify_client(other.cert_pem(), &client_b).is_err());
    }

    #[test]
    fn bundle_rejects_bad_requests_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let v = Validity::days(1);
        for (name, vols) in [
            ("ca", volumes(&["x"])),
            ("server", volumes(&["x"])),
            ("../evil", volumes(&["x"])),
            (".hidden", volumes(&["x"])),
            ("ok", volumes(&["bad/volume"])),
        ] {
            let clients = vec![(name.to_string(), vols)];
            assert!(
                write_bundle(&dir, &[], &clients, v, false).is_err(),
                "{name}"
            );
            assert!(!dir.exists(), "{name} wrote something");
        }
        let dup = vec![
            ("a".to_string(), volumes(&["x"])),
            ("a".to_string(), volumes(&["y"])),
        ];
        assert!(write_bundle(&dir, &[], &dup, v, false).is_err());

        // Half a CA is refused.
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("ca.crt"), "x").unwrap();
        let err = write_bundle(&dir, &[], &[], v, false).unwrap_err();
        assert!(format!("{err:#}").contains("ca.key"), "{err:#}");
    }
}
