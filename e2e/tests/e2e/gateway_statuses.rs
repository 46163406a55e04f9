//! What the gateway answers on its own. Every status nginx itself can produce in front of this
//! stack (400, 405, 408, 411, 412, 413, 414, 494, 500, 501, 502, 503, 504, 505; 499 is only ever
//! logged) is caused here by a real request, or shown not to be producible, and every answer is
//! the project's JSON error `{"error", "message"}`, never nginx's HTML page. Also: `X-Request-Id`
//! exactly once on every answer, the value the logs carry; and paths reach the verifier and the
//! backends the way nginx understood them, not as the client spelled them.
//!
//! Malformed requests go over raw TCP: reqwest cannot send a bad request line or an unknown
//! transfer coding. Upstream failures use the harness: a process killed, or frozen with SIGSTOP
//! (its socket still accepts connections, so nginx waits out its read timeouts: 5 s for the
//! check and for a shard, 10 s for the auth API).

use std::time::{Duration, Instant};

use serde_json::Value;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// nginx's `client_header_timeout` and `client_body_timeout` in the template.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body on one line, cut at 160 characters, for messages.
    fn short_body(&self) -> String {
        self.body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect()
    }

    /// The one `X-Request-Id`; fails if there is none or more than one.
    fn request_id(&self, what: &str) -> String {
        self.check_request_id(what).unwrap_or_else(|e| panic!("{e}"))
    }

    fn check_request_id(&self, what: &str) -> Result<String, String> {
        let ids = self.header_values("x-request-id");
        match ids[..] {
            [id] if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(id.to_owned()),
            _ => Err(format!("{what}: X-Request-Id must be sent exactly once, got {ids:?}")),
        }
    }

    /// Asserts the project's JSON error and returns its code.
    fn error_code(&self, what: &str) -> String {
        self.check_error(what).unwrap_or_else(|e| panic!("{e}"))
    }

    fn check_error(&self, what: &str) -> Result<String, String> {
        let ct = self.header_values("content-type");
        if ct.len() != 1 || !ct[0].starts_with("application/json") {
            return Err(format!("{what}: {} with content-type {ct:?}: {}", self.status, self.short_body()));
        }
        let v: Value = serde_json::from_str(&self.body)
            .map_err(|e| format!("{what}: {} body is not JSON ({e}): {}", self.status, self.body))?;
        match (v["error"].as_str(), v["message"].is_string()) {
            (Some(code), true) => Ok(code.to_owned()),
            _ => Err(format!("{what}: not {{\"error\", \"message\"}}: {}", self.body)),
        }
    }

    /// Status, JSON error code and one request id, or what is wrong.
    fn check(&self, what: &str, status: u16, code: &str) -> Result<(), String> {
        if self.status != status {
            return Err(format!("{what}: status {} instead of {status}: {}", self.status, self.short_body()));
        }
        let got = self.check_error(what)?;
        if got != code {
            return Err(format!("{what}: error {got:?} instead of {code:?}"));
        }
        self.check_request_id(what).map(drop)
    }

    fn expect(&self, what: &str, status: u16, code: &str) {
        if let Err(e) = self.check(what, status, code) {
            panic!("{e}");
        }
    }
}

