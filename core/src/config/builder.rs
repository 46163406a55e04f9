//! Writing a stack's `shop.toml`: the one place that knows the file's layout for everything that
//! makes one (`shopctl config init`, which `scripts/up` runs, the backend's API tests and the e2e
//! stacks). Reading it is [`Config::load`](super::Config::load); a file this writes always loads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{apply_override, ConfigError};

/// A `shop.toml` being put together. Starts as the development stack's shape (HS256 with a key file,
/// SQLite files beside the config), with no shard; add shards, then set whatever else by its dotted
/// key, as `SHOP__…` variables name it at load time.
///
/// ```
/// # use shopgate_core::config::ConfigBuilder;
/// let text = ConfigBuilder::new("127.0.0.1:8080".parse().unwrap(), &["127.0.0.1:9000".parse().unwrap()])
///     .shard("a", 0, "even", "127.0.0.1:9001".parse().unwrap())
///     .shard("b", 1, "odd", "127.0.0.1:9002".parse().unwrap())
///     .set("verifier.hash_workers", "1")
///     .to_toml();
/// assert!(text.contains("[shards.b]"));
/// ```
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    doc: toml::Value,
    data_dir: Option<PathBuf>,
    /// The first bad key given to [`set`](Self::set), reported by [`write`](Self::write).
    error: Option<String>,
}

/// The first lines of every file written here.
const HEADER: &str = "# A shopgate stack config, written by `shopctl config init`. Paths are relative to this\n\
# file; SHOP__SECTION__KEY variables override any setting when a part loads it.";

/// The HS256 key file a new stack gets, beside its config.
pub const DEV_KEY_FILE: &str = "jwt.key";
/// A development stack's EdDSA key set (the verifiers'), and its public set (the backends').
pub const DEV_KEYS_FILE: &str = "jwt-keys.json";
pub const DEV_PUBLIC_KEYS_FILE: &str = "jwt-keys.public.json";

impl ConfigBuilder {
    /// nginx on `nginx`, verifiers on `verifiers`, HS256 with [`DEV_KEY_FILE`], the auth database
    /// `sqlite:auth.db`.
    pub fn new(nginx: SocketAddr, verifiers: &[SocketAddr]) -> Self {
        let mut doc = toml::Table::new();
        let mut section = toml::Table::new();
        section.insert("listen".into(), nginx.to_string().into());
        section.insert("prefix".into(), "nginx".into());
        doc.insert("nginx".into(), section.into());
        let mut jwt = toml::Table::new();
        jwt.insert("algorithm".into(), "HS256".into());
        jwt.insert("key_file".into(), DEV_KEY_FILE.into());
        doc.insert("jwt".into(), jwt.into());
        let mut verifier = toml::Table::new();
        let listen: Vec<toml::Value> = verifiers.iter().map(|a| a.to_string().into()).collect();
        verifier.insert("listen".into(), listen.into());
        doc.insert("verifier".into(), verifier.into());
        doc.insert("shards".into(), toml::Table::new().into());
        Self { doc: doc.into(), data_dir: None, error: None }
    }

