//! What both services (verifier and backend) do the same way around their requests: JSON logs
//! of one shape, and stopping on SIGINT or SIGTERM. Behind the `service` feature, so shopctl does
//! not pull in the log subscriber or tokio's signal handling.

use tracing_subscriber::EnvFilter;

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
