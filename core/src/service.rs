//! What both services (verifier and backend) do the same way around their requests: JSON logs
//! of one shape, stopping on SIGINT or SIGTERM, and an HTTP/1 server that stops without failing a
//! request ([`serve_http1`]). Behind the `service` feature, so shopctl does not pull in the log
//! subscriber, hyper or tokio's signal handling.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::EnvFilter;

/// From the stop signal, how long requests in flight get to finish before their connections are
/// dropped. `scripts/down` waits longer than this before it kills.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// From the stop signal, how long idle keep-alive connections stay open for their client to close
/// them. It must exceed nginx's upstream `keepalive_timeout` (3 s, in nginx/shopgate.conf.in and
/// the rendered shard upstreams): nginx then closes every idle connection itself, and never sends a
/// request on one this side is closing (for a POST that is a 502, not retried elsewhere).
pub(crate) const IDLE_GRACE: Duration = Duration::from_secs(4);

/// How long a connection may sit idle, or take to send a request's headers, in normal operation.
/// Also above nginx's upstream `keepalive_timeout`, for the same reason as [`IDLE_GRACE`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// JSON lines on stderr, filtered by `RUST_LOG` (`default_filter` when unset or invalid). Each
/// event's fields sit at the top level beside the current span (which carries the request id).
/// A second call is a no-op, so tests may call it freely.
pub fn init_logging(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// An HTTP/1 connection builder with the services' timeouts: [`IDLE_TIMEOUT`] to read a request's
/// headers, counted from when the connection goes idle.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT);
    builder
}

/// Serves HTTP/1 on `listener` with `handler` until `shutdown` completes, then stops without
/// failing a request:
///
/// 1. accepts the connections the kernel has completed already (their clients have sent or are
///    sending requests), then closes the listener: new connections are refused, so nginx tries
///    the next server at once;
/// 2. answers every request from then on, in flight or arriving on a connection that is open,
///    with `Connection: close`, so its client does not send another on it;
/// 3. leaves idle connections open for [`IDLE_GRACE`], for their client to close them (nginx's
///    upstream keep-alive timeout is shorter), then closes the rest once idle;
/// 4. returns when every connection is closed, or at [`STOP_DEADLINE`], dropping what still runs.
///
/// The caller then closes its database pools.
pub async fn serve_http1<H, F, B>(listener: TcpListener, builder: http1::Builder, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = Connections {
        builder,
        handler,
        draining: Arc::new(AtomicBool::new(false)),
        close: watch::channel(false),
        open: mpsc::channel(1),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => server.spawn(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    let stopping = tokio::time::Instant::now();
    server.draining.store(true, Ordering::SeqCst);
    // Take what is queued in the kernel, asking it directly (not the reactor, which may not have
    // seen those connections yet); closing the listener would reset them.
    let mut queued = 0usize;
    if let Ok(listener) = listener.into_std() {
        while let Ok((stream, peer)) = listener.accept() {
            if let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                server.spawn(stream, peer);
                queued += 1;
            }
        }
    }
    tracing::info!(queued, "stopping: no new connections; finishing requests in flight");
    let Connections { close: (close, _), open: (open, mut all_closed), .. } = server;
    drop(open);
    let closed = async move {
        // Every connection task holds a sender; this ends when the last one is dropped.
        let _ = all_closed.recv().await;
    };
    tokio::pin!(closed);
    tokio::select! {
        () = &mut closed => return,
        () = tokio::time::sleep_until(stopping + IDLE_GRACE) => {}
    }
    let _ = close.send(true);
    tokio::select! {
        () = &mut closed => {}
        () = tokio::time::sleep_until(stopping + STOP_DEADLINE) => {
            tracing::warn!("requests still running at the stop deadline; dropping them");
        }
    }
}

struct Connections<H> {
    builder: http1::Builder,
    handler: H,
    /// Set at the stop signal: every answer from then on closes its connection.
    draining: Arc<AtomicBool>,
    /// Becomes true at the end of the idle grace: connections close once idle.
    close: (watch::Sender<bool>, watch::Receiver<bool>),
    /// Each connection task holds a sender, so the receiver learns when the last one is gone.
    open: (mpsc::Sender<()>, mpsc::Receiver<()>),
}

impl<H> Connections<H> {
    fn spawn<F, B>(&self, stream: TcpStream, peer: SocketAddr)
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _ = stream.set_nodelay(true);
        let (handler, draining) = (self.handler.clone(), self.draining.clone());
        let service = service_fn(move |req| {
            let (answer, draining) = (handler(req, peer), draining.clone());
            async move {
                let mut resp = answer.await;
                if draining.load(Ordering::SeqCst) {
                    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        let (mut close, open) = (self.close.1.clone(), self.open.0.clone());
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close.wait_for(|now| *now) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}
