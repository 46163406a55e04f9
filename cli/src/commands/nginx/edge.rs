//! The edge's part of the render, from `[nginx]`: whose word on the client's address nginx takes
//! (`trusted_proxies`, `proxy_protocol`), the limits at the door (`limit_*`, the timeouts), and
//! the headers of every answer (CORS for `cors_origins`, nosniff, no-referrer, no-store).

use std::fmt::Write as _;

use shopgate_core::config::NginxConfig;

/// What a browser's preflight may ask for besides the CORS-safelisted headers: the token, a JSON
/// body, the order's idempotency key, the catalog's conditional GET.
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, If-None-Match";
/// What a page's script may read of an answer besides the safelisted headers.
const CORS_EXPOSE_HEADERS: &str = "Retry-After, X-Request-Id, ETag";
/// How long a browser may keep a preflight's answer.
const CORS_MAX_AGE_SECONDS: u32 = 600;

/// The `http`-level lines: the real client address, the limits' zones and the CORS maps.
pub(super) struct HttpLines {
    pub real_ip: String,
    pub door_limits: String,
    pub cors: String,
}

pub(super) fn http_lines(nginx: &NginxConfig, methods: &[String]) -> HttpLines {
    HttpLines { real_ip: real_ip(nginx), door_limits: door_limits(nginx), cors: cors(nginx, methods) }
}

/// `set_real_ip_from` per trusted proxy: from those peers only, `$remote_addr` (and so every
/// limit, the verifiers' throttles through `X-Real-IP`, and the log) becomes the client's address.
fn real_ip(nginx: &NginxConfig) -> String {
    if nginx.trusted_proxies.is_empty() {
        return "    # No [nginx] trusted_proxies: the peer is the client; X-Forwarded-For and X-Real-IP from\n    \
                # clients are never believed (and are overwritten on the way in).\n"
            .into();
    }
    let mut out = String::from(
        "    # [nginx] trusted_proxies: from these peers alone the client's address is taken, as the last\n    \
         # address of X-Forwarded-For that is not one of them (real_ip_recursive), or from the PROXY\n    \
         # protocol; a client that is not one cannot choose its address.\n",
    );
    for proxy in &nginx.trusted_proxies {
        let _ = writeln!(out, "    set_real_ip_from {proxy};");
    }
    let header = if nginx.proxy_protocol { "proxy_protocol" } else { "X-Forwarded-For" };
    let _ = write!(out, "    real_ip_header {header};\n    real_ip_recursive on;\n");
    out
}

/// The zones of the limits that are on, keyed by the client's address.
fn door_limits(nginx: &NginxConfig) -> String {
    let mut out = String::from(
        "    # Limits at the door, per client address ([nginx] limit_*; 0 turns one off): requests to\n    \
         # /auth/ and to /api/ in zones of their own, and requests in progress. Past one, a JSON 429\n    \
         # with Retry-After (@too_many_requests).\n",
    );
    if nginx.limit_auth_per_minute > 0 {
        let _ = writeln!(
            out,
            "    limit_req_zone $binary_remote_addr zone=shop_rate_auth:10m rate={}r/m;",
            nginx.limit_auth_per_minute
        );
    }
    if nginx.limit_api_per_second > 0 {
        let _ = writeln!(
            out,
            "    limit_req_zone $binary_remote_addr zone=shop_rate_api:10m rate={}r/s;",
            nginx.limit_api_per_second
        );
    }
    if nginx.limit_connections_per_address > 0 {
        out.push_str("    limit_conn_zone $binary_remote_addr zone=shop_conns:10m;\n");
    }
    out.push_str(
        "    limit_req_status 429;\n    limit_conn_status 429;\n    limit_req_log_level warn;\n    limit_conn_log_level warn;\n",
    );
    // The 429's Retry-After: until the route's zone lets one more request in.
    let _ = write!(
        out,
        "    map $shop_route $shop_retry_after {{\n        default 1;\n        auth {};\n    }}\n",
        retry_after(nginx.limit_auth_per_minute)
    );
    out
}

