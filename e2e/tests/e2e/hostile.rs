//! What a hostile tester found (issue 8), each as it was reproduced: guessing in concurrent
//! bursts and through password changes, revoked tokens coming back past their expiry, revoked
//! tokens taken by a backend port reached directly, registration floods, forged oversized emails,
//! split order lines, well-known passwords and a spoofed `X-Real-IP`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use shopgate_core::token::new_claims;
use shopgate_core::UserId;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{now, rand_hex, Options, Stack, PASSWORD};

/// The verifier's counter `name` from its `/metrics`.
async fn verifier_metric(stack: &Stack, name: &str) -> u64 {
    stack.verifier_metric(0, name).await.unwrap_or_else(|| panic!("no {name} in the verifier's /metrics")) as u64
}

async fn login(stack: &Stack, email: &str, password: &str) -> reqwest::Response {
    stack.http.post(stack.api("/auth/token")).form(&[("username", email), ("password", password)]).send().await.unwrap()
}

fn assert_retry_after(r: &reqwest::Response) {
    let secs: u64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(secs >= 1, "429 without a usable Retry-After: {:?}", r.headers());
}

/// Finding 1: the "already blocked?" check ran before hashing and the failure was counted after
/// it, so a burst passed the check together (40 at once: 39 wrong passwords checked, then the
/// right one let in).
#[tokio::test]
async fn a_burst_of_a_hundred_guesses_at_one_account_checks_at_most_the_limit() {
    let stack = Stack::start_with(Options {
        settings: vec![
            ("verifier.login_max_failures_per_account", "5"),
            ("verifier.login_max_failures_per_address", "1000"),
        ],
        ..Default::default()
    })
    .await;
    let email = format!("victim-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let before = verifier_metric(&stack, "shop_password_checks_total").await;
    let mut burst = Vec::new();
    for i in 0..100 {
        let (stack, email) = (&stack, email.clone());
        // The right password comes last, behind 99 wrong ones.
        let password = if i == 99 { PASSWORD.to_owned() } else { format!("Wrong-Guess-{i}!") };
        burst.push(async move {
            let r = login(stack, &email, &password).await;
            if r.status() == 429 {
                assert_retry_after(&r);
            }
            r.status().as_u16()
        });
    }
    let statuses = join_all(burst).await;
    let checks = verifier_metric(&stack, "shop_password_checks_total").await - before;
    assert!(checks <= 5, "{checks} passwords checked for one account in one window (limit 5); statuses {statuses:?}");
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 95, "only {throttled} of 100 refused with 429: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 401, 429].contains(s)), "{statuses:?}");
}

/// Finding 1, per address: guesses spread over many accounts from one address.
#[tokio::test]
async fn a_burst_over_many_accounts_from_one_address_checks_at_most_the_address_limit() {
    let stack = Stack::start_with(Options {
        settings: vec![("verifier.login_max_failures_per_address", "10")],
        ..Default::default()
    })
    .await;
    let before = verifier_metric(&stack, "shop_password_checks_total").await;
    let burst: Vec<_> = (0..100)
        .map(|i| {
            let stack = &stack;
            async move { login(stack, &format!("nobody-{i}@example.com"), "Wrong-Guess-1!").await.status().as_u16() }
        })
        .collect();
    let statuses = join_all(burst).await;
    let checks = verifier_metric(&stack, "shop_password_checks_total").await - before;
    assert!(checks <= 10, "{checks} passwords checked from one address (limit 10): {statuses:?}");
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
}

/// Finding 2: 15 wrong current passwords in a row were each checked (403), then the right one
/// changed the password.
#[tokio::test]
async fn change_password_guesses_count_against_the_login_limits() {
    let stack = Stack::start().await;
    let email = format!("chg-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let token = stack.login(&email).await;
    let change = |current: String| {
        stack
            .http
            .post(stack.api("/auth/change-password"))
            .bearer_auth(&token)
            .json(&json!({"current_password": current, "new_password": "N3w-Password!"}))
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..15 {
        let r = change(format!("Wrong-Guess-{i}!")).await.unwrap();
        if r.status() == 429 {
            assert_retry_after(&r);
        }
        statuses.push(r.status().as_u16());
    }
    let limit = stack.config.verifier.login_max_failures_per_account as usize;
    assert_eq!(statuses[..limit], vec![403; limit][..], "{statuses:?}");
    assert!(statuses[limit..].iter().all(|s| *s == 429), "{statuses:?}");
    let right = change(PASSWORD.to_owned()).await.unwrap();
    assert_eq!(right.status(), 429, "the right password must wait out the window too");
    // And the same account's logins share the limit.
    assert_eq!(login(&stack, &email, PASSWORD).await.status(), 429);
}

/// A token for `user_id` that expired `ago` seconds ago, signed with the stack's key.
fn expired_token(stack: &Stack, user_id: u64, ago: i64) -> String {
    let ttl = 600;
    let claims =
        new_claims(UserId::new(user_id).unwrap(), "late@example.com", &stack.config.jwt.policy, now() - ttl - ago, ttl);
    stack.config.jwt.sign(&claims).unwrap()
}

/// Finding 3: revocations were reloaded only while `expires_at > now - 60`, but with
/// `leeway_seconds` above 60 tokens pass until `exp + leeway`: a logged-out token came back.
#[tokio::test]
async fn a_logged_out_token_stays_refused_for_its_whole_leeway() {
    let stack = Stack::start_with(Options {
        config_overrides: vec![("SHOP__JWT__LEEWAY_SECONDS".into(), "300".into())],
        ..Default::default()
    })
    .await;
    // Expired 90 s ago: still good for 210 s under a 300 s leeway.
    let token = expired_token(&stack, 8, 90);
    let verifier = stack.config.verifier.listen[0];
    let verify = || stack.http.get(format!("http://{verifier}/verify")).bearer_auth(&token).send();
    assert_eq!(verify().await.unwrap().status(), 200, "inside the leeway");
    let r = stack.http.post(stack.api("/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Past two reloads of the revocation list, the token must still be refused.
    tokio::time::sleep(stack.config.verifier.revocation_bound() * 2).await;
    assert_eq!(verify().await.unwrap().status(), 401, "a reload forgot the logout");
    let shard = stack.config.shard("a").unwrap().addr();
    let direct = stack.http.get(format!("http://{shard}/api/orders")).bearer_auth(&token).header("X-User-Id", "8");
    assert_eq!(direct.send().await.unwrap().status(), 401, "the backend forgot it too");
}

/// Polls a backend port directly with `token` for `user` until it answers `want`, within the
/// revocation bound (and a second of slack for a loaded machine).
async fn direct_until(stack: &Stack, user: u64, token: &str, want: u16) {
    let shard =
        stack.config.shard(stack.config.shard_map.shard_for(UserId::new(user).unwrap()).as_str()).unwrap().addr();
    let deadline = Instant::now() + stack.config.verifier.revocation_bound() + Duration::from_secs(1);
    loop {
        let r = stack
            .http
            .get(format!("http://{shard}/api/orders"))
            .bearer_auth(token)
            .header("X-User-Id", user.to_string())
            .send()
            .await
            .unwrap();
        if r.status() == want {
            if want == 401 {
                assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1);
            }
            return;
        }
        assert!(Instant::now() < deadline, "backend {shard} still answers {} for user {user}, want {want}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 4: after logout, the backend port reached directly with the revoked token and a
/// matching `X-User-Id` answered 200. The same for a user an operator disabled.
#[tokio::test]
async fn a_backend_port_refuses_what_nginx_refuses() {
    let stack = Stack::start().await;
    let (user, token) = stack.shopper().await;
    direct_until(&stack, user, &token, 200).await;
    let r = stack.http.post(stack.api("/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    direct_until(&stack, user, &token, 401).await;

    let email = format!("disabled-{}@example.com", rand_hex(4));
    let other = stack.register(&email).await["id"].as_u64().unwrap();
    let token = stack.login(&email).await;
    direct_until(&stack, other, &token, 200).await;
    let out = stack.shopctl().args(["users", "disable", &email]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    direct_until(&stack, other, &token, 401).await;
}

/// Finding 5: one address with 80 connections registering for 6 s created 202 accounts while
/// 22 of 23 logins from elsewhere got 503 busy. Registrations now have a per-address limit, and
/// their hashing waits behind logins'.
#[tokio::test]
async fn a_registration_flood_does_not_starve_logins() {
    let stack = Stack::start_with(Options {
        settings: vec![("verifier.register_max_per_address", "10")],
        ..Default::default()
    })
    .await;
    let mut shoppers = Vec::new();
    for _ in 0..3 {
        let email = format!("regular-{}@example.com", rand_hex(4));
        stack.register(&email).await;
        shoppers.push(email);
    }
    let flood_until = Instant::now() + Duration::from_secs(4);
    let flood: Vec<_> = (0..80)
        .map(|_| {
            let stack = &stack;
            async move {
                let mut seen = Vec::new();
                while Instant::now() < flood_until {
                    let email = format!("flood-{}@example.com", rand_hex(6));
                    let r = stack
                        .http
                        .post(stack.api("/auth/register"))
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 429 {
                        assert_retry_after(&r);
                    }
                    seen.push(r.status().as_u16());
                }
                seen
            }
        })
        .collect();
    let logins = async {
        let mut seen = Vec::new();
        tokio::time::sleep(Duration::from_millis(300)).await;
        while Instant::now() < flood_until {
            for email in &shoppers {
                let started = Instant::now();
                let status = login(&stack, email, PASSWORD).await.status().as_u16();
                seen.push((status, started.elapsed()));
            }
        }
        seen
    };
    let (flooded, logins) = tokio::join!(join_all(flood), logins);
    let flooded: Vec<u16> = flooded.into_iter().flatten().collect();
    let created = flooded.iter().filter(|s| **s == 201).count();
    assert!(created <= 10, "{created} accounts from one address (limit 10)");
    assert!(flooded.iter().all(|s| [201, 429].contains(s)), "flood answers: {:?}", summary(&flooded));
    let failed: Vec<_> = logins.iter().filter(|(s, _)| *s != 200).collect();
    assert!(!logins.is_empty() && failed.is_empty(), "logins during the flood: {failed:?} of {}", logins.len());
    let mut times: Vec<Duration> = logins.iter().map(|(_, t)| *t).collect();
    times.sort();
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    eprintln!("logins during the flood: {} ok, p99 {p99:?}; flood: {:?}", logins.len(), summary(&flooded));
}

/// Also seen: a validly signed token with a ~5 KB email gave 503 (nginx refused the verifier's
/// oversized `X-User-Email`); such a token is now a plain 401.
#[tokio::test]
async fn a_signed_token_with_an_oversized_email_is_401_not_503() {
    let stack = Stack::start().await;
    let email = format!("{}@example.com", "a".repeat(5000));
    let claims = new_claims(UserId::new(4).unwrap(), &email, &stack.config.jwt.policy, now(), 600);
    let token = stack.config.jwt.sign(&claims).unwrap();
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = stack
        .http
        .post(stack.api("/auth/register"))
        .json(&json!({"email": format!("{}@example.com", "a".repeat(250)), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "emails over 254 characters are refused at registration");
}

/// Also seen: 100 lines of one product x 1000 made an order of 100,000 units.
#[tokio::test]
async fn split_order_lines_are_capped_as_one() {
    let stack = Stack::start().await;
    let (_, token) = stack.shopper().await;
    let order = |items: Value| {
        stack.http.post(stack.api("/api/orders")).bearer_auth(&token).json(&json!({"items": items})).send()
    };
    let split: Vec<Value> = (0..100).map(|_| json!({"product_id": 1, "quantity": 1000})).collect();
    let r = order(json!(split)).await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_quantity", "{body}");
    let r = order(json!([{"product_id": 1, "quantity": 600}, {"product_id": 1, "quantity": 400}])).await.unwrap();
    assert_eq!(r.status(), 201, "1000 in all is allowed");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["items"][0]["quantity"], 1000, "{body}");
}

/// Also seen: `Password1!` passed the policy.
#[tokio::test]
async fn well_known_passwords_are_refused_with_the_reason() {
    let stack = Stack::start().await;
    for password in ["Password1!", "Welcome1!", "Qwerty123!"] {
        let r = stack
            .http
            .post(stack.api("/auth/register"))
            .json(&json!({"email": format!("weak-{}@example.com", rand_hex(4)), "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{password}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "weak_password", "{body}");
        assert!(body["message"].as_str().unwrap().contains("too easy to guess"), "{body}");
    }
}

/// Also seen: the verifier believed `X-Real-IP` from any loopback peer, so a local client could
/// pick a fresh address per guess; then, from nginx's own address (127.0.0.1, its listen address,
/// trusted by default), so a local client bound to that address still could, for logins and
/// registrations alike. nginx on the verifier's host now reaches it over a unix socket only nginx
/// may use, and loopback is never trusted by address: such a client is limited by its own address.
#[tokio::test]
async fn x_real_ip_is_not_believed_from_a_client_on_nginx_s_own_address() {
    let stack = Stack::start_with(Options {
        settings: vec![("verifier.login_max_failures_per_address", "3"), ("verifier.register_max_per_address", "3")],
        ..Default::default()
    })
    .await;
    let nginx = stack.config.nginx.listen.ip();
    assert_eq!(nginx, IpAddr::V4(Ipv4Addr::LOCALHOST), "the stack's nginx listens on 127.0.0.1");
    let client = reqwest::Client::builder().local_address(nginx).build().unwrap();
    let verifier = stack.config.verifier.listen[0];
    let mut logins = Vec::new();
    let mut registrations = Vec::new();
    for i in 0..6 {
        let r = client
            .post(format!("http://{verifier}/auth/token"))
            .header("X-Real-IP", format!("198.51.100.{i}"))
            .form(&[("username", format!("spoof-{i}@example.com")), ("password", "Wrong-Guess-1!".into())])
            .send()
            .await
            .unwrap();
        logins.push(r.status().as_u16());
        let r = client
            .post(format!("http://{verifier}/auth/register"))
            .header("X-Real-IP", format!("198.51.100.{i}"))
            .json(&json!({"email": format!("spoof-{}@example.com", rand_hex(4)), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        registrations.push(r.status().as_u16());
    }
    let limited = (vec![401, 401, 401, 429, 429, 429], vec![201, 201, 201, 429, 429, 429]);
    assert_eq!((logins, registrations), limited, "(logins, registrations) counted per spoofed address");
}

/// Through nginx each client is limited by its own address, not nginx's: two clients (127.0.0.77
/// and 127.0.0.1, nginx's own address) sending a forged `X-Real-IP` each get their own login and
/// registration limits. nginx runs with its master, so when the tests run as root its workers are
/// the unprivileged `nginx.user`, and reach the verifier over its unix socket (its group's).
#[tokio::test]
async fn through_nginx_each_client_address_has_its_own_limits() {
    let stack = Stack::start_with(Options {
        nginx_master: true,
        settings: vec![("verifier.login_max_failures_per_address", "2"), ("verifier.register_max_per_address", "2")],
        ..Default::default()
    })
    .await;
    let conf = std::fs::read_to_string(stack.dir.path().join("nginx/nginx.conf")).unwrap();
    let socket = stack.dir.path().join(format!("run/verifier-{}.sock", stack.config.verifier.listen[0].port()));
    let server =
        format!("upstream verifier {{\n        server unix:{} max_fails=1 fail_timeout=2s;\n", socket.display());
    assert!(conf.contains(&server), "no {server} in:\n{conf}");
    let user = shopgate_e2e::nginx_user().unwrap();
    assert_eq!(conf.contains("\nuser shopgate-nginx;\n"), user.is_some(), "{conf}");
    for ip in [Ipv4Addr::new(127, 0, 0, 77), Ipv4Addr::LOCALHOST] {
        let client = reqwest::Client::builder().local_address(IpAddr::V4(ip)).build().unwrap();
        let (mut logins, mut registrations) = (Vec::new(), Vec::new());
        for i in 0..3 {
            // nginx overwrites the client's own X-Real-IP.
            let forged = format!("198.51.100.{i}");
            let r = client
                .post(stack.api("/auth/token"))
                .header("X-Real-IP", &forged)
                .form(&[("username", format!("nobody-{i}@example.com")), ("password", "Wrong-Guess-1!".into())])
                .send()
                .await
                .unwrap();
            logins.push(r.status().as_u16());
            let r = client
                .post(stack.api("/auth/register"))
                .header("X-Real-IP", &forged)
                .json(&json!({"email": format!("client-{}@example.com", rand_hex(4)), "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            registrations.push(r.status().as_u16());
        }
        assert_eq!((logins, registrations), (vec![401, 401, 429], vec![201, 201, 429]), "client {ip}");
    }
}

/// The verifier's socket lets in nginx's workers and nobody else: as root, its folder and it are
/// `nginx.user`'s group's, and `nobody` (the user other daemons run as, nginx's default) cannot
/// connect, while `nginx.user` can. Not as root, nginx's workers are the verifier's own user and
/// the socket is that user's alone.
#[tokio::test]
async fn only_nginx_s_workers_can_use_the_verifier_s_socket() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let stack = Stack::start().await;
    let socket = stack.dir.path().join(format!("run/verifier-{}.sock", stack.config.verifier.listen[0].port()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let folder = socket.parent().unwrap();
    let Some(user) = shopgate_e2e::nginx_user().unwrap() else {
        assert_eq!((mode(folder), mode(&socket)), (0o700, 0o600));
        return;
    };
    assert_eq!((mode(folder), mode(&socket)), (0o750, 0o660));
    // nginx's workers run as the group named like the user (`user NAME;`).
    let group = std::process::Command::new("getent").args(["group", user]).output().unwrap();
    let gid: u32 = String::from_utf8_lossy(&group.stdout).split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!((std::fs::metadata(folder).unwrap().gid(), std::fs::metadata(&socket).unwrap().gid()), (gid, gid));
    let healthz_as = |user: &str, group: &str| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", user, "--regid", group, "--init-groups"])
            .args(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
            .arg(&socket)
            .arg("http://verifier/healthz")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(healthz_as(user, user), "200", "{user} (nginx's workers) cannot connect");
    assert_eq!(healthz_as("nobody", "nogroup"), "000", "nobody could connect");
}

fn summary(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut m = std::collections::BTreeMap::new();
    for s in statuses {
        *m.entry(*s).or_default() += 1;
    }
    m
}
