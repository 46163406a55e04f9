//! The binlog archiver (`shopctl backup archive`): every MariaDB primary's binary logs copied to
//! `[backup] dir`/binlogs/INSTANCE as the primary writes them, by `mariadb-binlog
//! --read-from-remote-server --raw --stop-never` (one per primary, started again if it ends), and
//! purged on the primary by the archiver alone: `PURGE BINARY LOGS TO` only for files archived
//! whole and older than `[backup] binlog_retention_hours`. A stopped archiver purges nothing, so
//! the primaries keep their logs until it catches up (they never expire them themselves).
//!
//! Its numbers, at `--metrics-listen`'s `/metrics`:
//! `shop_binlog_archive_lag_seconds{instance}` (how long the archive has been behind its primary;
//! 0 while it has every byte), `shop_binlog_files{instance,where="primary|archive"}`,
//! `shop_backup_last_success_timestamp_seconds{instance}` (the newest backup of each instance
//! under `[backup] dir`) and, for the disk alert, `shop_database_volume_{size,avail}_bytes{instance}`
//! of each primary's data folder (the archiver runs on the databases' host, as mariadb-backup does).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use shopgate_core::config::Config;
use shopgate_core::time::unix_now;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::backup::{self, Backup, Kind, Login};
use crate::output::note;

/// Between two looks at the primaries.
const ROUND: Duration = Duration::from_secs(2);

/// One primary's archive.
struct Archiver {
    instance: String,
    folder: PathBuf,
    login: Login,
    datadir: String,
    /// The `mariadb-binlog --stop-never` following the primary.
    follower: Option<tokio::process::Child>,
    /// When the archive last had every byte of the primary's binlogs (unix seconds).
    caught_up_at: i64,
    /// The primary's binlogs (names and sizes) as the last rounds saw them, newest last: under a
    /// steady stream of writes the archive is rarely level with this instant's primary, but it
    /// holds what the primary had a round ago, and that is how far behind it is.
    seen: std::collections::VecDeque<(i64, Vec<(String, u64)>)>,
}

/// What `/metrics` shows, per instance.
#[derive(Default, Clone)]
struct Numbers {
    lag_seconds: i64,
    primary_files: usize,
    archive_files: usize,
    volume: Option<(u64, u64)>,
}

type Shared = Arc<Mutex<BTreeMap<String, Numbers>>>;

pub(crate) async fn run(config: &Config, once: bool, metrics: Option<SocketAddr>) -> anyhow::Result<()> {
    let root = config.backup.dir.join(backup::BINLOGS);
    let all = backup::instances(config)?;
    let names: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
    let mut archivers = Vec::new();
    for instance in all.into_iter().filter(|i| i.kind() == Kind::Mariadb) {
        let folder = root.join(&instance.name);
        backup::private_dir(&folder)?;
        let login = Login::new(&instance.url, &folder)?;
        let datadir = login.query("SELECT @@datadir").with_context(|| format!("{}'s primary", instance.name))?;
        archivers.push(Archiver {
            instance: instance.name,
            folder,
            login,
            datadir,
            follower: None,
            caught_up_at: unix_now(),
            seen: std::collections::VecDeque::new(),
        });
    }
    if archivers.is_empty() {
        bail!("no database of the stack is on MariaDB: SQLite keeps no binlog to archive");
    }
    let shared: Shared = Arc::default();
    if let Some(addr) = metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        note(format_args!("archive: metrics at http://{}/metrics", listener.local_addr()?));
        tokio::spawn(serve(listener, shared.clone(), config.backup.dir.clone(), names));
    }
    let retention = config.backup.binlog_retention();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // USR1 reopens the log file, as for the services and nginx (logrotate's postrotate).
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    loop {
        for a in &mut archivers {
            let numbers = match a.round(once, retention).await {
                Ok(numbers) => numbers,
                Err(e) if once => return Err(e.context(format!("archiving {}'s binlogs", a.instance))),
                // A primary down, a purge refused: said, and tried again next round, the lag
                // growing meanwhile, so the alert tells.
                Err(e) => {
                    note(format_args!("archive: {}: {e:#}", a.instance));
                    let last = shared.lock().unwrap_or_else(|e| e.into_inner()).get(&a.instance).cloned();
                    Numbers { lag_seconds: unix_now() - a.caught_up_at, ..last.unwrap_or_default() }
                }
            };
            shared.lock().unwrap_or_else(|e| e.into_inner()).insert(a.instance.clone(), numbers);
        }
        if once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => {
                if let Err(e) = shopgate_core::files::reopen_output() {
                    note(format_args!("archive: could not reopen the log file, writing on to the old one: {e}"));
                }
            }
        }
    }
    for a in &mut archivers {
        if let Some(mut f) = a.follower.take() {
            let _ = f.kill().await;
        }
    }
    Ok(())
}

