//! Backups of the stack's databases, as a library: [`take`] copies the auth database and every
//! shard's primary while the shop runs, [`Backup::open`] finds one again and checks it, and
//! [`Tools`] restores it; `shopctl backup` and `shopctl restore` drive them.
//!
//! No backup engine of our own: MariaDB instances are copied by `mariadb-backup --backup` and
//! `--prepare` (a hot physical copy, consistent at the GTID position it records), SQLite files by
//! `VACUUM INTO` (a transaction's snapshot, the writers going on). Point-in-time restores replay
//! the binlogs the archiver ([`crate::archive`]) keeps, with `mariadb-binlog`; where the MariaDB
//! instances' folders live and how they start is `scripts/mariadb`'s business, which a restore
//! calls.
//!
//! Layout under `[backup] dir`, everything 0700/0600:
//!
//! ```text
//! 20261207T201500Z/backup.json          the run: when, the shard map version, its instances
//! 20261207T201500Z/auth/manifest.json   one instance: kind, position, checksums, tools, sizes
//! 20261207T201500Z/auth/data/           mariadb-backup's prepared copy (or auth.db on SQLite)
//! binlogs/auth/mysql-bin.000042         the archived binlogs of a primary
//! ```
//!
//! A run is consistent with one shard map version: it refuses while a bucket move is unfinished
//! (some bucket's rows may be on two shards), and it fails if the map changed while it copied
//! (the shards would be copied at two different maps), so a restore never puts a bucket on two
//! shards or on none.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shopgate_core::config::{Config, DbUrl};
use shopgate_core::control;
use shopgate_core::time::{rfc3339, unix_now};

use crate::db::{bounded, Db};
use crate::stack;

/// The file describing one run, at the top of its folder.
pub const RUN_MANIFEST: &str = "backup.json";
/// The file describing one instance's copy, in its folder.
pub const MANIFEST: &str = "manifest.json";
/// The archive's folder under `[backup] dir`.
pub const BINLOGS: &str = "binlogs";

/// What a database is, for how it is copied and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Mariadb,
    Sqlite,
}

/// One database of the stack: `auth`, or a shard's primary by the shard's name.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    /// The URL it is copied with: the backup role's (`SHOP_BACKUP_…_URL`) where given, else the
    /// config's own.
    pub url: DbUrl,
}

impl Instance {
    pub fn kind(&self) -> Kind {
        if self.url.is_sqlite() {
            Kind::Sqlite
        } else {
            Kind::Mariadb
        }
    }

    /// Its name in `scripts/mariadb`'s topology: `auth`, or `a-primary`.
    pub fn topology_name(&self) -> String {
        topology_name(&self.name)
    }
}

/// `auth`, or a shard's primary (`a-primary`), as `scripts/mariadb` names the instance.
pub fn topology_name(instance: &str) -> String {
    if instance == "auth" {
        "auth".to_owned()
    } else {
        format!("{instance}-primary")
    }
}

/// The replica `scripts/mariadb` keeps of `instance`.
pub fn topology_replica(instance: &str) -> String {
    if instance == "auth" {
        "auth-replica".to_owned()
    } else {
        format!("{instance}-replica")
    }
}

/// Every database of the stack, with the URLs a backup uses (the role `BACKUP`).
pub fn instances(config: &Config) -> anyhow::Result<Vec<Instance>> {
    let mut all = vec![Instance {
        name: "auth".to_owned(),
        url: stack::operator_url(config, "BACKUP", "auth", &config.verifier.database_url)?,
    }];
    for shard in &config.shards {
        let name = shard.name.to_string();
        let url = stack::operator_url(config, "BACKUP", &name, &shard.primary)?;
        all.push(Instance { name, url });
    }
    Ok(all)
}

/// One instance's copy, as `manifest.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub instance: String,
    pub kind: Kind,
    /// MariaDB: the GTID position the copy is consistent at (`xtrabackup_binlog_info`).
    pub gtid: Option<String>,
    /// MariaDB: the binlog file and offset of that position.
    pub binlog_file: Option<String>,
    pub binlog_offset: Option<u64>,
    /// The shard map version the whole run is consistent with.
    pub map_version: u64,
    pub started_at: String,
    pub finished_at: String,
    /// Unix seconds of `finished_at`, for the backup-age metric.
    pub finished_unix: i64,
    pub seconds: f64,
    /// The copy's size on disk, in bytes.
    pub bytes: u64,
    /// The tools and server that made it.
    pub tools: BTreeMap<String, String>,
    /// Every file of the copy (relative path) and its SHA-256, hex.
    pub files: BTreeMap<String, String>,
}

