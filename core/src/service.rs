//! What both services (verifier and backend) do the same way around their requests: JSON logs
//! of one shape, stopping on SIGINT or SIGTERM, and an HTTP/1 server that stops without failing a
//! request ([`serve_http1`]), on TCP or a unix socket ([`Listener`]), in plain text or TLS
//! ([`tls::Tls`]). Behind the `service` feature, so shopctl does not pull in the log subscriber,
//! hyper, rustls or tokio's signal handling.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::EnvFilter;

/// From the stop signal, how long requests in flight get to finish before their connections are
/// dropped. `scripts/down` waits longer than this before it kills.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The services' idle times, defined beside nginx's upstream keep-alive they must outlast.
pub(crate) use crate::timeouts::IDLE_GRACE;
pub use crate::timeouts::IDLE_TIMEOUT;

/// The most of a request body a service reads and drops after answering without reading it all
/// (a `GET` with a body, a 413, a route that takes none): above nginx's `client_max_body_size`
/// (1 MiB), so nothing nginx passes on is ever cut off mid-send.
pub const DRAIN_BYTES: usize = 2 << 20;

/// How long that reading may take before the connection is closed instead.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

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

/// On every `USR1`, as nginx does: the process's output moves to a fresh open of its log file
/// ([`crate::files::reopen_output`]), for logrotate's `postrotate`. The signal is taken whether
/// or not the output is a file of ours, so a stray `USR1` never kills a service.
pub fn reopen_output_on_usr1() {
    #[cfg(unix)]
    {
        let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
            return;
        };
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                match crate::files::reopen_output() {
                    Ok(Some(path)) => tracing::info!(path = %path.display(), "log file reopened"),
                    Ok(None) => tracing::info!("USR1: the output is not a log file of ours; nothing reopened"),
                    Err(e) => tracing::error!(error = %e, "could not reopen the log file; writing on to the old one"),
                }
            }
        });
    }
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
/// A request body the handler leaves unread is read to its end and dropped before the answer goes
/// out ([`RequestBody`]), so a client (nginx) is never cut off while it still sends: nginx counts
/// such a broken send as the server failing (`max_fails`) and takes it out of its group.
///
/// The caller then closes its database pools.
pub async fn serve_http1<L, H, F, B>(
    listener: L,
    builder: http1::Builder,
    threads: Threads,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    H: Fn(Request<RequestBody>, L::Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = Connections {
        builder,
        threads,
        handler,
        draining: Arc::new(AtomicBool::new(false)),
        close: watch::channel(false),
        open: mpsc::channel(1),
    };
    let opener = listener.opener();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => server.spawn::<L, _, _>(&opener, stream, peer),
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
    let queued = listener.take_queued();
    let count = queued.len();
    for (stream, peer) in queued {
        server.spawn::<L, _, _>(&opener, stream, peer);
    }
    tracing::info!(queued = count, "stopping: no new connections; finishing requests in flight");
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

/// A listening socket [`serve_http1`] serves: TCP, whose peers are addresses, or a unix socket
/// (the verifier's, for nginx on its host), whose peers have none.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Who is at the other end, as the handler is told.
    type Peer: Copy + Send + Sync + 'static;
    /// A connection between runtimes: the plain socket.
    type Detached: Send + 'static;

    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send;

    /// At the stop: takes the connections the kernel has completed already, asking the socket
    /// directly (not the reactor, which may not have seen them yet), then closes it. Closing it
    /// with connections still queued would reset them.
    fn take_queued(self) -> Vec<(Self::Stream, Self::Peer)>;

    /// A connection as a plain socket, out of the runtime that accepted it ...
    fn detach(stream: Self::Stream) -> std::io::Result<Self::Detached>;
    /// ... and back in the runtime of the thread that calls this (a [`ConnectionThreads`] one).
    fn attach(socket: Self::Detached) -> std::io::Result<Self::Stream>;

    /// What turns an accepted connection into the one HTTP is spoken on: [`Plain`], or a TLS
    /// handshake ([`tls::Tls`]). It runs in the connection's own task, after [`Listener::attach`].
    type Opener: Opener<Self::Stream>;
    fn opener(&self) -> Self::Opener;
}

/// Opens a connection for HTTP: as it is, or through a handshake.
pub trait Opener<S>: Clone + Send + Sync + 'static {
    type Session: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn open(&self, stream: S) -> impl Future<Output = std::io::Result<Self::Session>> + Send;
}

