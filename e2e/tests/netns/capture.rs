//! Issue 26, point 1: on hosts of their own with TLS on every hop, a listener on the switch learns
//! nothing it could use. tcpdump on the bridge records every frame while shoppers register, log in,
//! order and read their orders through nginx and a bucket of theirs moves to the other shard
//! (shopctl on the gateway copying it between the shards' hosts). Then the capture holds:
//! - the frames of every hop: client to nginx, nginx to the verifier and to both backends, the
//!   verifier and the backends to the auth database, shopctl to both shards' databases;
//! - a control string sent on purpose in clear (to the plain-HTTP port, which only redirects), so
//!   the capture is shown to see what is not encrypted;
//! - and nothing else in clear: no token (nor anything shaped like one: `eyJ` and ten more
//!   base64url characters; `eyJ` alone turns up by chance about once in 16 MB of ciphertext), no
//!   `Authorization`, no password, no email, no SQL.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use serde_json::{json, Value};
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::netns::{NetnsStack, TWO_SHARDS};
use shopgate_e2e::{rand_hex, Shop as _, PASSWORD};

#[test]
fn a_listener_on_the_switch_sees_no_token_password_email_or_sql() {
    NetnsStack::run(&TWO_SHARDS, listen_on_the_switch);
}

async fn listen_on_the_switch(stack: NetnsStack) {
    let file = stack.dir.path().join("switch.pcap");
    let capture = stack.net.capture(&file).unwrap();

    let control = format!("capture-control-{}", rand_hex(8));
    let redirect = stack.config.nginx.tls.as_ref().and_then(|t| t.redirect_listen).expect("a redirect port");
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(format!("http://{redirect}/{control}")).send().await.unwrap();
    assert_eq!(r.status(), 301, "the plain-HTTP port redirects");

    let mut secrets = vec![PASSWORD.to_owned()];
    let mut users = Vec::new();
    for _ in 0..4 {
        let local = format!("shopper-{}", rand_hex(8));
        let email = format!("{local}@example.com");
        let id = stack.register(&email).await["id"].as_u64().unwrap();
        let token = stack.login(&email).await;
        for _ in 0..3 {
            let r = stack
                .http
                .post(stack.api("/api/orders"))
                .bearer_auth(&token)
                .header("Idempotency-Key", rand_hex(8))
                .json(&json!({"items": [{"product_id": 2, "quantity": 1}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        secrets.extend([local, token.clone()]);
        users.push((id, token));
    }
    // The first shopper's bucket moves to the other shard; their orders are read there after.
    let (id, token) = &users[0];
    let home = stack.shard_of(*id);
    let to = if home == "a" { "b" } else { "a" };
    let b = bucket(UserId::new(*id).unwrap());
    let moved = stack.move_buckets(&["--to", to, &b.to_string(), "--wait-seconds", "20"], Instant::now()).await;
    assert_eq!(moved.buckets_moved(), 1, "{}", moved.summary);
    for (_, token) in &users {
        let r = stack.http.get(stack.api("/api/orders")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["orders"].as_array().map(Vec::len), Some(3));
    }
    let r = stack.http.get(stack.api("/api/users/me")).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success() || r.status() == 404, "{}", r.status());

    let bytes = capture.stop().unwrap();
    let flows = tcp_flows(&bytes);
    eprintln!("captured {} bytes", bytes.len());

    // Every hop crossed the switch, and was recorded.
    let config = &stack.config;
    let addr = |host: &shopgate_e2e::netns::Host| host.addr;
    let db = |url: &shopgate_core::config::DbUrl| -> SocketAddr {
        let text = url.expose();
        let at = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
        at.split(['/', '?']).next().unwrap().parse().unwrap_or_else(|e| panic!("{at}: {e}"))
    };
    let mut hops = vec![
        ("client to nginx", addr(&stack.client), config.nginx.listen),
        ("nginx to the verifier", addr(&stack.gateway), config.verifier.listen[0]),
        ("the verifier to the auth database", addr(&stack.verifier), db(&config.verifier.database_url)),
    ];
    for s in ["a", "b"] {
        let shard = config.shard(s).unwrap();
        let host = addr(&stack.shard(s).host);
        hops.push(("nginx to a backend", addr(&stack.gateway), shard.addr()));
        hops.push(("a backend to the auth database (the shard map)", host, db(&config.verifier.database_url)));
        hops.push(("shopctl to a shard's database", addr(&stack.gateway), db(&shard.primary)));
    }
    for (hop, from, to) in &hops {
        let SocketAddr::V4(to) = to else { panic!("{hop}: {to} is not IPv4") };
        assert!(flows.contains(&(*from, *to.ip(), to.port())), "{hop} ({from} to {to}) was not captured: {flows:?}");
    }

    // What is in clear is seen...
    assert!(find(&bytes, control.as_bytes()).is_some(), "the control string sent in clear is not in the capture");
    // ... and nothing else is.
    let mut found = Vec::new();
    for secret in &secrets {
        if find(&bytes, secret.as_bytes()).is_some() {
            found.push(secret.clone());
        }
    }
    // Not the word `password` alone: MariaDB's greeting, before TLS begins, names its
    // authentication plugin, `mysql_native_password`.
    for word in [
        "authorization",
        "bearer ",
        "password_hash",
        "password=",
        "select ",
        "insert ",
        "update ",
        "delete from",
        "order_items",
    ] {
        if find_ignoring_case(&bytes, word.as_bytes()) {
            found.push(word.to_owned());
        }
    }
    if let Some(at) = token_shaped(&bytes) {
        found.push(String::from_utf8_lossy(&bytes[at..(at + 40).min(bytes.len())]).into_owned());
    }
    assert!(found.is_empty(), "in clear on the switch: {found:?}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_ignoring_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Where `eyJ` and at least ten more base64url characters stand: the start of a JSON object in
/// base64url, as every JWT begins.
fn token_shaped(hay: &[u8]) -> Option<usize> {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    (0..hay.len().saturating_sub(13)).find(|&i| &hay[i..i + 3] == b"eyJ" && hay[i + 3..i + 13].iter().all(b64))
}

/// Every TCP segment's (source address, destination address, destination port) in a pcap file
/// (Ethernet frames, as tcpdump writes them), and the same of the reply it would get: so a
/// connection opened before the capture began (a pool's) is there as (client, server, server's
/// port) too.
fn tcp_flows(pcap: &[u8]) -> BTreeSet<(Ipv4Addr, Ipv4Addr, u16)> {
    let mut flows = BTreeSet::new();
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    assert_eq!(pcap.get(..4), Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]), "not a little-endian pcap file");
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(pcap, at + 8);
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        // Ethernet, IPv4, TCP.
        if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
            continue;
        }
        let ip = &frame[14..];
        let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        flows.insert((src, dst, u16::from_be_bytes([tcp[2], tcp[3]])));
        flows.insert((dst, src, u16::from_be_bytes([tcp[0], tcp[1]])));
    }
    flows
}
