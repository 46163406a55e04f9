//! Issue 5: the real `shopctl` binary against a running stack (real nginx, verifier, two shards).
//! Each test starts its own stack; the harness helpers are in `shopgate_e2e::cli`.

mod backups;
mod bad_input;
mod catalog;
mod doctor;
mod https;
mod migrate;
mod mover;
mod moves;
mod operators;
mod operators_mariadb;
mod pty;
mod scripting;
mod shopper;

/// A fresh email for this test run.
pub fn email(tag: &str) -> String {
    format!("{tag}-{}@example.com", shopgate_e2e::rand_hex(6))
}
