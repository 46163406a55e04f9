//! The kept login: `$XDG_CONFIG_HOME/shopctl/credentials.json` (mode 0600), one per gateway URL.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub email: String,
    pub(crate) access_token: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    #[serde(default)]
    logins: BTreeMap<String, Credential>,
}

pub(crate) fn path() -> anyhow::Result<PathBuf> {
    let dir = dirs::config_dir().context("cannot find your config folder (set XDG_CONFIG_HOME or HOME)")?;
    Ok(dir.join("shopctl").join("credentials.json"))
}

fn load_store() -> anyhow::Result<Store> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; delete it and log in again", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

fn save_store(store: &Store) -> anyhow::Result<()> {
    let p = path()?;
    let dir = p.parent().context("credentials path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Replaced whole with a private file, so the token is never world-readable, not even for a
    // moment, and a crash never leaves half a file.
    let text = serde_json::to_string_pretty(store)?;
    shopgate_core::files::replace_private(&p, text.as_bytes()).with_context(|| format!("cannot write {}", p.display()))
}

pub fn get(url: &str) -> anyhow::Result<Option<Credential>> {
    Ok(load_store()?.logins.get(url).cloned())
}

pub(crate) fn put(url: &str, cred: Credential) -> anyhow::Result<()> {
    let mut store = load_store()?;
    store.logins.insert(url.to_owned(), cred);
    save_store(&store)
}

/// Returns whether there was a login to forget.
pub(crate) fn remove(url: &str) -> anyhow::Result<bool> {
    let mut store = load_store()?;
    let had = store.logins.remove(url).is_some();
    if had {
        save_store(&store)?;
    }
    Ok(had)
}