impl Archiver {
    /// Follows (or, `once`, copies to the end), compares with the primary, purges.
    async fn round(&mut self, once: bool, retention: Duration) -> anyhow::Result<Numbers> {
        let logs = self.primary_logs()?;
        let first = logs.first().map(|(n, _)| n.clone()).context("the primary has no binary log")?;
        let running = match &mut self.follower {
            Some(f) => f.try_wait()?.is_none(),
            None => false,
        };
        if !running {
            // Again from the newest file archived (it may be partial), else the oldest there is.
            let start = self.archived().into_iter().next_back().filter(|n| logs.iter().any(|(l, _)| l == n));
            let mut cmd = tokio::process::Command::from(self.login.tool(&backup::tool("mariadb-binlog")));
            cmd.args(["--read-from-remote-server", "--raw"])
                .arg(if once { "--to-last-log" } else { "--stop-never" })
                .arg(format!("--result-file={}/", self.folder.display()))
                .arg(start.unwrap_or(first))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let child = cmd.spawn().context("starting mariadb-binlog")?;
            if once {
                let out = child.wait_with_output().await?;
                if !out.status.success() {
                    bail!("mariadb-binlog: {}", String::from_utf8_lossy(&out.stderr).trim());
                }
            } else {
                self.follower = Some(child);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        backup::make_private(&self.folder)?;
        let logs = self.primary_logs()?;
        let whole = |name: &str, size: u64| std::fs::metadata(self.folder.join(name)).is_ok_and(|m| m.len() >= size);
        let now = unix_now();
        self.seen.push_back((now, logs.clone()));
        if self.seen.len() > 60 {
            self.seen.pop_front();
        }
        if let Some((at, _)) = self.seen.iter().rev().find(|(_, view)| view.iter().all(|(n, s)| whole(n, *s))) {
            self.caught_up_at = self.caught_up_at.max(*at);
        }
        // Never the file being written; only a run of whole, old files from the oldest.
        let old = |name: &str| {
            std::fs::metadata(self.folder.join(name))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() >= retention)
        };
        let keep = logs[..logs.len() - 1].iter().take_while(|(n, s)| whole(n, *s) && old(n)).count();
        if keep > 0 {
            let to = &logs[keep].0;
            self.login.query(&format!("PURGE BINARY LOGS TO '{to}'")).context("purging the archived binlogs")?;
            note(format_args!(
                "archive: {}: purged {} archived binlog(s) before {to} on the primary",
                self.instance, keep
            ));
        }
        Ok(Numbers {
            lag_seconds: now - self.caught_up_at,
            primary_files: logs.len() - keep,
            archive_files: self.archived().len(),
            volume: volume(&self.datadir),
        })
    }

    /// `SHOW BINARY LOGS`: each file's name and size, oldest first.
    fn primary_logs(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let text = self.login.query("SHOW BINARY LOGS")?;
        text.lines()
            .map(|l| {
                let mut f = l.split('\t');
                let (Some(name), Some(size)) = (f.next(), f.next()) else { bail!("SHOW BINARY LOGS said {l:?}") };
                Ok((name.to_owned(), size.parse()?))
            })
            .collect()
    }

    /// The archived files' names, in order.
    fn archived(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }
}

/// The size and free space of the file system holding `path` (`df`), if it can be read.
fn volume(path: &str) -> Option<(u64, u64)> {
    let out = std::process::Command::new("df").args(["-B1", "--output=size,avail", path]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.lines().nth(1)?.split_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// The newest backup of each of `instances` under `root` (unix seconds; 0 for none, so that "no
/// backup" is a number an alert sees).
fn last_backups(root: &Path, instances: &[String]) -> BTreeMap<String, i64> {
    let mut last: BTreeMap<String, i64> = instances.iter().map(|i| (i.clone(), 0)).collect();
    for b in Backup::all(root).unwrap_or_default() {
        for name in &b.run.instances {
            if let Ok(m) = b.manifest(name) {
                last.insert(name.clone(), m.finished_unix);
            }
        }
    }
    last
}

fn render(numbers: &BTreeMap<String, Numbers>, backups: &BTreeMap<String, i64>) -> String {
    let mut t = String::new();
    let _ =
        writeln!(t, "# HELP shop_binlog_archive_lag_seconds How long the binlog archive has been behind its primary.");
    let _ = writeln!(t, "# TYPE shop_binlog_archive_lag_seconds gauge");
    for (i, n) in numbers {
        let _ = writeln!(t, "shop_binlog_archive_lag_seconds{{instance=\"{i}\"}} {}", n.lag_seconds);
    }
    let _ = writeln!(t, "# HELP shop_binlog_files Binary log files on the primary and in the archive.");
    let _ = writeln!(t, "# TYPE shop_binlog_files gauge");
    for (i, n) in numbers {
        let _ = writeln!(t, "shop_binlog_files{{instance=\"{i}\",where=\"primary\"}} {}", n.primary_files);
        let _ = writeln!(t, "shop_binlog_files{{instance=\"{i}\",where=\"archive\"}} {}", n.archive_files);
    }
    let _ = writeln!(t, "# HELP shop_database_volume_size_bytes Size of the file system holding a primary's data.");
    let _ = writeln!(t, "# TYPE shop_database_volume_size_bytes gauge");
    let _ = writeln!(t, "# HELP shop_database_volume_avail_bytes Free space there.");
    let _ = writeln!(t, "# TYPE shop_database_volume_avail_bytes gauge");
    for (i, n) in numbers {
        if let Some((size, avail)) = n.volume {
            let _ = writeln!(t, "shop_database_volume_size_bytes{{instance=\"{i}\"}} {size}");
            let _ = writeln!(t, "shop_database_volume_avail_bytes{{instance=\"{i}\"}} {avail}");
        }
    }
    let _ = writeln!(
        t,
        "# HELP shop_backup_last_success_timestamp_seconds When the newest backup of an instance finished."
    );
    let _ = writeln!(t, "# TYPE shop_backup_last_success_timestamp_seconds gauge");
    for (i, at) in backups {
        let _ = writeln!(t, "shop_backup_last_success_timestamp_seconds{{instance=\"{i}\"}} {at}");
    }
    t
}

/// A bare `/metrics` endpoint: whatever is asked, the numbers.
async fn serve(listener: tokio::net::TcpListener, shared: Shared, backups: PathBuf, instances: Vec<String>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let shared = shared.clone();
        let backups = backups.clone();
        let instances = instances.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let numbers = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let body = render(&numbers, &last_backups(&backups, &instances));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_each_instance() {
        let numbers = BTreeMap::from([(
            "a".to_owned(),
            Numbers { lag_seconds: 3, primary_files: 2, archive_files: 5, volume: Some((100, 40)) },
        )]);
        let t = render(&numbers, &BTreeMap::from([("a".to_owned(), 1_700_000_000)]));
        assert!(t.contains("shop_binlog_archive_lag_seconds{instance=\"a\"} 3\n"), "{t}");
        assert!(t.contains("shop_binlog_files{instance=\"a\",where=\"archive\"} 5\n"), "{t}");
        assert!(t.contains("shop_database_volume_avail_bytes{instance=\"a\"} 40\n"), "{t}");
        assert!(t.contains("shop_backup_last_success_timestamp_seconds{instance=\"a\"} 1700000000\n"), "{t}");
    }
}
