//! Issue 13: `shopctl users unlock` with the auth database on MariaDB (the `login_unlocks`
//! migration and its upsert), two verifiers following it; the shards stay on SQLite.

use shopgate_e2e::mariadb::{Spec, Topology};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack, PASSWORD};

#[tokio::test]
async fn users_unlock_on_mariadb_reaches_every_verifier_each_time() {
    let spec = Spec { shards: Vec::new(), ..Spec::default() };
    let topology = Topology::start_with(&spec).await.expect("the auth instance");
    let settings = vec![("verifier.login_max_failures_per_account", "2")];
    let opts = Options { verifiers: 2, settings, ..topology.stack_options(5) };
    let stack = Stack::start_with(opts).await;
    let email = format!("mdb-unlock-{}@example.com", shopgate_e2e::rand_hex(4));
    stack.register(&email).await;
    let login = |base: String, password: &'static str| {
        let (http, email) = (stack.http.clone(), email.clone());
        async move {
            let form = [("username", email.as_str()), ("password", password)];
            http.post(format!("{base}/auth/token")).form(&form).send().await.unwrap().status().as_u16()
        }
    };
    let verifiers: Vec<String> = stack.config.verifier.listen.iter().map(|a| format!("http://{a}")).collect();
    // Twice: the second unlock of the same account is the upsert's update.
    for round in 0..2 {
        for v in &verifiers {
            let mut tries = 0;
            while login(v.clone(), "Not-the-Passw0rd!").await != 429 {
                tries += 1;
                assert!(tries < 10, "round {round}: {v} never locks the account");
            }
            assert_eq!(login(v.clone(), PASSWORD).await, 429, "round {round}: {v}");
        }
        let unlocked = stack.ctl(&["--json", "users", "unlock", &email]).ok().json();
        assert_eq!(unlocked["unlocked"], true, "{unlocked}");
        for v in &verifiers {
            assert_eq!(login(v.clone(), PASSWORD).await, 200, "round {round}: {v} still refuses after the unlock");
        }
    }
    drop(stack);
    drop(topology);
}
