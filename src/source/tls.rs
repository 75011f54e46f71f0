//! rustls client configuration for the libpq sslmodes.
//!
//! - `require`/`prefer`: encrypt, verify nothing (libpq semantics).
//! - `verify-ca`: the chain must lead to `sslrootcert`; the name is not checked.
//! - `verify-full`: chain and host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::source::conninfo::{ConnInfo, SslMode};
use crate::source::error::SourceError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(info: &ConnInfo, message: impl Into<String>) -> SourceError {
    SourceError::Tls {
        host: info.host.clone(),
        message: message.into(),
    }
}

/// `None` for `sslmode=disable`.
pub fn client_config(info: &ConnInfo) -> Result<Option<Arc<ClientConfig>>, SourceError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(info, e.to_string()))?;
    let cfg = match info.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(info)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| tls_err(info, e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verify {
                    inner,
                    check_name: info.sslmode == SslMode::VerifyFull,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(cfg)))
}

fn root_store(info: &ConnInfo) -> Result<RootCertStore, SourceError> {
    let mut store = RootCertStore::empty();
    match &info.sslrootcert {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                tls_err(
                    info,
                    format!("cannot read sslrootcert {}: {e}", path.display()),
                )
            })?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    tls_err(
                        info,
                        format!("bad PEM in sslrootcert {}: {e}", path.display()),
                    )
                })?;
                store
                    .add(cert)
                    .map_err(|e| tls_err(info, format!("bad CA in {}: {e}", path.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(tls_err(
                    info,
                    format!("sslrootcert {} holds no certificate", path.display()),
                ));
            }
        }
    }
    Ok(store)
}

/// The server name rustls checks (DNS name or IP address).
pub fn server_name(info: &ConnInfo) -> Result<ServerName<'static>, SourceError> {
    ServerName::try_from(info.host.clone())
        .map_err(|e| tls_err(info, format!("invalid host name for TLS: {e}")))
}

/// Explains a failed handshake in the operator's words.
pub fn explain(info: &ConnInfo, e: &std::io::Error) -> SourceError {
    let s = e.to_string();
    let hint = if s.contains("UnknownIssuer") || s.contains("invalid peer certificate") {
        let ca = info
            .sslrootcert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the system roots".into());
        if s.contains("NotValidForName") {
            format!("{s}: the server certificate does not name host {:?}; connect by a name on the certificate or use sslmode=verify-ca", info.host)
        } else {
            format!("{s}: the server certificate is not signed by a CA in {ca}; set sslrootcert to the server's CA file")
        }
    } else {
        s
    };
    tls_err(info, hint)
}

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
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
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
