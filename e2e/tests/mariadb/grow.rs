//! Issue 11, point 1, on MariaDB shards: under load from 40 users, shard c (its own primary and
//! replica, from a second `scripts/mariadb` topology) is added and half of a's and b's buckets
//! move to it (`shopgate_e2e::grow::grow_under_load` says what is checked).

use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_and_half_the_buckets_moved_under_load() {
    let (topology, for_c) = tokio::join!(Topology::start(), Topology::start_shards("c"));
    let options = Options {
        nginx_master: true,
        settings: vec![("verifier.register_max_per_address", "1000")],
        ..topology.stack_options(5)
    };
    let mut stack = Stack::start_with(options).await;
    shopgate_e2e::grow::grow_under_load(&mut stack, for_c.shard_overrides(5)).await;
}
