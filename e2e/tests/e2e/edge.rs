//! The edge as the internet meets it (issue 29): a load balancer in front of nginx (a second
//! loopback address, 127.0.0.5, in `nginx.trusted_proxies`) and clients from several addresses
//! behind it or beside it; the limits at the door (requests per address, requests in progress per
//! address, a slowloris); browsers (CORS preflights, the headers of every answer); and the auth
//! cache's files, which must not hold the token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{rand_hex, Options, Stack, PASSWORD};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::error_code;

/// The load balancer's address: the one trusted proxy of these stacks.
const LB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(from).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A stack behind the load balancer, with `settings` besides.
async fn behind_lb(settings: &[(&'static str, &'static str)]) -> Stack {
    let mut all = vec![("nginx.trusted_proxies", "[\"127.0.0.5\"]")];
    all.extend_from_slice(settings);
    Stack::start_with(Options { nginx_master: true, settings: all, ..Default::default() }).await
}

/// A wrong password for a fresh email, as `client` sends it with `headers`.
async fn wrong_login(stack: &Stack, client: &reqwest::Client, headers: &[(&str, String)]) -> u16 {
    let mut r = client
        .post(stack.api("/auth/token"))
        .form(&[("username", format!("nobody-{}@example.com", rand_hex(4))), ("password", "Wrong-Guess-1!".into())]);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().await.unwrap().status().as_u16()
}

async fn signup(stack: &Stack, client: &reqwest::Client, headers: &[(&str, String)]) -> u16 {
    let mut r = client
        .post(stack.api("/auth/register"))
        .json(&json!({"email": format!("edge-{}@example.com", rand_hex(6)), "password": PASSWORD}));
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().await.unwrap().status().as_u16()
}

/// The `remote_addr` of every line of nginx's access log.
fn logged_addresses(stack: &Stack) -> Vec<String> {
    let log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/access.log")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["remote_addr"].as_str().unwrap().to_owned())
        .collect()
}

