//! `shopctl shards move` and `shards add`: growing the shop while it runs. The move itself, its
//! steps and what each guarantees, is [`crate::mover`]; this is its command line, its progress bar
//! and its JSON events.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use shopgate_core::config::Config;
use shopgate_core::control::{self, MoveRecord, MoveStep};
use shopgate_core::shardmap::{bucket_ranges, describe_buckets, parse_buckets};
use shopgate_core::ShardMap;
use shopgate_store::fence;

use crate::db::{bounded_control, Db};
use crate::mover::{known_shard, Finished, Mover, Progress, Waits};
use crate::output::{out, Format};
use crate::{stack, Context, UsageError};

/// Test hook: a move exits abruptly (as if killed) right after recording this step.
const DIE_AFTER_ENV: &str = "SHOPCTL_MOVE_DIE_AFTER";
#[derive(clap::Args, Debug)]
pub(crate) struct MoveArgs {
    /// The buckets to move: `5`, `10-19,30`, `even`. Their current owners are the sources.
    #[arg(conflicts_with = "half_of")]
    pub(crate) buckets: Option<String>,
    /// The shard the buckets go to. Without BUCKETS, --half-of and --to, an unfinished move is
    /// resumed (there must be one).
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Instead of BUCKETS: the upper half of each named shard's buckets, e.g. `a,b`.
    #[arg(long, value_name = "SHARDS")]
    pub(crate) half_of: Option<String>,
    /// Buckets moved together; each batch has one write pause.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) batch: u16,
    /// Roll back the unfinished move (the map and every row as they were before it).
    #[arg(long, conflicts_with_all = ["buckets", "half_of", "to"])]
    pub(crate) abort: bool,
    /// Say what would be moved (or resumed, or with --abort rolled back), batch by batch, and
    /// change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// How long to wait for every backend and nginx to take a new map version before stopping
    /// (the move can then be resumed or aborted).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) wait_seconds: u64,
    /// Of the time, the share (percent) the copy and the comparison work, the deletes half of it;
    /// they rest the rest, so the shop's own queries keep the databases' attention. 100 for a
    /// quiet shop.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u8).range(5..=100))]
    pub(crate) pace: u8,
}

#[derive(clap::Args, Debug)]
pub(crate) struct AddArgs {
    /// The new shard: a `[shards.NAME]` already in the config with `buckets = ""`, its databases
    /// and backend running.
    pub(crate) name: String,
}

