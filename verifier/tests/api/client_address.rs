//! Which address the per-address limits count: over the unix socket, which only nginx (and the
//! verifier's own user) can use, nginx's `X-Real-IP`; over TCP, the peer's own address, loopback
//! included, whatever the header says.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::json;

use crate::helpers::{spawn_app_with, PASSWORD};

/// Three registrations, each from `X-Real-IP: ip`, through `client` (its base URL `base`).
async fn register_thrice(client: &reqwest::Client, base: &str, ip: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..3 {
        let email = format!("{}-{i}@example.com", ip.replace('.', "-"));
        let r = client
            .post(format!("{base}/auth/register"))
            .header("X-Real-IP", ip)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn x_real_ip_is_believed_over_the_socket_only() {
    let app = spawn_app_with(&[("verifier.register_max_per_address", "2")]).await;
    let socket = app.socket.clone().expect("a verifier on 127.0.0.1 serves a unix socket too");
    assert_eq!(socket, app.dir.path().join(format!("run/verifier-{}.sock", app.addr.port())));
    // No nginx.user: nginx's workers are the verifier's own user, and nobody else gets in.
    assert_eq!((mode(socket.parent().unwrap()), mode(&socket)), (0o700, 0o600));

    let nginx = reqwest::Client::builder().unix_socket(socket).build().unwrap();
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(register_thrice(&nginx, "http://verifier", ip).await, [201, 201, 429], "{ip} over the socket");
    }
    // Over TCP from loopback the header is the client's own word: one limit for 127.0.0.1.
    let mut tcp = Vec::new();
    for ip in ["198.51.100.3", "198.51.100.4"] {
        tcp.extend(register_thrice(&app.client, &app.base, ip).await);
    }
    assert_eq!(tcp, [201, 201, 429, 429, 429, 429], "over TCP");
}
