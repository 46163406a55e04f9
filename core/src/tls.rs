//! The stack's certificates as rustls takes them (`[tls]`): reading the PEM files, and the client
//! side of the internal hops ([`client_config`]: shopctl's probes, the tests). The servers' side
//! is [`service::tls`](crate::service). Behind the `tls` feature.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;
use crate::config::SERVICE_NAME;

/// A certificate, key or CA file that does not load: said in one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {} holds no PEM {expected} ({message})", path.display())]
    Pem { what: &'static str, path: PathBuf, expected: &'static str, message: String },
    #[error("tls.ca {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
    #[error("tls.certificate {} and tls.key {}: {source}", certificate.display(), key.display())]
    Pair { certificate: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The crypto provider, named rather than taken from the process default: reqwest's features may
/// bring in a second one, and rustls then refuses to pick.
///
/// ring, which reqwest's rustls uses too, so one provider is built. rustls 0.23.4x marks it
/// deprecated for lacking post-quantum key exchange (aws-lc-rs has it); for hops inside the
/// stack's own network that is accepted until aws-lc-rs builds here as readily.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let pem_error = |message: String| TlsError::Pem { what, path: path.to_owned(), expected: "certificate", message };
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("none found".into()));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, SEC1 or PKCS#1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "tls.key",
        path: path.to_owned(),
        expected: "private key",
        message: e.to_string(),
    })
}

/// The CA file's certificates as the roots a peer is checked against.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates("tls.ca", path)? {
        roots.add(cert).map_err(|e| TlsError::Ca { path: path.to_owned(), message: e.to_string() })?;
    }
    Ok(roots)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// The client side of the stack's own hops, or none when they are plain (no `tls.certificate`):
/// trusts `tls.ca` alone, takes a server whose certificate carries [`SERVICE_NAME`] whatever
/// address it was reached at (as nginx's `proxy_ssl_name` does), and presents `tls.certificate`
/// as its own.
pub fn client_config(tls: &TlsConfig) -> Result<Option<ClientConfig>, TlsError> {
    let (Some(certificate), Some(key), Some(ca)) = (&tls.certificate, &tls.key, &tls.ca) else { return Ok(None) };
    let provider = provider();
    let roots = Arc::new(read_roots(ca)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Ca { path: ca.clone(), message: e.to_string() })?;
    let pair = |source| TlsError::Pair { certificate: certificate.clone(), key: key.clone(), source };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServiceName(webpki)))
        .with_client_auth_cert(read_certificates("tls.certificate", certificate)?, read_key(key)?)
        .map_err(pair)?;
    Ok(Some(config))
}

/// The usual chain and signature checks, against [`SERVICE_NAME`] instead of the address dialled.
#[derive(Debug)]
struct ServiceName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ServiceName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVICE_NAME).map_err(|e| rustls::Error::General(e.to_string()))?;
        self.0.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
