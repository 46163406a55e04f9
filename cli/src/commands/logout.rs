//! `shopctl logout`: forget the kept token.

use serde_json::json;

use crate::client::Client;
use crate::credentials;
use crate::output::print_json;
use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let client = Client::new(ctx)?;
    let had = credentials::remove(client.base())?;
    if ctx.json {
        print_json(&json!({"logged_out": had, "url": client.base()}));
    } else if had {
        println!("Logged out of {}.", client.base());
    } else {
        println!("Not logged in to {}.", client.base());
    }
    Ok(())
}
