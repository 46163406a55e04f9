//! `shopctl products`: the catalog, a page at a time; public, so no login is needed.

use crate::client::Client;
use crate::output::{cell, money, out, print_json, table};
use crate::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only this category (its id).
    #[arg(long)]
    pub(crate) category: Option<u64>,
    /// How many products.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) limit: u32,
    /// Skip this many products (for the next page).
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut path = format!("/api/products?limit={}&offset={}", args.limit, args.offset);
    if let Some(c) = args.category {
        path.push_str(&format!("&category_id={c}"));
    }
    // The catalog is public: no login needed, and a kept one is not sent.
    let answer = Client::new(ctx)?.get(&path).await?;
    if ctx.json {
        print_json(&answer["products"]);
        return Ok(());
    }
    let products = answer["products"].as_array().cloned().unwrap_or_default();
    let rows = products
        .iter()
        .map(|p| vec![cell(&p["id"]), cell(&p["sku"]), cell(&p["name"]), money(&p["price_cents"])])
        .collect();
    out(table(&["id", "sku", "name", "price"], rows));
    if products.len() == args.limit as usize {
        out(format_args!("More: shopctl products --offset {}", args.offset + args.limit));
    }
    Ok(())
}
