//! Shards on their own hosts (issue 11): the stack on the network-namespace topology of
//! `shopgate_e2e::netns`, where the gateway (nginx, the auth MariaDB), the verifier and each shard
//! (its MariaDB primary and replica, its backend) is a host with an address of its own on a
//! switch, as separate machines would be, and every hop between them encrypted (issue 26): HTTPS
//! at nginx, mutual TLS to the verifier and backends, TLS to MariaDB and between its instances.
//! The tests' own requests come from a client host on the same switch.
//!
//! These need root and `ip netns` (scripts/test and CI run as root): without them they fail and
//! say so, never skip.
#![allow(clippy::unwrap_used)]

mod capture;
mod edge;
mod grow;
mod link_down;
