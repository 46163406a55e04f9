//! Shoppers for measuring a running stack (issue 24's moves under load): registers `--users` new
//! users through nginx, writes their ids and buckets to `--users-out` as soon as they exist, then
//! has each place an order (with an `Idempotency-Key`, sent again after a 503 or a dropped
//! connection until it gets a final answer) and list its orders, pausing `--think-ms` between
//! rounds, for `--seconds` or until `--stop-file` exists. Every answer goes to `--out` as CSV: `start_ms` (unix), `latency_us`,
//! `user`, `bucket`, `kind` (`create` or `list`), `status` (0 for no answer).
//!
//! `cargo build --release -p shopgate-e2e --example shop_load`, then e.g.
//! `target/release/examples/shop_load --url http://127.0.0.1:8080 --users 12 --seconds 120 --out /tmp/answers.csv --users-out /tmp/users.json`

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed run

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// nginx's address.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 12)]
    users: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 80)]
    think_ms: u64,
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long)]
    users_out: std::path::PathBuf,
    /// Stop early once this file exists.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
}

const PASSWORD: &str = "Load-test-1!";

struct Answer {
    start_ms: u128,
    latency_us: u128,
    user: u64,
    kind: &'static str,
    status: u16,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let run = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis());
    let mut users = Vec::new();
    for i in 0..args.users {
        let email = format!("load-{run}-{i}@example.com");
        let r = http
            .post(format!("{}/auth/register", args.url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 201, "register: {body}");
        let id = body["id"].as_u64().unwrap();
        let r = http
            .post(format!("{}/auth/token", args.url))
            .form(&[("username", email.as_str()), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        users.push((id, body["access_token"].as_str().unwrap().to_owned()));
    }
    let listed: Vec<Value> = users.iter().map(|(id, _)| json!({"id": id, "bucket": id % 1000})).collect();
    std::fs::write(&args.users_out, serde_json::to_string(&listed).unwrap()).unwrap();

    let answers = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let think = Duration::from_millis(args.think_ms);
    let mut tasks = Vec::new();
    for (user, token) in users {
        let (http, url, answers, run) = (http.clone(), args.url.clone(), answers.clone(), run.clone());
        let stop_file = args.stop_file.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until && !stop_file.as_ref().is_some_and(|f| f.exists()) {
                n += 1;
                let key = format!("load-{run}-{user}-{n}");
                loop {
                    let request = http
                        .post(format!("{url}/api/orders"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"items": [{"product_id": 1 + n % 12, "quantity": 1}]}));
                    let status = timed(&answers, user, "create", request).await;
                    if status != 503 && status != 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                timed(&answers, user, "list", http.get(format!("{url}/api/orders")).bearer_auth(&token)).await;
                tokio::time::sleep(think).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let answers = answers.lock().unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out).unwrap());
    writeln!(out, "start_ms,latency_us,user,bucket,kind,status").unwrap();
    for a in answers.iter() {
        writeln!(out, "{},{},{},{},{},{}", a.start_ms, a.latency_us, a.user, a.user % 1000, a.kind, a.status).unwrap();
    }
    eprintln!("{} answers", answers.len());
}

/// Sends `request`, records its answer; its status (0 for none).
async fn timed(answers: &Mutex<Vec<Answer>>, user: u64, kind: &'static str, request: reqwest::RequestBuilder) -> u16 {
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let started = Instant::now();
    let status = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    };
    let latency_us = started.elapsed().as_micros();
    answers.lock().unwrap().push(Answer { start_ms, latency_us, user, kind, status });
    status
}
