//! The TLS side of libpq's `sslmode`, computed once from the conninfo and
//! used by both connections (replication in `conn`, SQL in `sql`).
//!
//! How much is verified (libpq-ssl, "SSL Mode Descriptions"):
//! - `verify-full`: the chain leads to a trusted CA, and the host name is on
//!   the certificate (subjectAltName; the CN only when there is none).
//! - `verify-ca`: the chain, not the name.
//! - `allow`/`prefer`/`require` with a root certificate file (given, or
//!   libpq's default `~/.postgresql/root.crt` when it exists): the chain,
//!   as `verify-ca`. Without one: nothing (encryption only).
//! - `sslrootcert=system`: the OS trust store; `conninfo` forces verify-full.
//!
//! Files named explicitly (`sslrootcert`, `sslcert`, `sslkey`, `sslcrl`)
//! must exist; libpq silently skips a missing one, which would turn a typo
//! into "no verification" or "no revocation check".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::source::conninfo::{CertMode, ConnInfo, RootCert, SslMode, TlsVersion};
use crate::source::error::SourceError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the server certificate is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Encryption only (libpq: no root certificate, sslmode below verify-ca).
    None,
    /// The chain leads to a trusted CA (verify-ca).
    Chain,
    /// Chain and host name (verify-full).
    Full,
}

/// Everything a TLS handshake to this server needs.
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    pub(crate) verification: Verification,
    host: String,
    /// For messages: where the trusted CAs came from.
    roots: String,
    cert_mode: CertMode,
    has_client_cert: bool,
    /// Set by the client-certificate resolver when the server asks for one.
    cert_requested: Arc<AtomicBool>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("host", &self.host)
            .field("verification", &self.verification)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

fn tls_err(host: &str, message: impl Into<String>) -> SourceError {
    SourceError::Tls {
        host: host.to_string(),
        message: message.into(),
    }
}

/// libpq's default file under `~/.postgresql/`, if it exists.
fn default_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".postgresql").join(name))
}

fn existing_default(name: &str) -> Option<PathBuf> {
    default_file(name).filter(|p| p.exists())
}

/// An explicitly named file that must exist.
fn must_exist(host: &str, what: &str, p: &Path) -> Result<(), SourceError> {
    if p.exists() {
        Ok(())
    } else {
        Err(tls_err(
            host,
            format!("{what} file \"{}\" does not exist", p.display()),
        ))
    }
}

/// `None` when the connection is plain (`sslmode=disable`, Unix socket).
pub fn setup(info: &ConnInfo) -> Result<Option<TlsSetup>, SourceError> {
    if info.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let host = info.host.as_str();
    let (roots, roots_desc) = load_roots(info)?;
    let verification = match (info.sslmode, &roots) {
        (SslMode::VerifyFull, _) => Verification::Full,
        (_, Some(_)) => Verification::Chain,
        (_, None) => Verification::None,
    };
    let versions = protocol_versions(info)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| tls_err(host, e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(NoVerify),
        Some(store) => {
            let crls = load_crls(info)?;
            let mut b = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider());
            if !crls.is_empty() {
                // OpenSSL's CRL_CHECK | CRL_CHECK_ALL, as libpq sets: every
                // certificate in the chain needs a current CRL of its issuer.
                b = b.with_crls(crls).enforce_revocation_expiration();
            }
            let inner = b
                .build()
                .map_err(|e| tls_err(host, format!("cannot use sslcrl: {e}")))?;
            Arc::new(Verify {
                inner,
                check_name: verification == Verification::Full,
            })
        }
    };
    let cert_requested = Arc::new(AtomicBool::new(false));
    let client_key = match info.sslcertmode {
        CertMode::Disable => None,
        _ => load_client_cert(info)?,
    };
    let has_client_cert = client_key.is_some();
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(ClientCert {
            key: client_key,
            requested: cert_requested.clone(),
        }));
    config.enable_sni = info.sslsni;
    let server_name = ServerName::try_from(info.host.clone())
        .map_err(|e| tls_err(host, format!("invalid host name for TLS: {e}")))?;
    Ok(Some(TlsSetup {
        config: Arc::new(config),
        server_name,
        verification,
        host: info.host.clone(),
        roots: roots_desc,
        cert_mode: info.sslcertmode,
        has_client_cert,
        cert_requested,
    }))
}

