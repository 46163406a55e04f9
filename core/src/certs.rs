//! Certificates' expiry (feature `certs`): when each certificate file the config names stops being
//! valid, for the services' metrics (an alert 14 days ahead) and `shopctl doctor`. Read from the
//! file each time, so a certificate replaced on disk is seen at once.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// A certificate file the stack uses and what it is for (`tls.certificate`, `nginx.tls.certificate`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFile {
    pub setting: &'static str,
    pub path: PathBuf,
}

/// Every certificate file `config` names: the stack's own (`[tls]`) and the edge's (`[nginx.tls]`).
pub fn files(config: &Config) -> Vec<CertificateFile> {
    let mut files = Vec::new();
    let mut add = |setting, path: Option<&PathBuf>| {
        if let Some(path) = path {
            files.push(CertificateFile { setting, path: path.clone() });
        }
    };
    add("tls.certificate", config.tls.certificate.as_ref());
    add("tls.ca", config.tls.ca.as_ref());
    if let Some(edge) = &config.nginx.tls {
        add("nginx.tls.certificate", Some(&edge.certificate));
        add("nginx.tls.chain", edge.chain.as_ref());
    }
    files
}

/// When the first certificate in the PEM file `path` expires (its `notAfter`), in unix seconds.
pub fn not_after(path: &Path) -> Result<i64, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate ({e})", path.display()))?;
    let cert = pem.parse_x509().map_err(|e| format!("{}: not an X.509 certificate ({e})", path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A self-signed certificate (openssl, P-256) whose `notAfter` is Jan 11 10:14:44 2028 GMT.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUH6u+GfWKJV7Qq68ByTbWuZzr17QwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNc2hvcGdhdGUtdGVzdDAeFw0yNjEyMDcxMDE0NDRaFw0yODAx
MTExMDE0NDRaMBgxFjAUBgNVBAMMDXNob3BnYXRlLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAT5275nWIm0FlYyCnanmK67EE4Iu7fyOZCp4SmA+LgvTEhk
ZXNQYtuFOwhF+l3viZ1+7NNHd9H4Bhhv7dTLb+G3o1MwUTAdBgNVHQ4EFgQU/h0D
RyGisjNLTtTSwAaVEP8dviMwHwYDVR0jBBgwFoAU/h0DRyGisjNLTtTSwAaVEP8d
viMwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAvekxkI33I8mx
5IhTEu95+nSf+ycJ4XLm4wnq1or1PQACIEtgVP/9pXaM2uIRT1tXwW66Nb4NwMVF
eF6UbytRuQYt
-----END CERTIFICATE-----
";

    #[test]
    fn the_expiry_is_read_from_the_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.crt");
        std::fs::write(&path, CERT).unwrap();
        assert_eq!(not_after(&path).unwrap(), 1_831_198_484);
    }

    #[test]
    fn a_missing_or_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = not_after(&dir.path().join("none.crt")).unwrap_err();
        assert!(missing.contains("none.crt"), "{missing}");
        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(not_after(&junk).unwrap_err().contains("not a PEM certificate"));
    }
}
