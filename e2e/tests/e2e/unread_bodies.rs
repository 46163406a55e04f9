//! The second hostile round, finding 1: a request body that an upstream does not read took servers
//! out. The verifier and the backends answered a `GET` (or a body-less `POST`) without reading its
//! body and closed the connection while nginx still wrote it; nginx saw a broken pipe, answered
//! 503 and, with `max_fails=1`, took the server out of its group for 2 s; a GET was passed on to
//! the next server, which failed the same way: one unauthenticated request disabled a group.
//! Now nginx refuses such bodies at the door, and the services read off what they leave unread.

use std::time::{Duration, Instant};

use futures::future::join_all;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// What nginx logs when it counts a server as failed, or cannot send to it.
const TAKEN_OUT: [&str; 5] =
    ["temporarily disabled", "no live upstreams", "Broken pipe", "Connection reset", "prematurely closed"];

/// Every route that takes no body, with a 64 KiB and a 1 MiB body, with a token and without, while
/// other users shop: a GET gets nginx's 400 (or, on a path without a GET, the service's 405), a POST
/// its normal answer (the service reads the body off), nginx never counts a server as failed, and
/// the other users see no 5xx. Two verifiers and two processes per shard, the layouts where one failure
/// moved the sender's next request (and everyone else's) to the other server.
#[tokio::test]
async fn bodies_on_routes_that_take_none_take_no_server_out() {
    let stack = Stack::start_with(Options { verifiers: 2, backends_per_shard: 2, ..Default::default() }).await;
    let (_, token) = stack.shopper().await;
    let order_id = stack.order(&token).await["id"].as_u64().unwrap();
    // Other users on both shards, reading their orders and the catalog throughout.
    let shoppers: Vec<String> = (1..=6).map(|i| stack.mint(1000 + i)).collect();
    let stop_at = Instant::now() + Duration::from_secs(120);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = shoppers.iter().enumerate().map(|(i, token)| {
        let (stack, stop) = (&stack, stop.clone());
        async move {
            let mut statuses = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < stop_at {
                n += 1;
                let url = if n.is_multiple_of(2) {
                    stack.api("/api/orders")
                } else {
                    stack.api(&format!("/api/products?u={i}-{n}"))
                };
                let r = stack.http.get(url).bearer_auth(token).send().await.unwrap();
                statuses.push(r.status().as_u16());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        }
    });
    let routes = [
        ("GET", "/api/products?a=1".to_owned()),
        ("GET", "/api/products/1".to_owned()),
        ("GET", "/api/categories".to_owned()),
        ("GET", "/api/orders".to_owned()),
        ("GET", format!("/api/orders/{order_id}")),
        ("GET", "/api/users/me".to_owned()),
        ("GET", "/auth/me".to_owned()),
        ("GET", "/auth/jwks.json".to_owned()),
        ("POST", "/auth/logout".to_owned()),
        // Paths without a GET: nginx passes these on, for the service's 405 (it reads the body off).
        ("GET", "/auth/token".to_owned()),
        ("GET", "/api/users".to_owned()),
        ("POST", format!("/api/orders/{order_id}/cancel")),
    ];
    let attack = async {
        let mut wrong = Vec::new();
        // Two rounds at least, and for 3 s at least, so that the other users' requests overlap.
        let started = Instant::now();
        let mut round = 0;
        while round < 2 || started.elapsed() < Duration::from_secs(3) {
            round += 1;
            for (method, path) in &routes {
                for size in [64 << 10, 1 << 20] {
                    for with_token in [false, true] {
                        let mut rb = stack
                            .http
                            .request(method.parse().unwrap(), stack.api(path))
                            .header("x-round", round.to_string())
                            .body(vec![b'a'; size]);
                        if with_token {
                            rb = rb.bearer_auth(stack.mint(7));
                        }
                        // A GET's body is refused (400); a POST's is read off and it is answered.
                        let status = rb.send().await.unwrap().status().as_u16();
                        if status >= 500 || (*method == "GET" && !(400..500).contains(&status)) {
                            wrong.push(format!("{method} {path} ({size} bytes, token {with_token}): {status}"));
                        }
                    }
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        wrong
    };
    let (wrong, statuses) = tokio::join!(attack, join_all(load));
    assert!(wrong.is_empty(), "answers other than a 4xx for a GET, or a 5xx:\n{}", wrong.join("\n"));
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    let failed = statuses.iter().filter(|s| **s >= 500).count();
    assert!(statuses.len() > 50, "the other users made only {} requests", statuses.len());
    assert_eq!(failed, 0, "{failed} of the other users' {} requests failed", statuses.len());
    let log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/error.log")).unwrap_or_default();
    for needle in TAKEN_OUT {
        assert!(!log.contains(needle), "nginx's error log has {needle:?}:\n{log}");
    }
}

/// Sends `head` and `body` on `stream` and reads one answer (its head, and the body by its
/// Content-Length); the status, or `None` if the connection closed first.
async fn exchange(stream: &mut TcpStream, head: &str, body: &[u8]) -> Option<u16> {
    let (mut rd, mut wr) = stream.split();
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(body).await
    };
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Some(status)
    };
    let (_, status) = tokio::join!(write, read);
    status
}

/// The services' own part, straight at their ports (no nginx refusing first): a body a handler
/// does not read is read off before the answer, and the connection then takes the next request.
#[tokio::test]
async fn the_services_read_off_a_body_they_ignore_and_keep_the_connection() {
    let stack = Stack::start().await;
    let verifier = stack.config.verifier.listen[0];
    let backend = stack.config.shards[0].listen[0];
    let body = vec![b'a'; 1 << 20];
    for (addr, method, path) in [
        (verifier, "GET", "/auth/jwks.json"),
        (verifier, "GET", "/auth/me"),
        (verifier, "POST", "/auth/logout"),
        (verifier, "POST", "/auth/nowhere"),
        (backend, "GET", "/api/products"),
        (backend, "GET", "/api/orders"),
        (backend, "POST", "/api/orders/1/cancel"),
        (backend, "PUT", "/api/products"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
        let first = exchange(&mut stream, &head, &body).await;
        assert!(first.is_some(), "{method} {path} on {addr}: no answer");
        let next = exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", b"").await;
        assert_eq!(
            next,
            Some(200),
            "{method} {path} on {addr} (first answer {first:?}): the connection did not take the next request"
        );
    }
}