    /// The file at `path` as it stands, to be changed and written again: every setting in it is
    /// kept unless changed here. Its `SHOP__…` overrides are not applied (they are not the file's).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let doc: toml::Value = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.message().to_owned() })?;
        Ok(Self { doc, data_dir: None, error: None })
    }

    /// The shards' names in the file so far, in name order.
    pub fn shard_names(&self) -> Vec<String> {
        let shards = self.doc.get("shards").and_then(toml::Value::as_table);
        shards.map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    /// Where nginx and the verifiers listen, replacing what the file said.
    pub fn listen(mut self, nginx: SocketAddr, verifiers: &[SocketAddr]) -> Self {
        if let Some(section) = self.section("nginx") {
            section.insert("listen".into(), nginx.to_string().into());
        }
        let listen: Vec<toml::Value> = verifiers.iter().map(|a| a.to_string().into()).collect();
        if let Some(section) = self.section("verifier") {
            section.insert("listen".into(), listen.into());
        }
        self
    }

    /// Shard `name`'s processes listen on `listen`: a shard already in the file keeps its number,
    /// its buckets and its other settings; a new one gets the lowest number no shard has and owns
    /// no bucket (a move gives it some).
    pub fn shard_listen(self, name: &str, listen: &[SocketAddr]) -> Self {
        let existing = self.doc.get("shards").and_then(|t| t.get(name)).and_then(toml::Value::as_table).cloned();
        let Some(mut shard) = existing else {
            let taken: Vec<i64> = self
                .doc
                .get("shards")
                .and_then(toml::Value::as_table)
                .map(|t| t.values().filter_map(|s| s.get("number")?.as_integer()).collect())
                .unwrap_or_default();
            let number = (0..64).find(|n| !taken.contains(n)).unwrap_or(0);
            return self.shard_processes(name, u8::try_from(number).unwrap_or(0), "", listen);
        };
        shard.insert("listen".into(), listen_value(listen));
        let mut this = self;
        if let Some(shards) = this.section("shards") {
            shards.insert(name.to_owned(), shard.into());
        }
        this
    }

    /// Forgets every database URL (the auth database's, each shard's primary and replica): they
    /// are set again from `SHOP__…` variables ([`apply_env`](Self::apply_env)), or become the
    /// default SQLite files when written.
    pub fn forget_databases(mut self) -> Self {
        if let Some(verifier) = self.section("verifier") {
            verifier.remove("database_url");
        }
        if let Some(shards) = self.section("shards") {
            for (_, shard) in shards.iter_mut() {
                let Some(shard) = shard.as_table_mut() else { continue };
                shard.remove("primary");
                shard.remove("replica");
            }
        }
        self
    }

    /// The default SQLite files (the auth database, each shard's) go in `dir`, relative to the
    /// config's folder, instead of beside it.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// EdDSA with the JWK set file `file` instead of an HS256 key file.
    pub fn eddsa(mut self, file: &str) -> Self {
        if let Some(jwt) = self.section("jwt") {
            jwt.clear();
            jwt.insert("algorithm".into(), "EdDSA".into());
            jwt.insert("keys_file".into(), file.into());
        }
        self
    }

    /// `[jwt] key` as it will be written, if it is a string (`algorithm`, `keys_file`, ...).
    pub fn jwt_setting(&self, key: &str) -> Option<&str> {
        self.doc.get("jwt")?.get(key)?.as_str()
    }

    /// The backends' public key set (EdDSA), `jwt.public_keys_file`: they load it instead of
    /// the key set given to [`eddsa`](Self::eddsa).
    pub fn public_keys(mut self, file: &str) -> Self {
        if let Some(jwt) = self.section("jwt") {
            jwt.insert("public_keys_file".into(), file.into());
        }
        self
    }

    /// Shard `name` (its `number` in order ids, the `buckets` it owns, where it listens), on the
    /// SQLite file `shard-NAME.db` until [`set`](Self::set) says `shards.NAME.primary` otherwise.
    pub fn shard(self, name: &str, number: u8, buckets: &str, listen: SocketAddr) -> Self {
        self.shard_processes(name, number, buckets, &[listen])
    }

    /// [`shard`](Self::shard) served by one backend process per address of `listen` (instance
    /// `N` on `listen[N]`). One address is written as the single-address form.
    pub fn shard_processes(mut self, name: &str, number: u8, buckets: &str, listen: &[SocketAddr]) -> Self {
        let mut shard = toml::Table::new();
        shard.insert("number".into(), i64::from(number).into());
        shard.insert("buckets".into(), buckets.into());
        shard.insert("listen".into(), listen_value(listen));
        if let Some(shards) = self.section("shards") {
            shards.insert(name.to_owned(), shard.into());
        }
        self
    }

    /// Sets a dotted `key` (`verifier.hash_workers`, `shards.a.replica`) to `value`, read as the
    /// `SHOP__…` variables are at load time: a TOML value if it parses as one (`1`, `true`,
    /// `["x"]`), a string otherwise.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        let result = match key.contains('.') {
            true => apply_override(&mut self.doc, &key.replace('.', "__"), value),
            false => Err("a setting is SECTION.KEY; a whole section cannot be set".into()),
        };
        if let Err(e) = result {
            self.error.get_or_insert(format!("{key}: {e}"));
        }
        self
    }

    /// [`set`](Self::set) for each `SHOP__SECTION__KEY=value` of `env` (others are skipped), as
    /// [`Config::load`](super::Config::load) would apply them: so a stack can be written with
    /// values (database passwords) that never appear on a command line.
    pub fn apply_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        for (var, val) in env {
            if let Some(rest) = var.strip_prefix("SHOP__") {
                apply_override(&mut self.doc, rest, &val).map_err(|message| ConfigError::Env { var, message })?;
            }
        }
        Ok(self)
    }

    /// The file's text: what was set, and the default SQLite database of the verifier and of each
    /// shard whose database was not set.
    pub fn to_toml(&self) -> String {
        let mut this = self.clone();
        let auth = this.sqlite("auth.db");
        if let Some(verifier) = this.section("verifier") {
            verifier.entry("database_url").or_insert(auth.into());
        }
        let names: Vec<String> = this.section("shards").map(|t| t.keys().cloned().collect()).unwrap_or_default();
        for name in names {
            let url = this.sqlite(&format!("shard-{name}.db"));
            if let Some(shard) =
                this.section("shards").and_then(|t| t.get_mut(&name)).and_then(toml::Value::as_table_mut)
            {
                shard.entry("primary").or_insert(url.into());
            }
        }
        let body = toml::to_string(&this.doc).unwrap_or_default();
        format!("{HEADER}\n{body}")
    }

    /// Writes the file (readable by its owner only: it may hold database passwords) if what it
    /// would hold loads; a file that would not is never written, and an old one stays as it was.
    pub fn write(&self, path: &Path) -> Result<super::Config, ConfigError> {
        if let Some(e) = &self.error {
            return Err(ConfigError::Invalid(e.clone()));
        }
        let io = |source| ConfigError::Read { path: path.to_owned(), source };
        let folder = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder.join(self.data_dir.as_deref().unwrap_or(Path::new("")))).map_err(io)?;
        // Beside the file, so that relative paths in it resolve the same.
        let mut draft = path.as_os_str().to_owned();
        draft.push(".new");
        let draft = PathBuf::from(draft);
        crate::files::replace_private(&draft, self.to_toml().as_bytes()).map_err(io)?;
        let loaded = super::Config::load_with_env(&draft, std::iter::empty());
        let result = match loaded {
            Ok(mut config) => std::fs::rename(&draft, path).map_err(io).map(|()| {
                config.path = path.to_owned();
                config
            }),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&draft);
        result.map_err(|e| match e {
            // Name the file asked for, not the draft.
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    fn sqlite(&self, file: &str) -> String {
        match &self.data_dir {
            Some(dir) => format!("sqlite:{}", dir.join(file).display()),
            None => format!("sqlite:{file}"),
        }
    }

    /// The section `name`, made if missing; `None` if a setting made it something else than a
    /// table (an error [`write`](Self::write) reports).
    fn section(&mut self, name: &str) -> Option<&mut toml::Table> {
        self.doc.as_table_mut()?.entry(name).or_insert_with(|| toml::Table::new().into()).as_table_mut()
    }
}

/// A shard's `listen`: one address as a string, several as an array.
fn listen_value(listen: &[SocketAddr]) -> toml::Value {
    match listen {
        [one] => one.to_string().into(),
        many => many.iter().map(|a| toml::Value::from(a.to_string())).collect::<Vec<_>>().into(),
    }
}

/// A new random HS256 key (32 bytes, hex) in `path`, unless the file is there and not empty:
/// a development stack's key, made once and kept across restarts.
pub fn ensure_dev_key(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
        return Ok(());
    }
    let key: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    crate::files::replace_private(path, key.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn two_shards() -> ConfigBuilder {
        ConfigBuilder::new(addr(8080), &[addr(9000), addr(9003)]).shard("a", 0, "even", addr(9001)).shard(
            "b",
            1,
            "odd",
            addr(9002),
        )
    }

    #[test]
    fn what_it_writes_loads_as_the_same_stack() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let path = dir.join("shop.toml");
        ensure_dev_key(&dir.join(DEV_KEY_FILE)).unwrap();
        let config = two_shards()
            .data_dir("data")
            .set("verifier.hash_workers", "1")
            .set("nginx.debug_headers", "true")
            .set("shards.b.replica", "sqlite:data/replica-b.db")
            .write(&path)
            .unwrap();
        assert_eq!(config.nginx.listen, addr(8080));
        assert!(config.nginx.debug_headers);
        assert_eq!(config.verifier.listen, vec![addr(9000), addr(9003)]);
        assert_eq!(config.verifier.hash_workers, Some(1));
        let data = dir.join("data");
        assert!(data.is_dir(), "the data folder is made");
        assert_eq!(config.verifier.database_url.expose(), format!("sqlite://{}", data.join("auth.db").display()));
        let b = config.shard("b").unwrap();
        assert_eq!((b.number, b.buckets.as_str(), b.listen.clone()), (1, "odd", vec![addr(9002)]));
        assert_eq!(b.primary.expose(), format!("sqlite://{}", data.join("shard-b.db").display()));
        assert_eq!(b.replica.as_ref().unwrap().expose(), format!("sqlite://{}", data.join("replica-b.db").display()));
        assert!(config.shard("a").unwrap().replica.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(dir.join(DEV_KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_kept_file_keeps_its_shards_and_settings_and_takes_new_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        two_shards()
            .shard("c", 2, "", addr(9005))
            .set("backend.max_in_flight", "7")
            .set("shards.c.replica_max_lag_seconds", "3")
            .set("shards.c.primary", "mysql://shop:pw@127.0.0.1:3999/shard_c")
            .write(&path)
            .unwrap();
        let kept = ConfigBuilder::from_file(&path).unwrap();
        assert_eq!(kept.shard_names(), ["a", "b", "c"]);
        let config = kept
            .listen(addr(7080), &[addr(7000)])
            .shard_listen("a", &[addr(7001)])
            .shard_listen("b", &[addr(7002)])
            .shard_listen("c", &[addr(7003), addr(7013)])
            .shard_listen("d", &[addr(7004)])
            .forget_databases()
            .write(&path)
            .unwrap();
        assert_eq!((config.nginx.listen, config.verifier.listen.clone()), (addr(7080), vec![addr(7000)]));
        assert_eq!(config.backend.max_in_flight, 7, "an operator's setting is kept");
        let c = config.shard("c").unwrap();
        assert_eq!((c.number, c.buckets.as_str(), c.listen.clone()), (2, "", vec![addr(7003), addr(7013)]));
        assert_eq!(c.replica_max_lag_seconds, 3);
        assert!(c.primary.expose().starts_with("sqlite:"), "the databases are set again: {}", c.primary.expose());
        let b = config.shard("b").unwrap();
        assert_eq!((b.number, b.buckets.as_str()), (1, "odd"));
        let d = config.shard("d").unwrap();
        assert_eq!((d.number, d.buckets.as_str()), (3, ""), "a new shard: the lowest free number, no bucket");
    }

    #[test]
    fn a_shard_with_several_processes_lists_their_addresses() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        let config = ConfigBuilder::new(addr(8080), &[addr(9000)])
            .shard_processes("a", 0, "even", &[addr(9001), addr(9011)])
            .shard_processes("b", 1, "odd", &[addr(9002)])
            .write(&dir.path().join("shop.toml"))
            .unwrap();
        assert_eq!(config.shard("a").unwrap().listen, vec![addr(9001), addr(9011)]);
        assert_eq!(config.shard("b").unwrap().listen, vec![addr(9002)]);
        let text = std::fs::read_to_string(dir.path().join("shop.toml")).unwrap();
        assert!(text.contains("listen = \"127.0.0.1:9002\""), "one process keeps the one-address form:\n{text}");
    }

    #[test]
    fn a_bad_key_is_an_error_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let err = two_shards().set("shards.a.number.x", "1").write(&dir.path().join("shop.toml")).unwrap_err();
        assert!(err.to_string().contains("shards.a.number.x"), "{err}");
        let err = two_shards().set("verifier", "1").write(&dir.path().join("shop.toml")).unwrap_err();
        assert!(err.to_string().contains("SECTION.KEY"), "{err}");
        // From the environment, a section replaced by a value: refused when it is loaded.
        let env = [("SHOP__VERIFIER".to_owned(), "1".to_owned())];
        assert!(two_shards().apply_env(env).unwrap().write(&dir.path().join("shop.toml")).is_err());
        // A file that would not load is not written, and one that was there stays.
        assert!(!dir.path().join("shop.toml").exists());
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        two_shards().write(&dir.path().join("shop.toml")).unwrap();
        let before = std::fs::read_to_string(dir.path().join("shop.toml")).unwrap();
        let err = two_shards().set("verifier.bogus", "1").write(&dir.path().join("shop.toml")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("shop.toml")).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no draft left behind");
    }

    #[test]
    fn environment_values_are_written_as_load_would_read_them() {
        let env = [
            ("SHOP__SHARDS__A__PRIMARY".to_owned(), "mysql://shop:pw@127.0.0.1:3306/a".to_owned()),
            ("SHOP__VERIFIER__HASH_QUEUE".to_owned(), "7".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let text = two_shards().apply_env(env).unwrap().to_toml();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["shards"]["a"]["primary"].as_str(), Some("mysql://shop:pw@127.0.0.1:3306/a"));
        assert_eq!(doc["verifier"]["hash_queue"].as_integer(), Some(7));
        assert!(!text.contains("/bin"));
        let bad = [("SHOP__SHARDS__A__NUMBER__X".to_owned(), "1".to_owned())];
        assert!(matches!(two_shards().apply_env(bad), Err(ConfigError::Env { .. })));
    }

    #[test]
    fn eddsa_replaces_the_key_file() {
        let doc: toml::Table = toml::from_str(&two_shards().eddsa("keys.json").to_toml()).unwrap();
        assert_eq!(doc["jwt"]["algorithm"].as_str(), Some("EdDSA"));
        assert_eq!(doc["jwt"]["keys_file"].as_str(), Some("keys.json"));
        assert!(doc["jwt"].get("key_file").is_none());
    }

    #[test]
    fn a_dev_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(DEV_KEY_FILE);
        ensure_dev_key(&key).unwrap();
        let first = std::fs::read_to_string(&key).unwrap();
        assert_eq!(first.len(), 64);
        ensure_dev_key(&key).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), first, "an existing key is kept");
    }
}
