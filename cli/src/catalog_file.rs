//! Catalog files for `shopctl catalog import`: CSV with the header
//! `sku,name,category,price_cents[,description]` (any column order), or a JSON array of objects
//! with those keys. Every row is checked before anything is written; the first bad row is named
//! by its number (and, in CSV, its line) with what is wrong with it.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

/// One product as the file gives it; prices are integer cents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Product {
    pub sku: String,
    pub name: String,
    pub(crate) category: String,
    pub price_cents: i64,
    /// `None` when the file has no description for it: an update then keeps the stored one.
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Csv,
    Json,
}

pub(crate) const MAX_SKU: usize = 64;
pub(crate) const MAX_NAME: usize = 200;
pub(crate) const MAX_DESCRIPTION: usize = 2000;
/// Ten million currency units: a typo guard, far above any real price.
pub(crate) const MAX_PRICE_CENTS: i64 = 1_000_000_000;

const COLUMNS: &str = "sku,name,category,price_cents[,description]";

/// Bad rows named in one error at most; the rest are counted.
pub(crate) const MAX_ROW_ERRORS: usize = 20;

/// The file name that means standard input.
pub(crate) const STDIN: &str = "-";

/// Reads and checks the whole file (`-`: standard input). `format` overrides the guess from the
/// extension / content. Every bad row is named (up to [`MAX_ROW_ERRORS`]), not only the first.
pub(crate) fn load(path: &Path, format: Option<Format>) -> anyhow::Result<Vec<Product>> {
    let (shown, bytes) = if path.as_os_str() == STDIN {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(crate::UsageError(
                "`-` reads the file from standard input, which is a terminal here: pipe the file in (shopctl catalog import - < products.csv)".into(),
            )
            .into());
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
        ("standard input".to_owned(), bytes)
    } else {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
        (shown, bytes)
    };
    let format = format.unwrap_or_else(|| guess(path, &bytes));
    let products = match format {
        Format::Csv => parse_csv(&bytes),
        Format::Json => parse_json(&bytes),
    }
    .map_err(|e| anyhow::anyhow!("{shown}: {e}; nothing was imported"))?;
    if products.is_empty() {
        anyhow::bail!("{shown} has no products; nothing was imported");
    }
    Ok(products)
}

fn guess(path: &Path, bytes: &[u8]) -> Format {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') => Format::Json,
        _ => Format::Csv,
    }
}

/// Where a row came from, for messages.
#[derive(Clone, Copy)]
struct At {
    row: usize,
    line: Option<u64>,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "row {} (line {l})", self.row),
            None => write!(f, "row {}", self.row),
        }
    }
}

pub(crate) fn parse_csv(bytes: &[u8]) -> Result<Vec<Product>, String> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(&e))?.clone();
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(format!("the file is empty: expected a header line {COLUMNS} and one product per line"));
    }
    let mut col: HashMap<&str, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        if !["sku", "name", "category", "price_cents", "description"].contains(&h) {
            return Err(format!("unknown column {h:?} in the header (expected {COLUMNS})"));
        }
        if col.insert(h, i).is_some() {
            return Err(format!("column {h:?} appears twice in the header"));
        }
    }
    for needed in ["sku", "name", "category", "price_cents"] {
        if !col.contains_key(needed) {
            return Err(format!("the header has no {needed:?} column (expected {COLUMNS})"));
        }
    }
    let mut rows = Vec::new();
    let mut bad = BadRows::default();
    let mut seen = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let row = (|| {
            let record = record.map_err(|e| format!("row {}: {}", i + 1, csv_error(&e)))?;
            let at = At { row: i + 1, line: record.position().map(csv::Position::line) };
            let field = |name: &str| col.get(name).and_then(|&c| record.get(c)).unwrap_or("");
            let price = field("price_cents").trim();
            let price_cents = price.parse::<i64>().ok().filter(|_| !price.starts_with('+')).ok_or_else(|| {
                format!("{at}: price_cents must be a whole number of cents (e.g. 1250 for 12.50), not {price:?}")
            })?;
            let description = col.get("description").map(|_| field("description").trim().to_owned());
            let p = check(at, field("sku"), field("name"), field("category"), price_cents, description)?;
            no_duplicate(&mut seen, &p, at)?;
            Ok(p)
        })();
        bad.keep(row, &mut rows);
    }
    bad.into_result(rows)
}