/// One run, as `backup.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    pub id: String,
    pub map_version: u64,
    pub started_at: String,
    pub finished_at: String,
    pub instances: Vec<String>,
}

/// What [`take`] tells as it goes.
pub trait Progress {
    fn started(&mut self, instance: &Instance);
    fn finished(&mut self, manifest: &Manifest);
}

/// A run's folder name: its start in UTC, `20261207T201500Z`.
fn run_id(unix: i64) -> String {
    rfc3339(unix).replace(['-', ':'], "")
}

/// Makes `path` and its parents, 0700.
pub fn private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} 0700", path.display()))
}

/// Writes `text` to `path`, 0600.
pub fn private_file(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text).with_context(|| format!("writing {}", path.display()))
}

/// Refuses while a bucket move is unfinished; the map version in force otherwise.
async fn settled_map_version(config: &Config) -> anyhow::Result<u64> {
    let db = stack::control_db(config).await?;
    let moves = bounded(control::unfinished_moves(&db.pool)).await;
    let version = bounded(control::current_version(&db.pool)).await;
    db.close().await;
    if let Some(m) = moves.context("reading the bucket moves")?.first() {
        bail!(
            "bucket move {} ({} from {} to {}) is unfinished, at step {}: a backup now could restore those buckets \
             on two shards or on none; finish it (`shopctl shards move`) or abort it (`--abort`), then back up",
            m.id,
            m.buckets,
            m.source,
            m.target,
            m.step
        );
    }
    Ok(version.context("reading the shard map's version")?.unwrap_or(1))
}

/// Backs up every database of `config` into a new run folder under `[backup] dir`: the run's
/// manifest once all are copied. Fails (and removes the run) if a bucket move was under way or
/// the shard map changed meanwhile.
pub async fn take(config: &Config, progress: &mut dyn Progress) -> anyhow::Result<(RunManifest, Vec<Manifest>)> {
    let instances = instances(config)?;
    let map_version = settled_map_version(config).await?;
    let started = unix_now();
    let id = run_id(started);
    let dir = config.backup.dir.join(&id);
    anyhow::ensure!(!dir.exists(), "{} exists already: one backup per second", dir.display());
    private_dir(&dir)?;
    let result = copy_all(&instances, &dir, map_version, progress).await;
    let result = match result {
        Ok(manifests) => match settled_map_version(config).await {
            Ok(v) if v == map_version => Ok(manifests),
            Ok(v) => Err(anyhow::anyhow!(
                "the shard map changed from version {map_version} to {v} during the backup: its shards are not \
                 consistent with one map; back up again"
            )),
            Err(e) => Err(e.context("after the copies")),
        },
        Err(e) => Err(e),
    };
    let manifests = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let run = RunManifest {
        id,
        map_version,
        started_at: rfc3339(started),
        finished_at: rfc3339(unix_now()),
        instances: manifests.iter().map(|m| m.instance.clone()).collect(),
    };
    private_file(&dir.join(RUN_MANIFEST), &serde_json::to_vec_pretty(&run)?)?;
    Ok((run, manifests))
}

