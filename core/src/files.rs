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

/// The variable naming the file a process's output (stdout and stderr) goes to, when whoever
/// started it (`scripts/up`) appended that output to a file: [`reopen_output`] opens it anew.
pub const LOG_FILE_ENV: &str = "SHOP_LOG_FILE";

/// Points this process's stdout and stderr at a fresh open of `$SHOP_LOG_FILE` (appending,
/// created 0600 if logrotate has moved the old one away), as nginx does on `USR1`: what the
/// process writes from then on goes to the new file, what it wrote before stays in the old one,
/// and no line is split or lost between them (each write lands whole in one file or the other).
/// `Ok(None)` when the variable is unset: the output is a supervisor's (systemd, compose) to
/// rotate.
pub fn reopen_output() -> std::io::Result<Option<std::path::PathBuf>> {
    let Some(path) = std::env::var_os(LOG_FILE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(path);
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
        let file = options.open(&path)?;
        rustix::stdio::dup2_stdout(&file)?;
        rustix::stdio::dup2_stderr(&file)?;
    }
    Ok(Some(path))
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
    fn reopen_output_moves_stdout_and_stderr_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("service.log");
        // This test binary's only test that sets the variable, and no other test reads it.
        std::env::set_var(LOG_FILE_ENV, &log);
        // The test harness captures print!, not writes to fd 1, so write to the fd itself.
        let write_fd1 = |text: &str| rustix::io::write(rustix::stdio::stdout(), text.as_bytes()).unwrap();
        let saved = rustix::io::dup(rustix::stdio::stdout()).unwrap();
        let saved_err = rustix::io::dup(rustix::stdio::stderr()).unwrap();
        assert_eq!(reopen_output().unwrap(), Some(log.clone()));
        write_fd1("before\n");
        std::fs::rename(&log, dir.path().join("service.log.1")).unwrap();
        write_fd1("moved\n");
        reopen_output().unwrap();
        write_fd1("after\n");
        rustix::stdio::dup2_stdout(&saved).unwrap();
        rustix::stdio::dup2_stderr(&saved_err).unwrap();
        std::env::remove_var(LOG_FILE_ENV);
        assert_eq!(std::fs::read_to_string(dir.path().join("service.log.1")).unwrap(), "before\nmoved\n");
        assert_eq!((std::fs::read_to_string(&log).unwrap(), mode(&log)), ("after\n".to_owned(), 0o600));
        assert_eq!(reopen_output().unwrap(), None, "nothing to reopen without the variable");
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