/// The rows that failed their checks: every one counted, the first [`MAX_ROW_ERRORS`] named.
#[derive(Default)]
struct BadRows {
    named: Vec<String>,
    count: usize,
}

impl BadRows {
    fn keep(&mut self, row: Result<Product, String>, rows: &mut Vec<Product>) {
        match row {
            Ok(p) => rows.push(p),
            Err(e) => {
                self.count += 1;
                if self.named.len() < MAX_ROW_ERRORS {
                    self.named.push(e);
                }
            }
        }
    }

    fn into_result(self, rows: Vec<Product>) -> Result<Vec<Product>, String> {
        match self.count {
            0 => Ok(rows),
            1 => Err(self.named.join("")),
            n => {
                let more = n - self.named.len();
                let more = if more > 0 { format!("; and {more} more") } else { String::new() };
                Err(format!("{n} bad rows: {}{more}", self.named.join("; ")))
            }
        }
    }
}

fn csv_error(e: &csv::Error) -> String {
    let line = e.position().map(|p| format!("line {}: ", p.line())).unwrap_or_default();
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, pos } => {
            let line = pos.as_ref().map(|p| format!("line {}: ", p.line())).unwrap_or_default();
            format!("{line}expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => format!("{line}not valid UTF-8 text"),
        _ => format!("{line}{e}"),
    }
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Vec<Product>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(format!("expected a JSON array of objects with the keys {COLUMNS}"));
    };
    let mut rows = Vec::new();
    let mut bad = BadRows::default();
    let mut seen = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let row = json_row(At { row: i + 1, line: None }, item, &mut seen);
        bad.keep(row, &mut rows);
    }
    bad.into_result(rows)
}

fn json_row(at: At, item: &Value, seen: &mut HashMap<String, usize>) -> Result<Product, String> {
    let Value::Object(obj) = item else { return Err(format!("{at}: expected an object, found {}", kind(item))) };
    if let Some(k) =
        obj.keys().find(|k| !["sku", "name", "category", "price_cents", "description"].contains(&k.as_str()))
    {
        return Err(format!("{at}: unknown key {k:?} (expected {COLUMNS})"));
    }
    let text = |k: &str| -> Result<Option<&str>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{at}: {k} must be a string, not {}", kind(other))),
        }
    };
    let required = |k: &str| text(k)?.ok_or_else(|| format!("{at}: {k} is missing"));
    let price_cents = match obj.get("price_cents") {
        None | Some(Value::Null) => return Err(format!("{at}: price_cents is missing")),
        Some(v) => v.as_i64().ok_or_else(|| {
            format!("{at}: price_cents must be a whole number of cents (e.g. 1250 for 12.50), not {v}")
        })?,
    };
    let p = check(
        at,
        required("sku")?,
        required("name")?,
        required("category")?,
        price_cents,
        text("description")?.map(|d| d.trim().to_owned()),
    )?;
    no_duplicate(seen, &p, at)?;
    Ok(p)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check(
    at: At,
    sku: &str,
    name: &str,
    category: &str,
    price_cents: i64,
    description: Option<String>,
) -> Result<Product, String> {
    let (sku, name, category) = (sku.trim(), name.trim(), category.trim());
    let text = |what: &str, v: &str, max: usize| -> Result<(), String> {
        if v.is_empty() {
            Err(format!("{at}: {what} is empty"))
        } else if v.chars().count() > max {
            Err(format!("{at}: {what} is longer than {max} characters"))
        } else if v.chars().any(char::is_control) {
            Err(format!("{at}: {what} contains control characters"))
        } else {
            Ok(())
        }
    };
    text("sku", sku, MAX_SKU)?;
    if sku.chars().any(char::is_whitespace) {
        return Err(format!("{at}: sku {sku:?} contains spaces"));
    }
    text("name", name, MAX_NAME)?;
    text("category", category, MAX_NAME)?;
    if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(format!("{at}: price_cents {price_cents} is out of range (0 to {MAX_PRICE_CENTS})"));
    }
    if let Some(d) = &description {
        if d.chars().count() > MAX_DESCRIPTION {
            return Err(format!("{at}: description is longer than {MAX_DESCRIPTION} characters"));
        }
    }
    Ok(Product { sku: sku.to_owned(), name: name.to_owned(), category: category.to_owned(), price_cents, description })
}

