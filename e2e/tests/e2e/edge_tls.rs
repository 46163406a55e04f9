//! Issue 26, the edge: nginx serving HTTPS from `[nginx.tls]` (certificates from `scripts/certs`,
//! `Options::tls`). The protocol versions and suites a client gets, HTTP/2 by ALPN, the plain-HTTP
//! redirect, and `Strict-Transport-Security` on every answer, nginx's own error pages included.

use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::{Method, Response};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack, PASSWORD};

fn tls_stack() -> Options {
    Options { tls: true, ..Options::default() }
}

/// `openssl s_client` against the stack's HTTPS port with `args`, trusting its CA; sends `input`
/// (and waits for nginx to close) if given, else only shakes hands. Returns (succeeded, stdout and
/// stderr).
fn s_client(stack: &Stack, args: &[&str], input: Option<&[u8]>) -> (bool, String) {
    let ca = stack.ca_file.as_ref().expect("a TLS stack");
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &stack.config.nginx.listen.to_string(), "-servername", "localhost"])
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if input.is_some() {
        cmd.arg("-quiet");
    }
    let mut child = cmd.spawn().expect("openssl s_client (Debian's openssl)");
    if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(bytes).expect("writing to s_client");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("s_client's output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The `Strict-Transport-Security` values of an answer.
fn hsts(r: &Response) -> Vec<String> {
    r.headers().get_all("strict-transport-security").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_1_2_with_intermediate_suites_and_1_3_taken_h2_offered() {
    let stack = Stack::start_with(tls_stack()).await;
    // The client offers the old versions (OpenSSL 3 offers them only at security level 0): the
    // server refuses them with a protocol_version alert.
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(&stack, &[old, "-cipher", "DEFAULT@SECLEVEL=0"], None);
        assert!(!ok && text.contains("alert protocol version"), "{old} was not refused by the server:\n{text}");
    }
    // TLS 1.2 with an intermediate suite, the certificate checked against the stack's CA.
    let (ok, text) = s_client(&stack, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], None);
    assert!(ok && text.contains("TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let (ok, text) = s_client(&stack, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"], None);
    assert!(ok && text.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"), "{text}");
    // A suite outside the intermediate list (CBC with SHA-1), which OpenSSL's default would take.
    let (ok, text) = s_client(&stack, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"], None);
    assert!(!ok && !text.contains("Cipher is ECDHE-ECDSA-AES128-SHA"), "a CBC suite was taken:\n{text}");
    let (ok, text) = s_client(&stack, &["-tls1_3"], None);
    assert!(ok && text.contains("New, TLSv1.3, Cipher is TLS_"), "{text}");
    // HTTP/2 by ALPN, preferred to HTTP/1.1.
    let (ok, text) = s_client(&stack, &["-alpn", "h2,http/1.1"], None);
    assert!(ok && text.contains("ALPN protocol: h2"), "{text}");
    // The clients here (reqwest with rustls, HTTP/1.1) get the same server.
    assert_eq!(stack.http.get(stack.api("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn plain_http_on_redirect_listen_answers_301_to_https_for_everything() {
    let stack = Stack::start_with(tls_stack()).await;
    let plain = stack.redirect.expect("a redirect listener");
    let https_port = stack.config.nginx.listen.port();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (method, path) in [
        (Method::GET, "/api/orders?limit=2"),
        (Method::GET, "/healthz"),
        (Method::POST, "/auth/token"),
        (Method::GET, "/no/such/path"),
    ] {
        let r = client.request(method.clone(), format!("http://{plain}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 301, "{method} {path}");
        let location = r.headers()["location"].to_str().unwrap();
        assert_eq!(location, format!("https://127.0.0.1:{https_port}{path}"), "{method} {path}");
        // HSTS means nothing over plain HTTP (RFC 6797 8.1): not sent there.
        assert!(hsts(&r).is_empty(), "{method} {path}");
    }
    // Following it lands on the HTTPS server.
    let r = stack.http.get(format!("http://{plain}/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.url().scheme()), (200, "https"));
    // The plain port speaks no TLS; plain HTTP to the HTTPS port is a JSON 400, not nginx's page.
    assert!(client.get(format!("https://{plain}/healthz")).send().await.is_err());
    let r = client.get(format!("http://{}/healthz", stack.config.nginx.listen)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("plain HTTP sent to the HTTPS port"));
}

#[tokio::test]
async fn every_answer_carries_hsts_including_nginxs_own_error_pages() {
    let settings = vec![("verifier.login_max_failures_per_account", "2")];
    let stack = Stack::start_with(Options { settings, ..tls_stack() }).await;
    let want = vec![format!("max-age={}", 63_072_000)];
    let (user, token) = stack.shopper().await;
    let mut seen = Vec::new();
    let mut check = |what: &str, r: &Response, status: u16| {
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(hsts(r), want, "{what}: {:?}", r.headers());
        seen.push(status);
    };
    let get = |path: &str| stack.http.get(stack.api(path));

    check("/healthz", &get("/healthz").send().await.unwrap(), 200);
    check("the catalog", &get("/api/products").send().await.unwrap(), 200);
    check("/openapi.json", &get("/openapi.json").send().await.unwrap(), 200);
    check("orders", &get("/api/orders").bearer_auth(&token).send().await.unwrap(), 200);
    check(
        "an order",
        &stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"items": [{"product_id": 1, "quantity": 1}]}))
            .send()
            .await
            .unwrap(),
        201,
    );
    check("auth me", &get("/auth/me").bearer_auth(&token).send().await.unwrap(), 200);
    // 401 from auth_request (@unauthorized), and from the verifier itself.
    check("no token", &get("/api/orders").send().await.unwrap(), 401);
    check("verifier 401", &get("/auth/me").send().await.unwrap(), 401);
    check("unknown path", &get("/no/such/path").send().await.unwrap(), 404);
    check("the check path", &get("/_verify").send().await.unwrap(), 404);
    check("TRACE", &stack.http.request(Method::TRACE, stack.api("/api/orders")).send().await.unwrap(), 405);
    check("POST openapi", &stack.http.post(stack.api("/openapi.json")).send().await.unwrap(), 405);
    // nginx's 400 at the door: a body on a GET.
    check("GET with a body", &get("/api/orders").bearer_auth(&token).body("{}").send().await.unwrap(), 400);
    check(
        "too large",
        &stack.http.post(stack.api("/auth/register")).body(vec![b'x'; 2 << 20]).send().await.unwrap(),
        413,
    );
    // 429: failed logins past the limit.
    let email = format!("hsts-{}@example.com", shopgate_e2e::rand_hex(4));
    stack.register(&email).await;
    let login = |password: &'static str| {
        stack.http.post(stack.api("/auth/token")).form(&[("username", email.as_str()), ("password", password)]).send()
    };
    for _ in 0..2 {
        check("a wrong password", &login("Wrong-Horse!").await.unwrap(), 401);
    }
    check("throttled", &login(PASSWORD).await.unwrap(), 429);
    // 503: the user's shard down (nginx's @unavailable), then the verifier down.
    let shard = stack.config.shard_map.shard_for(shopgate_core::UserId::new(user).unwrap()).to_string();
    stack.kill(&format!("backend-{shard}"));
    check("shard down", &get("/api/orders").bearer_auth(&token).send().await.unwrap(), 503);
    stack.kill("verifier-0");
    check("verifier down", &get("/api/orders").bearer_auth(&token).send().await.unwrap(), 503);

    // What nginx answers before it has a URI (/_error/400), and a control character in a header
    // (refused in the server block): raw bytes over TLS.
    for (what, request) in [
        ("a malformed request line", &b"GET /x y z HTTP/1.1\r\nHost: localhost\r\n\r\n"[..]),
        (
            "a control character",
            b"GET /api/products HTTP/1.1\r\nHost: localhost\r\nX-Note: a\x01b\r\nConnection: close\r\n\r\n",
        ),
        (
            "an unknown transfer coding",
            b"POST /auth/token HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let (_, text) = s_client(&stack, &["-alpn", "http/1.1"], Some(request));
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase() + "\r\n";
        assert!(head.contains("http/1.1 400") || head.contains("http/1.1 501"), "{what}:\n{text}");
        assert!(head.contains("\r\nstrict-transport-security: max-age=63072000\r\n"), "{what}:\n{text}");
        assert!(text.contains("{\"error\":"), "{what}: not the JSON error page:\n{text}");
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [200, 201, 400, 401, 404, 405, 413, 429, 503]);
}
