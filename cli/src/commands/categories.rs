//! `shopctl categories`: the catalog's categories, whose ids `shopctl products --category` takes.
//! Public, so no login is needed.

use crate::client::Client;
use crate::output::{self, cell, out, table, Format};
use crate::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let answer = Client::new(ctx)?.get("/api/categories").await?;
    let categories = answer["categories"].as_array().cloned().unwrap_or_default();
    if ctx.format != Format::Table {
        ctx.format.print_in(&output::list(categories, serde_json::Value::Null), &["id", "name"]);
        return Ok(());
    }
    let rows = categories.iter().map(|c| vec![cell(&c["id"]), cell(&c["name"])]).collect();
    out(table(&["id", "name"], rows));
    Ok(())
}
