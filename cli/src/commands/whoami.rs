//! `shopctl whoami`: the account behind the kept token.

use crate::client::Client;
use crate::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let me = Client::logged_in(ctx)?.get("/auth/me").await?;
    super::print_account(ctx, &me);
    Ok(())
}