/// HTTP straight on the socket.
#[derive(Clone, Copy, Debug)]
pub struct Plain;

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Opener<S> for Plain {
    type Session = S;

    async fn open(&self, stream: S) -> std::io::Result<S> {
        Ok(stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    type Detached = std::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn take_queued(self) -> Vec<(TcpStream, SocketAddr)> {
        let mut queued = Vec::new();
        if let Ok(listener) = self.into_std() {
            while let Ok((stream, peer)) = listener.accept() {
                if let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                    let _ = stream.set_nodelay(true);
                    queued.push((stream, peer));
                }
            }
        }
        queued
    }

    fn detach(stream: TcpStream) -> std::io::Result<std::net::TcpStream> {
        stream.into_std()
    }

    fn attach(socket: std::net::TcpStream) -> std::io::Result<TcpStream> {
        TcpStream::from_std(socket)
    }

    type Opener = Plain;
    fn opener(&self) -> Plain {
        Plain
    }
}

/// A unix socket's peer has no address: `()`.
#[cfg(unix)]
impl Listener for UnixListener {
    type Stream = UnixStream;
    type Peer = ();
    type Detached = std::os::unix::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(UnixStream, ())> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, ()))
    }

    fn take_queued(self) -> Vec<(UnixStream, ())> {
        let mut queued = Vec::new();
        if let Ok(listener) = self.into_std() {
            while let Ok((stream, _)) = listener.accept() {
                if let Ok(stream) = stream.set_nonblocking(true).and_then(|()| UnixStream::from_std(stream)) {
                    queued.push((stream, ()));
                }
            }
        }
        queued
    }

    fn detach(stream: UnixStream) -> std::io::Result<std::os::unix::net::UnixStream> {
        stream.into_std()
    }

    fn attach(socket: std::os::unix::net::UnixStream) -> std::io::Result<UnixStream> {
        UnixStream::from_std(socket)
    }

    type Opener = Plain;
    fn opener(&self) -> Plain {
        Plain
    }
}

/// Where [`serve_http1`] runs its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// On the runtime that accepted them (tokio's shared one, whose idle workers steal work from
    /// busy ones): for handlers whose cost varies and that wait on databases (the backend).
    Shared,
    /// Each on one of [`ConnectionThreads`] for its whole life: for handlers that are short and
    /// alike (the verifier's check), where stealing buys nothing and costs a wake-up a request.
    Pinned,
}

/// The threads that serve pinned connections: one single-threaded runtime each, as many as the
/// machine has cores, each connection on one of them (in turn) for its whole life. On tokio's
/// shared runtime a request woke one worker for the socket and often a second to look for work
/// to steal, and a connection's task moved between them. Old against new build in interleaved
/// rounds (`scripts/bench-builds`, BENCHMARKS.md): a check straight to the verifier cost 8.9 µs of
/// CPU at 32 connections and 12.7 at 4, pinned 8.1 and 10.5. The price: behind nginx at 2,400-3,000
/// checks a second (each thread woken for nearly every one) 27-32 µs, pinned 33-40. For the
/// backend pinning cost its order lists 10% in CPU and rate: with no stealing, one thread queues
/// requests while the other idles. What a request's handler spawns runs on its connection's
/// thread too; the rest of a service (its database pools' upkeep, background tasks) stays on the
/// main runtime.
struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
}

impl ConnectionThreads {
    /// The process's, started at the first connection. Empty if no thread could be started: then
    /// connections are served on the runtime that accepted them.
    fn get() -> &'static ConnectionThreads {
        static THREADS: std::sync::OnceLock<ConnectionThreads> = std::sync::OnceLock::new();
        THREADS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            let handles = (0..cores)
                .map_while(|i| match Self::start(i) {
                    Ok(handle) => Some(handle),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start a connection thread");
                        None
                    }
                })
                .collect();
            ConnectionThreads { handles, next: std::sync::atomic::AtomicUsize::new(0) }
        })
    }

    fn start(i: usize) -> std::io::Result<tokio::runtime::Handle> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name(format!("connections-{i}"))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        Ok(handle)
    }

    /// The thread for the next connection.
    fn pick(&self) -> Option<&tokio::runtime::Handle> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(n % self.handles.len().max(1))
    }
}