async fn copy_all(
    instances: &[Instance],
    dir: &Path,
    map_version: u64,
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for instance in instances {
        progress.started(instance);
        let folder = dir.join(&instance.name);
        private_dir(&folder)?;
        let started = (unix_now(), Instant::now());
        let mut manifest = match instance.kind() {
            Kind::Mariadb => mariadb_copy(instance, &folder).await,
            Kind::Sqlite => sqlite_copy(instance, &folder).await,
        }
        .with_context(|| format!("backing up {}", instance.name))?;
        manifest.map_version = map_version;
        manifest.started_at = rfc3339(started.0);
        manifest.finished_unix = unix_now();
        manifest.finished_at = rfc3339(manifest.finished_unix);
        manifest.seconds = started.1.elapsed().as_secs_f64();
        make_private(&folder)?;
        manifest.files = checksums(&folder)?;
        manifest.bytes = size_of(&folder)?;
        private_file(&folder.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
        progress.finished(&manifest);
        manifests.push(manifest);
    }
    Ok(manifests)
}

fn blank_manifest(instance: &Instance) -> Manifest {
    Manifest {
        instance: instance.name.clone(),
        kind: instance.kind(),
        gtid: None,
        binlog_file: None,
        binlog_offset: None,
        map_version: 0,
        started_at: String::new(),
        finished_at: String::new(),
        finished_unix: 0,
        seconds: 0.0,
        bytes: 0,
        tools: BTreeMap::new(),
        files: BTreeMap::new(),
    }
}

/// `VACUUM INTO` a file of the folder: SQLite's own consistent copy of a live database.
async fn sqlite_copy(instance: &Instance, folder: &Path) -> anyhow::Result<Manifest> {
    let db = Db::connect(&instance.url, &format!("{}'s database", instance.name)).await?;
    let target = folder.join(format!("{}.db", instance.name));
    let quoted = target.to_str().context("a backup path that is not UTF-8")?.replace('\'', "''");
    let copied = sqlx::query(&format!("VACUUM INTO '{quoted}'")).execute(&db.pool).await;
    let version = sqlx::query_scalar::<_, String>("SELECT sqlite_version()").fetch_one(&db.pool).await;
    db.close().await;
    copied.map_err(|e| anyhow::anyhow!("VACUUM INTO {}: {e}", target.display()))?;
    let mut m = blank_manifest(instance);
    m.tools.insert("sqlite".into(), version.unwrap_or_default());
    Ok(m)
}

/// `mariadb-backup --backup`, then `--prepare`, into `folder/data`.
async fn mariadb_copy(instance: &Instance, folder: &Path) -> anyhow::Result<Manifest> {
    let login = Login::new(&instance.url, folder)?;
    let server = login.query("SELECT @@datadir, @@version")?;
    let (datadir, version) = server.split_once('\t').context("the server did not say its data folder")?;
    let data = folder.join("data");
    let log = folder.join("mariadb-backup.log");
    let mut backup = login.tool(&tool("mariadb-backup"));
    backup.arg("--backup").arg(format!("--datadir={datadir}")).arg(format!("--target-dir={}", data.display()));
    run_logged(backup, &log, "mariadb-backup --backup").await?;
    let mut prepare = Command::new(tool("mariadb-backup"));
    prepare.arg("--no-defaults").arg("--prepare").arg(format!("--target-dir={}", data.display()));
    run_logged(prepare, &log, "mariadb-backup --prepare").await?;
    let mut m = blank_manifest(instance);
    if let Some((file, offset, gtid)) = binlog_info(&data)? {
        m.binlog_file = Some(file);
        m.binlog_offset = Some(offset);
        m.gtid = Some(gtid);
    }
    m.tools.insert("server".into(), version.to_owned());
    m.tools.insert("mariadb-backup".into(), tool_version("mariadb-backup"));
    Ok(m)
}

/// The file, offset and GTID position a prepared copy is consistent at.
pub fn binlog_info(data: &Path) -> anyhow::Result<Option<(String, u64, String)>> {
    for name in ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"] {
        let Ok(text) = std::fs::read_to_string(data.join(name)) else { continue };
        let mut f = text.trim().split('\t');
        let (Some(file), Some(offset), gtid) = (f.next(), f.next(), f.next()) else {
            bail!("{name} in {} is not `FILE OFFSET GTID`: {text:?}", data.display())
        };
        return Ok(Some((file.to_owned(), offset.parse()?, gtid.unwrap_or("").to_owned())));
    }
    Ok(None)
}

/// The path of a MariaDB tool: `SHOP_<NAME>` (`SHOP_MARIADB_BACKUP`) where set, else on `PATH`.
pub fn tool(name: &str) -> String {
    std::env::var(format!("SHOP_{}", name.to_ascii_uppercase().replace('-', "_"))).unwrap_or_else(|_| name.to_owned())
}