/// `shards add NAME`: checks the new shard is up and owns nothing, then reloads nginx with its
/// upstream. No other process restarts; buckets come to it with `shards move`.
pub(crate) async fn add(ctx: &Context, config: &Config, args: AddArgs) -> anyhow::Result<()> {
    let shard = config.shard(&args.name).ok_or_else(|| {
        UsageError(format!(
            "no [shards.{}] in {}: add it there first (with buckets = \"\"), then start its backend",
            args.name,
            config.path.display()
        ))
    })?;
    let map = stack::current_map(config).await?;
    let owned = map.buckets_of(&shard.name);
    if !owned.is_empty() {
        bail!(
            "shard {} already owns buckets ({}); `shards add` is for a new shard",
            shard.name,
            describe_buckets(&owned)
        );
    }
    let primary = Db::connect(&shard.primary, &format!("shard {}'s primary", shard.name)).await?;
    let open = crate::db::bounded(fence::open_buckets(&primary.pool)).await.map_err(|e| {
        anyhow::anyhow!(
            "shard {}'s primary is not set up (has its backend started?): {}",
            shard.name,
            primary.explain(&e)
        )
    })?;
    primary.close().await;
    if !open.is_empty() {
        bail!(
            "shard {}'s database takes writes for buckets ({}); it is not a new shard",
            shard.name,
            describe_buckets(&open)
        );
    }
    let waits = Waits::new(config, Duration::from_secs(30))?;
    waits.backends(config, std::slice::from_ref(&shard.name), map.version(), false).await?;
    waits.reload_nginx(config, &map).await?;
    if ctx.format != Format::Table {
        ctx.format.print(&json!({"added": shard.name.as_str(), "map_version": map.version(), "buckets": ""}));
    } else {
        out(format!(
            "shard {} is in nginx's upstreams and owns no bucket yet; move some with `shopctl shards move --to {} BUCKETS`",
            shard.name, shard.name
        ));
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Context, config: &Config, args: MoveArgs) -> anyhow::Result<()> {
    if args.dry_run {
        return dry_run(ctx, config, &args).await;
    }
    let control = stack::control_db(config).await?;
    let map = bounded_control(control::load_or_seed(&control.pool, &config.shard_map)).await?;
    let mut mover =
        Mover::new(config, control, Duration::from_secs(args.wait_seconds), args.pace, Report::new(ctx.format))?;
    let unfinished = crate::db::bounded(control::unfinished_moves(mover.control())).await?;
    if args.abort {
        if unfinished.is_empty() {
            out("no move to abort");
        }
        mover.progress.start(unfinished.iter().map(|m| count(&m.buckets)).sum());
        // Newest first: an undo row is newer than the move it undoes.
        for m in unfinished.into_iter().rev() {
            mover.abort(m).await?;
        }
        mover.progress.summary(&mover.done);
        return Ok(());
    }
    let batches = if unfinished.is_empty() {
        let Some(target) = args.to.as_deref() else {
            let what = match (&args.buckets, &args.half_of) {
                (None, None) => "no move is unfinished, so there is nothing to resume: name the buckets and --to SHARD",
                _ => "name the shard the buckets go to: --to SHARD",
            };
            return Err(UsageError(what.into()).into());
        };
        let plan = plan(config, &map, target, args.buckets.as_deref(), args.half_of.as_deref(), args.batch)?;
        let mut records = Vec::new();
        for (source, spec) in plan {
            records
                .push(crate::db::bounded(control::insert_move(mover.control(), &source, target, &spec, "move")).await?);
        }
        records
    } else {
        if args.buckets.is_some() || args.half_of.is_some() {
            crate::output::warn("an earlier move is unfinished: resuming it; run the command again for a new one");
        }
        unfinished
    };
    mover.progress.start(batches.iter().map(|m| count(&m.buckets)).sum());
    for m in batches {
        mover.drive(m).await?;
    }
    mover.progress.summary(&mover.done);
    Ok(())
}

/// `shards move --dry-run`: the batches the command would work on, and what it would do with
/// them; no move is recorded, no row or map changed.
async fn dry_run(ctx: &Context, config: &Config, args: &MoveArgs) -> anyhow::Result<()> {
    let map = stack::current_map(config).await?;
    let unfinished = unfinished(config).await?;
    let (action, batches): (&str, Vec<(String, String, String)>) = if !unfinished.is_empty() {
        let action = if args.abort { "roll back" } else { "resume" };
        (action, unfinished.iter().map(|m| (m.source.clone(), m.target.clone(), m.buckets.clone())).collect())
    } else if args.abort {
        ("roll back", Vec::new())
    } else {
        let Some(target) = args.to.as_deref() else {
            return Err(UsageError("no move is unfinished: name the buckets and --to SHARD".into()).into());
        };
        let plan = plan(config, &map, target, args.buckets.as_deref(), args.half_of.as_deref(), args.batch)?;
        ("move", plan.into_iter().map(|(source, spec)| (source, target.to_owned(), spec)).collect())
    };
    let rows: Vec<Value> = batches
        .iter()
        .enumerate()
        .map(|(i, (source, target, spec))| {
            json!({"batch": i + 1, "action": action, "source": source, "target": target,
                   "buckets": spec, "bucket_count": count(spec)})
        })
        .collect();
    if ctx.format == Format::Table {
        if rows.is_empty() {
            out(format!("nothing to {action}"));
        }
        for r in &rows {
            out(format!(
                "would {action} batch {}: {} -> {}, {} buckets ({})",
                r["batch"],
                r["source"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
                r["bucket_count"],
                r["buckets"].as_str().unwrap_or_default()
            ));
        }
        out(format!("(dry run: nothing changed; shard map version {})", map.version()));
    } else {
        ctx.format.print_in(
            &crate::output::list(rows, Value::Null),
            &["batch", "action", "source", "target", "bucket_count", "buckets"],
        );
    }
    Ok(())
}

/// The moves the auth database records as unfinished, oldest first.
pub(crate) async fn unfinished(config: &Config) -> anyhow::Result<Vec<MoveRecord>> {
    let control = stack::control_db(config).await?;
    let moves = crate::db::bounded(control::unfinished_moves(&control.pool)).await;
    control.close().await;
    Ok(moves?)
}

/// The command that resumes an unfinished move, and the one that rolls it back.
pub(crate) const RESUME: &str = "shopctl shards move";
pub(crate) const ABORT: &str = "shopctl shards move --abort";

/// Who an unfinished move holds up, by the last step it recorded.
fn held_up(step: MoveStep) -> &'static str {
    match step {
        MoveStep::Paused | MoveStep::Verified => "writes",
        MoveStep::Switched | MoveStep::Opened => "all",
        _ => "none",
    }
}

/// The batch an unfinished move stopped in: the first one past `planned`, else the first.
fn current_batch(moves: &[MoveRecord]) -> Option<(usize, &MoveRecord)> {
    moves.iter().enumerate().find(|(_, m)| m.step != MoveStep::Planned).or_else(|| moves.iter().enumerate().next())
}

/// For people: what is unfinished, whom it holds up, since when, and the command to go on.
pub(crate) fn unfinished_lines(moves: &[MoveRecord]) -> Vec<String> {
    let Some((i, m)) = current_batch(moves) else { return Vec::new() };
    let ago = (shopgate_core::time::unix_now() - m.updated_at).max(0);
    let since = shopgate_core::time::rfc3339(m.updated_at);
    let who = match held_up(m.step) {
        "writes" => format!("writes of buckets {}'s users get 503 (reads go on)", m.buckets),
        "all" => format!("buckets {}'s users get 503", m.buckets),
        _ => "nobody is held up yet".to_owned(),
    };
    vec![
        format!(
            "a bucket move is unfinished: batch {} of {} ({} {} -> {}, buckets {}) stopped after step `{}` {ago} s ago ({since}); {who}",
            i + 1,
            moves.len(),
            m.kind,
            m.source,
            m.target,
            m.buckets,
            m.step,
        ),
        format!("if no `shards move` runs now: resume it with `{RESUME}`, or roll it back with `{ABORT}`"),
    ]
}

/// For scripts: every unfinished batch, and the commands.
pub(crate) fn unfinished_json(moves: &[MoveRecord]) -> Value {
    if moves.is_empty() {
        return Value::Null;
    }
    let batches: Vec<Value> = moves
        .iter()
        .map(|m| {
            json!({
                "move": m.id, "kind": m.kind, "source": m.source, "target": m.target, "buckets": m.buckets,
                "step": m.step.as_str(), "since": shopgate_core::time::rfc3339(m.updated_at),
                "since_unix": m.updated_at, "held_up": held_up(m.step),
            })
        })
        .collect();
    json!({"batches": batches, "resume": RESUME, "abort": ABORT})
}

fn count(spec: &str) -> u64 {
    parse_buckets(spec).map_or(0, |b| b.len() as u64)
}

/// The batches to move (source, bucket spec): `buckets` or half of each of `half_of`'s, minus any
/// the target owns already, grouped by their owner, `batch` at a time.
fn plan(
    config: &Config,
    map: &ShardMap,
    target: &str,
    buckets: Option<&str>,
    half_of: Option<&str>,
    batch: u16,
) -> anyhow::Result<Vec<(String, String)>> {
    let target = known_shard(config, target)?;
    let chosen: Vec<u16> = match (buckets, half_of) {
        (Some(spec), _) => parse_buckets(spec).map_err(|e| UsageError(format!("bad buckets {spec:?}: {e}")))?,
        (None, Some(shards)) => {
            let mut all = Vec::new();
            for name in shards.split(',').map(str::trim) {
                let owned = map.buckets_of(&known_shard(config, name)?);
                all.extend_from_slice(&owned[owned.len() / 2..]);
            }
            all
        }
        (None, None) => return Err(UsageError("name the buckets to move, or --half-of SHARDS".into()).into()),
    };
    let mut by_source: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for b in chosen {
        let owner = map.owner_of_bucket(b).map(ToString::to_string).unwrap_or_default();
        if owner != target.as_str() {
            by_source.entry(owner).or_default().push(b);
        }
    }
    if by_source.is_empty() {
        bail!("nothing to move: shard {target} owns all of those buckets already");
    }
    let mut out = Vec::new();
    for (source, list) in by_source {
        for chunk in list.chunks(usize::from(batch)) {
            out.push((source.clone(), bucket_ranges(chunk)));
        }
    }
    Ok(out)
}

/// The test hook: exit abruptly, as a killed process would, right after recording `step`.
fn die_if_asked(step: MoveStep) {
    if std::env::var(DIE_AFTER_ENV).is_ok_and(|s| s == step.as_str()) {
        std::process::abort();
    }
}

/// Progress for people (a bar on a terminal) or JSON events for scripts (`--json`: one JSON
/// object per line as the steps happen, then the summary); TSV gets the summary as a row.
struct Report {
    format: Format,
    json: bool,
    bar: Option<ProgressBar>,
}

impl Report {
    fn new(format: Format) -> Self {
        Self { format, json: format == Format::Json, bar: None }
    }

    fn start(&mut self, buckets: u64) {
        if self.json || buckets == 0 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(buckets), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} buckets  {msg}") {
            bar.set_style(style);
        }
        self.bar = Some(bar);
    }

    fn summary(&self, done: &[Finished]) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        // The pause is per batch; each bucket of a batch had it.
        let mut pauses: Vec<i64> =
            done.iter().flat_map(|f| std::iter::repeat_n(f.pause_ms, f.buckets as usize)).filter(|p| *p >= 0).collect();
        pauses.sort_unstable();
        let pct = |p: f64| pauses.get(((pauses.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
        let buckets: u64 = done.iter().map(|f| f.buckets).sum();
        let rows: i64 = done.iter().map(|f| f.rows).sum();
        let summary = json!({
            "event": "summary",
            "batches": done.len(),
            "buckets_moved": buckets,
            "rows": rows,
            "pause_ms_p50": pct(0.5),
            "pause_ms_p99": pct(0.99),
            "pause_ms_max": pauses.last(),
        });
        if self.json {
            out(&summary);
        } else if self.format == Format::Tsv {
            self.format.print(&summary);
        } else {
            let ms = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
            out(format!(
                "moved {buckets} buckets ({rows} rows) in {} batches; write pause per bucket: p50 {}, p99 {}, max {}",
                done.len(),
                ms(pct(0.5)),
                ms(pct(0.99)),
                ms(pauses.last().copied())
            ));
        }
    }
}

impl Progress for Report {
    fn step(&mut self, m: &MoveRecord, took: Duration, detail: &Value) {
        if self.json {
            // One line per event (JSON Lines), so a script can follow them as they come.
            out(json!({
                "event": "step", "move": m.id, "kind": m.kind, "source": m.source, "target": m.target,
                "buckets": m.buckets, "step": m.step.as_str(), "rows": m.rows_copied,
                "ms": took.as_millis() as u64,
                "pause_ms": (m.pause_ms >= 0).then_some(m.pause_ms),
                "detail": detail,
            }));
        } else if let Some(bar) = &self.bar {
            bar.set_message(format!("{} -> {} {}: {}", m.source, m.target, m.buckets, m.step));
        }
        die_if_asked(m.step);
    }

    fn batch_done(&mut self, buckets: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(buckets);
        }
    }
}