struct Connections<H> {
    builder: http1::Builder,
    threads: Threads,
    handler: H,
    /// Set at the stop signal: every answer from then on closes its connection.
    draining: Arc<AtomicBool>,
    /// Becomes true at the end of the idle grace: connections close once idle.
    close: (watch::Sender<bool>, watch::Receiver<bool>),
    /// Each connection task holds a sender, so the receiver learns when the last one is gone.
    open: (mpsc::Sender<()>, mpsc::Receiver<()>),
}

impl<H> Connections<H> {
    /// Serves `stream` where `self.threads` says: on the runtime that accepted it, or on one of
    /// the [`ConnectionThreads`].
    fn spawn<L, F, B>(&self, opener: &L::Opener, stream: L::Stream, peer: L::Peer)
    where
        L: Listener,
        H: Fn(Request<RequestBody>, L::Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (handler, draining) = (self.handler.clone(), self.draining.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            // Only a request with a body gets a place to hand it back: none on the check path.
            let unread = (!req.body().is_end_stream()).then(|| Arc::new(Mutex::new(None)));
            let req = req.map(|body| RequestBody { body: Some(body), unread: unread.clone() });
            let (answer, draining) = (handler(req, peer), draining.clone());
            async move {
                let mut resp = answer.await;
                let left = unread.and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
                let drained = match left {
                    Some(body) => drain(body).await,
                    None => true,
                };
                if !drained || draining.load(Ordering::SeqCst) {
                    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let (builder, mut close, open) = (self.builder.clone(), self.close.1.clone(), self.open.0.clone());
        let opener = opener.clone();
        let serve = move |stream: L::Stream| async move {
            let _open = open;
            let session = match opener.open(stream).await {
                Ok(session) => session,
                Err(e) => {
                    // A plaintext client on a TLS port, no or a foreign client certificate, a
                    // client that stalled: it never gets to send a request.
                    tracing::info!(error = %e, "connection refused at its TLS handshake");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(session), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close.wait_for(|now| *now) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        };
        let pinned = match self.threads {
            Threads::Shared => None,
            Threads::Pinned => ConnectionThreads::get().pick(),
        };
        let Some(thread) = pinned else {
            tokio::spawn(serve(stream));
            return;
        };
        match L::detach(stream) {
            Ok(socket) => {
                thread.spawn(async move {
                    match L::attach(socket) {
                        Ok(stream) => serve(stream).await,
                        Err(e) => tracing::warn!(error = %e, "could not serve a connection"),
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "could not serve a connection"),
        }
    }
}

/// A request's body as a handler gets it. Whatever the handler has not read when it drops the body
/// is handed back to the server, which reads it off (at most [`DRAIN_BYTES`], within
/// [`DRAIN_TIME`]) before sending the answer. hyper alone would close the connection on a body left
/// unread, resetting a client that is still sending it.
pub struct RequestBody {
    body: Option<Incoming>,
    /// Where an unread body goes back to the server; `None` for a request without a body.
    unread: Option<Arc<Mutex<Option<Incoming>>>>,
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(slot) = &self.unread else { return };
        if let Some(body) = self.body.take().filter(|b| !b.is_end_stream()) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Incoming::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// Reads `body` to its end and drops it: true if that took at most [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`], so the connection can take the next request; false to close it.
async fn drain(body: Incoming) -> bool {
    use http_body_util::BodyExt as _;
    if body.size_hint().lower() > DRAIN_BYTES as u64 {
        return false;
    }
    let read = async {
        let mut body = body;
        let mut left = DRAIN_BYTES;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let len = frame.data_ref().map_or(0, Bytes::len);
            let Some(rest) = left.checked_sub(len) else { return false };
            left = rest;
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full, Limited};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Serves on a free loopback port with `handler`; returns the address.
    async fn serve<H, F>(handler: H) -> SocketAddr
    where
        H: Fn(Request<RequestBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_http1(listener, http1_builder(), Threads::Pinned, handler, std::future::pending()));
        addr
    }

    /// Sends `head` and a body of `len` bytes while reading the answer, as nginx does (it writes
    /// the whole body before it reads); returns the answer's head and whether the whole body went.
    async fn send(stream: &mut TcpStream, head: &str, len: usize) -> (String, bool) {
        let (mut rd, mut wr) = stream.split();
        let body = vec![b'a'; len];
        let write = async {
            wr.write_all(head.as_bytes()).await?;
            wr.write_all(&body).await
        };
        let read = async {
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
            // The answers here have a 2-byte body, which may have come with the head.
            let end = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
            let mut rest = vec![0u8; (end + 2).saturating_sub(answer.len())];
            let _ = rd.read_exact(&mut rest).await;
            String::from_utf8_lossy(&answer[..end]).into_owned()
        };
        let (sent, answer) = tokio::join!(write, read);
        (answer, sent.is_ok())
    }

    fn ok() -> Response<Full<Bytes>> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    /// A pinned connection is served on one of the connection threads, every request of it on the
    /// same one; a shared one on the runtime that accepted it (this test's own thread).
    #[tokio::test]
    async fn pinned_connections_are_served_on_a_connection_thread_of_their_own() {
        for threads in [Threads::Pinned, Threads::Shared] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handler = |_req, _peer| async {
                let name = std::thread::current().name().unwrap_or_default().to_owned();
                Response::new(Full::new(Bytes::from(name)))
            };
            tokio::spawn(serve_http1(listener, http1_builder(), threads, handler, std::future::pending()));
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answers = String::new();
            stream.read_to_string(&mut answers).await.unwrap();
            let names: Vec<&str> =
                answers.split("HTTP/1.1 ").skip(1).map(|a| a.rsplit("\r\n").next().unwrap()).collect();
            assert_eq!(names.len(), 2, "{answers}");
            assert_eq!(names[0], names[1], "one connection, one thread: {answers}");
            let on_a_connection_thread = names[0].starts_with("connections-");
            assert_eq!(on_a_connection_thread, threads == Threads::Pinned, "{threads:?}: served on {:?}", names[0]);
        }
    }

    /// A handler that never reads the body (a GET's, a body-less POST's): the 1 MiB that nginx
    /// sends is taken in full, and the same connection serves the next request. hyper alone
    /// closed the connection at the answer, and the sender's write failed (EPIPE / reset).
    #[tokio::test]
    async fn a_body_left_unread_is_taken_and_the_connection_kept() {
        let addr = serve(|_req, _peer| async { ok() }).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for len in [1 << 20, 64 << 10] {
            let head = format!("GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
            let (answer, sent) = send(&mut stream, &head, len).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{len}-byte body: {answer:?}");
            assert!(sent, "the {len}-byte body could not be sent in full");
            assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        }
        let (answer, _) = send(&mut stream, "GET /y HTTP/1.1\r\nHost: t\r\n\r\n", 0).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "the next request on the connection: {answer:?}");
    }

    /// A handler that stops reading part-way (a body over its limit: 413) leaves the rest, which
    /// is taken the same way; chunked bodies too.
    #[tokio::test]
    async fn a_body_read_in_part_is_taken_to_its_end() {
        let addr = serve(|req: Request<RequestBody>, _peer| async move {
            let status = match Limited::new(req.into_body(), 1000).collect().await {
                Ok(_) => 200,
                Err(_) => 413,
            };
            let mut resp = ok();
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            resp
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (answer, sent) =
            send(&mut stream, "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n", 1 << 20).await;
        assert!(answer.starts_with("HTTP/1.1 413") && sent, "{answer:?} sent={sent}");
        let chunk = format!("{:x}\r\n{}\r\n", 60_000, "b".repeat(60_000));
        let chunked =
            format!("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunk.repeat(10));
        let (answer, sent) = send(&mut stream, &chunked, 0).await;
        assert!(answer.starts_with("HTTP/1.1 413") && sent, "chunked: {answer:?} sent={sent}");
        let (answer, _) = send(&mut stream, "GET /y HTTP/1.1\r\nHost: t\r\n\r\n", 0).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "the next request on the connection: {answer:?}");
    }

    /// Past [`DRAIN_BYTES`] the server does not read on: it answers and closes.
    #[tokio::test]
    async fn a_body_past_the_drain_bound_closes_the_connection() {
        let addr = serve(|_req, _peer| async { ok() }).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let len = DRAIN_BYTES + 1;
        let head = format!("GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        let (answer, _) = send(&mut stream, &head, len).await;
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer:?}");
    }
}
