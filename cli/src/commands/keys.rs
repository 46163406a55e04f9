//! `shopctl keys generate|rotate|retire`: the JWT keys, in the files the config's `jwt` names.
//!
//! The key file formats are the config loader's (`shopgate_core::config`): an EdDSA key set is a
//! [`KeyFile`] (`jwt.keys_file`), an HS256 key is `base64url:` and its bytes (`jwt.key_file`).
//! Everything written is checked with the loader's own rules first ([`EdKeys::from_file`],
//! [`Hs256Key::new`]), so a verifier never has a file to refuse.
//!
//! A rotation without downtime is README's three steps: `rotate` adds a new signing key and keeps
//! the old keys' public parts (their tokens keep passing), every verifier and backend reloads the
//! file within a second (`rotate` publishes the new key a reload before it signs, waiting twice
//! the reload interval after each write; it does not ask the processes), and after the old
//! tokens' life `retire` removes the old key (waiting the same). The file is replaced by a rename, so a process watching it never
//! reads half of one. `rotate` notes beside the key set when each old key's last tokens expire
//! (`FILE.retirable`), and `retire` refuses an earlier retire, which would log their users out,
//! unless `--force`. HS256 has one key and no key ids, so it cannot be rotated without failing
//! tokens (nor can a rotation change the algorithm): `rotate` refuses it.
//!
//! Every write of an EdDSA key set writes its public set too ([`KeyFile::public`], mode 0644): the
//! file the backends load (`jwt.public_keys_file`, else `NAME.public.json` beside `NAME.json`),
//! checked with the backends' rule ([`EdKeys::from_public_file`]) and written first, so that a
//! backend knows each new key before any verifier signs with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Subcommand;
use serde_json::json;
use shopgate_core::config::{default_public_keys_file, Config};
use shopgate_core::time::{rfc3339, unix_now};
use shopgate_core::token::{EdKeys, Hs256Key, KeyFile};

use crate::output::{out, Format};
use crate::{stack, Context, UsageError};

/// How long every verifier and backend may take to reload a changed key file (README: within 1 s
/// of the change; they look at it once a second), with room to spare. No process watches the
/// unit tests' files.
const RELOAD_WAIT: Duration = if cfg!(test) { Duration::ZERO } else { Duration::from_secs(2) };

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Make a new key: an EdDSA key set for jwt.keys_file, or an HS256 key for jwt.key_file.
    Generate(GenerateArgs),
    /// Rotation, step 1: add a new Ed25519 signing key; the old keys keep only their public part.
    Rotate(RotateArgs),
    /// Rotation, step 3: remove a key that no longer signs (its tokens then fail).
    Retire(RetireArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Algorithm {
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "HS256")]
    Hs256,
}

