//! Issue 26: shopctl against a stack with HTTPS at the edge (`Options::tls`, a private CA made by
//! `scripts/certs`), and `shopctl nginx render` refusing plaintext beyond loopback.

use std::process::Command;

use shopgate_e2e::cli::run;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack, PASSWORD};

#[tokio::test]
async fn a_shopper_uses_the_https_stack_with_the_private_ca() {
    let stack = Stack::start_with(Options { tls: true, ..Options::default() }).await;
    assert!(stack.url.starts_with("https://127.0.0.1:"), "{}", stack.url);
    let email = super::email("cli-https");
    let pw = format!("{PASSWORD}\n");
    // The harness passes the CA as SHOPCTL_CA_FILE; --ca-file says the same.
    let ca = stack.ca_file.clone().expect("a TLS stack");
    let user = stack.ctl_stdin(&["--json", "register", &email, "--password-stdin"], &pw).ok().json();
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();
    let me = stack.ctl(&["--json", "whoami"]).ok().json();
    assert_eq!(me["id"], user["id"]);
    let products = stack.ctl(&["--json", "products"]).ok().json();
    let first = products["items"][0]["id"].to_string();
    let order = stack.ctl(&["--json", "orders", "create", "--item", &format!("{first}:2")]).ok().json();
    let mut cmd = stack.shopctl();
    cmd.env_remove("SHOPCTL_CA_FILE").arg("--ca-file").arg(&ca).args(["--json", "orders", "list"]);
    let list = run(cmd, None).ok().json();
    assert_eq!(list["items"][0]["id"], order["id"], "{list}");
    // Without a --url, the config's [nginx.tls] makes the default URL https://.
    let mut cmd = stack.shopctl();
    cmd.env_remove("SHOPCTL_URL").args(["--json", "whoami"]);
    assert_eq!(run(cmd, None).ok().json()["id"], user["id"]);
}

#[tokio::test]
async fn an_untrusted_certificate_is_named_as_such_with_exit_code_5() {
    let stack = Stack::start_with(Options { tls: true, ..Options::default() }).await;
    let untrusted = |extra: &[&std::ffi::OsStr], problem: &str| {
        let mut cmd = stack.shopctl();
        cmd.env_remove("SHOPCTL_CA_FILE").args(extra).arg("products");
        let r = run(cmd, None);
        let line = r.one_line_error(5);
        assert!(
            line.contains(&format!("the shop's certificate at {} is not trusted", stack.url))
                && line.contains(problem)
                && line.contains("--ca-file"),
            "{r}"
        );
        assert!(!line.contains("is the stack running"), "{r}");
    };
    // The system's roots only.
    untrusted(&[], "it is issued by a CA this client does not know");
    // Another CA than the one that issued the edge's certificate.
    let other = stack.dir.path().join("other-ca");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/certs")).arg("ca").arg(&other).output();
    assert!(out.is_ok_and(|o| o.status.success()), "scripts/certs ca");
    let other_ca = other.join("ca.crt");
    // (scripts/certs names every CA of a host alike: a trusted CA of the issuer's name, which did
    // not sign it.)
    untrusted(&["--ca-file".as_ref(), other_ca.as_os_str()], "its signature is not that of the trusted CA");
    // A --ca-file that is not one is a plain failure, said as such.
    let mut cmd = stack.shopctl();
    cmd.args(["--ca-file", "/nonexistent/ca.crt", "products"]);
    let r = run(cmd, None);
    assert!(r.one_line_error(1).contains("cannot read --ca-file /nonexistent/ca.crt"), "{r}");
}

/// The edge's certificate replaced in place and nginx reloaded (as docs/operations.md renews it):
/// shopctl names a certificate for another name, then an expired one.
#[tokio::test]
async fn a_certificate_for_another_name_or_expired_is_named_after_a_reload() {
    let stack = Stack::start_with(Options { tls: true, nginx_master: true, ..Options::default() }).await;
    stack.ctl(&["products"]).ok();
    let certs = stack.dir.path().join("certs");
    for (args, problem) in [
        (&["edge", "shop.example"][..], "it is not valid for this host name"),
        (&["--days", "0", "edge", "localhost", "127.0.0.1"], "it has expired"),
    ] {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/certs"))
            .arg("issue")
            .arg(&certs)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/certs issue {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        stack.reload_nginx();
        // New connections get the new certificate once the new workers run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let r = loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let r = stack.ctl(&["products"]);
            if r.code != 0 || std::time::Instant::now() > deadline {
                break r;
            }
        };
        let line = r.one_line_error(5);
        assert!(line.contains("is not trusted: ") && line.contains(problem), "{args:?}: {r}");
    }
}

#[tokio::test]
async fn nginx_render_refuses_plaintext_beyond_loopback_unless_allowed() {
    let stack = Stack::start().await;
    let everywhere = ("SHOP__NGINX__LISTEN", "0.0.0.0:8080");
    let r = stack.ctl_env(&["nginx", "render"], &[everywhere]);
    let line = r.one_line_error(1);
    assert!(line.contains("nginx.listen 0.0.0.0:8080 is not a loopback address"), "{r}");
    assert!(line.contains("[nginx.tls]") && line.contains("nginx.allow_plaintext = true"), "{r}");
    let allowed = stack.ctl_env(&["nginx", "render"], &[everywhere, ("SHOP__NGINX__ALLOW_PLAINTEXT", "true")]).ok();
    assert!(allowed.stdout.contains("listen 0.0.0.0:8080;"), "{allowed}");
}