fn nginx_addr(stack: &Stack) -> String {
    stack.url.trim_start_matches("http://").to_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` byte for byte and reads one answer: the head, then `Content-Length` bytes of
/// body (or up to the close). Write errors are ignored: nginx may answer and close before it has
/// read everything.
async fn raw(stack: &Stack, request: &[u8]) -> Answer {
    let what = String::from_utf8_lossy(&request[..request.len().min(80)]).into_owned();
    let fut = async {
        let mut s = TcpStream::connect(nginx_addr(stack)).await.unwrap();
        let _ = s.write_all(request).await;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    panic!("{what:?}: connection closed before a whole head; got {:?}", String::from_utf8_lossy(&buf))
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what:?}: status line {status_line:?}"));
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let mut body = buf[head_end..].to_vec();
        while length.is_none_or(|n| body.len() < n) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(n) = length {
            body.truncate(n);
        }
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what:?}: no answer within 20 s"))
}

/// A request with the usual head lines around `extra` (each line ending in CRLF).
fn req(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

#[tokio::test]
async fn malformed_requests_get_json_errors_from_nginx() {
    let stack = Stack::start().await;
    let bearer = format!("Authorization: Bearer {}\r\n", stack.mint(4));
    // (what, request, status, error code): every case is tried, then every problem is reported.
    let mut cases: Vec<(String, Vec<u8>, u16, &str)> = Vec::new();
    let mut case = |what: &str, request: Vec<u8>, status: u16, code: &'static str| {
        cases.push((what.to_owned(), request, status, code))
    };

    // 400: what nginx cannot parse, at every stage: the request line (before nginx has a URI),
    // the head, the body (the last inside the API and the auth locations).
    case("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400, "bad_request");
    case("space in the method", b"GE T /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "bad_request");
    case("bad percent escape", b"GET /api/%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "bad_request");
    case("no Host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(), 400, "bad_request");
    case("two Hosts", req("GET", "/healthz", "Host: other.test\r\n"), 400, "bad_request");
    case("bad Content-Length", req("POST", "/auth/token", "Content-Length: 12x\r\n"), 400, "bad_request");
    case(
        "Content-Length and Transfer-Encoding",
        req("POST", "/auth/token", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
        400,
        "bad_request",
    );
    case(
        "chunked in HTTP/1.0",
        b"POST /auth/token HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        400,
        "bad_request",
    );
    let bad_chunk = |path: &str| {
        [req("POST", path, &format!("{bearer}Transfer-Encoding: chunked\r\n")), b"zz\r\n".to_vec()].concat()
    };
    case("bad chunk, API location", bad_chunk("/api/orders"), 400, "bad_request");
    case("bad chunk, auth location", bad_chunk("/auth/token"), 400, "bad_request");
    // 494 (a header over the 8 KiB buffer) is nginx's own non-standard code: answered as the 400
    // it is.
    case("494", req("GET", "/api/orders", &format!("X-Pad: {}\r\n", "a".repeat(9000))), 400, "bad_request");
    // 414, found while the request line is read.
    case("414", req("GET", &format!("/api/{}", "a".repeat(9000)), ""), 414, "uri_too_long");
    // 405: TRACE and CONNECT are refused before any location is chosen. (CONNECT with an
    // authority is a request line nginx 1.22 cannot parse: 400.)
    for path in ["/healthz", "/api/orders", "/auth/token"] {
        case(&format!("TRACE {path}"), req("TRACE", path, ""), 405, "method_not_allowed");
    }
    case("CONNECT", req("CONNECT", "/healthz", ""), 405, "method_not_allowed");
    case("CONNECT authority", req("CONNECT", "shop.test:443", ""), 400, "bad_request");
    // 411: nginx 1.22 has no code path that sends it (the constant is defined, nothing uses it).
    // A body with neither Content-Length nor Transfer-Encoding is simply no body: the upstream
    // answers, in JSON, never 411.
    case(
        "POST without a length",
        req("POST", "/auth/token", "Content-Type: application/x-www-form-urlencoded\r\n"),
        400,
        "invalid_request",
    );
    case("PUT without a length", req("PUT", "/api/orders", &bearer), 405, "method_not_allowed");
    // 412: nginx checks If-Match / If-Unmodified-Since itself on the answers it makes (the health
    // check); with no ETag or Last-Modified, neither can hold.
    case("If-Match", req("GET", "/healthz", "If-Match: \"abc\"\r\n"), 412, "precondition_failed");
    case(
        "If-Unmodified-Since",
        req("GET", "/healthz", "If-Unmodified-Since: Mon, 01 Jan 2024 00:00:00 GMT\r\n"),
        412,
        "precondition_failed",
    );
    // 413: announced, and found while a chunked body is read, in both proxying locations.
    for path in ["/api/orders", "/auth/register"] {
        case(
            &format!("413 {path}"),
            req("POST", path, &format!("{bearer}Content-Length: 2000000\r\n")),
            413,
            "payload_too_large",
        );
        let chunked = [
            req("POST", path, &format!("{bearer}Transfer-Encoding: chunked\r\n")),
            b"200000\r\n".to_vec(),
            vec![b'x'; 4096],
        ]
        .concat();
        case(&format!("413 chunked {path}"), chunked, 413, "payload_too_large");
    }
    // 501: a transfer coding nginx does not know (HTTP prescribes 501), before any location.
    for (path, te) in [("/auth/token", "gzip, chunked"), ("/api/orders", "xchunked"), ("/healthz", "identity")] {
        let request =
            [req("POST", path, &format!("{bearer}Transfer-Encoding: {te}\r\n")), b"0\r\n\r\n".to_vec()].concat();
        case(&format!("Transfer-Encoding: {te}"), request, 501, "not_implemented");
    }
    // 505: a major version nginx does not speak (HTTP prescribes 505), found while the request
    // line is parsed, before nginx has a URI.
    for version in ["HTTP/2.0", "HTTP/9.9", "HTTP/3.0"] {
        for path in ["/healthz", "/api/orders"] {
            case(
                &format!("{version} {path}"),
                format!("GET {path} {version}\r\nHost: shop.test\r\n\r\n").into_bytes(),
                505,
                "http_version_not_supported",
            );
        }
    }
    // And the ordinary ones stay as they were.
    case("no token", req("GET", "/api/orders", ""), 401, "invalid_token");
    case("unknown path", req("GET", "/nope", ""), 404, "not_found");
    case("the error pages are internal", req("GET", "/_error/400", ""), 404, "not_found");

    let mut problems = Vec::new();
    for (what, request, status, code) in &cases {
        if let Err(e) = raw(&stack, request).await.check(what, *status, code) {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{} of {} answers are wrong:\n{}", problems.len(), cases.len(), problems.join("\n"));
}

/// Reads until the peer closes; returns what came and when the close came.
async fn read_until_closed(mut s: TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut chunk)).await {
            Err(_) => return (got, None),
            Ok(Ok(0) | Err(_)) => return (got, Some(start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// 408: a client that stops sending, before or inside its head or body. nginx does not answer
/// 408 at all: it logs 408 and closes the connection without a byte (for the head, the body, and
/// an idle connection alike), after the template's 10 s client timeouts.
#[tokio::test]
async fn a_stalled_client_is_cut_off_without_an_answer() {
    let stack = Stack::start().await;
    let bearer = format!("Authorization: Bearer {}\r\n", stack.mint(4));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("idle connection", Vec::new()),
        ("half a request line", b"GET /api/ord".to_vec()),
        ("half a head", b"GET /api/orders HTTP/1.1\r\nHost: shop.test\r\n".to_vec()),
        (
            "half a body, API location",
            [req("POST", "/api/orders", &format!("{bearer}Content-Length: 100\r\n")), b"{\"items\":".to_vec()].concat(),
        ),
        (
            "half a body, auth location",
            [req("POST", "/auth/token", "Content-Length: 100\r\n"), b"username=".to_vec()].concat(),
        ),
        (
            "half a chunked body",
            [req("POST", "/auth/register", "Transfer-Encoding: chunked\r\n"), b"10\r\n{\"em".to_vec()].concat(),
        ),
    ];
    let mut tasks = Vec::new();
    for (what, bytes) in cases {
        let addr = nginx_addr(&stack);
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            (what, read_until_closed(s, CLIENT_TIMEOUT + Duration::from_secs(5)).await)
        }));
    }
    for t in tasks {
        let (what, (got, closed)) = t.await.unwrap();
        assert!(got.is_empty(), "{what}: nginx sent {:?}", String::from_utf8_lossy(&got));
        let after = closed.unwrap_or_else(|| panic!("{what}: still open {} s later", CLIENT_TIMEOUT.as_secs() + 5));
        assert!(after >= CLIENT_TIMEOUT - Duration::from_secs(1), "{what}: closed after {after:?}");
    }
    // nginx logs a 408 for each that had begun a request (all but the idle connection).
    let log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/access.log")).unwrap();
    let timeouts = log.lines().filter(|l| l.contains("\"status\":408")).count();
    assert_eq!(timeouts, 5, "408s in the access log:\n{log}");
}

/// The client's view of an upstream failure: 503 `unavailable` with `Retry-After: 1`. nginx's own
/// status underneath is 500 (auth_request got something other than 2xx/401/403 from the check),
/// 502 (nothing listening) or 504 (no answer in time); the template answers all three as this 503,
/// as the README promises. nginx makes no 503 of its own here (no limit_req/limit_conn; "no live
/// upstreams" is a 502), so this mapped answer is the only 503 a client sees from the gateway.
async fn expect_unavailable(stack: &Stack, what: &str, rb: reqwest::RequestBuilder) {
    let r = rb.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), 503, "{what}");
    assert_eq!(r.headers().get_all("retry-after").iter().collect::<Vec<_>>(), ["1"], "{what}");
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1, "{what}");
    assert!(r.headers().get("x-shop-shard").is_none(), "{what}: a backend answered");
    assert_eq!(crate::error_code(r).await, "unavailable", "{what}\n{}", stack.logs());
}

fn error_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.dir.path().join("nginx/logs/error.log")).unwrap_or_default()
}

#[tokio::test]
async fn verifier_failures_are_json_503s() {
    let stack = Stack::start().await;
    let (_, token) = stack.shopper().await;
    let get = |path: &str| stack.http.get(stack.api(path)).bearer_auth(&token);

    // Frozen: the check times out after 5 s (504 inside, so auth_request's 500); the auth API's
    // own proxy read after 10 s (504).
    stack.stop("verifier-0");
    let started = Instant::now();
    tokio::join!(
        expect_unavailable(&stack, "API, verifier frozen (500)", get("/api/orders")),
        expect_unavailable(&stack, "auth API, verifier frozen (504)", get("/auth/me")),
        expect_unavailable(&stack, "original prefix, verifier frozen (504)", get("/authentication/auth/me")),
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    stack.cont("verifier-0");
    let log = error_log(&stack);
    // (Inside the check's subrequest the 504 already became the 503 page; auth_request takes any
    // status but 2xx/401/403 for a 500 of its own.)
    assert!(log.contains("auth request unexpected status"), "{log}");
    assert!(log.contains("upstream timed out"), "{log}");
    let r = get("/api/orders").send().await.unwrap();
    assert_eq!(r.status(), 200, "after SIGCONT");

    // Gone: connections refused (502; the check's 502 is again auth_request's 500).
    stack.kill("verifier-0");
    expect_unavailable(&stack, "API, verifier killed (500)", get("/api/orders")).await;
    expect_unavailable(&stack, "auth API, verifier killed (502)", get("/auth/me")).await;
    let login = stack.http.post(stack.api("/auth/token")).form(&[("username", "a@b.io"), ("password", "x")]);
    expect_unavailable(&stack, "login, verifier killed (502)", login).await;
    // Over the verifier's unix socket, which a killed verifier leaves behind: "connect() to
    // unix:… failed (111: Connection refused)" (over TCP: "connect() failed (111: …)").
    let log = error_log(&stack);
    assert!(log.contains("(111: Connection refused) while connecting to upstream"), "{log}");
}

#[tokio::test]
async fn backend_failures_are_json_503s() {
    let stack = Stack::start().await;
    let (odd, even) = (stack.mint(3), stack.mint(4));
    // Shard b frozen: its proxied read times out after 5 s (504). Shard a killed: refused (502).
    stack.stop("backend-b");
    stack.kill("backend-a");
    let started = Instant::now();
    tokio::join!(
        expect_unavailable(&stack, "shard b frozen (504)", stack.http.get(stack.api("/api/orders")).bearer_auth(&odd)),
        expect_unavailable(
            &stack,
            "shard b frozen, a write (504)",
            stack
                .http
                .post(stack.api("/api/orders"))
                .bearer_auth(&odd)
                .json(&serde_json::json!({"items": [{"product_id": 1, "quantity": 1}]})),
        ),
        expect_unavailable(
            &stack,
            "shard a killed (502)",
            stack.http.get(stack.api("/backend/api/orders")).bearer_auth(&even)
        ),
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    stack.cont("backend-b");
    let log = error_log(&stack);
    assert!(log.contains("upstream timed out"), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(&odd).send().await.unwrap();
    assert_eq!(r.status(), 200, "shard b after SIGCONT");
}

/// Waits up to 2 s for `needle` to show in a log file of the stack.
async fn log_has(stack: &Stack, file: &str, needle: &str) -> bool {
    let path = stack.dir.path().join(file);
    for _ in 0..40 {
        if std::fs::read_to_string(&path).unwrap_or_default().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn x_request_id_is_sent_once_and_is_the_logged_one() {
    for debug_headers in [false, true] {
        let stack = Stack::start_with(Options { debug_headers, ..Default::default() }).await;
        let (uid, token) = stack.shopper().await;
        let bearer = format!("Authorization: Bearer {token}\r\n");
        let shard_log = if uid % 2 == 0 { "backend-a.log" } else { "backend-b.log" };
        // (what, request, status, the service log that must carry the same id)
        let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
            ("API 200", req("GET", "/api/orders", &bearer), 200, Some(shard_log)),
            ("API 200, original prefix", req("GET", "/backend/api/orders?limit=1", &bearer), 200, Some(shard_log)),
            ("API 404 from the backend", req("GET", "/api/orders/12345", &bearer), 404, Some(shard_log)),
            ("API 401 from nginx", req("GET", "/api/orders", ""), 401, None),
            ("auth API 200", req("GET", "/auth/me", &bearer), 200, Some("verifier-0.log")),
            ("auth API 401", req("GET", "/auth/me", ""), 401, Some("verifier-0.log")),
            ("auth API 404", req("GET", "/auth/nope", ""), 404, Some("verifier-0.log")),
            ("health", req("GET", "/healthz", ""), 200, None),
            ("404 page", req("GET", "/nope", ""), 404, None),
            ("405 page", req("TRACE", "/api/orders", ""), 405, None),
            ("400 page", b"GARBAGE\r\n\r\n".to_vec(), 400, None),
            ("412 page", req("GET", "/healthz", "If-Match: \"x\"\r\n"), 412, None),
            ("413 page", req("POST", "/api/orders", &format!("{bearer}Content-Length: 2000000\r\n")), 413, None),
            ("414 page", req("GET", &format!("/{}", "a".repeat(9000)), ""), 414, None),
            ("501 page", req("POST", "/auth/token", "Transfer-Encoding: gzip, chunked\r\n"), 501, None),
            ("505 page", b"GET /api/orders HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505, None),
        ];
        for (what, request, status, service_log) in cases {
            let what = format!("{what} (debug headers {debug_headers})");
            let r = raw(&stack, &request).await;
            assert_eq!(r.status, status, "{what}: {r:?}");
            let id = r.request_id(&what);
            assert!(
                log_has(&stack, "nginx/logs/access.log", &format!("\"request_id\":\"{id}\"")).await,
                "{what}: {id} not in nginx's access log"
            );
            if let Some(file) = service_log {
                assert!(log_has(&stack, file, &id).await, "{what}: {id} not in {file}");
            }
        }
        // And the 503 pages.
        stack.kill("verifier-0");
        let r = raw(&stack, &req("GET", "/api/orders", &bearer)).await;
        assert_eq!(r.status, 503);
        r.request_id(&format!("503 page (debug headers {debug_headers})"));
    }
}

#[tokio::test]
async fn upstreams_get_the_path_nginx_understood() {
    let stack = Stack::start().await;
    let (uid, token) = stack.shopper().await;
    let bearer = format!("Authorization: Bearer {token}\r\n");
    // Spellings nginx normalises to /auth/me or /api/orders (merged slashes, decoded escapes,
    // dot segments) reach the upstream as that path.
    for path in [
        "//auth//me",
        "/%61uth/me",
        "/auth/./me",
        "/auth/x/../me",
        "/authentication//auth/me",
        "/authentication/%61uth/me",
        "/auth/me?x=%2F",
    ] {
        let r = raw(&stack, &req("GET", path, &bearer)).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let me: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(me["id"].as_u64(), Some(uid), "{path}");
    }
    for path in ["//api//orders", "/%61pi/orders", "/api/./orders", "/backend//api/orders", "/api/x/../orders?limit=1"]
    {
        let r = raw(&stack, &req("GET", path, &bearer)).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(serde_json::from_str::<Value>(&r.body).unwrap()["orders"].is_array(), "{path}: {}", r.body);
    }
    // The check path stays unreachable however it is spelled.
    for path in [
        "/auth%2fverify",
        "/auth%2Fverify",
        "/auth/verify",
        "/auth//verify",
        "/_verify",
        "/%5fverify",
        "/verify",
        "/auth/..%2fverify",
        "/auth/%2e%2e/verify",
        "/auth/%2e%2e/_verify",
    ] {
        let r = raw(&stack, &req("GET", path, &bearer)).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.header_values("x-user-id").is_empty(), "{path} leaked an identity header");
        r.error_code(path);
    }
    // What nginx decodes is escaped again on the way out: the upstream sees the same path, with
    // nothing cut off (a decoded newline stays in it).
    for path in ["/auth/me%20x", "/auth/me%0A", "/auth/me%0Ax", "/auth/me%3F", "/api/orders%0A"] {
        raw(&stack, &req("GET", path, &bearer)).await.expect(path, 404, "not_found");
    }
}

/// The second hostile round, finding 3: a control character in any header reached the services,
/// whose HTTP parser refuses it with an empty 400; behind auth_request that was a 503 with
/// Retry-After (a retry that can never succeed), on the auth API an empty non-JSON 400. nginx now
/// refuses it at the door on every location. Tabs and bytes above 0x7f are allowed in values.
#[tokio::test]
async fn a_control_character_in_any_header_is_a_json_400_everywhere() {
    let stack = Stack::start().await;
    let bearer = format!("Authorization: Bearer {}\r\n", stack.mint(4));
    let paths = [
        ("GET", "/api/orders"),
        ("GET", "/backend/api/orders"),
        ("GET", "/api/users/me"),
        ("GET", "/api/products"),
        ("GET", "/api/products/1"),
        ("GET", "/api/categories"),
        ("GET", "/auth/me"),
        ("GET", "/authentication/auth/me"),
        ("GET", "/auth/jwks.json"),
        ("POST", "/auth/token"),
        ("POST", "/auth/logout"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/path"),
        ("GET", "/_verify"),
    ];
    let mut problems = Vec::new();
    for (method, path) in paths {
        for (what, header) in [
            ("\\x01 in a value", "X-Note: a\x01b\r\n"),
            ("DEL in a value", "X-Note: a\x7fb\r\n"),
            ("\\x1b in the token", "Authorization: Bearer a\x1bb\r\n"),
        ] {
            for auth in ["", bearer.as_str()] {
                let extra =
                    if header.starts_with("Authorization") { header.to_owned() } else { format!("{auth}{header}") };
                let what = format!("{method} {path} with {what}{}", if auth.is_empty() { "" } else { " and a token" });
                if let Err(e) = raw(&stack, &req(method, path, &extra)).await.check(&what, 400, "bad_request") {
                    problems.push(e);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} of {} cases wrong:\n{}", problems.len(), paths.len() * 6, problems.join("\n"));
    // What HTTP allows in a value still passes: a tab, bytes above 0x7f (obs-text).
    let r = raw(&stack, &req("GET", "/api/orders", &format!("{bearer}X-Note: a\tb\u{e9}\r\n"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut request = req("GET", "/api/orders", &bearer);
    request.splice(request.len() - 2..request.len() - 2, b"X-Raw: \xff\xfe\r\n".iter().copied());
    assert_eq!(raw(&stack, &request).await.status, 200);
}

/// The second hostile round, finding 1 (at the door): a body on a GET or a HEAD is refused by
/// nginx with a JSON 400 before it is sent anywhere. A POST that takes no body (logout, cancel:
/// shopctl sends `{}`) still gets its normal answer; the service reads the body off.
#[tokio::test]
async fn a_body_on_a_get_or_head_is_a_json_400_at_the_door() {
    let stack = Stack::start().await;
    let bearer = format!("Authorization: Bearer {}\r\n", stack.mint(4));
    let mut problems = Vec::new();
    let with_body = |method: &str, path: &str, body: &str| {
        [req(method, path, &bearer).strip_suffix(b"\r\n").unwrap(), body.as_bytes()].concat()
    };
    for (method, path) in [
        ("GET", "/api/products?a=1"),
        ("GET", "/api/orders"),
        ("HEAD", "/api/orders"),
        ("GET", "/backend/api/orders/1"),
        ("GET", "/auth/me"),
        ("GET", "/authentication/auth/jwks.json"),
        ("GET", "/healthz"),
        ("GET", "/no/such/path"),
    ] {
        for body in ["Content-Length: 5\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"] {
            let what = format!("{method} {path} with {}", body.split(':').next().unwrap());
            let answer = raw(&stack, &with_body(method, path, body)).await;
            if method == "HEAD" {
                if answer.status != 400 {
                    problems.push(format!("{what}: {answer:?}"));
                }
                continue;
            }
            match answer.check(&what, 400, "bad_request") {
                Err(e) => problems.push(e),
                Ok(()) if !answer.body.contains("takes no body") => problems.push(format!("{what}: {}", answer.body)),
                Ok(()) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A path with no GET: the service's 405 naming what it has (and the body read off).
    let r = raw(&stack, &with_body("GET", "/auth/token", "Content-Length: 5\r\n\r\nhello")).await;
    r.expect("GET /auth/token with a body", 405, "method_not_allowed");
    assert_eq!(r.header_values("allow"), ["POST"], "{r:?}");
    // A zero length is no body; the POSTs without one in the API description take what clients
    // send them; a route that takes a body gets it.
    let zero =
        [req("GET", "/api/orders", &bearer).strip_suffix(b"\r\n").unwrap(), b"Content-Length: 0\r\n\r\n"].concat();
    assert_eq!(raw(&stack, &zero).await.status, 200);
    let empty = "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let order = r#"{"items":[{"product_id":1,"quantity":1}]}"#;
    let post = format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{order}", order.len());
    let r = raw(&stack, &with_body("POST", "/api/orders", &post)).await;
    assert_eq!(r.status, 201, "{r:?}");
    raw(&stack, &with_body("POST", "/api/orders/12/cancel", empty)).await.expect("cancel with {}", 404, "not_found");
    // Last: logging out revokes the token.
    assert_eq!(raw(&stack, &with_body("POST", "/auth/logout", empty)).await.status, 200);
}

/// The second hostile round, finding 6: nginx wrote the decoded path's bytes above 0x7f as they
/// were, so a line with a path that is not UTF-8 was not JSON. Every line parses now, and the
/// path is there, escaped.
#[tokio::test]
async fn every_access_log_line_is_json() {
    let stack = Stack::start().await;
    let bearer = format!("Authorization: Bearer {}\r\n", stack.mint(4));
    let requests: Vec<Vec<u8>> = vec![
        b"GET /api/\xff\xfe/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n".to_vec(),
        req("GET", "/api/products/%FF%C3%28", ""),
        req("GET", "/auth/%C3%A9t%E9", ""),
        req("GET", "/api/orders/%01%22%5C", &bearer),
        [
            req("GET", "/api/orders", &bearer).strip_suffix(b"\r\n").unwrap(),
            b"X-Raw: \xff\xfe\xc3\r\nUser-Agent: \xe9\r\n\r\n",
        ]
        .concat(),
        b"GET /healthz\xff HTTP/1.1\r\nHost: \xff\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    for request in &requests {
        raw(&stack, request).await;
    }
    assert!(log_has(&stack, "nginx/logs/access.log", "%FF%C3(").await, "the escaped path is not in the log");
    let log = std::fs::read(stack.dir.path().join("nginx/logs/access.log")).unwrap();
    let mut lines = 0;
    for line in log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
        assert!(v["uri"].is_string(), "{v}");
        lines += 1;
    }
    assert!(lines >= requests.len(), "{lines} lines for {} requests", requests.len());
    let text = String::from_utf8(log).unwrap();
    assert!(text.contains(r#""uri":"/api/%FF%FE/x""#), "{text}");
    assert!(text.contains(r#""uri":"/auth/%C3%A9t%E9""#), "{text}");
}
