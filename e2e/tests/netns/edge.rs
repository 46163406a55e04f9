//! Issue 26, point 2, from a client host across the switch (the loopback stacks of
//! `tests/e2e/edge_tls.rs` check every answer's HSTS and the door's own pages): nginx on the
//! gateway refuses TLS 1.0 and 1.1, takes 1.2 with an intermediate suite and 1.3, offers h2 by
//! ALPN; its plain-HTTP port answers 301 to HTTPS on the gateway's address; HSTS comes with 200,
//! 401, 404 and 503 answers (a shard's host cut off).

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Response;
use shopgate_e2e::netns::{NetnsStack, TWO_SHARDS};
use shopgate_e2e::Shop as _;

#[test]
fn the_edge_seen_from_a_client_host_speaks_only_modern_tls_and_sends_hsts() {
    NetnsStack::run(&TWO_SHARDS, edge);
}

/// `openssl s_client` to nginx with `args`, trusting the stack's CA, from this thread's host (the
/// client's: a child is in its parent thread's network namespace). (succeeded, its output).
fn s_client(stack: &NetnsStack, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &stack.config.nginx.listen.to_string()])
        .arg("-CAfile")
        .arg(stack.ca_file())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (Debian's openssl)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn hsts(r: &Response) -> Vec<String> {
    r.headers().get_all("strict-transport-security").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

async fn edge(stack: NetnsStack) {
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(&stack, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok && text.contains("alert protocol version"), "{old} was not refused by the server:\n{text}");
    }
    let (ok, text) = s_client(&stack, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(ok && text.contains("TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"), "{text}");
    // The edge's certificate names the gateway's address, and chains to the stack's CA.
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let (ok, text) = s_client(&stack, &["-tls1_3", "-verify_ip", &stack.gateway.addr.to_string()]);
    assert!(
        ok && text.contains("New, TLSv1.3, Cipher is TLS_") && text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
    let (ok, text) = s_client(&stack, &["-alpn", "h2,http/1.1"]);
    assert!(ok && text.contains("ALPN protocol: h2"), "{text}");

    let redirect = stack.config.nginx.tls.as_ref().and_then(|t| t.redirect_listen).expect("a redirect port");
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(format!("http://{redirect}/api/orders?limit=2")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    let location = r.headers()["location"].to_str().unwrap();
    assert_eq!(location, format!("https://{}/api/orders?limit=2", stack.config.nginx.listen));

    let want = vec!["max-age=63072000".to_owned()];
    let user = (1..).find(|u| stack.shard_of(*u) == "b").unwrap();
    let token = stack.mint(user);
    let get = |path: &str| stack.http.get(stack.api(path));
    for (what, r, status) in [
        ("health", get("/healthz").send().await.unwrap(), 200),
        ("orders", get("/api/orders").bearer_auth(&token).send().await.unwrap(), 200),
        ("no token", get("/api/orders").send().await.unwrap(), 401),
        ("unknown path", get("/no/such/path").send().await.unwrap(), 404),
    ] {
        assert_eq!((r.status().as_u16(), hsts(&r)), (status, want.clone()), "{what}");
    }
    stack.net.cut(&stack.shard("b").host).unwrap();
    let r = get("/api/orders").bearer_auth(&token).timeout(Duration::from_secs(10)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), hsts(&r)), (503, want), "shard b's host cut off");
    stack.net.restore(&stack.shard("b").host).unwrap();
}