/// Point 1. Behind the load balancer, the verifier's login and signup limits count each client's
/// own address (the last one of `X-Forwarded-For` the balancer does not own, whatever the client
/// put before it): one client's failures and signups are limited while another's go through. A
/// client beside the balancer cannot pick its address with `X-Forwarded-For` or `X-Real-IP`.
#[tokio::test]
async fn behind_a_load_balancer_each_client_has_its_own_limits() {
    let stack =
        behind_lb(&[("verifier.login_max_failures_per_address", "5"), ("verifier.register_max_per_address", "3")])
            .await;
    let lb = client_from(IpAddr::V4(LB));
    // The attacker forges the start of the chain; the balancer appends what it saw.
    let attacker = |i: usize| vec![("X-Forwarded-For", format!("10.9.9.{i}, 198.51.100.1"))];
    let other = vec![("X-Forwarded-For", "198.51.100.2".to_owned())];
    let mut attacks = Vec::new();
    for i in 0..7 {
        attacks.push(wrong_login(&stack, &lb, &attacker(i)).await);
    }
    assert_eq!(attacks, [401, 401, 401, 401, 401, 429, 429], "the attacker's wrong passwords");
    let mut signups = Vec::new();
    for i in 0..4 {
        signups.push(signup(&stack, &lb, &attacker(i)).await);
    }
    assert_eq!(signups, [201, 201, 201, 429], "the attacker's signups");
    // Another client behind the same balancer is not held to the attacker's counts.
    assert_eq!(wrong_login(&stack, &lb, &other).await, 401, "another client's login was throttled");
    assert_eq!(signup(&stack, &lb, &other).await, 201, "another client's signup was refused");
    let email = format!("real-{}@example.com", rand_hex(4));
    let r = lb
        .post(stack.api("/auth/register"))
        .header("X-Forwarded-For", "198.51.100.3")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = lb
        .post(stack.api("/auth/token"))
        .header("X-Forwarded-For", "198.51.100.3")
        .form(&[("username", email.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another client's good login");

    // A client that is not the balancer: its own address, whatever it claims.
    let direct = client_from(ip(6));
    let mut spoofed = Vec::new();
    for i in 0..7 {
        let forged = format!("203.0.113.{i}");
        spoofed.push(wrong_login(&stack, &direct, &[("X-Forwarded-For", forged.clone()), ("X-Real-IP", forged)]).await);
    }
    assert_eq!(spoofed, [401, 401, 401, 401, 401, 429, 429], "a client beside the balancer chose its address");

    let logged = logged_addresses(&stack);
    for want in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "127.0.0.6"] {
        assert!(logged.iter().any(|a| a == want), "no {want} in the access log's addresses: {logged:?}");
    }
    for never in ["127.0.0.5", "10.9.9.0", "203.0.113.0"] {
        assert!(!logged.iter().any(|a| a == never), "{never} logged as a client: {logged:?}");
    }
}

/// Point 2, requests: a client over the `/api/` rate gets the JSON 429 with `Retry-After`, while
/// another client behind the same balancer is served; the `/auth/` zone is a zone of its own.
#[tokio::test]
async fn a_client_over_the_rate_gets_429_and_others_are_served() {
    let stack = behind_lb(&[
        ("nginx.limit_api_per_second", "1"),
        ("nginx.limit_api_burst", "5"),
        ("nginx.limit_auth_per_minute", "1"),
        ("nginx.limit_auth_burst", "2"),
    ])
    .await;
    let lb = client_from(IpAddr::V4(LB));
    let get = |path: &'static str, from: &'static str| lb.get(stack.api(path)).header("X-Forwarded-For", from).send();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        let r = get("/api/products", "198.51.100.1").await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && refused.is_none() {
            refused = Some(r);
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("20 catalog reads at once at 1/s + 5: {statuses:?}"));
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "too_many_requests");
    for _ in 0..3 {
        assert_eq!(get("/api/products", "198.51.100.2").await.unwrap().status(), 200, "another client was limited");
    }
    // The auth zone: 1 a minute + 2; the API's spent budget does not count there.
    let mut auth = Vec::new();
    for _ in 0..4 {
        auth.push(get("/auth/me", "198.51.100.1").await.unwrap().status().as_u16());
    }
    assert_eq!(auth, [401, 401, 401, 429], "/auth/me without a token, one client");
    let r = get("/auth/me", "198.51.100.1").await.unwrap();
    assert_eq!(r.headers()["retry-after"], "60", "one request a minute: a minute to wait");
    assert_eq!(get("/auth/me", "198.51.100.2").await.unwrap().status(), 401, "another client was limited");
}

/// A connection from `from` to `to`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// The status of the answer `conn` reads, or None if the connection closed without one.
async fn read_status(conn: &mut TcpStream) -> Option<u16> {
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Point 2, connections: 200 connections from one address, each holding a request whose body
/// never comes, are capped at `limit_connections_per_address`: the rest get 429 at once, and a
/// client from another address is served meanwhile.
#[tokio::test]
async fn connections_in_progress_are_capped_per_address() {
    let stack = Stack::start_with(Options {
        settings: vec![
            ("nginx.limit_connections_per_address", "10"),
            ("nginx.limit_auth_per_minute", "0"),
            ("nginx.client_body_timeout_seconds", "120"),
        ],
        ..Default::default()
    })
    .await;
    let nginx = stack.config.nginx.listen;
    let head = format!(
        "POST /auth/register HTTP/1.1\r\nHost: {nginx}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut conn = connect_from(ip(7), nginx).await;
        conn.write_all(head.as_bytes()).await.unwrap();
        conns.push(conn);
    }
    // Those over the cap are answered at once; read every answer that comes (a bounded wait:
    // the held ones have none until their bodies come).
    let mut answered = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        answered.spawn(async move {
            let status = tokio::time::timeout(Duration::from_secs(5), read_status(&mut conn)).await.ok().flatten();
            (i, status, conn)
        });
    }
    let other = client_from(ip(8)).get(stack.api("/api/products")).send().await.unwrap();
    assert_eq!(other.status(), 200, "a client from another address was not served");
    let mut held = Vec::new();
    let mut refused = 0;
    while let Some(done) = answered.join_next().await {
        let (i, status, conn) = done.unwrap();
        match status {
            Some(429) => refused += 1,
            None => held.push((i, conn)),
            Some(other) => panic!("connection {i}: {other}"),
        }
    }
    assert_eq!((held.len(), refused), (10, 190), "200 requests in progress from one address, 10 allowed");
    // The held ones are requests like any other once their bodies come.
    for (i, mut conn) in held {
        let body = json!({"email": format!("held-{i}-{}@example.com", rand_hex(3)), "password": PASSWORD});
        let body = format!("{:<100}", body.to_string());
        conn.write_all(body.as_bytes()).await.unwrap();
        assert!(matches!(read_status(&mut conn).await, Some(201 | 429)), "held connection {i}");
    }
}

/// Point 2, slowloris: a client trickling its request head a byte every 250 ms is cut at
/// `client_header_timeout_seconds` (2 here), from the head's first byte: it never gets to finish
/// the 32 bytes (8 s) of its head, and never gets an answer.
#[tokio::test]
async fn a_slowloris_is_cut_at_the_header_timeout() {
    let stack = Stack::start_with(Options {
        settings: vec![("nginx.client_header_timeout_seconds", "2")],
        ..Default::default()
    })
    .await;
    let mut conn = connect_from(ip(9), stack.config.nginx.listen).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 0123456789\r\n\r\n";
    conn.write_all(&head[..head.len() - 32]).await.unwrap();
    let mut cut = false;
    for byte in &head[head.len() - 32..] {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if conn.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
    }
    // Cut: the writes failed, or nginx closed without an answer (its 408 is never sent).
    let status = read_status(&mut conn).await;
    assert!(cut || status.is_none(), "the slow head was served: {status:?}");
    assert_eq!(status, None, "a slowloris got an answer");
}

/// An allowed origin in these stacks.
const SHOP: &str = "https://shop.example";

/// The `Access-Control-*` headers of an answer.
fn cors_headers(r: &reqwest::Response) -> Vec<(String, String)> {
    r.headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("access-control-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Vec<&'a str> {
    r.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

/// Point 4: preflights answered by nginx before the token check, CORS headers for the allowed
/// origin only (on real answers, 401 and 429 too), and nosniff, no-referrer and no-store on the
/// authenticated and `/auth/` answers.
#[tokio::test]
async fn browsers_get_cors_for_allowed_origins_only_and_the_safe_headers() {
    let stack = Stack::start_with(Options {
        settings: vec![
            ("nginx.cors_origins", "[\"https://shop.example\"]"),
            ("nginx.limit_api_per_second", "1"),
            ("nginx.limit_api_burst", "20"),
        ],
        ..Default::default()
    })
    .await;
    let http = &stack.http;
    let preflight = |path: &'static str, origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, stack.api(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
            .send()
    };
    for path in ["/api/orders", "/auth/token", "/api/products"] {
        let r = preflight(path, SHOP).await.unwrap();
        assert_eq!(r.status(), 204, "preflight of {path}");
        assert_eq!(header(&r, "access-control-allow-origin"), [SHOP], "{path}");
        let methods = header(&r, "access-control-allow-methods").join(",");
        assert!(methods.contains("POST") && methods.contains("GET"), "{path}: {methods}");
        let allowed = header(&r, "access-control-allow-headers").join(",");
        for h in ["Authorization", "Content-Type", "Idempotency-Key"] {
            assert!(allowed.contains(h), "{path}: {allowed}");
        }
        assert!(!header(&r, "access-control-max-age").is_empty(), "{path}");
        assert!(header(&r, "www-authenticate").is_empty(), "{path}: the preflight went through the token check");
        let r = preflight(path, "https://evil.example").await.unwrap();
        assert_eq!(cors_headers(&r), [], "{path}: CORS headers for another origin");
    }

    let email = format!("browser-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let token = stack.login(&email).await;
    let r = http.get(stack.api("/api/orders")).bearer_auth(&token).header("Origin", SHOP).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), [SHOP]);
    assert!(header(&r, "access-control-expose-headers").join(",").contains("Retry-After"));
    assert_eq!(header(&r, "cache-control"), ["no-store"], "an authenticated answer");
    assert_eq!(header(&r, "x-content-type-options"), ["nosniff"]);
    assert_eq!(header(&r, "referrer-policy"), ["no-referrer"]);
    assert!(header(&r, "access-control-allow-methods").is_empty(), "preflight headers on a real answer");
    let r = http
        .get(stack.api("/api/orders"))
        .bearer_auth(&token)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), cors_headers(&r)), (200, vec![]), "another origin");

    // nginx's own 401, for the allowed origin and for another.
    let r = http.get(stack.api("/api/orders")).header("Origin", SHOP).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "access-control-allow-origin")), (401, vec![SHOP]));
    assert_eq!(header(&r, "cache-control"), ["no-store"]);
    let r = http.get(stack.api("/api/orders")).header("Origin", "https://evil.example").send().await.unwrap();
    assert_eq!((r.status().as_u16(), cors_headers(&r)), (401, vec![]));

    // Every /auth/ answer: the token's, the verifier's 401, with one Cache-Control.
    let r = http
        .post(stack.api("/auth/token"))
        .header("Origin", SHOP)
        .form(&[("username", email.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), ["no-store"]);
    assert_eq!(header(&r, "access-control-allow-origin"), [SHOP]);
    assert_eq!(header(&r, "x-content-type-options"), ["nosniff"]);
    let r = http.get(stack.api("/auth/me")).header("Origin", SHOP).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "cache-control"), ["no-store"]);
    assert_eq!(header(&r, "referrer-policy"), ["no-referrer"]);
    assert_eq!(header(&r, "access-control-allow-origin"), [SHOP]);

    // The door's 429 carries them too.
    let mut limited = None;
    for _ in 0..40 {
        let r = http.get(stack.api("/api/orders")).bearer_auth(&token).header("Origin", SHOP).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("40 requests at once at 1/s + 20 were never limited");
    assert_eq!(header(&r, "access-control-allow-origin"), [SHOP], "the 429");
    assert_eq!(header(&r, "cache-control"), ["no-store"], "the 429");
    assert!(header(&r, "access-control-expose-headers").join(",").contains("Retry-After"));
}

/// Point 4, the auth cache: its files are keyed by a hash of the token, so none of them holds
/// the token (nginx writes each entry's key into its file).
#[tokio::test]
async fn no_auth_cache_file_holds_the_token() {
    let stack = Stack::start_with(Options { auth_cache_seconds: 30, ..Default::default() }).await;
    let email = format!("cached-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let token = stack.login(&email).await;
    for _ in 0..3 {
        let r = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut files = Vec::new();
    let mut dirs = vec![stack.dir.path().join("nginx/auth_cache")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "the auth cache wrote no file: the test would show nothing");
    let signature = token.rsplit('.').next().unwrap();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(signature), "{} holds the token: {text}", file.display());
    }
}
