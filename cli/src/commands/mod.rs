//! One file per subcommand: its `Args` and its `run`.

pub mod catalog;
pub(crate) mod categories;
pub(crate) mod completions;
pub mod config;
pub(crate) mod doctor;
pub(crate) mod keys;
pub mod login;
pub(crate) mod logout;
pub(crate) mod monitoring;
pub(crate) mod nginx;
pub mod openapi;
pub mod orders;
pub(crate) mod products;
pub mod register;
pub(crate) mod shards;
pub(crate) mod tokens;
pub mod users;
pub(crate) mod whoami;

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Context as _;

/// `EMAIL [--password-stdin]`: the account, and where its password comes from (register, login).
#[derive(clap::Args, Debug)]
pub struct AccountArgs {
    /// Your email address.
    pub email: String,
    /// Read the password from standard input instead of asking.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

/// Reads a password from stdin (`--password-stdin`) or asks without echo on a terminal.
pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("reading the password")?
    } else {
        return Err(crate::UsageError("no terminal to ask for a password: use --password-stdin".into()).into());
    };
    if pw.is_empty() {
        return Err(crate::UsageError("the password is empty".into()).into());
    }
    Ok(pw)
}
