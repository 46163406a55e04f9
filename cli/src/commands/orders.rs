//! `shopctl orders create|list|show|cancel`.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{ApiError, Client};
use crate::output::{self, cell, money, note, out, table, Format};
use crate::Context;

#[derive(Subcommand, Debug)]
pub(crate) enum OrdersCommand {
    /// Place an order: `--item PRODUCT_ID:QUANTITY`, repeated.
    Create(CreateArgs),
    /// Your orders, newest first.
    List(ListArgs),
    /// One of your orders with its items.
    Show { id: u64 },
    /// Cancel one of your orders.
    Cancel { id: u64 },
}

#[derive(clap::Args, Debug)]
pub(crate) struct CreateArgs {
    /// PRODUCT_ID:QUANTITY, e.g. `--item 3:2`.
    #[arg(long = "item", required = true, value_parser = parse_item, value_name = "ID:QTY")]
    pub(crate) items: Vec<(u64, u32)>,
    /// Retrying with the same key never places a second order [default: a fresh key].
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    /// How many orders.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) limit: u32,
    /// Only orders older than this order id (the `next` of the previous page).
    #[arg(long)]
    pub(crate) before: Option<u64>,
    /// Only orders in this state.
    #[arg(long, value_enum)]
    pub(crate) status: Option<Status>,
    /// Every order (following the pages to the end), not one page.
    #[arg(long, conflicts_with = "limit")]
    pub(crate) all: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Placed,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Cancelled => "cancelled",
        }
    }
}

const DEFAULT_LIMIT: u32 = 20;

/// An order's first columns in TSV.
const ORDER_COLUMNS: &[&str] = &["id", "status", "total_cents", "created_at"];

/// The biggest page the API gives; `--all` and `--status` read pages of this size.
const MAX_PAGE: u32 = 100;

fn parse_item(s: &str) -> Result<(u64, u32), String> {
    let (id, qty) = s.split_once(':').ok_or("expected PRODUCT_ID:QUANTITY, e.g. 3:2")?;
    let id = id.parse::<u64>().map_err(|_| format!("product id {id:?} is not a number"))?;
    let qty = qty.parse::<u32>().map_err(|_| format!("quantity {qty:?} is not a number"))?;
    if qty == 0 {
        return Err("quantity must be at least 1".into());
    }
    Ok((id, qty))
}

pub async fn run(ctx: &Context, cmd: OrdersCommand) -> anyhow::Result<()> {
    let client = Client::logged_in(ctx)?;
    match cmd {
        OrdersCommand::Create(a) => {
            let items: Vec<Value> = a.items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect();
            let key = a.idempotency_key.unwrap_or_else(shopgate_core::token::new_jti);
            let order = client
                .post_json("/api/orders", &json!({ "items": items }), &[("Idempotency-Key", &key)])
                .await
                .map_err(|e| match e.downcast_ref::<ApiError>() {
                    Some(api) if api.code == "unknown_product" => {
                        anyhow::anyhow!("{}: see `shopctl products` for the catalog", api.message)
                    }
                    _ => e,
                })?;
            show_order(ctx, &order);
        }
        OrdersCommand::List(a) => {
            let (orders, next) = list(&client, &a).await?;
            if ctx.format != Format::Table {
                ctx.format.print_in(&output::list(orders, next.map_or(Value::Null, Value::from)), ORDER_COLUMNS);
                if let Some(next) = next {
                    note(format_args!("More: {}", next_page(&a, next)));
                }
                return Ok(());
            }
            let rows = orders
                .iter()
                .map(|o| {
                    let n = o["items"].as_array().map_or(0, Vec::len);
                    vec![
                        cell(&o["id"]),
                        cell(&o["status"]),
                        n.to_string(),
                        money(&o["total_cents"]),
                        cell(&o["created_at"]),
                    ]
                })
                .collect();
            out(table(&["id", "status", "items", "total", "created"], rows));
            if let Some(next) = next {
                out(format_args!("More: {}", next_page(&a, next)));
            }
        }
        OrdersCommand::Show { id } => {
            show_order(ctx, &client.get(&format!("/api/orders/{id}")).await.map_err(|e| not_yours(e, id))?)
        }
        OrdersCommand::Cancel { id } => show_order(
            ctx,
            &client
                .post_json(&format!("/api/orders/{id}/cancel"), &json!({}), &[])
                .await
                .map_err(|e| not_yours(e, id))?,
        ),
    }
    Ok(())
}

/// The orders `args` ask for, newest first, and the cursor of the next page if there is more.
/// With `--status`, pages are read until `--limit` orders in that state are found (the API lists
/// every state); with `--all`, to the end.
async fn list(client: &Client, args: &ListArgs) -> anyhow::Result<(Vec<Value>, Option<u64>)> {
    let want = if args.all { usize::MAX } else { args.limit as usize };
    let page_size = if args.all || args.status.is_some() { MAX_PAGE } else { args.limit };
    let mut before = args.before;
    let mut found = Vec::new();
    loop {
        let mut path = format!("/api/orders?limit={page_size}");
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        let page = client.get(&path).await?;
        let orders = page["orders"].as_array().cloned().unwrap_or_default();
        let page_next = page["next_before"].as_u64();
        for order in orders {
            if found.len() == want {
                // A full answer: the next page starts after the last order shown.
                return Ok((found, before));
            }
            before = order["id"].as_u64();
            if args.status.is_none_or(|s| order["status"] == s.as_str()) {
                found.push(order);
            }
        }
        match page_next {
            Some(next) if found.len() < want => before = Some(next),
            Some(next) => return Ok((found, Some(next))),
            None => return Ok((found, None)),
        }
    }
}

/// The command for the page after the one shown, with the same filter and page size.
fn next_page(args: &ListArgs, next: u64) -> String {
    let mut cmd = String::from("shopctl orders list");
    if let Some(s) = args.status {
        cmd.push_str(&format!(" --status {}", s.as_str()));
    }
    if args.limit != DEFAULT_LIMIT {
        cmd.push_str(&format!(" --limit {}", args.limit));
    }
    cmd.push_str(&format!(" --before {next}"));
    cmd
}

/// A 404 for an order id says what to do next.
fn not_yours(e: anyhow::Error, id: u64) -> anyhow::Error {
    match e.downcast_ref::<ApiError>() {
        Some(api) if api.status == 404 => anyhow::anyhow!("you have no order {id}: see `shopctl orders list`"),
        _ => e,
    }
}

fn show_order(ctx: &Context, order: &Value) {
    if ctx.format != Format::Table {
        ctx.format.print_in(order, ORDER_COLUMNS);
        return;
    }
    out(format_args!(
        "Order {}: {}, total {}, placed {}",
        cell(&order["id"]),
        cell(&order["status"]),
        money(&order["total_cents"]),
        cell(&order["created_at"])
    ));
    let rows = order["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    vec![
                        cell(&i["product_id"]),
                        cell(&i["name"]),
                        cell(&i["quantity"]),
                        money(&i["unit_price_cents"]),
                        money(&i["line_total_cents"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out(table(&["product", "name", "qty", "unit", "total"], rows));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_item;

    #[test]
    fn items() {
        assert_eq!(parse_item("3:2").unwrap(), (3, 2));
        for bad in ["3", "3:", ":2", "x:2", "3:0", "3:-1", "3:2:1"] {
            assert!(parse_item(bad).is_err(), "{bad:?}");
        }
    }
}
