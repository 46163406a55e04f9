//! The times nginx and the services must agree on, each defined once. The services use them
//! directly; `shopctl nginx render` writes them into nginx's config (the template's `@…@`
//! placeholders), so a change here reaches both sides. Not behind a feature: shopctl needs them
//! without the services' HTTP server.

use std::time::Duration;

/// An `/api` request (the catalog's included) still running after this gets 503 from its backend,
/// and nginx waits exactly as long for a shard's answer (`proxy_read_timeout`) before it answers
/// 503 itself. A shard that can answer does so within this, so a longer wait would only delay the
/// 503 of one that cannot (its host cut off the network, its process frozen); a shorter one would
/// cut off answers the backend was about to give. Time in the backend's admission queue counts.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// nginx closes a connection to a verifier or a backend once it has been idle this long
/// (`keepalive_timeout` in each upstream): before the service would ([`IDLE_TIMEOUT`], and
/// [`IDLE_GRACE`] when it stops), so nginx never sends a request on a connection the other side is
/// closing (for a POST that is a 502, not retried elsewhere).
pub const UPSTREAM_KEEPALIVE: Duration = Duration::from_secs(3);

/// From the stop signal, how long a service leaves idle keep-alive connections open for their
/// client to close them. Longer than [`UPSTREAM_KEEPALIVE`], so nginx closes every one itself.
pub const IDLE_GRACE: Duration = Duration::from_secs(4);

/// How long a connection may sit idle, or take to send a request's headers, in normal operation.
/// Longer than [`UPSTREAM_KEEPALIVE`], for the same reason as [`IDLE_GRACE`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

// The order the reasons above need, checked when the crate builds.
const _: () = assert!(
    UPSTREAM_KEEPALIVE.as_millis() < IDLE_GRACE.as_millis()
        && UPSTREAM_KEEPALIVE.as_millis() < IDLE_TIMEOUT.as_millis(),
    "nginx's upstream keepalive_timeout must be shorter than the services' idle timeouts"
);
