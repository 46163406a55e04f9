//! Issue 13 point 1: `shopctl doctor` on a whole stack whose auth database and shards are MariaDB
//! primaries with replicas: exit 0 when healthy; with each part stopped in turn (a verifier, a
//! backend, a replica, a primary, nginx) exit 1 naming that part, and healthy again once a
//! restarted process is back.

use serde_json::Value;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Stack, PASSWORD};

/// `shopctl --json doctor`: its exit code and the parts it found failing.
fn doctor(stack: &Stack) -> (i32, Vec<String>, String) {
    let r = stack.ctl(&["--json", "doctor"]);
    let v = r.json();
    let failed = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items:\n{r}"))
        .iter()
        .filter(|c| c["ok"] != Value::Bool(true))
        .map(|c| c["part"].as_str().unwrap_or_default().to_owned())
        .collect();
    (r.code, failed, r.to_string())
}

/// Asserts doctor fails and that some failing part starts with `part`; the error line names it.
fn names(stack: &Stack, part: &str) {
    let (code, failed, run) = doctor(stack);
    assert_eq!(code, 1, "{run}");
    assert!(failed.iter().any(|f| f.starts_with(part)), "{part:?} not among the failures {failed:?}:\n{run}");
    let plain = stack.ctl(&["doctor"]);
    assert!(plain.one_line_error(1).contains(part), "{plain}");
}

fn healthy(stack: &Stack) {
    let (code, failed, run) = doctor(stack);
    assert_eq!((code, failed), (0, Vec::<String>::new()), "{run}");
}

#[tokio::test]
async fn doctor_passes_on_a_healthy_stack_and_names_each_stopped_part() {
    let topology = Topology::start().await;
    let stack = Stack::start_with(topology.stack_options(5)).await;
    let email = super::email("cli-doctor");
    let pw = format!("{PASSWORD}\n");
    stack.ctl_stdin(&["register", &email, "--password-stdin"], &pw).ok();
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();
    healthy(&stack);
    let table = stack.ctl(&["--format", "table", "doctor"]).ok();
    for part in ["config", "auth database", "nginx", "verifier at", "shard a's backend", "shard b's replica", "login"] {
        assert!(table.stdout.contains(part), "{part:?} not checked:\n{table}");
    }

    stack.kill("verifier-0");
    names(&stack, "verifier at");
    stack.restart("verifier-0").await;
    healthy(&stack);

    stack.kill("backend-a");
    names(&stack, "shard a's backend at");
    stack.restart("backend-a").await;
    healthy(&stack);

    topology.kill("a-replica");
    names(&stack, "shard a's replica");

    topology.kill("b-primary");
    names(&stack, "shard b's primary");

    stack.kill("nginx");
    names(&stack, "nginx");
}
