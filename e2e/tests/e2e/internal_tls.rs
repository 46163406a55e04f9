//! TLS between the stack's parts (`[tls]`, client certificates required): nginx reaches the
//! verifier and the backends over TLS with the stack's certificate, shopctl's probes and moves
//! too, and their ports take nobody else.

use std::net::SocketAddr;
use std::path::Path;

use reqwest::{Certificate, Identity};
use serde_json::Value;
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{certs, Options, Stack, CERTS_DIR};

async fn tls_stack() -> Stack {
    Stack::start_with(Options { internal_tls: true, nginx_master: true, ..Options::default() }).await
}

/// Logins, orders and the catalog through nginx, `shopctl doctor` and `shards status`, and a
/// bucket move (nginx reloaded, the backends waited on), all as on a plain stack.
#[tokio::test]
async fn a_stack_with_internal_tls_serves_as_without() {
    let stack = tls_stack().await;
    let conf = std::fs::read_to_string(stack.dir.path().join("nginx/nginx.conf")).unwrap();
    assert!(conf.contains("proxy_pass https://verifier/verify;") && conf.contains("proxy_ssl_verify on;"), "{conf}");

    let (id, token) = stack.shopper().await;
    let placed = stack.order(&token).await;
    let products = stack.http.get(stack.api("/api/products")).send().await.unwrap();
    assert_eq!(products.status(), 200);
    assert!(!products.json::<Value>().await.unwrap()["products"].as_array().unwrap().is_empty());
    let me = stack.http.get(stack.api("/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);

    let doctor = stack.ctl(&["doctor"]);
    assert_eq!(doctor.code, 0, "doctor on a TLS stack:\n{doctor}");
    let status = stack.ctl(&["--json", "shards", "status"]);
    assert_eq!(status.code, 0, "shards status on a TLS stack:\n{status}");
    let status = status.json();
    let shards = status["shards"].as_array().or(status["items"].as_array()).unwrap_or_else(|| panic!("{status}"));
    for shard in shards {
        assert_eq!(shard["backends_ready"], 1, "{shard}");
    }

    // The user's bucket to the other shard; the order follows it and new ones are placed there.
    let user = UserId::new(id).unwrap();
    let map = stack.current_map().await;
    let from = map.owner_of_bucket(bucket(user)).unwrap().as_str().to_owned();
    let to = if from == "a" { "b" } else { "a" };
    let moved = stack.shards_move(to, &bucket(user).to_string(), None);
    assert!(moved.status.success(), "shards move on a TLS stack: {}", String::from_utf8_lossy(&moved.stderr));
    // A new connection: the reload closed the idle ones nginx's old workers held.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let url = stack.api(&format!("/api/orders/{}", placed["id"]));
    let shown = fresh.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.headers()["x-shop-shard"], to);
    let order = serde_json::json!({"items": [{"product_id": 1, "quantity": 1}]});
    let again = fresh.post(stack.api("/api/orders")).bearer_auth(&token).json(&order).send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["x-shop-shard"], to);
}

/// The verifier's and a backend's ports answer no plaintext request, and over TLS only a client
/// with a certificate the stack's CA signed: without one, or with one of another CA, no answer.
#[tokio::test]
async fn the_services_ports_take_only_the_stacks_certificate() {
    let stack = tls_stack().await;
    let dir = stack.dir.path();
    let other = dir.join("other-ca");
    certs(&["issue".as_ref(), other.as_os_str(), "rogue".as_ref(), "localhost".as_ref()]).unwrap();
    let ca = Certificate::from_pem(&std::fs::read(dir.join(CERTS_DIR).join("ca.crt")).unwrap()).unwrap();
    let identity = |folder: &Path, name: &str| {
        let mut pem = std::fs::read(folder.join(format!("{name}.key"))).unwrap();
        pem.extend(std::fs::read(folder.join(format!("{name}.crt"))).unwrap());
        Identity::from_pem(&pem).unwrap()
    };
    let client = |id: Option<Identity>| {
        let mut b =
            reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca.clone());
        if let Some(id) = id {
            b = b.identity(id);
        }
        b.timeout(std::time::Duration::from_secs(5)).build().unwrap()
    };
    let ours = client(Some(identity(&dir.join(CERTS_DIR), "internal")));
    let none = client(None);
    let rogue = client(Some(identity(&other, "rogue")));

    let verifier = stack.config.verifier.listen[0];
    let backend = stack.config.shards[0].listen[0];
    for (what, addr) in [("verifier", verifier), ("backend", backend)] {
        // localhost: a name the certificate carries, so only the client's certificate differs.
        let https = |addr: SocketAddr| format!("https://localhost:{}/healthz", addr.port());
        let ok = ours.get(https(addr)).send().await;
        assert_eq!(ok.map(|r| r.status().as_u16()).ok(), Some(200), "{what} with the stack's certificate");
        let plain = stack.http.get(format!("http://{addr}/healthz")).send().await;
        assert!(plain.is_err(), "{what} answered plaintext: {plain:?}");
        let anonymous = none.get(https(addr)).send().await;
        assert!(anonymous.is_err(), "{what} answered a client without a certificate: {anonymous:?}");
        let foreign = rogue.get(https(addr)).send().await;
        assert!(foreign.is_err(), "{what} answered a certificate of another CA: {foreign:?}");
    }
    // And they still answer the stack's own client afterwards.
    let after = stack.internal.get(stack.internal_url(backend, "/readyz")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}

/// A client that connects and never starts its handshake holds up nobody (the handshake is not
/// in the accept loop) and is dropped within the handshake bound (5 s).
#[tokio::test]
async fn a_stalled_handshake_is_dropped_and_holds_up_nobody() {
    use tokio::io::AsyncReadExt as _;
    let stack = tls_stack().await;
    let backend = stack.config.shards[0].listen[0];
    let mut stalled = tokio::net::TcpStream::connect(backend).await.unwrap();
    let start = std::time::Instant::now();
    let served = stack.internal.get(stack.internal_url(backend, "/healthz")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "served after {:?}", start.elapsed());
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(8), stalled.read(&mut buf)).await;
    let waited = start.elapsed();
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the stalled connection was not closed: {read:?}");
    assert!(waited >= std::time::Duration::from_secs(4), "closed after {waited:?}, before the bound");
}

/// Certificates renewed by replacing the files (as `scripts/certs issue` does) are served to new
/// connections within about a second, without a restart, and no request fails meanwhile, through
/// nginx or straight to the backend.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let stack = tls_stack().await;
    let dir = stack.dir.path().join(CERTS_DIR);
    let mut pem = std::fs::read(dir.join("internal.key")).unwrap();
    pem.extend(std::fs::read(dir.join("internal.crt")).unwrap());
    let ca = Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let fresh = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(Identity::from_pem(&pem).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let backend = stack.config.shards[0].listen[0];
    let url = format!("https://localhost:{}/healthz", backend.port());
    let served = || async {
        let r = fresh.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate().map(<[u8]>::to_vec)).unwrap()
    };
    let before = served().await;
    let (_, token) = stack.shopper().await;
    certs(&[
        "issue".as_ref(),
        dir.as_os_str(),
        "internal".as_ref(),
        "shopgate.internal".as_ref(),
        "localhost".as_ref(),
    ])
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let orders = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(orders.status(), 200, "through nginx during the renewal");
        if served().await != before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the renewed certificate was not served within 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
