//! The verifier's one integration-test binary: each test spawns a real verifier on port 0 with its
//! own SQLite auth database in a temp dir, and talks HTTP to it. No database mocks.

mod accounts;
mod client_address;
mod errors;
mod helpers;
mod metrics;