#[derive(clap::Args, Debug)]
pub(crate) struct GenerateArgs {
    /// EdDSA (a JWK set with one signing key) or HS256 (a random 32-byte secret).
    #[arg(long, value_enum, ignore_case = true, default_value = "EdDSA")]
    pub(crate) algorithm: Algorithm,
    /// The key id (EdDSA only) [default: today's date and a random suffix].
    #[arg(long, value_name = "KID")]
    pub(crate) kid: Option<String>,
    /// Write the key to FILE (mode 0600) instead of standard output; an EdDSA key set's public
    /// set goes beside it (see --public-out).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Where the public set of an EdDSA key set goes (mode 0644), the file for
    /// jwt.public_keys_file [default: the stack config's jwt.public_keys_file when FILE is its
    /// jwt.keys_file, else NAME.public.json beside FILE].
    #[arg(long, value_name = "PUBLIC", requires = "out")]
    pub(crate) public_out: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "out")]
    pub(crate) force: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RotateArgs {
    /// The EdDSA key set to rotate [default: the stack config's jwt.keys_file].
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// The new key's id [default: today's date and a random suffix].
    #[arg(long, value_name = "KID")]
    pub(crate) kid: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RetireArgs {
    /// The key id to remove.
    pub(crate) kid: String,
    /// The EdDSA key set [default: the stack config's jwt.keys_file].
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Retire it even though tokens it signed may still be valid: their users are logged out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub async fn run(ctx: &Context, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate(a) => generate(ctx, a),
        KeysCommand::Rotate(a) => rotate(ctx, a).await,
        KeysCommand::Retire(a) => retire(ctx, a).await,
    }
}

fn generate(ctx: &Context, a: GenerateArgs) -> anyhow::Result<()> {
    let (text, set, kid) = match a.algorithm {
        Algorithm::EdDsa => {
            let kid = kid_or_fresh(a.kid)?;
            let file = KeyFile { signing_kid: Some(kid.clone()), keys: vec![KeyFile::generate_jwk(&kid)] };
            (key_set_text(&file)?, Some(file), Some(kid))
        }
        Algorithm::Hs256 if a.kid.is_some() || a.public_out.is_some() => {
            let e = "--kid and --public-out are for EdDSA keys: an HS256 key has no key id and no public part";
            return Err(UsageError(e.into()).into());
        }
        Algorithm::Hs256 => (hs256_text(), None, None),
    };
    let Some(path) = a.out else {
        out(text.trim_end());
        return Ok(());
    };
    if a.force {
        replace_private(&path, &text)?;
    } else {
        create_private(&path, &text)?;
    }
    let public = match &set {
        Some(set) => {
            let public = a.public_out.unwrap_or_else(|| public_path(ctx, &path));
            write_public(&public, set)?;
            Some(public)
        }
        None => None,
    };
    let (alg, setting) = match a.algorithm {
        Algorithm::EdDsa => ("EdDSA", "jwt.keys_file"),
        Algorithm::Hs256 => ("HS256", "jwt.key_file"),
    };
    if ctx.format != Format::Table {
        ctx.format
            .print(&json!({"file": path, "public_file": public, "algorithm": alg, "kid": kid, "setting": setting}));
    } else {
        let kid = kid.map(|k| format!(" (key id {k})")).unwrap_or_default();
        let public = public.map_or_else(String::new, |p| {
            format!(
                ", and its public set to {} (mode 0644), for the backends' jwt.public_keys_file: they then hold no \
                 key that signs",
                p.display()
            )
        });
        out(format_args!(
            "Wrote an {alg} key{kid} to {} (mode 0600, for the verifiers){public}. Name it in the config as \
             jwt.algorithm = \"{alg}\" and {setting}.",
            path.display()
        ));
    }
    Ok(())
}

async fn rotate(ctx: &Context, a: RotateArgs) -> anyhow::Result<()> {
    let (path, public, config) = key_set_path(ctx, a.file, "rotate")?;
    let mut file = read_key_set(&path)?;
    let kid = kid_or_fresh(a.kid)?;
    if file.keys.iter().any(|k| k.kid == kid) {
        return Err(UsageError(format!("{} already has a key {kid:?}: choose another --kid", path.display())).into());
    }
    let old: Vec<String> = file.keys.iter().map(|k| k.kid.clone()).collect();
    // Two writes: first the new key beside the old ones, still signing with the old key, so that
    // every verifier and backend knows the new public key before any token is signed with it
    // (else a backend that reloads later than a verifier would refuse the first new tokens);
    // then the new key signs and the old keys lose their private parts.
    file.keys.push(KeyFile::generate_jwk(&kid));
    write_key_set(&path, &public, &file)?;
    tokio::time::sleep(RELOAD_WAIT).await;
    for key in file.keys.iter_mut().filter(|k| k.kid != kid) {
        key.d = None;
    }
    file.signing_kid = Some(kid.clone());
    write_key_set(&path, &public, &file)?;
    tokio::time::sleep(RELOAD_WAIT).await;
    // When the old keys' last tokens have expired, after every process has reloaded.
    let wait = config.as_ref().map(|c| c.jwt.policy.valid_for_at_most() + 1);
    let retire: Vec<String> = old.iter().map(|k| format!("shopctl keys retire {k}")).collect();
    if let Some(wait) = wait {
        // A key retired by an earlier rotation keeps its own, earlier, time.
        let mut retirable = read_retirable(&path)?;
        let at = unix_now() + wait;
        for k in &old {
            retirable.entry(k.clone()).or_insert(at);
        }
        write_retirable(&path, &retirable)?;
    }
    if ctx.format != Format::Table {
        ctx.format.print(&json!({
            "file": path,
            "public_file": public,
            "signing_kid": kid,
            "verify_only": old,
            "retire_after_seconds": wait,
            "then": retire,
        }));
    } else {
        let when = wait.map_or_else(|| "jwt.ttl_seconds + 2 × jwt.leeway_seconds".to_owned(), |s| format!("{s} s"));
        out(format_args!(
            "Rotated {}: every verifier now signs new tokens with {kid}, and every backend takes them; tokens of {} \
             keep passing. After {when} (the old tokens' life), run: {}.",
            path.display(),
            old.join(", "),
            retire.join(", then "),
        ));
    }
    Ok(())
}

async fn retire(ctx: &Context, a: RetireArgs) -> anyhow::Result<()> {
    let (path, public, _) = key_set_path(ctx, a.file, "retire")?;
    let mut file = read_key_set(&path)?;
    if file.signing_kid.as_deref() == Some(a.kid.as_str()) {
        anyhow::bail!("{} is the signing key of {}: run shopctl keys rotate first", a.kid, path.display());
    }
    let before = file.keys.len();
    file.keys.retain(|k| k.kid != a.kid);
    if file.keys.len() == before {
        let kids: Vec<&str> = file.keys.iter().map(|k| k.kid.as_str()).collect();
        anyhow::bail!("{} has no key {:?} (its keys: {})", path.display(), a.kid, kids.join(", "));
    }
    if file.keys.is_empty() {
        anyhow::bail!("{} is the last key of {}: a key set needs one", a.kid, path.display());
    }
    let mut retirable = read_retirable(&path)?;
    if !a.force {
        let now = unix_now();
        match retirable.get(&a.kid) {
            Some(&at) if at <= now => {}
            Some(&at) => anyhow::bail!(
                "tokens signed by {} can still be valid for {} s (until {}): run this again then, or add --force \
                 to make them fail now (their users are logged out)",
                a.kid,
                at - now,
                rfc3339(at)
            ),
            None => anyhow::bail!(
                "no record of when {}'s tokens expire (shopctl keys rotate keeps one in {}): they may still be \
                 valid; add --force once they have expired",
                a.kid,
                retirable_path(&path).display()
            ),
        }
    }
    write_key_set(&path, &public, &file)?;
    if retirable.remove(&a.kid).is_some() {
        write_retirable(&path, &retirable)?;
    }
    tokio::time::sleep(RELOAD_WAIT).await;
    if ctx.format != Format::Table {
        ctx.format
            .print(&json!({"file": path, "public_file": public, "retired": a.kid, "signing_kid": file.signing_kid}));
    } else {
        out(format_args!(
            "Retired {} from {}: every verifier and backend has dropped it, so its tokens fail.",
            a.kid,
            path.display()
        ));
    }
    Ok(())
}

/// Beside key set `keys`: when each key it no longer signs with may be retired, unix seconds by
/// key id.
fn retirable_path(keys: &Path) -> PathBuf {
    let mut name = keys.as_os_str().to_owned();
    name.push(".retirable");
    PathBuf::from(name)
}

fn read_retirable(keys: &Path) -> anyhow::Result<BTreeMap<String, i64>> {
    let path = retirable_path(keys);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_retirable(keys: &Path, retirable: &BTreeMap<String, i64>) -> anyhow::Result<()> {
    replace_private(&retirable_path(keys), &(serde_json::to_string_pretty(retirable)? + "\n"))
}

/// `--file`, else the stack config's `jwt.keys_file`; its public set's path ([`public_path`]);
/// and the stack config if there is one (for the token life). An HS256 stack is refused: its one
/// key cannot be rotated without failing every token, and a rotation cannot change the algorithm.
fn key_set_path(
    ctx: &Context,
    file: Option<PathBuf>,
    verb: &str,
) -> anyhow::Result<(PathBuf, PathBuf, Option<Config>)> {
    let Some(file) = file else {
        let config = stack::load_config(ctx)?;
        if config.jwt.keys().alg() != "EdDSA" {
            anyhow::bail!(
                "the stack in {} uses HS256, whose single key cannot be {verb}d without failing every token it signed \
                 (and a rotation cannot change the algorithm): to move to EdDSA, shopctl keys generate --out FILE, \
                 set jwt.algorithm = \"EdDSA\" and jwt.keys_file = FILE, and restart",
                config.path.display()
            );
        }
        let path = config.jwt.key_file().map(Path::to_path_buf).context("the stack config names no jwt.keys_file")?;
        let public = config.jwt.public_keys_file_for(&path);
        return Ok((path, public, Some(config)));
    };
    let config = stack::config_path(ctx).and_then(|p| stack::load_from(&p).ok());
    let public = config.as_ref().map_or_else(|| default_public_keys_file(&file), |c| c.jwt.public_keys_file_for(&file));
    Ok((file, public, config))
}

/// Where the public set of key set `keys` goes: the stack config's `jwt.public_keys_file` when
/// `keys` is its `jwt.keys_file`, else beside `keys`.
fn public_path(ctx: &Context, keys: &Path) -> PathBuf {
    match stack::config_path(ctx).and_then(|p| stack::load_from(&p).ok()) {
        Some(config) => config.jwt.public_keys_file_for(keys),
        None => default_public_keys_file(keys),
    }
}

/// A stack's key set at `keys` and its public set at `public`, made if `keys` is missing (one new
/// signing key), and the public set written again from `keys` otherwise, so the two agree.
pub(crate) fn ensure_key_set(keys: &Path, public: &Path) -> anyhow::Result<()> {
    if keys.exists() {
        return write_public(public, &read_key_set(keys)?);
    }
    let kid = kid_or_fresh(None)?;
    let file = KeyFile { signing_kid: Some(kid.clone()), keys: vec![KeyFile::generate_jwk(&kid)] };
    write_public(public, &file)?;
    create_private(keys, &key_set_text(&file)?)
}

/// Writes key set `file` to `path` (0600) and its public set to `public` (0644), each whole, the
/// public set first: a key is known to every backend before any verifier can sign with it.
fn write_key_set(path: &Path, public: &Path, file: &KeyFile) -> anyhow::Result<()> {
    let text = key_set_text(file)?;
    write_public(public, file)?;
    replace_private(path, &text)
}

/// Writes the public set of key set `file` to `public` whole (mode 0644), after the backends'
/// check of it.
fn write_public(public: &Path, file: &KeyFile) -> anyhow::Result<()> {
    let set = file.public();
    EdKeys::from_public_file(&set).context("the public key set")?;
    let text = serde_json::to_string_pretty(&set)? + "\n";
    shopgate_core::files::replace_public(public, text.as_bytes())
        .with_context(|| format!("replacing {}", public.display()))
}

/// Reads and checks an EdDSA key set, as the config loader would.
fn read_key_set(path: &Path) -> anyhow::Result<KeyFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an EdDSA key set ({e}); an HS256 key has no rotation (a single key, and a rotation cannot \
             change the algorithm)",
            path.display()
        )
    })?;
    EdKeys::from_file(&file).with_context(|| format!("the key set in {}", path.display()))?;
    Ok(file)
}

