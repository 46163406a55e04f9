//! One file per subcommand: its `Args` and its `run`.

pub(crate) mod auth;
pub(crate) mod backup;
pub mod catalog;
pub(crate) mod categories;
pub(crate) mod change_password;
pub(crate) mod completions;
pub mod config;
pub(crate) mod doctor;
pub(crate) mod keys;
pub mod login;
pub(crate) mod logout;
pub(crate) mod migrate;
pub(crate) mod monitoring;
pub(crate) mod nginx;
pub mod openapi;
pub mod orders;
pub(crate) mod products;
pub(crate) mod profile;
pub mod register;
pub(crate) mod restore;
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
    /// Read the password from standard input (its first line) instead of asking.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

/// Reads a password: one line of standard input (`--password-stdin`), or asked without echo on a
/// terminal. Called again, it reads the next line of standard input.
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

/// Reads a password the account will have from now on (register, change-password): on a
/// terminal it is asked twice, and two different answers are refused before anything is sent,
/// since a typo there would lock the account out. From standard input it is one line: a script
/// has no typo to catch.
pub(crate) fn read_new_password(from_stdin: bool, prompt: &str, again: &str) -> anyhow::Result<String> {
    let pw = read_password(from_stdin, prompt)?;
    if !from_stdin && read_password(false, again)? != pw {
        anyhow::bail!("the two passwords differ: nothing was sent, run the command again");
    }
    Ok(pw)
}
/// How an account (`POST /auth/register`, `GET /auth/me`) is printed, by every command that
/// prints one: the same columns in the same order, as a table or TSV; JSON as the shop gave it.
pub(crate) fn print_account(ctx: &crate::Context, user: &serde_json::Value) {
    use crate::output::{cell, out, table, Format};
    const FIELDS: [&str; 5] = ["id", "email", "is_active", "is_admin", "created_at"];
    if ctx.format != Format::Table {
        ctx.format.print_in(user, &FIELDS);
    } else {
        out(table(
            &["id", "email", "active", "admin", "created"],
            vec![FIELDS.iter().map(|f| cell(&user[*f])).collect()],
        ));
    }
}
