//! `shopctl login EMAIL`: get a token and keep it (mode 0600). The token is not printed.

use serde_json::json;

use crate::client::{now, Client};
use crate::credentials::{self, Credential};
use crate::output::{out, Format};
use crate::Context;

pub use super::AccountArgs as Args;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let password = super::read_password(args.password_stdin, "Password: ")?;
    let client = Client::new(ctx)?;
    let expires_in = log_in(&client, &args.email, &password).await?;
    if ctx.format != Format::Table {
        ctx.format.print(&json!({"email": args.email, "url": client.base(), "expires_in": expires_in}));
    } else {
        out(format_args!("Logged in to {} as {} (for {} minutes).", client.base(), args.email, expires_in / 60));
    }
    Ok(())
}

/// Gets a token for `email` from the shop `client` talks to and keeps it as the login to that
/// shop, in place of any earlier one; returns its lifetime in seconds.
pub(crate) async fn log_in(client: &Client, email: &str, password: &str) -> anyhow::Result<i64> {
    let answer = client
        .post_form("/auth/token", &[("grant_type", "password"), ("username", email), ("password", password)])
        .await?;
    let token = answer["access_token"].as_str().ok_or_else(|| anyhow::anyhow!("the shop answered without a token"))?;
    let expires_in = answer["expires_in"].as_i64().unwrap_or(0);
    let expires_at = now() + expires_in;
    credentials::put(
        client.base(),
        Credential { email: email.to_owned(), access_token: token.to_owned(), expires_at },
    )?;
    Ok(expires_in)
}
