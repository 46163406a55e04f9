//! `shopctl products`: the catalog, a page at a time; public, so no login is needed.

use serde_json::Value;

use crate::client::Client;
use crate::output::{self, cell, money, note, out, table, Format};
use crate::Context;

const DEFAULT_LIMIT: u32 = 100;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only this category (its id).
    #[arg(long)]
    pub(crate) category: Option<u64>,
    /// How many products.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100))]
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
    let products = answer["products"].as_array().cloned().unwrap_or_default();
    let more = products.len() == args.limit as usize;
    if ctx.format != Format::Table {
        let next = if more { Value::from(args.offset + args.limit) } else { Value::Null };
        ctx.format.print_in(&output::list(products, next), &["id", "sku", "name", "price_cents", "category_id"]);
        if more {
            note(format_args!("More: {}", next_page(&args)));
        }
        return Ok(());
    }
    let rows = products
        .iter()
        .map(|p| vec![cell(&p["id"]), cell(&p["sku"]), cell(&p["name"]), money(&p["price_cents"])])
        .collect();
    out(table(&["id", "sku", "name", "price"], rows));
    if more {
        out(format_args!("More: {}", next_page(&args)));
    }
    Ok(())
}

/// The command for the page after `args`'s, with the same filter and page size.
fn next_page(args: &Args) -> String {
    let mut next = String::from("shopctl products");
    if let Some(c) = args.category {
        next.push_str(&format!(" --category {c}"));
    }
    if args.limit != DEFAULT_LIMIT {
        next.push_str(&format!(" --limit {}", args.limit));
    }
    next.push_str(&format!(" --offset {}", args.offset + args.limit));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_keeps_the_filter_and_the_page_size() {
        let args = Args { category: Some(3), limit: 2, offset: 4 };
        assert_eq!(next_page(&args), "shopctl products --category 3 --limit 2 --offset 6");
        let args = Args { category: None, limit: DEFAULT_LIMIT, offset: 0 };
        assert_eq!(next_page(&args), format!("shopctl products --offset {DEFAULT_LIMIT}"));
    }
}
