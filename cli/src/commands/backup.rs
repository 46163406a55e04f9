//! `shopctl backup`: a hot backup of every database of the stack into `[backup] dir` (see
//! [`crate::backup`]); `shopctl backup list` the runs there; `shopctl backup archive` the binlog
//! archiver (see [`crate::archive`]).
//!
//! MariaDB instances are copied with the backup role's credentials, `SHOP_BACKUP_AUTH_URL` and
//! `SHOP_BACKUP_SHARD_<NAME>_URL` from the environment (`scripts/mariadb` writes them as
//! `_BACKUP_URL`; the user needs RELOAD, PROCESS, LOCK TABLES and BINLOG MONITOR, and for the
//! archiver REPLICATION SLAVE and BINLOG ADMIN), run on the database's host (mariadb-backup reads
//! its data folder).

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::backup::{self, Instance, Manifest, Progress};
use crate::output::{list, note, out, table, Format};
use crate::{stack, Context};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<BackupCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum BackupCommand {
    /// The backups in `[backup] dir`, oldest first.
    List,
    /// Copy the primaries' binlogs to `[backup] dir`/binlogs as they are written, and purge on
    /// the primaries what is archived and older than `[backup] binlog_retention_hours`.
    Archive(ArchiveArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ArchiveArgs {
    /// Copy what is there, purge, and exit (a cron job; the tests), instead of following the
    /// binlogs until stopped.
    #[arg(long)]
    once: bool,
    /// Serve the archive's lag and the backups' age for Prometheus at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

pub(crate) async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    match args.command {
        None => take(ctx, &config).await,
        Some(BackupCommand::List) => list_runs(ctx, &config),
        Some(BackupCommand::Archive(a)) => crate::archive::run(&config, a.once, a.metrics_listen).await,
    }
}

/// Progress lines on standard error: one when an instance starts, one when it is copied.
struct Lines;

impl Progress for Lines {
    fn started(&mut self, instance: &Instance) {
        note(format_args!("backing up {} ({:?})…", instance.name, instance.kind()));
    }
    fn finished(&mut self, m: &Manifest) {
        note(format_args!("{}: {} in {:.1} s, at {}", m.instance, mib(m.bytes), m.seconds, position(m)));
    }
}

async fn take(ctx: &Context, config: &shopgate_core::config::Config) -> anyhow::Result<()> {
    let (run, manifests) = backup::take(config, &mut Lines).await?;
    let dir = config.backup.dir.join(&run.id);
    if ctx.format == Format::Table {
        let rows = manifests
            .iter()
            .map(|m| {
                vec![
                    m.instance.clone(),
                    format!("{:?}", m.kind).to_lowercase(),
                    position(m),
                    m.map_version.to_string(),
                    mib(m.bytes),
                    format!("{:.1} s", m.seconds),
                ]
            })
            .collect();
        out(table(&["instance", "kind", "consistent at", "map version", "size", "took"], rows));
        out(format_args!("backup {} in {}", run.id, dir.display()));
    } else {
        ctx.format.print(&json!({ "id": run.id, "dir": dir, "map_version": run.map_version,
            "started_at": run.started_at, "finished_at": run.finished_at, "instances": manifests }));
    }
    Ok(())
}

fn list_runs(ctx: &Context, config: &shopgate_core::config::Config) -> anyhow::Result<()> {
    let items: Vec<Value> = backup::Backup::all(&config.backup.dir)?
        .into_iter()
        .map(|b| {
            json!({ "id": b.run.id, "finished_at": b.run.finished_at, "map_version": b.run.map_version,
                "instances": b.run.instances.join(" "), "dir": b.dir })
        })
        .collect();
    ctx.format.print_in(&list(items, Value::Null), &["id", "finished_at", "map_version", "instances"]);
    Ok(())
}

/// Where a copy is consistent: its GTID position, or SQLite's moment.
fn position(m: &Manifest) -> String {
    match &m.gtid {
        Some(g) if !g.is_empty() => format!("GTID {g}"),
        _ => m.finished_at.clone(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
