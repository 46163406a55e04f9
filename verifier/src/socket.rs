//! The unix socket nginx on this host reaches the verifier through
//! ([`VerifierConfig::socket_path`](shopgate_core::config::VerifierConfig::socket_path)): a
//! request on it is nginx's, so its `X-Real-IP` is believed without a look at the peer. That holds
//! only while nobody else can connect, so the socket and its folder let in this verifier's user
//! and nginx's workers alone:
//!
//! - nginx unprivileged (no `nginx.user`): its workers are this same user. Folder 0700, socket 0600.
//! - nginx's master as root, its workers as `nginx.user` and the group of the same name (nginx's
//!   rule for `user NAME;`): folder 0750 and socket 0660, both of that group. Setting the group
//!   takes root (or membership of it), as `scripts/up` runs as root.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tokio::net::UnixListener;

/// The verifier's listening unix socket and the file it is bound to.
pub(crate) struct Socket {
    pub(crate) listener: UnixListener,
    pub(crate) file: SocketFile,
}

/// A bound socket's file.
pub(crate) struct SocketFile {
    pub(crate) path: PathBuf,
    /// Its inode when bound: at the stop the file is removed only if it is still this one (a
    /// verifier started meanwhile on the same port has bound a new one).
    inode: u64,
}

impl Socket {
    /// Binds `path`, its folder and it given the modes and group above. A socket file nobody
    /// answers on (left by a verifier that was killed) is replaced; one a live process answers on
    /// is an error, as a TCP port in use is.
    pub(crate) fn bind(path: &Path, nginx_user: Option<&str>) -> anyhow::Result<Socket> {
        let dir = path.parent().with_context(|| format!("the socket {} has no folder", path.display()))?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the socket folder {}", dir.display()))?;
        let group = nginx_user.map(group_id).transpose()?;
        let (dir_mode, socket_mode) = if group.is_some() { (0o750, 0o660) } else { (0o700, 0o600) };
        restrict(dir, dir_mode, group).with_context(|| format!("the socket folder {}", dir.display()))?;
        remove_stale(path)?;
        let listener =
            UnixListener::bind(path).with_context(|| format!("cannot bind the unix socket {}", path.display()))?;
        restrict(path, socket_mode, group).with_context(|| format!("the unix socket {}", path.display()))?;
        let inode = std::fs::metadata(path)?.ino();
        Ok(Socket { listener, file: SocketFile { path: path.to_owned(), inode } })
    }
}

impl SocketFile {
    /// Removes the file once the verifier has stopped serving on it, unless another verifier has
    /// bound that path since.
    pub(crate) fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Sets `path`'s mode, and its group if given. A folder must be this user's own: its mode is the
/// verifier's to set (a `socket_dir` naming a system folder is refused, not changed).
fn restrict(path: &Path, mode: u32, group: Option<u32>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() && meta.uid() != rustix::process::geteuid().as_raw() {
        bail!(
            "is not this user's own folder (owner uid {}); make verifier.socket_dir a folder of the stack's",
            meta.uid()
        );
    }
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| {
            format!(
                "cannot give it to group {gid} (nginx.user's): the verifier needs root for that, as scripts/up runs it"
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Removes a socket file at `path` that no process answers on; a live one, or a file that is not
/// a socket, is an error.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket; remove it or choose another verifier.socket_dir", path.display());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("another process answers on {} (a verifier on the same port?)", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))
}

/// The id of the group named `name`, the group nginx's workers run as under `user NAME;`, from
/// /etc/group.
fn group_id(name: &str) -> anyhow::Result<u32> {
    let groups = std::fs::read_to_string("/etc/group").context("cannot read /etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))?
        })
        .with_context(|| {
            format!(
                "nginx.user {name}: there is no group {name} in /etc/group, which nginx's workers would run as \
                 (`useradd --system --user-group {name}` makes both)"
            )
        })
}
