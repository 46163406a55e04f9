//! `shopctl restore`: databases of the stack back to a backup's moment, or (MariaDB) to a time or a
//! GTID after it, replaying the archived binlogs.
//!
//! Before anything changes it says, for each instance, what cannot come back: everything written
//! to it after the chosen point. MariaDB instances are restored by `scripts/mariadb restore` in
//! the topology folder it manages (`--topology`), into a new data folder (the old one kept beside
//! it); a running instance is replaced only with `--force`. Its replica is then rebuilt from the
//! restored primary (`scripts/mariadb rebuild-replica`) and follows it. SQLite files are written
//! into a new folder (`--into`) unless `--force` replaces the stack's own (stop the services
//! first: `scripts/down`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::backup::{self, Backup, Kind, Manifest};
use crate::output::{list, warn};
use crate::{stack, Context, UsageError};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The backup to restore: its id (`shopctl backup list`), or `latest`.
    #[arg(long, default_value = "latest", value_name = "ID")]
    backup: String,
    /// Only this instance (`auth`, or a shard's name); repeat for several [default: every one in
    /// the backup].
    #[arg(long = "instance", value_name = "NAME")]
    instances: Vec<String>,
    /// MariaDB: replay the archived binlogs up to this moment, UTC (`2026-12-07 21:03:00` or
    /// `2026-12-07T21:03:00Z`): transactions from that second on are not restored.
    #[arg(long, value_name = "TIME", value_parser = utc_time, conflicts_with = "to_gtid")]
    to_time: Option<String>,
    /// MariaDB: replay the archived binlogs up to this GTID, included (`0-11-4242`).
    #[arg(long, value_name = "GTID", value_parser = gtid)]
    to_gtid: Option<String>,
    /// The folder `scripts/mariadb` keeps the MariaDB instances in (its DIR; `scripts/up
    /// --mariadb`: var/mariadb).
    #[arg(long, env = "SHOP_MARIADB_DIR", value_name = "DIR")]
    topology: Option<PathBuf>,
    /// Replace instances that run (MariaDB), or the stack's own SQLite files.
    #[arg(long)]
    force: bool,
    /// SQLite without --force: the folder the restored files go to [default: restored-ID beside
    /// the backup].
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
}

/// `--to-time`: `YYYY-MM-DD HH:MM:SS`, with `T` and `Z` allowed, as mariadb-binlog takes it.
fn utc_time(text: &str) -> Result<String, String> {
    let t = text.trim_end_matches('Z').replacen('T', " ", 1);
    let shape = "dddd-dd-dd dd:dd:dd";
    let ok = t.len() == shape.len()
        && t.chars().zip(shape.chars()).all(|(c, s)| if s == 'd' { c.is_ascii_digit() } else { c == s });
    if ok {
        Ok(t)
    } else {
        Err(format!("{text:?} is not a UTC time like 2026-12-07T21:03:00Z"))
    }
}

/// `--to-gtid`: `DOMAIN-SERVER-SEQUENCE`.
fn gtid(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a GTID like 0-11-4242"))
    }
}

/// One instance to restore: its copy and where it goes back to.
struct Plan {
    manifest: Manifest,
    point: String,
}

pub(crate) async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    let backup = match &args.to_time {
        // The newest backup that a replay can start from: one that was done by then.
        Some(t) if args.backup == "latest" => Backup::all(&config.backup.dir)?
            .into_iter()
            .rfind(|b| *b.run.finished_at.trim_end_matches('Z') <= *t.replace(' ', "T"))
            .ok_or_else(|| UsageError(format!("no backup in {} finished before {t}", config.backup.dir.display())))?,
        _ => Backup::open(&config.backup.dir, &args.backup)?,
    };
    let names = if args.instances.is_empty() { backup.run.instances.clone() } else { args.instances.clone() };
    let replay = args.to_time.is_some() || args.to_gtid.is_some();
    let mut plans = Vec::new();
    for name in &names {
        if !backup.run.instances.contains(name) {
            return Err(UsageError(format!(
                "backup {} has no instance {name} (it has {})",
                backup.run.id,
                backup.run.instances.join(", ")
            ))
            .into());
        }
        let manifest = backup.verify(name)?;
        let point = match (&args.to_time, &args.to_gtid) {
            (Some(t), _) if manifest.kind == Kind::Mariadb => {
                // The copy is consistent at its end: replayed from there, an earlier time is too late.
                if *t.replace(' ', "T") < *manifest.finished_at.trim_end_matches('Z') {
                    return Err(UsageError(format!(
                        "--to-time {t} is before backup {} of {name} was done ({}): restore an older backup",
                        backup.run.id, manifest.finished_at
                    ))
                    .into());
                }
                format!("{t} UTC")
            }
            (_, Some(g)) if manifest.kind == Kind::Mariadb => format!("GTID {g}"),
            _ if replay => {
                return Err(UsageError(format!(
                    "{name} is on SQLite, which keeps no binlog: it goes back to its backup alone (no --to-time or --to-gtid)"
                ))
                .into())
            }
            _ => format!("the backup's moment ({})", manifest.finished_at),
        };
        if manifest.kind == Kind::Mariadb && args.topology.is_none() {
            return Err(UsageError(format!(
                "{name} is on MariaDB: name scripts/mariadb's folder with --topology DIR (or SHOP_MARIADB_DIR)"
            ))
            .into());
        }
        if replay && !backup.dir.parent().unwrap_or(Path::new(".")).join(backup::BINLOGS).join(name).is_dir() {
            anyhow::bail!(
                "no archived binlogs of {name} in {}: run `shopctl backup archive`",
                config.backup.dir.display()
            );
        }
        plans.push(Plan { manifest, point });
    }
    for p in &plans {
        warn(format_args!(
            "restore: {} goes back to {} from backup {}: everything written to it after that point is lost{}",
            p.manifest.instance,
            p.point,
            backup.run.id,
            if args.force { " (its data now is kept beside the restored one)" } else { "" }
        ));
    }
    let mut rows = Vec::new();
    for p in &plans {
        let place = match p.manifest.kind {
            Kind::Mariadb => restore_mariadb(&backup, p, &args).await?,
            Kind::Sqlite => restore_sqlite(&config, &backup, p, &args)?,
        };
        rows.push(json!({ "instance": p.manifest.instance, "restored_to": p.point, "backup": backup.run.id,
            "map_version": p.manifest.map_version, "where": place }));
    }
    ctx.format.print_in(&list(rows, Value::Null), &["instance", "restored_to", "where"]);
    Ok(())
}