fn protocol_versions(
    info: &ConnInfo,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, SourceError> {
    // rustls speaks TLS 1.2 and 1.3; a minimum below 1.2 is met by both.
    let min = info.ssl_min_protocol_version.max(TlsVersion::Tls12);
    let max = info.ssl_max_protocol_version.unwrap_or(TlsVersion::Tls13);
    if max < TlsVersion::Tls12 {
        return Err(SourceError::Config(
            "ssl_max_protocol_version below TLSv1.2 cannot be met: projector speaks TLSv1.2 and TLSv1.3".into(),
        ));
    }
    if min > max {
        return Err(SourceError::Config(
            "ssl_min_protocol_version is above ssl_max_protocol_version".into(),
        ));
    }
    let mut v = Vec::new();
    if min <= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    Ok(v)
}

/// The trust store, or `None` when nothing is to be verified.
fn load_roots(info: &ConnInfo) -> Result<(Option<RootCertStore>, String), SourceError> {
    let host = info.host.as_str();
    let path = match &info.sslrootcert {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(tls_err(
                    host,
                    "sslrootcert=system: the system trust store holds no certificate (install ca-certificates, or set SSL_CERT_FILE)",
                ));
            }
            return Ok((Some(store), "the system trust store".into()));
        }
        RootCert::File(p) => {
            must_exist(host, "root certificate", p)?;
            p.clone()
        }
        RootCert::Default => match existing_default("root.crt") {
            Some(p) => p,
            None if matches!(info.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                let shown = default_file("root.crt")
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.postgresql/root.crt".into());
                return Err(tls_err(
                    host,
                    format!(
                        "root certificate file \"{shown}\" does not exist; either provide the file (sslrootcert=/path/to/ca.pem), use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification"
                    ),
                ));
            }
            None => return Ok((None, "no root certificate".into())),
        },
    };
    let mut store = RootCertStore::empty();
    let bad = |e: String| tls_err(host, format!("sslrootcert \"{}\": {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(&path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("bad CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok((Some(store), format!("sslrootcert \"{}\"", path.display())))
}

fn load_crls(info: &ConnInfo) -> Result<Vec<CertificateRevocationListDer<'static>>, SourceError> {
    let host = info.host.as_str();
    let mut files = Vec::new();
    match &info.sslcrl {
        Some(p) => {
            must_exist(host, "sslcrl", p)?;
            files.push(p.clone());
        }
        None if info.sslcrldir.is_none() => files.extend(existing_default("root.crl")),
        None => {}
    }
    if let Some(dir) = &info.sslcrldir {
        must_exist(host, "sslcrldir", dir)?;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| tls_err(host, format!("sslcrldir \"{}\": {e}", dir.display())))?;
        let mut in_dir: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    let mut crls = Vec::new();
    for f in files {
        let bad = |e: String| tls_err(host, format!("CRL file \"{}\": {e}", f.display()));
        for crl in
            CertificateRevocationListDer::pem_file_iter(&f).map_err(|e| bad(e.to_string()))?
        {
            crls.push(crl.map_err(|e| bad(format!("bad PEM: {e}")))?);
        }
    }
    Ok(crls)
}

