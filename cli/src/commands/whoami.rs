//! `shopctl whoami`: the account behind the kept token.

use crate::client::Client;
use crate::output::{cell, out, table, Format};
use crate::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let me = Client::logged_in(ctx)?.get("/auth/me").await?;
    if ctx.format != Format::Table {
        ctx.format.print_in(&me, &["id", "email"]);
    } else {
        let row = vec![
            cell(&me["id"]),
            cell(&me["email"]),
            cell(&me["is_active"]),
            cell(&me["is_admin"]),
            cell(&me["created_at"]),
        ];
        out(table(&["id", "email", "active", "admin", "created"], vec![row]));
    }
    Ok(())
}