fn no_duplicate(seen: &mut HashMap<String, usize>, p: &Product, at: At) -> Result<(), String> {
    match seen.insert(p.sku.clone(), at.row) {
        Some(first) => Err(format!("{at}: sku {:?} already appears in row {first}", p.sku)),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_in_any_column_order_with_quotes() {
        let text =
            "name,sku,price_cents,category\n\"Knife, 20 cm\",KT-1,8900,Kitchen\n\"Say \"\"hi\"\"\",BK-1,0,Books\n";
        let p = parse_csv(text.as_bytes()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "Knife, 20 cm");
        assert_eq!(p[1].name, "Say \"hi\"");
        assert_eq!(p[0].description, None);
    }

    #[test]
    fn csv_bad_rows_are_named() {
        let head = "sku,name,category,price_cents,description\n";
        let cases = [
            ("A,a,c,100,\nB,b,c,12.50,\n", "row 2 (line 3): price_cents must be a whole number"),
            ("A,a,c,100,\nB,,c,1,\n", "row 2 (line 3): name is empty"),
            ("A,a,c,100,\nA,b,c,1,\n", "row 2 (line 3): sku \"A\" already appears in row 1"),
            ("A,a,c,100\n", "line 2: expected 5 fields"),
            ("A,a,c,-1,\n", "row 1 (line 2): price_cents -1 is out of range"),
        ];
        for (rows, want) in cases {
            let err = parse_csv(format!("{head}{rows}").as_bytes()).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        assert!(parse_csv(b"sku,name,price\n").unwrap_err().contains("unknown column \"price\""));
        assert!(parse_csv(b"sku,name,category\n").unwrap_err().contains("no \"price_cents\" column"));
    }

    #[test]
    fn json_rows_are_checked() {
        let ok = r#"[{"sku":"A","name":"a","category":"c","price_cents":5,"description":"d"}]"#;
        assert_eq!(parse_json(ok.as_bytes()).unwrap()[0].description.as_deref(), Some("d"));
        let cases = [
            (
                r#"[{"sku":"A","name":"a","category":"c","price_cents":5.5}]"#,
                "row 1: price_cents must be a whole number",
            ),
            (
                r#"[{"sku":"A","name":"a","category":"c","price_cents":5},{"sku":"B","name":"b","category":"c"}]"#,
                "row 2: price_cents is missing",
            ),
            (r#"[{"sku":"A","name":"a","category":"c","price_cents":5,"colour":"red"}]"#, "unknown key \"colour\""),
            (r#"{"sku":"A"}"#, "expected a JSON array"),
            (r#"[1]"#, "row 1: expected an object, found a number"),
            ("[", "not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse_json(text.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn format_is_guessed() {
        assert_eq!(guess(Path::new("x.JSON"), b"sku"), Format::Json);
        assert_eq!(guess(Path::new("x"), b"  [{}]"), Format::Json);
        assert_eq!(guess(Path::new("x.txt"), b"sku,name"), Format::Csv);
    }
}
