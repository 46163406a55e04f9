//! `shopctl products`: the catalog.

use crate::client::Client;
use crate::output::{cell, money, print_json, table};
use crate::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this category.
    #[arg(long)]
    pub category: Option<u64>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let path = match args.category {
        Some(c) => format!("/api/products?category_id={c}&limit=100"),
        None => "/api/products?limit=100".to_owned(),
    };
    let answer = Client::logged_in(ctx)?.get(&path).await?;
    if ctx.json {
        print_json(&answer["products"]);
        return Ok(());
    }
    let rows = answer["products"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| vec![cell(&p["id"]), cell(&p["sku"]), cell(&p["name"]), money(&p["price_cents"])])
                .collect()
        })
        .unwrap_or_default();
    println!("{}", table(&["id", "sku", "name", "price"], rows));
    Ok(())
}