/// The maps of the CORS headers: the allowed origin (empty for any other, so no header is sent),
/// whether a request is a preflight, and the preflight's answers.
fn cors(nginx: &NginxConfig, methods: &[String]) -> String {
    let mut out = String::from(
        "    # CORS ([nginx] cors_origins): an Origin that is exactly one of these is echoed in\n    \
         # Access-Control-Allow-Origin; any other gets no CORS header at all (an empty value sends\n    \
         # none). A preflight (OPTIONS with Access-Control-Request-Method) is answered 204 by nginx.\n    \
         map $http_origin $shop_cors_origin {\n        default \"\";\n",
    );
    for origin in &nginx.cors_origins {
        let _ = writeln!(out, "        \"{0}\" \"{0}\";", origin.as_str());
    }
    let _ = write!(
        out,
        "    }}\n    \
         map \"$request_method:$http_access_control_request_method\" $shop_preflight {{\n        \
         default \"\";\n        \"~^OPTIONS:.\" 1;\n    }}\n    \
         map $shop_cors_origin $shop_cors_expose {{\n        default \"{CORS_EXPOSE_HEADERS}\";\n        \"\" \"\";\n    }}\n    \
         map \"$shop_preflight:$shop_cors_origin\" $shop_cors_methods {{\n        default \"\";\n        \"~^1:.\" \"{}\";\n    }}\n    \
         map $shop_cors_methods $shop_cors_headers {{\n        default \"{CORS_ALLOW_HEADERS}\";\n        \"\" \"\";\n    }}\n    \
         map $shop_cors_methods $shop_cors_max_age {{\n        default \"{CORS_MAX_AGE_SECONDS}\";\n        \"\" \"\";\n    }}\n",
        methods.join(", ")
    );
    out
}

/// The headers of every answer, as `add_header … always` lines: with `no-store` for the answers
/// of a user or of the auth API (and nginx's own error pages), without for the public ones.
pub(super) fn headers(nginx: &NginxConfig, no_store: bool) -> Vec<String> {
    let mut lines = vec![
        "add_header X-Request-Id $request_id always;".to_owned(),
        "add_header Strict-Transport-Security $shop_hsts always;".to_owned(),
        "add_header X-Content-Type-Options nosniff always;".to_owned(),
        "add_header Referrer-Policy no-referrer always;".to_owned(),
    ];
    if no_store {
        lines.push("add_header Cache-Control no-store always;".to_owned());
    }
    if !nginx.cors_origins.is_empty() {
        lines.extend(
            [
                "Access-Control-Allow-Origin $shop_cors_origin",
                "Access-Control-Expose-Headers $shop_cors_expose",
                "Access-Control-Allow-Methods $shop_cors_methods",
                "Access-Control-Allow-Headers $shop_cors_headers",
                "Access-Control-Max-Age $shop_cors_max_age",
                // Answers differ by Origin: a cache must not give one origin's to another.
                "Vary Origin",
            ]
            .map(|header| format!("add_header {header} always;")),
        );
    }
    lines
}

/// The server's `limit_conn` line, if that limit is on.
pub(super) fn limit_conn(nginx: &NginxConfig) -> Vec<String> {
    match nginx.limit_connections_per_address {
        0 => Vec::new(),
        n => vec![format!("limit_conn shop_conns {n};")],
    }
}

/// The `limit_req` line of the `/api/` locations, if that limit is on: `limit_api_burst`
/// requests past the rate are served at once, as many more wait their turn at the rate (at most
/// burst / rate seconds: 2 s by default), and only past those comes the 429. A greedy client is
/// slowed to the rate rather than refused at once: refused, it would ask again at once, and
/// nginx's answers to it would cost the shop's CPU as much as its other users' requests.
pub(super) fn limit_api(nginx: &NginxConfig) -> Vec<String> {
    match nginx.limit_api_per_second {
        0 => Vec::new(),
        _ => vec![format!(
            "limit_req zone=shop_rate_api burst={} delay={};",
            nginx.limit_api_burst.saturating_mul(2),
            nginx.limit_api_burst
        )],
    }
}

/// The `limit_req` line of the `/auth/` location, if that limit is on.
pub(super) fn limit_auth(nginx: &NginxConfig) -> Vec<String> {
    match nginx.limit_auth_per_minute {
        0 => Vec::new(),
        _ => vec![format!("limit_req zone=shop_rate_auth burst={} nodelay;", nginx.limit_auth_burst)],
    }
}

/// The seconds until a zone of `per_minute` requests a minute lets one more in (at least 1).
fn retry_after(per_minute: u32) -> u32 {
    match per_minute {
        0 => 1,
        n => 60_u32.div_ceil(n).max(1),
    }
}

/// `text` with each line that is only `@NAME@` replaced by `lines`, at that line's indentation
/// (none: the line goes).
pub(super) fn expand(text: &str, name: &str, lines: &[String]) -> String {
    let placeholder = format!("@{name}@");
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim() == placeholder {
            let indent = &line[..line.len() - line.trim_start().len()];
            for l in lines {
                let _ = writeln!(out, "{indent}{l}");
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Each worker's `worker_connections` and `worker_rlimit_nofile`.
pub(super) fn worker_lines(nginx: &NginxConfig) -> (String, String) {
    (nginx.worker_connections.to_string(), nginx.worker_files().to_string())
}

/// The timeouts of a client's request head and body.
pub(super) fn client_timeouts(nginx: &NginxConfig) -> (String, String) {
    (format!("{}s", nginx.client_header_timeout_seconds), format!("{}s", nginx.client_body_timeout_seconds))
}
