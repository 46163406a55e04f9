//! Issue 11, point 1, on hosts of their own with TLS on every hop (issue 26, point 1): under load
//! from 40 users on the client host, shard c joins on a new host (its own MariaDB primary and
//! replica there) and half of a's and b's buckets move to it across the switch
//! (`shopgate_e2e::grow::grow_under_load` says what is checked; its assertions are the ones the
//! loopback stacks pass).

use shopgate_e2e::netns::{NetnsStack, TWO_SHARDS};

#[test]
fn a_shard_host_added_and_half_the_buckets_moved_under_load() {
    NetnsStack::run(&TWO_SHARDS, |mut stack| async move {
        shopgate_e2e::grow::grow_under_load(&mut stack, Vec::new()).await;
    });
}