fn load_client_cert(info: &ConnInfo) -> Result<Option<Arc<CertifiedKey>>, SourceError> {
    let host = info.host.as_str();
    let cert_path = match &info.sslcert {
        Some(p) => {
            must_exist(host, "sslcert", p)?;
            p.clone()
        }
        None => match existing_default("postgresql.crt") {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let key_path = match &info.sslkey {
        Some(p) => p.clone(),
        None => default_file("postgresql.key").unwrap_or_default(),
    };
    if !key_path.exists() {
        return Err(tls_err(
            host,
            format!(
                "certificate present, but not private key file \"{}\" (set sslkey)",
                key_path.display()
            ),
        ));
    }
    check_key_permissions(host, &key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| tls_err(host, format!("sslcert \"{}\": {e}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(tls_err(
            host,
            format!("sslcert \"{}\" holds no certificate", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        let encrypted = std::fs::read(&key_path)
            .map(|b| b.windows(9).any(|w| w == b"ENCRYPTED"))
            .unwrap_or(false);
        let why = if encrypted {
            "the key is encrypted, which projector does not support (sslpassword); decrypt it with `openssl pkey -in KEY -out KEY.pem`".to_string()
        } else {
            e.to_string()
        };
        tls_err(host, format!("sslkey \"{}\": {why}", key_path.display()))
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_err(host, format!("sslkey \"{}\": {e}", key_path.display())))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        tls_err(
            host,
            format!(
                "sslkey \"{}\" does not belong to sslcert \"{}\": {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    Ok(Some(Arc::new(certified)))
}

/// libpq's rule: the key may not be readable by group or others, except
/// u=rw,g=r when root owns it (a key shared through a root-owned group).
fn check_key_permissions(host: &str, p: &Path) -> Result<(), SourceError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(p)
        .map_err(|e| tls_err(host, format!("sslkey \"{}\": {e}", p.display())))?;
    let mode = meta.mode() & 0o777;
    let ok = if meta.uid() == 0 {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    };
    if ok {
        Ok(())
    } else {
        Err(tls_err(
            host,
            format!(
                "private key file \"{}\" has group or world access; file must have permissions u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root",
                p.display()
            ),
        ))
    }
}

impl TlsSetup {
    /// Runs the handshake on a stream whose server answered 'S' to
    /// SSLRequest. On success the server is verified as `sslmode` demands;
    /// nothing has been sent but the ClientHello (and our certificate).
    pub async fn handshake<S>(&self, io: S) -> Result<TlsStream<S>, SourceError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), io)
            .await
            .map_err(|e| self.explain_io(&e))?;
        if self.cert_mode == CertMode::Require && !self.cert_requested.load(Ordering::Relaxed) {
            return Err(tls_err(
                &self.host,
                "server did not request an SSL certificate (sslcertmode=require)",
            ));
        }
        Ok(stream)
    }

    /// A TLS failure in the operator's words, if `e` carries one (the
    /// handshake, or an alert the server sends right after it).
    pub(crate) fn explain_io(&self, e: &std::io::Error) -> SourceError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(r) => tls_err(&self.host, self.describe(r)),
            None => tls_err(&self.host, format!("TLS handshake failed: {e}")),
        }
    }

    /// Whether an I/O error is a TLS error (rather than the network).
    pub(crate) fn is_tls_error(e: &std::io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
    }

    fn describe(&self, e: &rustls::Error) -> String {
        use rustls::Error as E;
        use CertificateError as C;
        let roots = &self.roots;
        match e {
            E::InvalidCertificate(c) => {
                let why = match c {
                    C::UnknownIssuer => format!(
                        "unknown issuer: the server's certificate chain does not lead to a CA in {roots}; set sslrootcert to the CA that signed the server certificate"
                    ),
                    C::NotValidForNameContext { expected, presented } => format!(
                        "name mismatch: the server's certificate is for {}, not host \"{}\"; connect by one of those names, or fix the certificate's subjectAltName",
                        presented.join(", "),
                        expected.to_str()
                    ),
                    C::NotValidForName => format!(
                        "name mismatch: the server's certificate does not name host \"{}\"",
                        self.host
                    ),
                    C::ExpiredContext { time, not_after } => format!(
                        "expired: the server's certificate was valid until {} (now {}); renew it",
                        when(*not_after),
                        when(*time)
                    ),
                    C::Expired => "expired: the server's certificate has expired; renew it".into(),
                    C::NotValidYetContext { time, not_before } => format!(
                        "not yet valid: the server's certificate is valid from {} (now {}); check both clocks",
                        when(*not_before),
                        when(*time)
                    ),
                    C::NotValidYet => "not yet valid: the server's certificate is not valid yet; check both clocks".into(),
                    C::Revoked => "revoked: sslcrl lists the server's certificate (or a CA of its chain) as revoked".into(),
                    C::UnknownRevocationStatus => "unknown revocation status: sslcrl/sslcrldir holds no CRL of an issuer in the server's chain; add the CRL of every CA in the chain".into(),
                    C::ExpiredRevocationListContext { next_update, .. } => format!(
                        "the CRL expired at {}; fetch a current one",
                        when(*next_update)
                    ),
                    C::ExpiredRevocationList => "the CRL has expired; fetch a current one".into(),
                    C::BadSignature => format!(
                        "bad signature: a CA in {roots} has the name of the server certificate's issuer but did not sign it (a different CA of the same name); set sslrootcert to the CA that signed the server certificate"
                    ),
                    other => format!("{other:?}"),
                };
                format!("certificate verify failed: {why}")
            }
            E::AlertReceived(a) if is_client_cert_alert(*a) => {
                if self.has_client_cert {
                    format!(
                        "the server rejected our client certificate (TLS alert {a:?}): it must be signed by a CA in the server's ssl_ca_file"
                    )
                } else {
                    format!(
                        "the server requires a client certificate (TLS alert {a:?}): set sslcert and sslkey"
                    )
                }
            }
            E::AlertReceived(a) => format!("the server sent TLS alert {a:?}"),
            other => other.to_string(),
        }
    }
}

fn is_client_cert_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
    )
}

fn when(t: UnixTime) -> String {
    chrono::DateTime::from_timestamp(t.as_secs() as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} s after 1970", t.as_secs()))
}

/// The names a certificate is for: subjectAltName DNS names and IP
/// addresses, and the subject CN.
#[derive(Debug, Default)]
pub(crate) struct CertNames {
    pub(crate) dns: Vec<String>,
    pub(crate) ips: Vec<std::net::IpAddr>,
    pub(crate) cn: Option<String>,
}

