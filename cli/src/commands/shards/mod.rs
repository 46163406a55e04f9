//! `shopctl shards status|check`: the shards seen straight from their databases.
//!
//! `status` asks every shard at once (each step bounded), so one dead database costs seconds, not
//! minutes, and the others are still reported. `check` finds rows on a shard that does not own
//! their user, by the same `ShardMap::shard_for` that nginx's map and the backends route with.

use clap::Subcommand;
use serde_json::{json, Value};
use shopgate_core::config::{Config, ShardConfig};
use shopgate_core::time::{rfc3339, unix_now_ms as now_ms};
use shopgate_core::{ShardMap, UserId};
use shopgate_store::per_user::PER_USER_TABLES;
use shopgate_store::shard::{self, ForeignRow};
use sqlx::Row as _;

use crate::db::{bounded, Db, DbError, Dialect};
use crate::health::{Prober, Process};
use crate::output::{out, status_table, table, Format, Mark};
use crate::{stack, Context};

pub(crate) mod moves;

#[derive(Subcommand, Debug)]
pub(crate) enum ShardsCommand {
    /// Per shard: primary and replica reachable, replication lag, users, orders, last write.
    /// Exit 1 if any primary is unreachable.
    Status,
    /// List rows on a shard that does not own their user (users, orders, idempotency keys).
    /// Exit 1 if there are any.
    Check(CheckArgs),
    /// Add a shard to the running stack: it must be in the config (`buckets = ""`) with its
    /// databases and backend up; nginx is reloaded with it. It owns no bucket until a move.
    Add(moves::AddArgs),
    /// Move buckets to another shard while the shop runs (a bucket, a list, or --half-of).
    /// Killed or failed, it resumes when run again, or rolls back with --abort.
    Move(moves::MoveArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// Show at most this many misplaced rows per shard and table (all are counted).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) limit: u32,
}

pub async fn run(ctx: &Context, cmd: ShardsCommand) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    match cmd {
        ShardsCommand::Status => status(ctx, &config).await,
        ShardsCommand::Check(a) => check(ctx, &config, a.limit).await,
        ShardsCommand::Add(a) => moves::add(ctx, &config, a).await,
        ShardsCommand::Move(a) => moves::run(ctx, &config, a).await,
    }
}

// ---- status ----

