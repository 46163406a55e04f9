//! Shards on their own hosts (issue 11): the stack on the network-namespace topology of
//! `shopgate_e2e::netns`, where the gateway (nginx, the verifier, the auth MariaDB) and each shard
//! (its MariaDB primary and replica, its backend) is a host with an address of its own on a
//! switch, as separate machines would be.
//!
//! These need root and `ip netns` (scripts/test and CI run as root): without them they fail and
//! say so, never skip.
#![allow(clippy::unwrap_used)]

mod link_down;
