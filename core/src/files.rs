//! Writing the stack's files whole: a reader (a service reloading its keys, nginx reading its
//! config, shopctl reading a kept login) sees the old file or the new one, never half of either;
//! secrets (keys, configs that may hold passwords, tokens) are created with mode 0600 from the
//! first byte. Everything else a process of the stack creates (databases and their journals,
//! folders) is its owner's alone too ([`private_umask`]).

use std::io::Write as _;
use std::path::Path;

/// Creates `path` with `bytes`, readable by its owner only; an existing file is an error of kind
/// `AlreadyExists`, and is left as it is.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create(path, bytes, 0o600)
}

/// Replaces `path` whole with `bytes`, readable by its owner only: a new file beside it, then a
/// rename over it.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, 0o600)
}

/// Replaces `path` whole with `bytes`, readable by everyone (nginx's workers run as another
/// user): a new file beside it, then a rename over it.
pub fn replace_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, 0o644)
}

/// Makes every file this process creates from now on readable by its owner only (0600, folders
/// 0700), whoever started it with whatever umask: the verifier, the backends and shopctl call it
/// first thing. SQLite creates its database, `-wal`, `-shm` and `-journal` files with 0644 less
/// the umask, and they hold emails, password hashes and orders.
pub fn private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a file name", path.display()))
    })?;
    let suffix: String = rand::random::<[u8; 4]>().iter().map(|b| format!("{b:02x}")).collect();
    let temp = path.with_file_name(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let written = create(&temp, bytes, mode).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn create(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    // Exactly `mode`, whatever the umask (a public file stays readable by nginx's workers).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_created_once_and_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_private(&path, b"one").unwrap();
        assert_eq!(create_private(&path, b"two").unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!((std::fs::read(&path).unwrap(), mode(&path)), (b"one".to_vec(), 0o600));
        replace_public(&path, b"three").unwrap();
        assert_eq!((std::fs::read(&path).unwrap(), mode(&path)), (b"three".to_vec(), 0o644));
        replace_private(&path, b"four").unwrap();
        assert_eq!((std::fs::read(&path).unwrap(), mode(&path)), (b"four".to_vec(), 0o600));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["key"], "no temporary file left");
    }

    #[test]
    fn after_private_umask_what_a_process_creates_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        private_umask();
        std::fs::write(dir.path().join("auth.db"), b"").unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        assert_eq!((mode(&dir.path().join("auth.db")), mode(&dir.path().join("data"))), (0o600, 0o700));
    }
}
