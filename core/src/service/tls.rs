//! TLS on the services' own listeners (`[tls]`): the verifier's and the backends' TCP ports, for
//! nginx and shopctl on other hosts. [`Tls`] wraps a [`Listener`](super::Listener): it accepts as
//! the plain one does, and each connection's handshake runs in that connection's own task (on its
//! own thread when pinned), bounded by [`HANDSHAKE_TIMEOUT`], so a client that connects and sends
//! nothing holds only itself. With `require_client_certificate`, only clients whose certificate
//! the stack's CA (`tls.ca`) signed get through the handshake.
//!
//! The certificate, key and CA are read at start; a change to any of the files, or SIGHUP, reads
//! them again ([`TlsServer::watch`]): new connections get the new certificate, open ones keep the
//! session they have. A file that does not load keeps the certificate in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::{Listener, Opener};
use crate::config::TlsConfig;
pub use crate::tls::TlsError;
use crate::tls::{provider, read_certificates, read_key, read_roots};

/// How long a client gets from connecting to the end of its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The files `tls` names, loaded into a server config: TLS 1.2 and 1.3, HTTP/1.1, sessions kept
/// for resumption (nginx's `proxy_ssl_session_reuse`), and the client check if asked for.
fn server_config(tls: &TlsConfig, certificate: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Pair { certificate: certificate.to_owned(), key: key.to_owned(), source })?;
    let builder = match (&tls.ca, tls.require_client_certificate) {
        (Some(ca), true) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                .build()
                .map_err(|e| TlsError::Ca { path: ca.clone(), message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        // TlsConfig::check refuses require_client_certificate without a CA.
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(read_certificates("tls.certificate", certificate)?, read_key(key)?)
        .map_err(|source| TlsError::Pair { certificate: certificate.to_owned(), key: key.to_owned(), source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(4096);
    Ok(config)
}

/// What a TLS listener hands its connections: the server config in force, replaced whole on a
/// reload.
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<ArcSwap<ServerConfig>>,
    tls: TlsConfig,
}

impl TlsServer {
    /// The server of `tls`, or none when the stack's hops are plain (no `tls.certificate`).
    pub fn load(tls: &TlsConfig) -> Result<Option<TlsServer>, TlsError> {
        let (Some(certificate), Some(key)) = (&tls.certificate, &tls.key) else { return Ok(None) };
        let config = server_config(tls, certificate, key)?;
        Ok(Some(TlsServer { config: Arc::new(ArcSwap::from_pointee(config)), tls: tls.clone() }))
    }

    /// Reads the files again; on an error the config in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (Some(certificate), Some(key)) = (&self.tls.certificate, &self.tls.key) else { return Ok(()) };
        self.config.store(Arc::new(server_config(&self.tls, certificate, key)?));
        Ok(())
    }

    /// Reloads when the certificate's, the key's or the CA's modification time changes (looked at
    /// every `every`) and on SIGHUP, logging the outcome. Needs a tokio runtime.
    pub fn watch(&self, every: Duration) {
        let files: Vec<PathBuf> =
            [&self.tls.certificate, &self.tls.key, &self.tls.ca].into_iter().flatten().cloned().collect();
        let stamps = move || -> Vec<Option<SystemTime>> {
            files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
        };
        let report = |server: &TlsServer| match server.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; the one in force stays"),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = stamps();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = stamps();
                if now != last {
                    // A renewal writes the key and the certificate one after the other: let both
                    // land before reading them.
                    tokio::time::sleep(every / 2).await;
                    last = stamps();
                    if last != now {
                        continue;
                    }
                    report(&this);
                }
            }
        });
        #[cfg(unix)]
        if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            let this = self.clone();
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    report(&this);
                }
            });
        }
    }
}

impl<S> Opener<S> for TlsServer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Session = tokio_rustls::server::TlsStream<S>;

    async fn open(&self, stream: S) -> std::io::Result<Self::Session> {
        let acceptor = TlsAcceptor::from(self.config.load_full());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(session) => session,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake in time")),
        }
    }
}

/// A listener whose connections speak TLS: accepts, queues and moves between threads as `L` does;
/// the handshake comes after, in the connection's task.
pub struct Tls<L> {
    listener: L,
    server: TlsServer,
}

impl<L> Tls<L> {
    pub fn new(listener: L, server: TlsServer) -> Self {
        Tls { listener, server }
    }
}

impl<L: Listener> Listener for Tls<L> {
    type Stream = L::Stream;
    type Peer = L::Peer;
    type Detached = L::Detached;
    type Opener = TlsServer;

    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send {
        self.listener.accept()
    }

    fn take_queued(self) -> Vec<(Self::Stream, Self::Peer)> {
        self.listener.take_queued()
    }

    fn detach(stream: Self::Stream) -> std::io::Result<Self::Detached> {
        L::detach(stream)
    }

    fn attach(socket: Self::Detached) -> std::io::Result<Self::Stream> {
        L::attach(socket)
    }

    fn opener(&self) -> TlsServer {
        self.server.clone()
    }
}
