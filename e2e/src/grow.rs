//! Growing a running shop: a shard added as an operator would ([`Shop::add_shard`]), `shopctl
//! shards move --json` run and its events read ([`MoveRun`]), and the whole of it under load
//! ([`grow_under_load`]). Nothing else of the shop is restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use shopgate_core::shardmap::parse_buckets;

use crate::cli::Run;
use crate::load::Pause;
use crate::{Shop, Stack};

/// A finished `shopctl shards move --json`: its events, one JSON object per line of stdout,
/// each stamped when it was read.
#[derive(Debug)]
pub struct MoveRun {
    pub run: Run,
    /// `{"event":"step",…}` lines, in order, with when each came.
    pub steps: Vec<(Duration, Value)>,
    /// The final `{"event":"summary",…}`.
    pub summary: Value,
    /// When the command started and ended. All times here are on the clock of the [`Instant`]
    /// given to [`Shop::move_buckets`] (a load's start, so its answers and the move line up).
    pub started: Duration,
    pub ended: Duration,
}

impl MoveRun {
    /// A finished run and its stamped lines of stdout: its events, which must hold a summary.
    pub(crate) fn new(run: Run, lines: Vec<(Duration, String)>, started: Duration, ended: Duration) -> MoveRun {
        let events: Vec<(Duration, Value)> = lines
            .into_iter()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(at, l)| {
                let event = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("shards move: a line is not JSON ({e}): {l}\n{run}"));
                (at, event)
            })
            .collect();
        let steps = events.iter().filter(|(_, e)| e["event"] == "step").cloned().collect();
        let summary = events
            .iter()
            .rev()
            .find(|(_, e)| e["event"] == "summary")
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("shards move printed no summary:\n{run}"));
        MoveRun { run, steps, summary, started, ended }
    }

    /// The longest write pause of a bucket the move reports (`pause_ms_max`).
    pub fn pause_max(&self) -> Duration {
        let ms = self.summary["pause_ms_max"].as_f64().unwrap_or_else(|| panic!("no pause_ms_max in {}", self.summary));
        Duration::from_secs_f64(ms / 1000.0)
    }

    pub fn buckets_moved(&self) -> u64 {
        self.summary["buckets_moved"].as_u64().unwrap_or_else(|| panic!("no buckets_moved in {}", self.summary))
    }

    /// Each moved bucket's write pause, from the step events of its batch (`copied`, `routed`).
    pub fn pauses(&self) -> BTreeMap<u16, Pause> {
        let mut copied: BTreeMap<u64, Duration> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (at, e) in &self.steps {
            let id = e["move"].as_u64().unwrap_or_else(|| panic!("a step without its move: {e}"));
            match e["step"].as_str() {
                Some("copied") => {
                    copied.insert(id, *at);
                }
                Some("routed") => {
                    let start = *copied.get(&id).unwrap_or_else(|| panic!("move {id} routed before it copied"));
                    let ms = e["pause_ms"].as_u64().unwrap_or_else(|| panic!("no pause_ms in {e}"));
                    let spec = e["buckets"].as_str().unwrap_or_else(|| panic!("no buckets in {e}"));
                    let pause = Pause { during: start..*at, length: Duration::from_millis(ms) };
                    for b in parse_buckets(spec).unwrap_or_else(|why| panic!("buckets {spec:?}: {why}")) {
                        out.insert(b, pause.clone());
                    }
                }
                _ => {}
            }
        }
        out
    }
}

impl Stack {
    /// `shopctl --json shards move --to TARGET BUCKETS --wait-seconds 20` to its end, killed right
    /// after recording step `die_after` if given (shopctl's test hook, `SHOPCTL_MOVE_DIE_AFTER`).
    pub fn shards_move(&self, target: &str, buckets: &str, die_after: Option<&str>) -> std::process::Output {
        let mut cmd = self.shopctl();
        cmd.args(["--json", "shards", "move", "--to", target, buckets, "--wait-seconds", "20"]);
        if let Some(step) = die_after {
            cmd.env("SHOPCTL_MOVE_DIE_AFTER", step);
        }
        cmd.output().unwrap_or_else(|e| panic!("running shopctl shards move: {e}"))
    }
}

/// Runs `cmd` to its end, each line of its stdout stamped when it came (on `clock`).
pub(crate) fn run_stamped(mut cmd: Command, clock: Instant) -> (Run, Vec<(Duration, String)>) {
    let args = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting shopctl {args}: {e}"));
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    });
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            lines.push((clock.elapsed(), line));
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("running shopctl {args}: {e}"));
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let stdout = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    (Run { args, code: status.code().unwrap_or(-1), stdout, stderr }, lines)
}

/// Adds `[shards.NAME]` owning no bucket to the config file at `path` (kept readable by its
/// owner only: it may hold database passwords), replacing the file in one rename.
pub(crate) fn add_shard_to_file(
    path: &std::path::Path,
    name: &str,
    number: u8,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(path)?)?;
    let shards = doc.entry("shards").or_insert_with(|| toml::Table::new().into());
    let shards = shards.as_table_mut().context("[shards] is not a table")?;
    if shards.contains_key(name) {
        bail!("shard {name} is in the config already");
    }
    let mut shard = toml::Table::new();
    shard.insert("number".into(), i64::from(number).into());
    shard.insert("buckets".into(), "".into());
    shard.insert("listen".into(), listen.to_string().into());
    shard.insert("primary".into(), format!("sqlite:shard-{name}.db").into());
    shards.insert(name.to_owned(), shard.into());
    let draft = path.with_extension("toml.new");
    std::fs::write(&draft, toml::to_string(&doc)?)?;
    crate::set_mode(&draft, 0o600)?;
    std::fs::rename(&draft, path)?;
    Ok(())
}

