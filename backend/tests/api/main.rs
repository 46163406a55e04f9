//! The backend's one integration-test binary: each test spawns a real shard on port 0 with its own
//! SQLite files in a temp dir, and talks HTTP to it. No database mocks.

mod auth;
mod catalog;
mod errors;
mod group_commit;
mod health;
mod helpers;
mod idempotency;
mod metrics;
mod mysql;
mod operators;
mod orders;
mod overload;
mod per_user;
mod replica;
mod transactions;
mod users;
