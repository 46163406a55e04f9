//! Issue 26, point 4: certificates renewed under load. On a stack with TLS on every hop (HTTPS at
//! nginx, mutual TLS to the verifier and backends, TLS to MariaDB), shoppers log in and place
//! orders without pause while the edge's certificate, the stack's own (which the backends and
//! the verifier serve) and shard `a`'s primary's are each issued again from the same CA and put
//! in force the way docs/operations.md says: nginx reloaded gracefully, the services left to
//! notice the new files, `FLUSH SSL` on the instance. No request may fail, and a new connection
//! to each must be served the new certificate, by its serial.
//!
//! Half the shoppers keep their connections alive, half open a new one for every request. A kept
//! connection that nginx's old workers close at a reload before reading a request is sent again
//! at once (as `load::closed_unanswered` says, what HTTP clients do); those resends are counted
//! and shown, not failures. Any other connection error is a failure: a restarted nginx (instead
//! of a reload) refuses connections, and the new-connection shoppers meet it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::config::SERVICE_NAME;
use shopgate_core::db::{connect_options, Open};
use shopgate_e2e::load::closed_unanswered;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{certs, Options, Stack, CERTS_DIR, PASSWORD};
use sqlx::{AnyConnection, Connection as _, Row as _};

use crate::wait_until;

/// Shoppers of the load; each logs in and places an order, then places it again under the same
/// key, round after round.
const SHOPPERS: usize = 4;
/// The load before the first renewal and after each.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a renewed certificate may take to reach a new connection: nginx's reload, the
/// services' one-second look at their files.
const IN_FORCE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renewed_under_load_fail_no_request_and_are_served() {
    let topology = Topology::start().await;
    let options = Options { tls: true, internal_tls: true, nginx_master: true, ..topology.stack_options(5) };
    let stack = Stack::start_with(options).await;
    let stack_certs = stack.dir.path().join(CERTS_DIR);
    let db_certs = topology.root().join("tls");
    let edge = Probe::edge(&stack);
    let backend = Probe::backend(&stack);
    let primary = Probe::primary(&topology);

    let mut emails = Vec::new();
    for i in 0..SHOPPERS {
        let email = format!("rotation-{i}-{}@example.com", shopgate_e2e::rand_hex(4));
        stack.register(&email).await;
        emails.push(email);
    }
    let load = Load::start(&stack, &emails);
    tokio::time::sleep(SETTLE).await;

    // The edge: a new certificate (other days, so its end date differs too), then a graceful
    // reload of nginx.
    let edge_before = edge.serial().await;
    assert_eq!(edge_before, file_serial(&stack_certs.join("edge.crt")), "the edge serves its file");
    certs(&issue(&stack_certs, "edge", &["localhost", "127.0.0.1"], "30")).unwrap();
    let edge_new = file_serial(&stack_certs.join("edge.crt"));
    assert_ne!(edge_new, edge_before, "scripts/certs issued the same serial again");
    let edge_swapped = load.mark("edge");
    stack.reload_nginx();
    let edge_after = edge.serial_becomes(&edge_new).await;
    tokio::time::sleep(SETTLE).await;

    // The stack's own certificate, served by the verifier and the backends: they read the new
    // files by themselves. nginx presents the same one as client and reads it at a reload.
    let internal_before = backend.serial().await;
    assert_eq!(internal_before, file_serial(&stack_certs.join("internal.crt")), "the backend serves its file");
    certs(&issue(&stack_certs, "internal", &[SERVICE_NAME, "localhost", "127.0.0.1"], "60")).unwrap();
    let internal_new = file_serial(&stack_certs.join("internal.crt"));
    assert_ne!(internal_new, internal_before);
    let internal_swapped = load.mark("internal");
    let internal_after = backend.serial_becomes(&internal_new).await;
    stack.reload_nginx();
    tokio::time::sleep(SETTLE).await;

    // Shard a's primary: the new pair in place of the instance's (as scripts/mariadb issued it),
    // then FLUSH SSL as root over its socket. Open connections (the backend's pool, the replica's)
    // keep their session; new ones get the new certificate.
    let primary_before = primary.serial().await;
    assert_eq!(primary_before, file_serial(&db_certs.join("a-primary.crt")), "a-primary serves its file");
    certs(&issue(&db_certs, "a-primary", &["127.0.0.1", "localhost", "::1"], "45")).unwrap();
    // Its owner's alone, as scripts/mariadb leaves the instances' certificates.
    std::fs::set_permissions(db_certs.join("a-primary.crt"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    let primary_new = file_serial(&db_certs.join("a-primary.crt"));
    assert_ne!(primary_new, primary_before);
    let primary_swapped = load.mark("a-primary");
    let root = topology.root_over_socket("a-primary").await;
    sqlx::raw_sql("FLUSH SSL").execute(&root).await.unwrap();
    let primary_after = primary.serial_becomes(&primary_new).await;
    // A new connection as the backend opens one, from the stack's config (its URL checks the
    // certificate against the topology's CA and for the host's name) ...
    new_shard_connection(&stack, "a").await;
    // ... and a new replication connection, which checks the primary's certificate too.
    reconnect_replica(&topology, "a").await;
    tokio::time::sleep(SETTLE).await;

    let record = load.stop().await;
    println!("{}", record.tally());
    for (what, before, file, after) in [
        ("edge", &edge_before, &edge_new, &edge_after),
        ("internal (backend a)", &internal_before, &internal_new, &internal_after),
        ("a-primary", &primary_before, &primary_new, &primary_after),
    ] {
        println!("{what}: serial {before} before, {after} after (file {file})");
    }
    let failures: Vec<String> = record.samples.iter().filter(|s| s.failed()).map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}\nlogs:\n{}",
        failures.len(),
        record.samples.len(),
        failures.join("\n"),
        stack.logs()
    );
    // The load ran through every renewal: logins and orders succeeded after each, before the next.
    let end = Duration::MAX;
    for (what, from, to) in [
        ("edge", edge_swapped, internal_swapped),
        ("internal", internal_swapped, primary_swapped),
        ("a-primary", primary_swapped, end),
    ] {
        for kind in [Kind::Login, Kind::Create, Kind::Replay] {
            let served = record.samples.iter().filter(|s| s.kind == kind && (from..to).contains(&s.start)).count();
            assert!(served > 0, "no {kind:?} answered after the {what} renewal:\n{}", record.tally());
        }
    }
}