#[derive(Debug)]
pub(crate) struct ShardStatus {
    pub(crate) shard: ShardConfig,
    pub(crate) primary: Result<(), String>,
    pub(crate) replica: Option<Result<(), String>>,
    pub(crate) lag: Lag,
    users: Option<i64>,
    orders: Option<i64>,
    last_write: Option<i64>,
    /// A query on a reachable primary that failed (e.g. a schema not yet created).
    problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lag {
    /// No replica, or SQLite (no replication).
    NotApplicable,
    /// Seconds behind, and where that was read: `SHOW SLAVE STATUS` or the heartbeat row.
    Seconds(f64, &'static str),
    /// The replica is not applying changes (SQL thread stopped, or not set up as a replica).
    Stopped(&'static str),
    Unknown,
}

impl Lag {
    fn text(&self) -> String {
        match self {
            Lag::NotApplicable => "n/a".into(),
            Lag::Seconds(s, _) => format!("{s:.1} s"),
            Lag::Stopped(why) => format!("stopped ({why})"),
            Lag::Unknown => "unknown".into(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Lag::Seconds(s, _) => json!(s),
            _ => Value::Null,
        }
    }

    /// For scripts: `none` (no replica, or SQLite), `replicating`, `stopped`, `unknown`.
    fn state(&self) -> &'static str {
        match self {
            Lag::NotApplicable => "none",
            Lag::Seconds(..) => "replicating",
            Lag::Stopped(_) => "stopped",
            Lag::Unknown => "unknown",
        }
    }

    fn source(&self) -> Option<&'static str> {
        match self {
            Lag::Seconds(_, from) => Some(from),
            _ => None,
        }
    }
}

async fn status(ctx: &Context, config: &Config) -> anyhow::Result<()> {
    let tasks: Vec<_> = config.shards.iter().cloned().map(|s| tokio::spawn(shard_status(s))).collect();
    // The map in force, and the version each process routes with (what it says when asked).
    let map = stack::current_map(config).await;
    let prober = Prober::new(config)?;
    let nginx = prober.nginx(config).await;
    let mut all = Vec::new();
    for (t, processes) in tasks.into_iter().zip(prober.backends(&config.shards).await) {
        all.push((t.await?, processes));
    }
    let current = map.as_ref().ok().map(ShardMap::version);
    let bucket_count = |s: &ShardConfig| match &map {
        Ok(m) => m.buckets_of(&s.name).len(),
        Err(_) => shopgate_core::shardmap::parse_buckets(&s.buckets).map_or(0, |b| b.len()),
    };
    // An unfinished move (and what it holds up), from the auth database.
    let unfinished = moves::unfinished(config).await.unwrap_or_default();
    // Full specs for scripts (`even`, `odd` or ranges); for people, ranges cut to fit a column.
    let buckets_of = |s: &ShardConfig| match &map {
        Ok(m) => shopgate_core::shardmap::bucket_spec(&m.buckets_of(&s.name)),
        Err(_) => s.buckets.clone(),
    };
    let buckets_shown = |s: &ShardConfig| match &map {
        Ok(m) => shopgate_core::shardmap::describe_buckets(&m.buckets_of(&s.name)),
        Err(_) => s.buckets.clone(),
    };
    if ctx.format != Format::Table {
        let shards: Vec<Value> = all
            .iter()
            .map(|(s, backends)| {
                json!({
                    "shard": s.shard.name.as_str(),
                    "number": s.shard.number,
                    "buckets": buckets_of(&s.shard),
                    "bucket_count": bucket_count(&s.shard),
                    "backends": backends.iter().map(Process::json).collect::<Vec<_>>(),
                    "backends_ready": backends.iter().filter(|b| b.answer.is_ready()).count(),
                    "backend_map_version": lowest_version(backends),
                    "primary": {"url": s.shard.primary.to_string(), "reachable": s.primary.is_ok(), "error": s.primary.as_ref().err()},
                    "replica": s.shard.replica.as_ref().map(|url| {
                        let r = s.replica.as_ref();
                        json!({"url": url.to_string(), "reachable": r.is_some_and(Result::is_ok), "error": r.and_then(|r| r.as_ref().err())})
                    }),
                    "replication_lag_seconds": s.lag.json(),
                    "replication_state": s.lag.state(),
                    "replication_lag_source": s.lag.source(),
                    "users": s.users,
                    "orders": s.orders,
                    "last_write": s.last_write.map(rfc3339),
                    "last_write_unix": s.last_write,
                    "error": s.problem,
                })
            })
            .collect();
        let mut answer = crate::output::list(shards, Value::Null);
        answer["map_version"] = json!(current);
        answer["nginx_map_version"] = json!(nginx.answer.map_version());
        answer["unfinished_moves"] = moves::unfinished_json(&unfinished);
        if ctx.format == Format::Tsv {
            for line in moves::unfinished_lines(&unfinished) {
                crate::output::warn(line);
            }
        }
        ctx.format.print_in(
            &answer,
            &[
                "shard",
                "number",
                "buckets",
                "bucket_count",
                "backends_ready",
                "backend_map_version",
                "primary.reachable",
                "replica.reachable",
                "replication_state",
                "replication_lag_seconds",
                "users",
                "orders",
                "last_write",
            ],
        );
    } else {
        let up = |r: &Result<(), String>| match r {
            Ok(()) => ("up".to_owned(), Mark::Good),
            Err(_) => ("DOWN".to_owned(), Mark::Bad),
        };
        let rows = all
            .iter()
            .map(|(s, backends)| {
                let lag_mark = match s.lag {
                    Lag::Stopped(_) => Mark::Bad,
                    Lag::Seconds(x, _) if x > s.shard.replica_max_lag_seconds as f64 => Mark::Bad,
                    _ => Mark::Plain,
                };
                let count = |n: Option<i64>| (n.map_or_else(|| "?".into(), |n| n.to_string()), Mark::Plain);
                vec![
                    (s.shard.name.to_string(), Mark::Plain),
                    (buckets_shown(&s.shard), Mark::Plain),
                    backends_cell(backends),
                    match (lowest_version(backends), current) {
                        (Some(v), Some(cur)) if v == cur => (v.to_string(), Mark::Plain),
                        (Some(v), _) => (v.to_string(), Mark::Bad),
                        (None, _) => ("?".to_owned(), Mark::Bad),
                    },
                    up(&s.primary),
                    s.replica.as_ref().map_or(("none".to_owned(), Mark::Plain), up),
                    (s.lag.text(), lag_mark),
                    count(s.users),
                    count(s.orders),
                    match (&s.last_write, &s.users) {
                        (Some(t), _) => (rfc3339(*t), Mark::Plain),
                        (None, Some(_)) => ("never".into(), Mark::Plain),
                        (None, None) => ("?".into(), Mark::Plain),
                    },
                ]
            })
            .collect();
        match &map {
            Ok(m) => out(format_args!(
                "shard map version {} (nginx routes with {})",
                m.version(),
                nginx.answer.map_version().map_or_else(|| "? (no answer)".to_owned(), |v| v.to_string())
            )),
            Err(e) => {
                crate::output::warn(format_args!("the current shard map is unknown ({e}); buckets are the config's"))
            }
        }
        out(status_table(
            &["shard", "buckets", "backends", "map", "primary", "replica", "lag", "users", "orders", "last write"],
            rows,
        ));
        for line in moves::unfinished_lines(&unfinished) {
            crate::output::warn(line);
        }
        for (s, _) in &all {
            // A primary that is down is the error line below; a replica that is down is a warning.
            if let Some(Err(e)) = &s.replica {
                crate::output::warn(e);
            }
            if let Some(p) = &s.problem {
                crate::output::warn(format_args!("shard {}: {p}", s.shard.name));
            }
        }
    }
    let mut down: Vec<String> = all.iter().filter_map(|(s, _)| s.primary.as_ref().err()).cloned().collect();
    for (s, backends) in &all {
        for b in backends.iter().filter(|b| !b.answer.is_ready()) {
            down.push(format!(
                "shard {}'s backend at {} is {}",
                s.shard.name,
                b.address,
                b.answer.state().replace('_', " ")
            ));
        }
    }
    if !down.is_empty() {
        anyhow::bail!("{}: that shard's users get 503 until it answers again", down.join("; "));
    }
    Ok(())
}

/// The lowest map version among a shard's backend processes; none if one of them did not say.
fn lowest_version(backends: &[Process]) -> Option<u64> {
    backends.iter().map(|b| b.answer.map_version()).collect::<Option<Vec<_>>>()?.into_iter().min()
}

/// `ready`, `1/2 ready` or `DOWN`: a shard's backend processes at a glance.
fn backends_cell(backends: &[Process]) -> (String, Mark) {
    let ready = backends.iter().filter(|b| b.answer.is_ready()).count();
    match (ready, backends.len()) {
        (r, n) if r == n && n == 1 => ("ready".to_owned(), Mark::Good),
        (r, n) if r == n => (format!("{n}/{n} ready"), Mark::Good),
        (0, _) => ("DOWN".to_owned(), Mark::Bad),
        (r, n) => (format!("{r}/{n} ready"), Mark::Bad),
    }
}

pub(crate) async fn shard_status(shard: ShardConfig) -> ShardStatus {
    let name = &shard.name;
    let primary = Db::connect(&shard.primary, &format!("shard {name}'s primary")).await;
    let replica = match &shard.replica {
        Some(url) => Some(Db::connect(url, &format!("shard {name}'s replica")).await),
        None => None,
    };
    let mut st = ShardStatus {
        primary: primary.as_ref().map(|_| ()).map_err(DbError::to_string),
        replica: replica.as_ref().map(|r| r.as_ref().map(|_| ()).map_err(DbError::to_string)),
        lag: Lag::NotApplicable,
        users: None,
        orders: None,
        last_write: None,
        problem: None,
        shard: shard.clone(),
    };
    if let Ok(p) = &primary {
        match bounded(shard::totals(&p.pool)).await {
            Ok(t) => (st.users, st.orders, st.last_write) = (Some(t.users), Some(t.orders), t.last_write),
            Err(e) => st.problem = Some(format!("counting rows on the primary: {}", p.explain(&e))),
        }
    }
    if let Some(Ok(r)) = &replica {
        st.lag = replication_lag(r, primary.as_ref().ok()).await;
    }
    if let Ok(p) = primary {
        p.close().await;
    }
    if let Some(Ok(r)) = replica {
        r.close().await;
    }
    st
}

/// MySQL/MariaDB: the replica's own account (`SHOW SLAVE STATUS`, or `SHOW REPLICA STATUS` where
/// the old name is gone); without the privilege for that, the heartbeat row the backend stamps on
/// the primary every second, compared with the replica's copy. SQLite does not replicate.
async fn replication_lag(replica: &Db, primary: Option<&Db>) -> Lag {
    if replica.dialect == Dialect::Sqlite {
        return Lag::NotApplicable;
    }
    for (sql, column) in
        [("SHOW SLAVE STATUS", "Seconds_Behind_Master"), ("SHOW REPLICA STATUS", "Seconds_Behind_Source")]
    {
        let Ok(rows) = bounded(sqlx::query(sql).fetch_all(&replica.pool)).await else { continue };
        let Some(row) = rows.first() else { return Lag::Stopped("not set up as a replica") };
        match row.try_get::<Option<i64>, _>(column) {
            Ok(Some(secs)) => return Lag::Seconds(secs as f64, "replica status"),
            Ok(None) => return Lag::Stopped("replication threads not running"),
            Err(_) => break,
        }
    }
    let Ok(replica_ms) = heartbeat(replica).await else { return Lag::Unknown };
    let reference_ms = match primary {
        Some(p) => heartbeat(p).await.unwrap_or_else(|_| now_ms()),
        None => now_ms(),
    };
    Lag::Seconds((reference_ms - replica_ms).max(0) as f64 / 1000.0, "heartbeat")
}

async fn heartbeat(db: &Db) -> sqlx::Result<i64> {
    bounded(shopgate_store::heartbeat(&db.pool)).await
}

// ---- check ----

/// A row on a shard that does not own its user.
#[derive(Debug)]
struct Misplaced {
    shard: String,
    table: &'static str,
    id: String,
    user_id: i64,
    owner: String,
}

async fn check(ctx: &Context, config: &Config, limit: u32) -> anyhow::Result<()> {
    let mut misplaced = Vec::new();
    let mut counts = Vec::new();
    let mut unreachable = Vec::new();
    let map = stack::current_map(config).await?;
    for shard in &config.shards {
        let db = match Db::connect(&shard.primary, &format!("shard {}'s primary", shard.name)).await {
            Ok(db) => db,
            Err(e) => {
                unreachable.push(e.to_string());
                continue;
            }
        };
        let owned = map.buckets_of(&shard.name);
        for per_user in PER_USER_TABLES.iter().filter(|t| t.user_column.is_some()) {
            let table = per_user.name;
            // The table in chunks by its key, each chunk's statements within the usual bound: a
            // shard of any size is checked whole, and a database too slow for one chunk is named.
            let (mut n, mut rows, mut after) = (0, Vec::new(), None);
            let checked = loop {
                let left = limit.saturating_sub(rows.len() as u32);
                match bounded(shard::foreign_rows(&db.pool, per_user, &owned, after.as_deref(), left)).await {
                    Ok(chunk) => {
                        n += chunk.count;
                        rows.extend(chunk.rows);
                        match chunk.next {
                            Some(next) => after = Some(next),
                            None => break Ok(()),
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            match checked {
                Ok(()) => {
                    let found = rows.into_iter().map(|ForeignRow { id, user_id }| {
                        let owner = u64::try_from(user_id)
                            .ok()
                            .and_then(|u| UserId::new(u).ok())
                            .map_or_else(|| "none (invalid user id)".to_owned(), |u| map.shard_for(u).to_string());
                        Misplaced { shard: shard.name.to_string(), table, id, user_id, owner }
                    });
                    counts.push(json!({"shard": shard.name.as_str(), "table": table, "misplaced": n}));
                    misplaced.extend(found);
                }
                Err(e) => unreachable.push(format!("shard {} table {table}: {}", shard.name, db.explain(&e))),
            }
        }
        db.close().await;
    }
    let total: i64 = counts.iter().filter_map(|c| c["misplaced"].as_i64()).sum();
    if ctx.format != Format::Table {
        let rows: Vec<Value> = misplaced
            .iter()
            .map(|m| json!({"shard": m.shard, "table": m.table, "id": m.id, "user_id": m.user_id, "owner": m.owner}))
            .collect();
        let mut answer = crate::output::list(rows, Value::Null);
        answer["clean"] = json!(total == 0 && unreachable.is_empty());
        answer["misplaced_total"] = json!(total);
        answer["counts"] = json!(counts);
        answer["errors"] = json!(unreachable);
        ctx.format.print(&answer);
    } else if total > 0 {
        let rows = misplaced
            .iter()
            .map(|m| vec![m.shard.clone(), m.table.to_owned(), m.id.clone(), m.user_id.to_string(), m.owner.clone()])
            .collect();
        out(table(&["shard", "table", "id", "user", "owner shard"], rows));
        if misplaced.len() < total as usize {
            out(format_args!("Showing {} of {total}; raise --limit to see more.", misplaced.len()));
        }
    } else if unreachable.is_empty() {
        out(format_args!(
            "All {} shards are clean: every row is on the shard that owns its user.",
            config.shards.len()
        ));
    }
    for e in &unreachable {
        crate::output::warn(e);
    }
    if total > 0 {
        anyhow::bail!(
            "{total} row{} on a shard that does not own {}: move {} to the owner shard or delete {}",
            if total == 1 { " is" } else { "s are" },
            if total == 1 { "its user" } else { "their users" },
            if total == 1 { "it" } else { "them" },
            if total == 1 { "it" } else { "them" },
        );
    }
    if !unreachable.is_empty() {
        anyhow::bail!("could not check every shard: {}", unreachable.join("; "));
    }
    Ok(())
}