impl CertNames {
    pub(crate) fn of(der: &[u8]) -> Option<CertNames> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::SubjectAltName;
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut names = CertNames::default();
        if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
            for n in san.0 {
                match n {
                    GeneralName::DnsName(d) => names.dns.push(d.to_string()),
                    GeneralName::IpAddress(o) => {
                        let b = o.as_bytes();
                        if let Ok(v4) = <[u8; 4]>::try_from(b) {
                            names.ips.push(v4.into());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
                            names.ips.push(v6.into());
                        }
                    }
                    _ => {}
                }
            }
        }
        const CN: x509_cert::der::oid::ObjectIdentifier =
            x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == CN {
                    names.cn = any_string(&atv.value);
                }
            }
        }
        Some(names)
    }

    /// "DNS:a, IP:b" for messages; the CN when there is no SAN.
    pub(crate) fn describe(&self) -> String {
        let mut v: Vec<String> = self.dns.iter().map(|d| format!("DNS:{d}")).collect();
        v.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        if v.is_empty() {
            if let Some(cn) = &self.cn {
                v.push(format!("CN={cn}"));
            }
        }
        if v.is_empty() {
            "no name".into()
        } else {
            v.join(", ")
        }
    }

    /// libpq's CN fallback: with no DNS or IP subjectAltName at all, the
    /// CN is matched (a leading `*.` matches one label).
    fn cn_matches(&self, host: &str) -> bool {
        if !self.dns.is_empty() || !self.ips.is_empty() {
            return false;
        }
        let Some(cn) = &self.cn else { return false };
        let (cn, host) = (cn.to_ascii_lowercase(), host.to_ascii_lowercase());
        match cn.strip_prefix("*.") {
            Some(rest) => host
                .split_once('.')
                .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
            None => cn == host,
        }
    }
}

fn any_string(v: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    if let Ok(s) = v.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.to_string());
    }
    if let Ok(s) = v.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.to_string());
    }
    v.decode_as::<Ia5StringRef<'_>>()
        .ok()
        .map(|s| s.to_string())
}

/// RFC 5929 tls-server-end-point: the server certificate hashed with its
/// signature's hash (MD5 and SHA-1 raised to SHA-256), as Postgres
/// computes it. `None` when the algorithm has no single hash (Ed25519,
/// RSA-PSS): Postgres cannot bind those either.
pub(crate) fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert).ok()?;
    let alg = match parsed.signature_algorithm.oid.to_string().as_str() {
        // md5/sha1/sha256 WithRSAEncryption, ecdsa-with-SHA1/SHA256, dsa-with-sha256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2"
        | "2.16.840.1.101.3.4.3.2" => &digest::SHA256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(alg, cert).as_ref().to_vec())
}

/// The channel-binding data of an established TLS stream.
pub(crate) fn binding_of<S>(stream: &TlsStream<S>) -> Option<Vec<u8>> {
    let (_, session) = stream.get_ref();
    end_point_hash(session.peer_certificates()?.first()?.as_ref())
}

/// Sends our certificate when the server asks, and remembers that it asked.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    requested: Arc<AtomicBool>,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        self.key.clone()
    }
    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// Encryption only: the certificate is not checked (handshake signatures
/// still are, so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// webpki's chain check; the name check only for verify-full, with
/// libpq's CN fallback for certificates without subjectAltName.
#[derive(Debug)]
struct Verify {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (issuer, validity, revocation) before the
        // name, so a name error means the chain passed.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                let names = CertNames::of(end_entity.as_ref()).unwrap_or_default();
                if !self.check_name || names.cn_matches(&server_name.to_str()) {
                    return Ok(ServerCertVerified::assertion());
                }
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext {
                        expected: server_name.to_owned(),
                        presented: vec![names.describe()],
                    },
                ))
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cn_counts_only_without_subject_alt_names_as_in_libpq() {
        let cn_only = CertNames {
            cn: Some("*.db.example".into()),
            ..Default::default()
        };
        assert!(cn_only.cn_matches("pg.db.example"));
        assert!(cn_only.cn_matches("PG.DB.example"));
        assert!(!cn_only.cn_matches("a.pg.db.example"), "one label only");
        assert!(!cn_only.cn_matches("db.example"));
        let with_san = CertNames {
            dns: vec!["other.example".into()],
            cn: Some("pg.db.example".into()),
            ..Default::default()
        };
        assert!(
            !with_san.cn_matches("pg.db.example"),
            "SANs win over the CN"
        );
        assert_eq!(with_san.describe(), "DNS:other.example");
    }
}