/// `scripts/certs issue DIR NAME SAN… --days DAYS`.
fn issue<'a>(dir: &'a Path, name: &'a str, sans: &[&'a str], days: &'a str) -> Vec<&'a std::ffi::OsStr> {
    let mut args = vec!["issue".as_ref(), dir.as_os_str(), name.as_ref()];
    args.extend(sans.iter().map(|s| std::ffi::OsStr::new(*s)));
    args.extend([std::ffi::OsStr::new("--days"), std::ffi::OsStr::new(days)]);
    args
}

/// The serial of the certificate in the PEM file at `path`, as openssl prints it (`serial=…`).
fn file_serial(path: &Path) -> String {
    let out = std::process::Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(path).output();
    let out = out.unwrap_or_else(|e| panic!("openssl x509 (Debian's openssl): {e}"));
    assert!(out.status.success(), "openssl x509 -in {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serial_of(&out.stdout)
}

/// The hexadecimal serial of openssl's `serial=…` line.
fn serial_of(printed: &[u8]) -> String {
    let text = String::from_utf8_lossy(printed);
    text.trim().strip_prefix("serial=").unwrap_or_else(|| panic!("no serial in {text:?}")).to_owned()
}

/// A new TLS connection to one part, by `openssl s_client`: a process of its own, so no session
/// is resumed and the server sends the certificate in force.
struct Probe {
    what: &'static str,
    args: Vec<String>,
}

impl Probe {
    /// nginx's HTTPS port, checked for the name `localhost` against the stack's CA.
    fn edge(stack: &Stack) -> Probe {
        let ca = stack.ca_file.as_ref().expect("a stack with edge TLS");
        Probe::new(
            "the edge",
            stack.config.nginx.listen,
            ca,
            &["-servername", "localhost", "-verify_hostname", "localhost"],
        )
    }

    /// Shard a's backend, checked for [`SERVICE_NAME`] as nginx checks it, presenting the stack's
    /// certificate as nginx does.
    fn backend(stack: &Stack) -> Probe {
        let dir = stack.dir.path().join(CERTS_DIR);
        let addr = stack.config.shard("a").unwrap().listen[0];
        let (cert, key) = (dir.join("internal.crt"), dir.join("internal.key"));
        let args = ["-verify_hostname", SERVICE_NAME, "-cert", path_str(&cert), "-key", path_str(&key)];
        Probe::new("backend a", addr, &dir.join("ca.crt"), &args)
    }

    /// Shard a's primary, after MySQL's own start of TLS, checked for its address.
    fn primary(topology: &Topology) -> Probe {
        let port: u16 = topology.var("MARIADB_A_PRIMARY_PORT").parse().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let ca = Path::new(topology.var("MARIADB_CA"));
        Probe::new("a-primary", addr, ca, &["-starttls", "mysql", "-verify_ip", "127.0.0.1"])
    }

    fn new(what: &'static str, addr: SocketAddr, ca: &Path, more: &[&str]) -> Probe {
        let mut args: Vec<String> = ["s_client", "-connect", &addr.to_string(), "-verify_return_error", "-CAfile"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(path_str(ca).to_owned());
        args.extend(more.iter().map(|s| (*s).to_owned()));
        Probe { what, args }
    }

    /// The serial of the certificate served to a new connection; panics if the handshake or the
    /// check of the certificate fails.
    async fn serial(&self) -> String {
        let out = tokio::process::Command::new("openssl")
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("openssl s_client: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            "{}: no verified handshake:\n{text}{}",
            self.what,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut x509 = tokio::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use tokio::io::AsyncWriteExt as _;
            let mut pipe = x509.stdin.take().unwrap();
            pipe.write_all(&out.stdout).await.unwrap();
        }
        let serial = x509.wait_with_output().await.unwrap();
        assert!(serial.status.success(), "{}: no certificate in s_client's output:\n{text}", self.what);
        serial_of(&serial.stdout)
    }

    /// Asks with new connections until one is served `wanted`; that serial.
    async fn serial_becomes(&self, wanted: &str) -> String {
        let deadline = Instant::now() + IN_FORCE_WITHIN;
        loop {
            let served = self.serial().await;
            if served == wanted {
                return served;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still served {served} {IN_FORCE_WITHIN:?} after the renewal to {wanted}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
}

/// A new connection to `shard`'s primary opened from the stack's config as the backend opens
/// one, encrypted.
async fn new_shard_connection(stack: &Stack, shard: &str) {
    let url = &stack.config.shard(shard).unwrap().primary;
    let (_, options) = connect_options(url, Open::Existing).unwrap();
    let mut conn = AnyConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("a new connection to {shard}'s primary after its renewal: {e}"));
    let cipher: String =
        sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetch_one(&mut conn).await.unwrap().get(1);
    assert!(!cipher.is_empty(), "a new connection to {shard}'s primary is not encrypted");
    conn.close().await.unwrap();
}

/// Stops and starts `shard`'s replica's replication connection, so that it connects anew and
/// checks its primary's certificate; waits until it runs and has caught up.
async fn reconnect_replica(topology: &Topology, shard: &str) {
    let replica = topology.root_over_socket(&format!("{shard}-replica")).await;
    sqlx::raw_sql("STOP SLAVE IO_THREAD; START SLAVE IO_THREAD").execute(&replica).await.unwrap();
    wait_until("the replica's new replication connection runs", IN_FORCE_WITHIN, || async {
        let status = sqlx::query("SHOW SLAVE STATUS").fetch_one(&replica).await.ok()?;
        let io: String = status.try_get("Slave_IO_Running").ok()?;
        (io == "Yes").then_some(())
    })
    .await;
    topology.wait_replica_caught_up(shard, IN_FORCE_WITHIN).await;
}

/// What a request of the load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `POST /auth/token`: must be 200 with a token.
    Login,
    /// `POST /api/orders` under a new `Idempotency-Key`: must be 201.
    Create,
    /// The same again under the same key: must be 200 with the same order.
    Replay,
}

/// One request of the load and how it went.
struct Sample {
    kind: Kind,
    /// Which shopper, and whether it keeps its connections.
    shopper: usize,
    keep_alive: bool,
    /// When it was sent, from the start of the load.
    start: Duration,
    /// The status, or the connection error.
    got: Result<u16, String>,
    /// What is wrong with a 2xx body, if anything.
    problem: Option<String>,
    /// A kept connection closed before any answer: sent again at once, not a failure.
    resent: bool,
}

impl Sample {
    fn failed(&self) -> bool {
        let wanted = match self.kind {
            Kind::Login | Kind::Replay => 200,
            Kind::Create => 201,
        };
        !self.resent && (self.got != Ok(wanted) || self.problem.is_some())
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conn = if self.keep_alive { "kept" } else { "new" };
        write!(
            f,
            "shopper {} ({conn} connections) {:?} at {:.3}s: ",
            self.shopper,
            self.kind,
            self.start.as_secs_f64()
        )?;
        match &self.got {
            Ok(status) => write!(f, "{status}")?,
            Err(e) => write!(f, "no answer ({e})")?,
        }
        if let Some(p) = &self.problem {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

/// The shoppers while they shop.
struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    marks: Mutex<Vec<(&'static str, Duration)>>,
}

/// Every request of a finished load.
struct Record {
    samples: Vec<Sample>,
    marks: Vec<(&'static str, Duration)>,
}

impl Load {
    /// One task per email: even ones on the stack's keep-alive client, odd ones on a client that
    /// keeps no idle connection.
    fn start(stack: &Stack, emails: &[String]) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let ca = std::fs::read(stack.ca_file.as_ref().unwrap()).unwrap();
        let fresh = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let handles = emails
            .iter()
            .enumerate()
            .map(|(i, email)| {
                let shopper = Shopper {
                    index: i,
                    email: email.clone(),
                    keep_alive: i % 2 == 0,
                    http: if i % 2 == 0 { stack.http.clone() } else { fresh.clone() },
                    url: stack.url.clone(),
                    started,
                    samples: samples.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(async move { shopper.shop(&stop).await })
            })
            .collect();
        Load { started, stop, samples, handles, marks: Mutex::new(Vec::new()) }
    }

    /// Notes the moment `what` is renewed, on the load's clock; returns it.
    fn mark(&self, what: &'static str) -> Duration {
        let at = self.started.elapsed();
        self.marks.lock().unwrap().push((what, at));
        at
    }

    /// Lets every shopper finish its round; every request sent.
    async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|s| s.start);
        Record { samples, marks: self.marks.into_inner().unwrap() }
    }
}

impl Record {
    /// Requests by kind and outcome, one line each.
    fn tally(&self) -> String {
        let mut out = String::new();
        for kind in [Kind::Login, Kind::Create, Kind::Replay] {
            let of: Vec<&Sample> = self.samples.iter().filter(|s| s.kind == kind).collect();
            let count = |f: &dyn Fn(&Sample) -> bool| of.iter().filter(|s| f(s)).count();
            out.push_str(&format!(
                "{kind:?}: {} sent ({} on new connections), {} failed, {} resent after a kept connection closed unanswered\n",
                of.len(),
                count(&|s| !s.keep_alive),
                count(&Sample::failed),
                count(&|s| s.resent),
            ));
        }
        for (what, at) in &self.marks {
            out.push_str(&format!("{what} renewed at {:.3}s\n", at.as_secs_f64()));
        }
        out
    }
}

struct Shopper {
    index: usize,
    email: String,
    keep_alive: bool,
    http: reqwest::Client,
    url: String,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Shopper {
    /// Rounds until stopped, a short pause after each.
    async fn shop(&self, stop: &AtomicBool) {
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            self.round(n).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in, places an order under a new key, places it again; stops at the first failure.
    async fn round(&self, n: u32) -> Option<()> {
        let login = || {
            self.http
                .post(format!("{}/auth/token", self.url))
                .form(&[("username", self.email.as_str()), ("password", PASSWORD)])
        };
        let body = self.send(Kind::Login, login, |_| None).await?;
        let token = body["access_token"].as_str()?.to_owned();
        let key = format!("rotation-{}-{n}", self.index);
        let items = json!({"items": [{"product_id": 1 + n % 12, "quantity": 1}]});
        let create = || {
            self.http
                .post(format!("{}/api/orders", self.url))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&items)
        };
        let made = self.send(Kind::Create, create, |_| None).await?;
        let id = made["id"].as_i64();
        let same = |body: &Value| {
            (id.is_none() || body["id"].as_i64() != id).then(|| format!("order {id:?} again, got {body}"))
        };
        self.send(Kind::Replay, create, same).await?;
        Some(())
    }

    /// Sends what `request` builds, once more at once if a kept connection closed before any
    /// answer; records each attempt. The body of a 2xx, `judge`d, else `None`.
    async fn send<R, J>(&self, kind: Kind, request: R, judge: J) -> Option<Value>
    where
        R: Fn() -> reqwest::RequestBuilder,
        J: Fn(&Value) -> Option<String>,
    {
        loop {
            let start = self.started.elapsed();
            let sent = request().send().await;
            let got = sent.as_ref().map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"));
            let mut sample = Sample {
                kind,
                shopper: self.index,
                keep_alive: self.keep_alive,
                start,
                got,
                problem: None,
                resent: false,
            };
            match sent {
                Ok(r) => {
                    let ok = r.status().is_success();
                    let body = r.json::<Value>().await.unwrap_or(Value::Null);
                    if ok {
                        sample.problem = judge(&body);
                        if kind == Kind::Login && body["access_token"].as_str().is_none() {
                            sample.problem = Some(format!("no token in {body}"));
                        }
                    }
                    self.samples.lock().unwrap().push(sample);
                    return ok.then_some(body);
                }
                Err(e) => {
                    sample.resent = self.keep_alive && closed_unanswered(&e);
                    let again = sample.resent;
                    self.samples.lock().unwrap().push(sample);
                    if !again {
                        return None;
                    }
                }
            }
        }
    }
}