fn tool_version(name: &str) -> String {
    Command::new(tool(name))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

/// Runs `cmd`, its output appended to `log`; on failure the log's last lines in the error.
pub async fn run_logged(mut cmd: Command, log: &Path, what: &str) -> anyhow::Result<()> {
    let out = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(log)?;
    cmd.stdout(out.try_clone()?).stderr(out).stdin(std::process::Stdio::null());
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .with_context(|| format!("{what}: could not run it (is MariaDB's client package installed?)"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        bail!(
            "{what} failed ({status}; log: {}): {}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

/// A MariaDB login for the tools: the URL's user, password and address in a 0600 defaults file
/// (`--defaults-extra-file`), so no password is ever on a command line; removed when dropped.
pub struct Login {
    file: PathBuf,
}

impl Login {
    /// The login of `url`, its file written into `folder`.
    pub fn new(url: &DbUrl, folder: &Path) -> anyhow::Result<Login> {
        let parsed = reqwest::Url::parse(url.expose()).with_context(|| format!("{url} is not a URL"))?;
        let decode = |s: &str| percent_decode(s);
        let mut text = String::from("[client]\n");
        text.push_str(&format!("user={}\n", decode(parsed.username())));
        if let Some(p) = parsed.password() {
            text.push_str(&format!("password=\"{}\"\n", decode(p).replace('\\', "\\\\").replace('"', "\\\"")));
        }
        let query: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
        match query.get("socket") {
            Some(socket) => text.push_str(&format!("socket={socket}\n")),
            None => {
                text.push_str(&format!(
                    "host={}\nport={}\n",
                    parsed.host_str().unwrap_or("localhost"),
                    parsed.port().unwrap_or(3306)
                ));
                text.push_str("protocol=tcp\n");
            }
        }
        if let Some(ca) = query.get("ssl-ca") {
            text.push_str(&format!("ssl-ca={ca}\nssl-verify-server-cert\n"));
        }
        let file = folder.join(".login.cnf");
        private_file(&file, text.as_bytes())?;
        Ok(Login { file })
    }

    /// `PROGRAM --defaults-extra-file=…`, to which the caller adds its own arguments.
    pub fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg(format!("--defaults-extra-file={}", self.file.display()));
        c
    }

    /// One row of `sql`'s answer through the `mariadb` client, its columns tab-separated.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let out = self.tool(&tool("mariadb")).args(["--batch", "--skip-column-names", "-e", sql]).output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned())
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A URL's `%XX` escapes (its user and password are given escaped).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every file under `folder` but the manifest and logs, with its SHA-256.
fn checksums(folder: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for path in files_under(folder)? {
        let rel = path.strip_prefix(folder)?.to_string_lossy().into_owned();
        if rel == MANIFEST || rel.ends_with(".log") || rel.starts_with('.') {
            continue;
        }
        sums.insert(rel, sha256_of(&path)?);
    }
    Ok(sums)
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn files_under(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every file under `folder` 0600 and every folder 0700, whatever mode the tool that wrote them
/// chose: a copy of a database is as private as the database.
pub fn make_private(folder: &Path) -> anyhow::Result<()> {
    let mut stack = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

fn size_of(folder: &Path) -> anyhow::Result<u64> {
    files_under(folder)?.iter().map(|p| Ok(std::fs::metadata(p)?.len())).sum()
}

/// One run found again under `[backup] dir`.
#[derive(Debug)]
pub struct Backup {
    pub dir: PathBuf,
    pub run: RunManifest,
}

impl Backup {
    /// Every complete run (with its `backup.json`), oldest first.
    pub fn all(root: &Path) -> anyhow::Result<Vec<Backup>> {
        let mut runs = Vec::new();
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(runs),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", root.display()))),
        };
        for entry in entries {
            let dir = entry?.path();
            let Ok(text) = std::fs::read(dir.join(RUN_MANIFEST)) else { continue };
            let run: RunManifest =
                serde_json::from_slice(&text).with_context(|| format!("{}/{RUN_MANIFEST}", dir.display()))?;
            runs.push(Backup { dir, run });
        }
        runs.sort_by(|a, b| a.run.id.cmp(&b.run.id));
        Ok(runs)
    }

    /// The run named `id`, or the newest for `latest`.
    pub fn open(root: &Path, id: &str) -> anyhow::Result<Backup> {
        let mut all = Self::all(root)?;
        let found = if id == "latest" { all.pop() } else { all.into_iter().find(|b| b.run.id == id) };
        found.ok_or_else(|| {
            crate::UsageError(format!("no backup {id} in {} (`shopctl backup list` shows them)", root.display())).into()
        })
    }

    pub fn manifest(&self, instance: &str) -> anyhow::Result<Manifest> {
        let path = self.dir.join(instance).join(MANIFEST);
        let text = std::fs::read(&path).with_context(|| format!("backup {} has no {instance}", self.run.id))?;
        serde_json::from_slice(&text).with_context(|| path.display().to_string())
    }

    /// Checks every file of `instance`'s copy against its manifest.
    pub fn verify(&self, instance: &str) -> anyhow::Result<Manifest> {
        let m = self.manifest(instance)?;
        let folder = self.dir.join(instance);
        let found = checksums(&folder)?;
        for (file, sum) in &m.files {
            match found.get(file) {
                None => bail!("backup {} of {instance} lacks {file}: it cannot be restored", self.run.id),
                Some(s) if s != sum => {
                    bail!(
                        "backup {} of {instance}: {file} does not match its checksum: it cannot be restored",
                        self.run.id
                    )
                }
                Some(_) => {}
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time() {
        assert_eq!(run_id(0), "19700101T000000Z");
        assert!(run_id(1_000_000_000) < run_id(1_000_000_001));
    }

    #[test]
    fn urls_decode() {
        assert_eq!(percent_decode("%2Ftmp%2Fa.sock"), "/tmp/a.sock");
        assert_eq!(percent_decode("a%"), "a%");
    }
}