/// `scripts/mariadb restore`, then `rebuild-replica`: where the data now is.
async fn restore_mariadb(backup: &Backup, p: &Plan, args: &Args) -> anyhow::Result<String> {
    let topology = args.topology.as_deref().context("no --topology")?;
    let name = &p.manifest.instance;
    let instance = backup::topology_name(name);
    let mut cmd = mariadb_script()?;
    cmd.arg("restore").arg(topology).arg(&instance).arg(backup.dir.join(name).join("data"));
    if args.force {
        cmd.arg("--force");
    }
    if args.to_time.is_some() || args.to_gtid.is_some() {
        let binlogs = backup.dir.parent().unwrap_or(Path::new(".")).join(backup::BINLOGS).join(name);
        cmd.arg("--binlogs").arg(binlogs);
    }
    if let Some(t) = &args.to_time {
        cmd.arg("--stop-datetime").arg(t);
    }
    if let Some(g) = &args.to_gtid {
        cmd.arg("--stop-gtid").arg(g);
    }
    // mariadb-binlog reads --stop-datetime in the local time zone: UTC, as the operator gave it.
    cmd.env("TZ", "UTC");
    run_script(cmd, &format!("restoring {name}")).await?;
    let replica = backup::topology_replica(name);
    if topology.join(&replica).join("data").is_dir() {
        let mut cmd = mariadb_script()?;
        cmd.arg("rebuild-replica").arg(topology).arg(&replica);
        run_script(cmd, &format!("rebuilding {replica}")).await?;
    }
    Ok(topology.join(&instance).join("data").display().to_string())
}

/// The copy into `--into` (a new folder), or over the stack's own file with `--force`.
fn restore_sqlite(
    config: &shopgate_core::config::Config,
    backup: &Backup,
    p: &Plan,
    args: &Args,
) -> anyhow::Result<String> {
    let name = &p.manifest.instance;
    let copy = backup.dir.join(name).join(format!("{name}.db"));
    let target = if args.force {
        let own = backup::instances(config)?
            .into_iter()
            .find(|i| &i.name == name)
            .with_context(|| format!("the config has no database {name}"))?;
        PathBuf::from(crate::db::sqlite_path(own.url.expose()))
    } else {
        let dir = match &args.into {
            Some(d) => d.clone(),
            None => backup.dir.with_file_name(format!("restored-{}", backup.run.id)),
        };
        backup::private_dir(&dir)?;
        dir.join(format!("{name}.db"))
    };
    if !args.force && target.exists() {
        return Err(UsageError(format!("{} exists: --into a new folder, or --force", target.display())).into());
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
    }
    let tmp = target.with_extension("restoring");
    std::fs::copy(&copy, &tmp).with_context(|| format!("copying {} to {}", copy.display(), tmp.display()))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target.display().to_string())
}

/// `scripts/mariadb`: `SHOP_MARIADB_SCRIPT`, else the checkout's (beside `target/`, or above the
/// current folder).
fn mariadb_script() -> anyhow::Result<Command> {
    if let Ok(path) = std::env::var("SHOP_MARIADB_SCRIPT") {
        return Ok(Command::new(path));
    }
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    let found = exe
        .iter()
        .chain(cwd.iter())
        .flat_map(|p| p.ancestors())
        .map(|d| d.join("scripts/mariadb"))
        .find(|p| p.is_file())
        .context("scripts/mariadb not found: set SHOP_MARIADB_SCRIPT to its path")?;
    Ok(Command::new(found))
}

async fn run_script(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = tokio::task::spawn_blocking(move || cmd.output()).await?.context(what.to_owned())?;
    let said = String::from_utf8_lossy(&out.stderr);
    for line in said.lines().filter(|l| l.starts_with("mariadb: ")) {
        crate::output::note(line);
    }
    if !out.status.success() {
        let why = said.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or("see above");
        anyhow::bail!("{what}: {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_gtids_are_checked_at_the_edge() {
        assert_eq!(utc_time("2026-12-07T21:03:00Z").unwrap(), "2026-12-07 21:03:00");
        assert_eq!(utc_time("2026-12-07 21:03:00").unwrap(), "2026-12-07 21:03:00");
        for bad in ["2026-12-07", "yesterday", "2026-12-07T21:03:00+01:00", "2026-12-07 21:03:0x"] {
            assert!(utc_time(bad).is_err(), "{bad}");
        }
        assert_eq!(gtid("0-11-4242").unwrap(), "0-11-4242");
        for bad in ["0-11", "0-11-x", "0--1", "0-11-4242,1-2-3"] {
            assert!(gtid(bad).is_err(), "{bad}");
        }
    }
}
