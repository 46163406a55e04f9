//! `shopctl catalog import FILE`: products into every shard's primary.
//!
//! The file is checked whole first (a bad row: nothing is written). Ids are then settled once for
//! all shards, so a product id means the same on every shard: a sku already stored keeps its id,
//! a new one gets the next free id; categories are matched by name the same way. Each shard is
//! written in one transaction (all or nothing per shard), with multi-row upserts by sku in batches.
//! Importing the same file again changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use shopgate_core::config::Config;
use shopgate_store::catalog::{self, ProductUpsert};

use crate::catalog_file::{self, Format, Product};
use crate::db::{bounded, Db};
use crate::output::{self, note, out, table};
use crate::{stack, Context};

/// Rows written between two progress reports.
const BATCH: usize = 500;

#[derive(Subcommand, Debug)]
pub(crate) enum CatalogCommand {
    /// Import products from a CSV or JSON file into every shard (upsert by sku).
    ///
    /// CSV: a header `sku,name,category,price_cents[,description]` (any order), one product per
    /// row. JSON: an array of objects with those keys. Prices are whole cents. Categories are
    /// created by name. The whole file is checked before anything is written.
    Import(ImportArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// The CSV or JSON file; `-` reads standard input.
    pub(crate) file: PathBuf,
    /// The file's format [default: from the extension, else from the content].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) file_format: Option<Format>,
    /// Check the file and show what would change, without writing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

pub async fn run(ctx: &Context, cmd: CatalogCommand) -> anyhow::Result<()> {
    let CatalogCommand::Import(args) = cmd;
    let products = catalog_file::load(&args.file, args.file_format)?;
    let config = stack::load_config(ctx)?;
    import(ctx, &config, &products, args.dry_run).await
}

/// The ids settled for the whole import.
struct Plan {
    product_ids: Vec<i64>,
    new_products: usize,
    /// Products already stored, exactly as the file has them, on every shard.
    unchanged_products: usize,
    categories: BTreeMap<String, i64>,
    new_categories: usize,
}

async fn import(ctx: &Context, config: &Config, products: &[Product], dry_run: bool) -> anyhow::Result<()> {
    // Every shard must answer before anything is written anywhere.
    let mut shards = Vec::new();
    for s in &config.shards {
        let db = Db::connect(&s.primary, &format!("shard {}'s primary", s.name))
            .await
            .map_err(|e| anyhow::anyhow!("{e}: nothing was written to any shard"))?;
        shards.push((s.name.to_string(), db));
    }
    let plan = plan(&shards, products).await?;
    if dry_run {
        let summary = json!({
            "dry_run": true,
            "products": products.len(),
            "new_products": plan.new_products,
            "updated_products": plan.updated(products.len()),
            "unchanged_products": plan.unchanged_products,
            "new_categories": plan.new_categories,
            "shards": shards.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        });
        if ctx.format != output::Format::Table {
            ctx.format.print(&summary);
        } else {
            out(format_args!(
                "{} products are valid: {} new, {} to update, {} unchanged, {} new categories, on shards {}. Nothing written (--dry-run).",
                products.len(),
                plan.new_products,
                plan.updated(products.len()),
                plan.unchanged_products,
                plan.new_categories,
                shards.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        return Ok(());
    }

    let progress = Progress::new(products.len(), shards.len());
    let started = Instant::now();
    let mut done: Vec<String> = Vec::new();
    let mut per_shard = Vec::new();
    for (name, db) in &shards {
        progress.start_shard(name);
        let result = write_shard(db, products, &plan, &progress).await;
        if let Err(e) = result {
            progress.abandon();
            let written = if done.is_empty() {
                "no shard was changed".to_owned()
            } else {
                format!(
                    "shard {} already has the new catalog; run the import again once fixed (it is idempotent)",
                    done.join(", ")
                )
            };
            anyhow::bail!("shard {name}: {}: that shard's import was rolled back, {written}", db.explain(&e));
        }
        let count = bounded(catalog::count_products(&db.pool))
            .await
            .map_err(|e| anyhow::anyhow!("shard {name}: counting products: {}", db.explain(&e)))?;
        per_shard.push((name.clone(), count));
        done.push(name.clone());
    }
    progress.finish();
    for (_, db) in shards {
        db.close().await;
    }
    let elapsed = started.elapsed();
    if ctx.format != output::Format::Table {
        ctx.format.print(&json!({
            "products": products.len(),
            "new_products": plan.new_products,
            "updated_products": plan.updated(products.len()),
            "unchanged_products": plan.unchanged_products,
            "new_categories": plan.new_categories,
            "seconds": elapsed.as_secs_f64(),
            "shards": per_shard.iter().map(|(n, c)| json!({"shard": n, "products_in_catalog": c})).collect::<Vec<_>>(),
        }));
    } else {
        let rows = per_shard.iter().map(|(n, c)| vec![n.clone(), products.len().to_string(), c.to_string()]).collect();
        out(table(&["shard", "imported", "products in catalog"], rows));
        out(format_args!(
            "Imported {} products ({} new, {} updated, {} unchanged, {} new categories) into {} shards in {:.1} s.",
            products.len(),
            plan.new_products,
            plan.updated(products.len()),
            plan.unchanged_products,
            plan.new_categories,
            per_shard.len(),
            elapsed.as_secs_f64()
        ));
    }
    Ok(())
}

impl Plan {
    /// Products stored already that the import changes.
    fn updated(&self, products: usize) -> usize {
        products - self.new_products - self.unchanged_products
    }
}

/// Settles ids from what every shard holds; refuses if the shards disagree about them.
async fn plan(shards: &[(String, Db)], products: &[Product]) -> anyhow::Result<Plan> {
    let mut sku_id: HashMap<String, (i64, &str)> = HashMap::new();
    let mut id_sku: HashMap<i64, (String, &str)> = HashMap::new();
    let mut cat_id: HashMap<String, (i64, &str)> = HashMap::new();
    let mut id_cat: HashMap<i64, (String, &str)> = HashMap::new();
    let (mut max_product, mut max_category) = (0i64, 0i64);
    // Per sku: on how many shards, and the stored product if it is the same on all of those.
    let mut same_on_every_shard: HashMap<String, (usize, Option<catalog::Product>)> = HashMap::new();
    for (name, db) in shards {
        let read = async {
            let p = bounded(catalog::all_products(&db.pool)).await?;
            let c = bounded(catalog::categories(&db.pool)).await?;
            Ok::<_, sqlx::Error>((p, c.into_iter().map(|c| (c.id, c.name))))
        };
        let (p, c) = read.await.map_err(|e| {
            anyhow::anyhow!("shard {name}: reading the catalog: {}; nothing was written", db.explain(&e))
        })?;
        for stored in p {
            let (id, sku) = (stored.id, stored.sku.clone());
            match same_on_every_shard.get_mut(&sku) {
                None => {
                    same_on_every_shard.insert(sku.clone(), (1, Some(stored)));
                }
                Some((n, first)) => {
                    *n += 1;
                    if first.as_ref().is_some_and(|f| *f != stored) {
                        *first = None;
                    }
                }
            }
            max_product = max_product.max(id);
            if let Some((other, on)) = sku_id.get(&sku) {
                if *other != id {
                    anyhow::bail!("the shards' catalogs disagree: sku {sku:?} is product {other} on shard {on} but {id} on shard {name}; nothing was written");
                }
            }
            if let Some((other, on)) = id_sku.get(&id) {
                if *other != sku {
                    anyhow::bail!("the shards' catalogs disagree: product {id} is {other:?} on shard {on} but {sku:?} on shard {name}; nothing was written");
                }
            }
            sku_id.insert(sku.clone(), (id, name));
            id_sku.insert(id, (sku, name));
        }
        let mut first_by_name: HashMap<String, i64> = HashMap::new();
        for (id, cname) in c {
            max_category = max_category.max(id);
            first_by_name.entry(cname.clone()).or_insert(id);
            if let Some((other, on)) = id_cat.get(&id) {
                if *other != cname {
                    anyhow::bail!("the shards' catalogs disagree: category {id} is {other:?} on shard {on} but {cname:?} on shard {name}; nothing was written");
                }
            }
            id_cat.insert(id, (cname, name));
        }
        for (cname, id) in first_by_name {
            if let Some((other, on)) = cat_id.get(&cname) {
                if *other != id {
                    anyhow::bail!("the shards' catalogs disagree: category {cname:?} is {other} on shard {on} but {id} on shard {name}; nothing was written");
                }
            }
            cat_id.insert(cname, (id, name));
        }
    }
    let mut categories = BTreeMap::new();
    let mut new_categories = 0;
    for p in products {
        if !categories.contains_key(&p.category) {
            let id = match cat_id.get(&p.category) {
                Some((id, _)) => *id,
                None => {
                    max_category += 1;
                    new_categories += 1;
                    max_category
                }
            };
            categories.insert(p.category.clone(), id);
        }
    }
    let mut new_products = 0;
    let product_ids = products
        .iter()
        .map(|p| match sku_id.get(&p.sku) {
            Some((id, _)) => *id,
            None => {
                max_product += 1;
                new_products += 1;
                max_product
            }
        })
        .collect();
    let unchanged_products = products
        .iter()
        .filter(|p| match same_on_every_shard.get(&p.sku) {
            Some((n, Some(stored))) if *n == shards.len() => {
                stored.name == p.name
                    && Some(&stored.category_id) == categories.get(&p.category)
                    && stored.price_cents == p.price_cents
                    // No description in the file keeps the stored one.
                    && p.description.as_ref().is_none_or(|d| *d == stored.description)
            }
            _ => false,
        })
        .count();
    Ok(Plan { product_ids, new_products, unchanged_products, categories, new_categories })
}

/// One shard, one transaction: the categories it lacks, then the products in batches.
async fn write_shard(db: &Db, products: &[Product], plan: &Plan, progress: &Progress) -> sqlx::Result<()> {
    let mut tx = db.begin_write().await?;
    let have: Vec<i64> = catalog::categories(&mut *tx).await?.into_iter().map(|c| c.id).collect();
    for (name, id) in &plan.categories {
        if !have.contains(id) {
            catalog::insert_category(&mut tx, *id, name).await?;
        }
    }
    let rows: Vec<ProductUpsert<'_>> = plan
        .product_ids
        .iter()
        .zip(products)
        .map(|(&id, p)| ProductUpsert {
            id,
            sku: &p.sku,
            name: &p.name,
            category_id: plan.categories.get(&p.category).copied().unwrap_or_default(),
            price_cents: p.price_cents,
            description: p.description.as_deref(),
        })
        .collect();
    for batch in rows.chunks(BATCH) {
        catalog::upsert_products(&mut tx, db.dialect, batch).await?;
        progress.add(batch.len());
    }
    tx.commit().await
}

/// A progress bar on a terminal; plain lines on standard error otherwise (logs, CI, tests).
struct Progress {
    bar: Option<ProgressBar>,
    per_shard: usize,
    state: std::sync::Mutex<PlainState>,
}

#[derive(Default)]
struct PlainState {
    shard: String,
    done: usize,
    last: Option<Instant>,
}

impl Progress {
    fn new(rows: usize, shards: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some((rows * shards) as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40.cyan/blue}] {pos}/{len} rows ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, per_shard: rows, state: Default::default() }
    }

    fn start_shard(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("shard {name}"));
        } else {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            *s = PlainState { shard: name.to_owned(), done: 0, last: None };
            note(format_args!("shard {name}: importing {} products", self.per_shard));
        }
    }

    fn add(&self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += n;
        // At most a line a second, and always the last one of a shard.
        if s.done == self.per_shard || s.last.filter(|t| t.elapsed() < Duration::from_secs(1)).is_none() {
            s.last = Some(Instant::now());
            note(format_args!("shard {}: {}/{} products written", s.shard, s.done, self.per_shard));
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