/// How much longer than its batch's write pause a bucket's errors may last, and how long after
/// the pause's end they may still come. The pause, as the move measures it and as its events
/// show it, runs from just after the batch is copied until nginx reports the map version in
/// which the target serves the bucket. Errors are timed from below
/// ([`crate::load::Record::check_errors`]), so request latency never counts. What is left: the
/// target's backend may still hold the version before, in which the bucket is `moving` (503),
/// until its next map refresh (every 100 ms, the backend's `MAP_REFRESH_EVERY`); and an event
/// line reaches this process a little after the move wrote it. 500 ms is five refresh periods,
/// room for a refresh query on a loaded 2-core machine.
pub const SWITCH_MARGIN: Duration = Duration::from_millis(500);

/// Issue 11, point 1, on a running shop of either topology (nginx with its master;
/// registrations not limited below 40 per address): 40 users load shards `a` and `b`; shard `c` is added (on the database
/// `c_overrides` give, else SQLite) and half of `a`'s and half of `b`'s buckets move to it with
/// `--batch 100`; the load runs a few seconds more. Then every acknowledged order is once, on its
/// user's shard by the final map; every acknowledged cancel and profile write is there as
/// acknowledged, and no order the load did not cancel is cancelled (at least one cancel and one
/// profile write per user on average, some cancelled orders on `c`); users whose bucket stayed
/// saw no error; those whose bucket moved saw only 503 + `Retry-After`, within their batch's
/// pause as the move reports it, plus [`SWITCH_MARGIN`]; every part routes with the final map;
/// `shopctl shards check` is clean.
pub async fn grow_under_load(stack: &mut impl Shop, c_overrides: Vec<(String, String)>) {
    let users = crate::load::register_spread(stack, 40).await;
    let before = stack.current_map().await;
    let load = crate::load::Load::start(stack, &users, crate::load::LoadOptions::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Err(e) = stack.add_shard("c", 2, c_overrides).await {
        panic!("adding shard c: {e:#}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moved_by = stack.move_buckets(&["--to", "c", "--half-of", "a,b", "--batch", "100"], load.clock()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = load.stop().await;
    eprintln!("load: {} answers in {:?}: {}", record.answers.len(), record.elapsed, record.tally());
    eprintln!("move: {}", moved_by.summary);

    let after = stack.current_map().await;
    assert!(after.unsettled().is_empty(), "buckets left paused or moving: {:?}", after.unsettled());
    let (shown_version, shown) = stack.status_map();
    assert_eq!(shown_version, after.version(), "shards status shows another version");
    let differ = crate::load::moved_buckets(&shown, &after);
    assert!(differ.is_empty(), "shards status shows other owners for buckets {differ:?}");
    let moved = crate::load::moved_buckets(&before, &after);
    assert_eq!(moved.len() as u64, moved_by.buckets_moved(), "the summary's count against the maps");
    assert!(moved.iter().all(|b| after.owner_of_bucket(*b).is_some_and(|s| s.as_str() == "c")), "moved, but not to c");
    assert!((400..=600).contains(&moved.len()), "half of a's and b's 1000 buckets, not {}", moved.len());

    let orders = record.check_orders(stack, &after).await.unwrap_or_else(|p| panic!("acknowledged orders: {p:#?}"));
    eprintln!("orders: {orders:?}");
    assert!(orders.acknowledged >= 2 * users.len(), "too little load to tell: {orders:?}");
    assert!(orders.per_shard.get("c").is_some_and(|n| *n > 0), "no acknowledged order ended on c: {orders:?}");
    let writes = record.check_writes(stack, &after).await.unwrap_or_else(|p| panic!("cancels and profiles: {p:#?}"));
    eprintln!("cancels and profiles: {writes:?}");
    assert!(
        writes.cancels_acknowledged >= users.len() && writes.profiles_acknowledged >= users.len(),
        "too few cancels or profile writes to tell: {writes:?}"
    );
    assert!(
        writes.cancelled_per_shard.get("c").is_some_and(|n| *n > 0),
        "no acknowledged cancel ended on c: {writes:?}"
    );

    let pauses = moved_by.pauses();
    assert_eq!(pauses.keys().copied().collect::<BTreeSet<u16>>(), moved, "the step events against the maps");
    let errors = record.check_errors(&pauses, SWITCH_MARGIN).unwrap_or_else(|p| panic!("errors seen: {p:#?}"));
    eprintln!(
        "errors: {errors:?} (pause at most {} ms, margin {} ms)",
        moved_by.pause_max().as_millis(),
        SWITCH_MARGIN.as_millis()
    );
    assert!(errors.moved_users >= 5 && errors.unmoved_users >= 5, "users must both move and stay: {errors:?}");

    stack.assert_parts_route_with(after.version()).await;
    stack.ctl(&["shards", "check"]).ok();
}

/// The step events (`{"event":"step",…}`) a `shopctl --json shards move` printed, in order.
pub fn step_events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "step")
        .collect()
}