/// A key set as its file holds it, after the loader's checks.
fn key_set_text(file: &KeyFile) -> anyhow::Result<String> {
    EdKeys::from_file(file).context("the new key set")?;
    Ok(serde_json::to_string_pretty(file)? + "\n")
}

/// A random 32-byte HS256 key, as `jwt.key_file` reads it.
fn hs256_text() -> String {
    let bytes = rand::random::<[u8; 32]>();
    // 32 random bytes are never short, all one byte or a placeholder; the check says so anyway.
    debug_assert!(Hs256Key::new(&bytes).is_ok());
    format!("base64url:{}\n", URL_SAFE_NO_PAD.encode(bytes))
}

/// `--kid`, checked as the loader checks key ids, else today's date and a random suffix.
fn kid_or_fresh(kid: Option<String>) -> Result<String, UsageError> {
    match kid {
        Some(k) if k.trim().is_empty() || k.len() > 64 || k.chars().any(char::is_control) => {
            Err(UsageError(format!("--kid {k:?}: a key id is 1-64 characters")))
        }
        Some(k) => Ok(k),
        None => {
            let date = shopgate_core::time::rfc3339(shopgate_core::time::unix_now());
            let suffix: String = rand::random::<[u8; 3]>().iter().map(|b| format!("{b:02x}")).collect();
            Ok(format!("{}-{suffix}", &date[..10]))
        }
    }
}

