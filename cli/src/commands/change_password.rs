//! `shopctl change-password`: a new password for the account logged in here
//! (`POST /auth/change-password`).
//!
//! The shop then refuses every token of the account issued until now, the kept one included, and
//! answers "log in again". shopctl has just been given the new password, so it logs in again
//! itself and keeps the new token in place of the refused one: the person stays logged in here,
//! and every other session of theirs is ended. If that login fails (the shop went away in
//! between), the refused token is forgotten, and the command says so and how to log in. A token
//! from `SHOPCTL_TOKEN` is refused the same way; nothing is kept for it, before or after.
//!
//! `--password-stdin` reads two lines: the current password, then the new one.

use anyhow::Context as _;
use serde_json::json;

use crate::client::Client;
use crate::output::{out, warn, Format};
use crate::{credentials, Context};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Read the passwords from standard input instead of asking: the current one on the first
    /// line, the new one on the second.
    #[arg(long)]
    password_stdin: bool,
}

/// What became of the login here once the password changed.
enum After {
    /// Logged in again with the new password; the new token is kept.
    LoggedIn { email: String, expires_in: i64 },
    /// The login again failed: the refused token is forgotten.
    LoggedOut { email: String, why: String },
    /// The token was `SHOPCTL_TOKEN`'s: nothing kept.
    EnvToken,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    // Before asking anything: there must be a login to change the password of.
    let client = Client::logged_in(ctx)?;
    let current = super::read_password(args.password_stdin, "Current password: ")?;
    let new = super::read_new_password(args.password_stdin, "New password: ", "Repeat the new password: ")
        .with_context(|| {
            if args.password_stdin {
                "the new password (--password-stdin reads two lines: the current password, then the new one)"
            } else {
                "the new password"
            }
        })?;
    client.post_json("/auth/change-password", &json!({"current_password": current, "new_password": new}), &[]).await?;
    let after = match client.kept_email() {
        None => After::EnvToken,
        Some(email) => match super::login::log_in(&Client::new(ctx)?, email, &new).await {
            Ok(expires_in) => After::LoggedIn { email: email.to_owned(), expires_in },
            Err(e) => {
                credentials::remove(client.base())?;
                After::LoggedOut { email: email.to_owned(), why: crate::error_line(&e) }
            }
        },
    };
    let base = client.base();
    if ctx.format != Format::Table {
        let answer = match &after {
            After::LoggedIn { email, expires_in } => {
                json!({"changed": true, "url": base, "email": email, "logged_in": true, "expires_in": expires_in, "warning": null})
            }
            After::LoggedOut { email, why } => {
                json!({"changed": true, "url": base, "email": email, "logged_in": false, "expires_in": null, "warning": why})
            }
            After::EnvToken => {
                json!({"changed": true, "url": base, "email": null, "logged_in": false, "expires_in": null, "warning": null})
            }
        };
        ctx.format.print(&answer);
    } else {
        out("Password changed; every token issued before is refused from now on.");
        match &after {
            After::LoggedIn { email, expires_in } => {
                out(format_args!("Logged in again to {base} as {email} (for {} minutes).", expires_in / 60));
            }
            After::LoggedOut { .. } => {}
            After::EnvToken => out(format_args!("{} is refused too: get a new token.", crate::client::TOKEN_VAR)),
        }
    }
    if let After::LoggedOut { email, why } = &after {
        warn(format_args!("could not log in again ({why}); the old login is forgotten: run `shopctl login {email}`"));
    }
    Ok(())
}
