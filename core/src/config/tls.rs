//! The TLS sections: `[nginx.tls]`, HTTPS at the edge, and `[tls]`, the stack's own hops (nginx to
//! the verifiers and backends, shopctl's probes, the services to their databases). Paths are
//! relative to the config's folder until [`Config::load`](super::Config::load) joins them to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The name every verifier's and backend's certificate carries (a DNS subject alternative name),
/// and the one their clients check, whatever address they dialled: nginx (`proxy_ssl_name`) and
/// shopctl. One name for all, so a certificate does not have to list every address its host is
/// reached at; what tells the stack's parts from anything else is the internal CA.
pub const SERVICE_NAME: &str = "shopgate.internal";

/// `[nginx.tls]`: nginx serves HTTPS on `nginx.listen` with this certificate. Renewed by replacing
/// the files and reloading nginx.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct EdgeTls {
    /// The certificate, with its intermediates after it unless `chain` names them.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Intermediate certificates, if not in `certificate`'s file.
    #[serde(default)]
    pub chain: Option<PathBuf>,
    /// A plain-HTTP listener that only redirects (301) to HTTPS; none = no plain HTTP at all.
    #[serde(default)]
    pub redirect_listen: Option<SocketAddr>,
    /// `Strict-Transport-Security: max-age=…` on every answer; 0 = no header.
    #[serde(default = "EdgeTls::default_hsts")]
    pub hsts_max_age_seconds: u64,
}

impl EdgeTls {
    /// Two years, as the HSTS preload list asks.
    fn default_hsts() -> u64 {
        63_072_000
    }

    pub(crate) fn resolve(&mut self, base: &Path) {
        self.certificate = base.join(&self.certificate);
        self.key = base.join(&self.key);
        if let Some(chain) = &mut self.chain {
            *chain = base.join(&*chain);
        }
    }
}

/// `[tls]`: the stack's own hops. With `certificate` and `key` set, the verifiers and backends
/// serve TLS with them (and, when `require_client_certificate`, take only clients whose
/// certificate `ca` signed: nginx and shopctl present theirs), and the clients check the servers'
/// certificates against `ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The internal CA's certificate: what servers and clients of the stack trust.
    pub ca: Option<PathBuf>,
    /// This host's certificate (server and client), and its key.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Servers refuse a client without a certificate `ca` signed.
    pub require_client_certificate: bool,
    /// A database URL without TLS to a host that is not loopback (or a unix socket) is refused
    /// at load unless this is set.
    pub allow_plaintext_databases: bool,
}

impl TlsConfig {
    /// Whether the stack's own hops are TLS.
    pub fn internal(&self) -> bool {
        self.certificate.is_some() && self.key.is_some()
    }

    pub(crate) fn resolve(&mut self, base: &Path) {
        for path in [&mut self.ca, &mut self.certificate, &mut self.key].into_iter().flatten() {
            *path = base.join(&*path);
        }
    }

    /// A certificate without its key (or the other way round), or TLS without the CA to check
    /// the other side with: said in one line.
    pub(crate) fn check(&self) -> Result<(), String> {
        match (&self.certificate, &self.key, &self.ca) {
            (Some(_), None, _) => Err("tls.certificate is set without tls.key".into()),
            (None, Some(_), _) => Err("tls.key is set without tls.certificate".into()),
            (Some(_), Some(_), None) => {
                Err("tls.certificate needs tls.ca, the CA the other side is checked with".into())
            }
            (None, None, _) if self.require_client_certificate => {
                Err("tls.require_client_certificate needs tls.certificate, tls.key and tls.ca".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn half_a_tls_setup_is_named() {
        let full = TlsConfig {
            ca: Some("ca.crt".into()),
            certificate: Some("host.crt".into()),
            key: Some("host.key".into()),
            ..TlsConfig::default()
        };
        assert!(full.check().is_ok() && full.internal());
        assert!(TlsConfig::default().check().is_ok() && !TlsConfig::default().internal());
        let no_key = TlsConfig { key: None, ..full.clone() };
        assert!(no_key.check().unwrap_err().contains("without tls.key"));
        let no_ca = TlsConfig { ca: None, ..full.clone() };
        assert!(no_ca.check().unwrap_err().contains("tls.ca"));
        let demand = TlsConfig { require_client_certificate: true, ..TlsConfig::default() };
        assert!(demand.check().is_err());
    }

    #[test]
    fn paths_are_the_config_folders() {
        let mut tls = TlsConfig { ca: Some("certs/ca.crt".into()), ..TlsConfig::default() };
        tls.resolve(Path::new("/etc/shop"));
        assert_eq!(tls.ca.unwrap(), Path::new("/etc/shop/certs/ca.crt"));
        let mut edge: EdgeTls = toml::from_str("certificate = \"e.crt\"\nkey = \"/k/e.key\"").unwrap();
        edge.resolve(Path::new("/etc/shop"));
        assert_eq!(
            (edge.certificate.as_path(), edge.key.as_path()),
            (Path::new("/etc/shop/e.crt"), Path::new("/k/e.key"))
        );
        assert_eq!(edge.hsts_max_age_seconds, 63_072_000);
    }
}
