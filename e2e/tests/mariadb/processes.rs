//! Issue 11, point 3, on MariaDB: two backend processes per shard on one primary (and replica)
//! under concurrent creates with retried `Idempotency-Key`s, each key sent at once through nginx
//! and straight to both processes: exactly one order per key in the shard's database, every
//! answer for a key the same order, no duplicate id (`shopgate_e2e::processes`).

use std::sync::Arc;

use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::processes::Race;
use shopgate_e2e::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_per_shard_make_one_order_per_key_and_never_share_an_id() {
    let topology = Topology::start().await;
    let options = Options { backends_per_shard: 2, ..topology.stack_options(5) };
    let stack = Arc::new(Stack::start_with(options).await);
    let outcome = Race::default().run(stack.clone()).await;
    eprintln!("{outcome:?}");
}
