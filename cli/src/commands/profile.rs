//! `shopctl profile show|create`: your profile on your shard (`GET /api/users/me`,
//! `POST /api/users`).
//!
//! The profile has no field a shopper sets: its id and email come from the token and
//! `is_active` is the operator's, and `POST /api/users` ignores its body by contract (the original
//! design's `{email, is_active, password}`, where a password is never stored). So there is `create`,
//! what that call does, and no `set`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{ApiError, Client};
use crate::output::{cell, out, table, Format};
use crate::Context;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ProfileCommand {
    /// Show your profile on your shard.
    Show,
    /// Make your profile on your shard if it is not there yet (a first order makes it too).
    Create,
}

pub async fn run(ctx: &Context, cmd: ProfileCommand) -> anyhow::Result<()> {
    let client = Client::logged_in(ctx)?;
    match cmd {
        ProfileCommand::Show => {
            let profile = client.get("/api/users/me").await.map_err(|e| match e.downcast_ref::<ApiError>() {
                Some(a) if a.status == 404 => anyhow::anyhow!(
                    "you have no profile on your shard yet: `shopctl profile create` makes it (so does a first order)"
                ),
                _ => e,
            })?;
            print_profile(ctx, &profile);
        }
        ProfileCommand::Create => {
            let (status, profile) = client.post_json_status("/api/users", &json!({})).await?;
            print_profile(ctx, &profile);
            if ctx.format == Format::Table {
                out(if status == StatusCode::CREATED { "Created." } else { "It was there already." });
            }
        }
    }
    Ok(())
}

/// The profile's columns in the order of the account's (`whoami`).
fn print_profile(ctx: &Context, profile: &Value) {
    const FIELDS: [&str; 4] = ["id", "email", "is_active", "created_at"];
    if ctx.format != Format::Table {
        ctx.format.print_in(profile, &FIELDS);
    } else {
        out(table(&["id", "email", "active", "created"], vec![FIELDS.iter().map(|f| cell(&profile[*f])).collect()]));
    }
}
