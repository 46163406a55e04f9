//! Issue 24: the move as a library. shopctl's [`Mover`] driven in this process, one step at a
//! time, on the two-shard SQLite stack: after each step the moved and unmoved users see what that
//! step promises (`users_see`, an exhaustive match over [`MoveStep`]), the progress hears of every
//! step in order, and the end is an uninterrupted move's.

use std::time::Duration;

use serde_json::Value;
use shopctl::db::Db;
use shopctl::mover::{Mover, Progress};
use shopgate_core::control::{self, MoveRecord, MoveStep};

use super::moves::{every_order_is_served_once, setup, spec, users_see, world};

/// The steps as the mover told of them.
#[derive(Default)]
struct Heard(Vec<MoveStep>);

impl Progress for Heard {
    fn step(&mut self, m: &MoveRecord, _took: Duration, _detail: &Value) {
        self.0.push(m.step);
    }
}

#[tokio::test]
async fn a_move_driven_step_by_step_keeps_each_steps_promise() {
    let (stack, mut shoppers, moved) = setup().await;
    let before = world(&stack, &moved).await;
    let control = Db::connect(&stack.config.verifier.database_url, "the auth database").await.unwrap();
    let mut mover = Mover::new(&stack.config, control, Duration::from_secs(20), 100, Heard::default()).unwrap();
    let mut m = control::insert_move(mover.control(), "a", "b", &spec(&moved), "move").await.unwrap();
    while m.step != MoveStep::Done {
        m = mover.advance(m).await.unwrap_or_else(|e| panic!("{e:#}"));
        if let Some(id) = users_see(&stack, &shoppers, m.step.as_str()).await {
            shoppers[0].orders.push(id);
        }
    }
    assert_eq!(mover.progress.0, MoveStep::ALL[1..], "the steps as heard");
    assert!(control::unfinished_moves(mover.control()).await.unwrap().is_empty());
    let after = world(&stack, &moved).await;
    assert_eq!(after.owners, vec!["b".to_owned(); moved.len()]);
    assert!(after.rows_a.iter().all(|t| t.rows == 0), "{:?}", after.rows_a);
    assert_eq!((after.open_a.clone(), after.open_b.clone()), (vec![], moved.clone()));
    assert!(after.rows_b.iter().zip(&before.rows_a).all(|(b, a)| b.rows >= a.rows), "{:?}", after.rows_b);
    // users_see placed orders for the unmoved shopper 2 too.
    for s in &mut shoppers[2..] {
        s.orders = super::moves::order_ids(&stack, s).await.1;
    }
    every_order_is_served_once(&stack, &shoppers, &[]).await;
}