/// Creates `path` with mode 0600; an existing file is refused.
fn create_private(path: &Path, text: &str) -> anyhow::Result<()> {
    shopgate_core::files::create_private(path, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!("{} exists: pass --force to replace it", path.display()),
        _ => anyhow::anyhow!("creating {}: {e}", path.display()),
    })
}

/// Replaces `path` whole (mode 0600), so a process reading the file sees the old one or the new
/// one, never half of either.
fn replace_private(path: &Path, text: &str) -> anyhow::Result<()> {
    shopgate_core::files::replace_private(path, text.as_bytes())
        .with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use clap::Parser as _;
    use shopgate_core::config::{ConfigBuilder, DEV_KEY_FILE};

    use super::*;

    /// `shopctl ARGS` with the stack config at `config`.
    async fn shopctl(config: &Path, args: &[&str]) -> anyhow::Result<()> {
        let mut argv = vec!["shopctl", "--json", "--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        crate::run(crate::Cli::try_parse_from(argv).unwrap()).await
    }

    /// A stack config in `dir`: EdDSA with `keys.json`, or HS256 with `jwt.key`.
    fn stack_config(dir: &Path, eddsa: bool) -> PathBuf {
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let mut builder = ConfigBuilder::new(addr(8080), &[addr(9000)]).shard("a", 0, "all", addr(9001));
        if eddsa {
            builder = builder.eddsa("keys.json");
        }
        let path = dir.join("shop.toml");
        std::fs::write(&path, builder.to_toml()).unwrap();
        path
    }

    fn key_set(path: &Path) -> KeyFile {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The public set at `public` is exactly the one of the key set at `keys`, mode 0644, and
    /// loads under the backends' rule.
    fn assert_in_step(keys: &Path, public: &Path) {
        let text = std::fs::read_to_string(public).unwrap();
        assert!(!text.contains("\"d\"") && !text.contains("signing_kid"), "{text}");
        let set: KeyFile = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&set).unwrap(), serde_json::to_value(key_set(keys).public()).unwrap());
        EdKeys::from_public_file(&set).unwrap();
        assert_eq!(mode(public), 0o644);
    }

    #[tokio::test]
    async fn generated_keys_load_with_the_config_loader_and_files_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let config = stack_config(dir.path(), true);
        let keys = dir.path().join("keys.json");
        shopctl(&config, &["keys", "generate", "--kid", "k1", "--out", keys.to_str().unwrap()]).await.unwrap();
        assert_eq!(mode(&keys), 0o600);
        let public = dir.path().join("keys.public.json");
        assert_in_step(&keys, &public);
        let loaded = Config::load_with_env(&config, []).unwrap();
        assert_eq!(loaded.jwt.keys().alg(), "EdDSA");
        assert!(loaded.jwt.keys().can_sign());
        assert_eq!(key_set(&keys).signing_kid.as_deref(), Some("k1"));

        let refused = shopctl(&config, &["keys", "generate", "--out", keys.to_str().unwrap()]).await.unwrap_err();
        assert!(format!("{refused:#}").contains("--force"), "{refused:#}");
        assert_eq!(key_set(&keys).signing_kid.as_deref(), Some("k1"), "the file was changed");
        shopctl(&config, &["keys", "generate", "--kid", "k9", "--force", "--out", keys.to_str().unwrap()])
            .await
            .unwrap();
        assert_eq!(key_set(&keys).signing_kid.as_deref(), Some("k9"));
        assert_eq!(mode(&keys), 0o600);
        assert_in_step(&keys, &public);
        let elsewhere = dir.path().join("pub.json");
        let other = dir.path().join("other.json");
        let args = ["keys", "generate", "--out", other.to_str().unwrap(), "--public-out", elsewhere.to_str().unwrap()];
        shopctl(&config, &args).await.unwrap();
        assert_in_step(&other, &elsewhere);

        // HS256: the text jwt.key_file takes.
        let hs = stack_config(dir.path(), false);
        let key = dir.path().join(DEV_KEY_FILE);
        shopctl(&hs, &["keys", "generate", "--algorithm", "hs256", "--out", key.to_str().unwrap()]).await.unwrap();
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(text.starts_with("base64url:") && text.trim().len() == "base64url:".len() + 43, "{text}");
        assert_eq!(Config::load_with_env(&hs, []).unwrap().jwt.keys().alg(), "HS256");
        let kid = shopctl(&hs, &["keys", "generate", "--algorithm", "HS256", "--kid", "x"]).await.unwrap_err();
        assert_eq!(crate::exit_code(&kid), 2);
    }

    #[tokio::test]
    async fn rotate_then_retire_keeps_every_step_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let config = stack_config(dir.path(), true);
        let keys = dir.path().join("keys.json");
        shopctl(&config, &["keys", "generate", "--kid", "k1", "--out", keys.to_str().unwrap()]).await.unwrap();
        let before = key_set(&keys);

        shopctl(&config, &["keys", "rotate", "--kid", "k2"]).await.unwrap();
        let rotated = key_set(&keys);
        assert_eq!(rotated.signing_kid.as_deref(), Some("k2"));
        let kids: Vec<(&str, bool)> = rotated.keys.iter().map(|k| (k.kid.as_str(), k.d.is_some())).collect();
        assert_eq!(kids, [("k1", false), ("k2", true)], "the old key keeps only its public part");
        assert_eq!(rotated.keys[0].x, before.keys[0].x);
        assert_eq!(mode(&keys), 0o600);
        let public = dir.path().join("keys.public.json");
        assert_in_step(&keys, &public);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let loaded = Config::load_with_env(&config, []).unwrap();
        assert_eq!(loaded.jwt.keys().jwks()["keys"].as_array().unwrap().len(), 2);

        // A default kid is fresh; a kid in use is refused.
        shopctl(&config, &["keys", "rotate"]).await.unwrap();
        let third = key_set(&keys);
        assert_eq!(third.keys.len(), 3);
        assert!(third.signing_kid.as_deref().is_some_and(|k| k != "k1" && k != "k2"));
        assert!(third.keys.iter().filter(|k| k.d.is_some()).count() == 1);
        assert_in_step(&keys, &public);
        assert!(shopctl(&config, &["keys", "rotate", "--kid", "k1"]).await.is_err());

        // Retire: not the signing key, not an unknown one; the others go.
        let signing = third.signing_kid.clone().unwrap();
        let refused = shopctl(&config, &["keys", "retire", &signing]).await.unwrap_err();
        assert!(format!("{refused:#}").contains("signing key"), "{refused:#}");
        assert!(format!("{:#}", shopctl(&config, &["keys", "retire", "k7"]).await.unwrap_err()).contains("no key"));
        // Not while its tokens may be valid: rotate noted when they expire.
        let early = shopctl(&config, &["keys", "retire", "k1"]).await.unwrap_err();
        assert!(format!("{early:#}").contains("--force"), "{early:#}");
        assert_eq!(key_set(&keys).keys.len(), 3, "a refused retire leaves the key set alone");
        let retirable = dir.path().join("keys.json.retirable");
        assert_eq!(mode(&retirable), 0o600);
        let mut times: BTreeMap<String, i64> =
            serde_json::from_str(&std::fs::read_to_string(&retirable).unwrap()).unwrap();
        assert_eq!(times.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(times["k1"] > unix_now() + 3000, "an hour's tokens: {times:?}");
        // Once that time has passed it goes without --force, and its note with it.
        times.insert("k1".into(), unix_now() - 1);
        std::fs::write(&retirable, serde_json::to_string(&times).unwrap()).unwrap();
        shopctl(&config, &["keys", "retire", "k1"]).await.unwrap();
        let times: BTreeMap<String, i64> = serde_json::from_str(&std::fs::read_to_string(&retirable).unwrap()).unwrap();
        assert!(!times.contains_key("k1"), "{times:?}");
        shopctl(&config, &["keys", "retire", "--file", keys.to_str().unwrap(), "k2", "--force"]).await.unwrap();
        let left = key_set(&keys);
        assert_eq!(left.keys.len(), 1);
        assert_eq!(left.signing_kid, Some(signing));
        assert_in_step(&keys, &public);
        assert!(Config::load_with_env(&config, []).unwrap().jwt.keys().can_sign());
    }

    #[tokio::test]
    async fn the_public_set_goes_where_the_config_names_it_and_backends_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = stack_config(dir.path(), true);
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .replace("keys_file = \"keys.json\"", "keys_file = \"keys.json\"\npublic_keys_file = \"public/set.json\"");
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        let keys = dir.path().join("keys.json");
        let public = dir.path().join("public/set.json");
        // The config cannot load before there are keys: generate names the public file itself.
        let args = ["keys", "generate", "--kid", "k1", "--out", keys.to_str().unwrap(), "--public-out"];
        shopctl(&config, &[&args[..], &[public.to_str().unwrap()]].concat()).await.unwrap();
        assert_in_step(&keys, &public);
        shopctl(&config, &["keys", "rotate", "--kid", "k2"]).await.unwrap();
        assert_in_step(&keys, &public);
        assert!(!dir.path().join("keys.public.json").exists(), "only where the config names it");
        let backend = Config::load_with_env_for(&config, [], shopgate_core::config::KeyUse::Verify).unwrap();
        assert_eq!(backend.jwt.key_file(), Some(public.as_path()));
        assert_eq!(backend.jwt.keys().jwks()["keys"].as_array().unwrap().len(), 2);
        shopctl(&config, &["keys", "retire", "k1", "--force"]).await.unwrap();
        assert_in_step(&keys, &public);
        let e =
            shopctl(&config, &["keys", "generate", "--algorithm", "HS256", "--out", "x", "--public-out", "y"]).await;
        assert_eq!(crate::exit_code(&e.unwrap_err()), 2);
    }

    #[tokio::test]
    async fn an_hs256_stack_is_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let config = stack_config(dir.path(), false);
        std::fs::write(dir.path().join(DEV_KEY_FILE), hs256_text()).unwrap();
        let e = shopctl(&config, &["keys", "rotate"]).await.unwrap_err();
        assert!(format!("{e:#}").contains("HS256"), "{e:#}");
        let key = dir.path().join(DEV_KEY_FILE);
        let e = shopctl(&config, &["keys", "rotate", "--file", key.to_str().unwrap()]).await.unwrap_err();
        assert!(format!("{e:#}").contains("not an EdDSA key set"), "{e:#}");
    }
}
