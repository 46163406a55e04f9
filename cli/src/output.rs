//! Tables for people; tab-separated rows or JSON for scripts; colour only on a terminal.
//!
//! Every command builds its answer as JSON: a list is `{"items": [...], "next": cursor-or-null}`,
//! anything else one object. [`Format::print`] prints that value as JSON, or as tab-separated rows
//! with a header (the objects' fields, nested ones as `a.b`), or as a table; commands that have a
//! table of their own for people print it themselves when [`Format::Table`] is in force.
//!
//! Everything a command prints to standard output goes through [`out`], so a reader that goes away
//! (`shopctl nginx render | head`) ends the program quietly instead of a panic on a broken pipe,
//! and a write that fails (`>/dev/full`) ends it with exit 1 and a message.

use std::fmt::Display;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Table, Width};
use serde_json::Value;

/// Whether standard output is a terminal that wants colour (`NO_COLOR` unset, `TERM` not dumb).
pub fn stdout_colour() -> bool {
    std::io::stdout().is_terminal() && colour_allowed()
}

/// The same for standard error.
pub fn stderr_colour() -> bool {
    std::io::stderr().is_terminal() && colour_allowed()
}

fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").filter(|v| !v.is_empty()).is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// How a command's answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people (the default on a terminal).
    Table,
    /// Tab-separated rows with a header line (the default when standard output is not a terminal).
    Tsv,
    /// JSON; errors too, on standard error.
    Json,
}

/// Whether errors are printed as JSON (`--json`, `--format json`).
static ERRORS_AS_JSON: AtomicBool = AtomicBool::new(false);

impl Format {
    /// `--json`, else `--format`, else a table on a terminal and TSV otherwise (as `gh` does).
    pub fn choose(format: Option<Format>, json: bool) -> Format {
        let chosen = match (json, format) {
            (true, _) => Format::Json,
            (false, Some(f)) => f,
            (false, None) if std::io::stdout().is_terminal() => Format::Table,
            (false, None) => Format::Tsv,
        };
        ERRORS_AS_JSON.store(chosen == Format::Json, Ordering::Relaxed);
        chosen
    }

    /// Prints a command's answer: a list (`{"items": [...], "next": ...}`) or one object.
    pub(crate) fn print(self, answer: &Value) {
        self.print_in(answer, &[]);
    }

    /// [`Format::print`] with these fields as the first columns (TSV, table), in this order; the
    /// others follow as they come. JSON is the same either way.
    pub(crate) fn print_in(self, answer: &Value, first: &[&str]) {
        match self {
            Format::Json => print_json(answer),
            Format::Tsv => {
                let (headers, rows) = flat_rows(answer, first);
                if !headers.is_empty() {
                    out_raw(&tsv(&headers, &rows));
                }
            }
            Format::Table => {
                let (headers, rows) = flat_rows(answer, first);
                if !headers.is_empty() {
                    out(table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), rows));
                }
            }
        }
    }
}

/// A list answer: `{"items": [...], "next": cursor-or-null}`.
pub(crate) fn list(items: Vec<Value>, next: Value) -> Value {
    serde_json::json!({ "items": items, "next": next })
}

/// The rows of an answer: the items of a list, or the one object, with their fields flattened.
/// The header is every field seen: `first` in its order, then the rest in the order first seen
/// (fields sorted within an object).
fn flat_rows(answer: &Value, first: &[&str]) -> (Vec<String>, Vec<Vec<String>>) {
    // A list is `items` beside `next` ([`list`]); an order's own `items` are its lines.
    let items: Vec<&Value> = match (answer.get("items"), answer.get("next")) {
        (Some(Value::Array(items)), Some(_)) => items.iter().collect(),
        _ => vec![answer],
    };
    let flat: Vec<Vec<(String, String)>> = items
        .iter()
        .map(|item| {
            let mut fields = Vec::new();
            flatten(String::new(), item, &mut fields);
            fields
        })
        .collect();
    let mut headers: Vec<String> = Vec::new();
    for (name, _) in flat.iter().flatten() {
        if !headers.contains(name) {
            headers.push(name.clone());
        }
    }
    headers.sort_by_key(|h| first.iter().position(|f| f == h).unwrap_or(first.len()));
    let rows = flat
        .iter()
        .map(|fields| {
            headers
                .iter()
                .map(|h| fields.iter().find(|(name, _)| name == h).map(|(_, v)| v.clone()).unwrap_or_default())
                .collect()
        })
        .collect();
    (headers, rows)
}

fn flatten(name: String, v: &Value, fields: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (key, inner) in map {
                let inner_name = if name.is_empty() { key.clone() } else { format!("{name}.{key}") };
                flatten(inner_name, inner, fields);
            }
        }
        // One scalar per cell: a list is counted here; `--json` keeps it.
        Value::Array(list) => {
            fields.push((if name.is_empty() { "value".into() } else { name }, list.len().to_string()))
        }
        other => fields.push((if name.is_empty() { "value".into() } else { name }, cell(other))),
    }
}

/// Rows as tab-separated text: a tab, newline, carriage return or backslash inside a cell is
/// written `\t`, `\n`, `\r`, `\\` (PostgreSQL's text format), so every row is one line.
fn tsv(headers: &[String], rows: &[Vec<String>]) -> String {
    let escape = |c: &String| c.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r");
    let mut text = String::new();
    for row in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        text.push_str(&row.iter().map(escape).collect::<Vec<_>>().join("\t"));
        text.push('\n');
    }
    text
}

/// Prints a line to standard output. A closed pipe ends the program with success: the reader
/// has what it wanted.
pub(crate) fn out(text: impl Display) {
    out_raw(&format!("{text}\n"));
}

/// Prints text to standard output as it is (no newline added). A closed pipe ends the program
/// with 0; any other failed write (a full disk) with 1.
pub(crate) fn out_raw(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        fail(&format!("writing to standard output: {e}"), 1);
        std::process::exit(1);
    }
}

/// Prints the error that ends the program: `shopctl: LINE` on standard error, or under `--json`
/// `{"error": {"message": LINE, "exit_code": CODE}}`.
pub fn fail(line: &str, code: u8) {
    if ERRORS_AS_JSON.load(Ordering::Relaxed) {
        note(serde_json::json!({"error": {"message": line, "exit_code": code}}));
    } else {
        let label = if stderr_colour() { "\x1b[1;31mshopctl:\x1b[0m" } else { "shopctl:" };
        note(format_args!("{label} {line}"));
    }
}

/// For errors found before the flags are parsed (bad usage): whether `args` ask for JSON.
pub fn errors_as_json_from_args(args: &[std::ffi::OsString]) {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let json = args.iter().any(|a| *a == "--json" || *a == "--format=json")
        || args.windows(2).any(|w| w[0] == "--format" && w[1] == "json");
    ERRORS_AS_JSON.store(json, Ordering::Relaxed);
}

/// A note for the person at the terminal, on standard error (never mixed into `--json` output).
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A warning on standard error, `warning:` in yellow on a terminal.
pub(crate) fn warn(text: impl Display) {
    let label = if stderr_colour() { "\x1b[33mwarning:\x1b[0m" } else { "warning:" };
    note(format_args!("{label} {text}"));
}

pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    status_table(headers, plain(rows))
}

fn plain(rows: Vec<Vec<String>>) -> Vec<Vec<(String, Mark)>> {
    rows.into_iter().map(|r| r.into_iter().map(|text| (text, Mark::Plain)).collect()).collect()
}

/// A table whose cells may be marked good (green) or bad (red) on a terminal.
pub(crate) fn status_table(headers: &[&str], rows: Vec<Vec<(String, Mark)>>) -> String {
    render(headers, rows, stdout_colour(), None)
}

/// The table, `width` columns wide at most (`None`: the terminal's, if it has a usable one).
fn render(headers: &[&str], rows: Vec<Vec<(String, Mark)>>, colour: bool, width: Option<u16>) -> String {
    let mut t = new_table(width);
    if colour {
        t.set_header(headers.iter().map(|h| Cell::new(h).add_attribute(Attribute::Bold)));
    } else {
        t.force_no_tty();
        t.set_header(headers.to_vec());
    }
    for r in rows {
        t.add_row(r.into_iter().map(|(text, mark)| {
            let cell = Cell::new(text);
            match (colour, mark) {
                (true, Mark::Good) => cell.fg(Color::Green),
                (true, Mark::Bad) => cell.fg(Color::Red),
                _ => cell,
            }
        }));
    }
    keep_header_words_whole(&mut t, headers);
    t.to_string()
}

/// Columns fit the terminal's width when it is known and usable; a terminal that reports no width
/// (or a silly one: 0 columns under some `script` or serial consoles) gets columns at full width
/// instead of one character each. The width is set on the table, not looked up again when it is
/// drawn: `force_no_tty` (no colour) would hide the terminal from comfy-table, and with it the width.
fn new_table(width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    match width.or_else(|| t.width()).filter(|w| *w >= MIN_TABLE_WIDTH) {
        Some(w) => {
            t.set_width(w);
            t.set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t
}

/// Headers are read before anything else: a column is never narrower than its header's longest
/// word, so a header may break between its words but never inside one, and the cells wrap
/// instead. If the words of all the headers do not fit the width with the usual padding (ten
/// columns on 80), the padding goes first, one side, then both; past that the table is wider
/// than the terminal rather than cut its headers.
fn keep_header_words_whole(t: &mut Table, headers: &[&str]) {
    let Some(width) = t.width() else { return };
    let words: Vec<u16> = headers
        .iter()
        .map(|h| h.split_whitespace().map(|w| w.chars().count()).max().unwrap_or(0))
        .map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        .collect();
    let columns = u16::try_from(words.len()).unwrap_or(u16::MAX);
    // Content, then one border before each column and one after the last.
    let bare = words.iter().fold(columns.saturating_add(1), |sum, w| sum.saturating_add(*w));
    let padding = match bare {
        b if b.saturating_add(2 * columns) <= width => (1, 1),
        b if b.saturating_add(columns) <= width => (0, 1),
        _ => (0, 0),
    };
    for (column, word) in t.column_iter_mut().zip(&words) {
        column.set_padding(padding);
        // comfy-table's boundaries include the padding.
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(word + padding.0 + padding.1)));
    }
}

const MIN_TABLE_WIDTH: u16 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Plain,
    Good,
    Bad,
}

fn print_json(v: &Value) {
    out(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// A JSON value as a table cell: strings bare, null empty.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Integer cents as `12.34`.
pub(crate) fn money(cents: &Value) -> String {
    match cents.as_i64() {
        Some(c) => format!("{}{}.{:02}", if c < 0 { "-" } else { "" }, c.unsigned_abs() / 100, c.unsigned_abs() % 100),
        None => cell(cents),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn lists_and_objects_become_rows_with_a_header() {
        let answer = super::list(vec![json!({"id": 1, "p": {"a": "x\ty"}}), json!({"id": 2, "q": null})], json!(null));
        let (headers, rows) = super::flat_rows(&answer, &[]);
        assert_eq!(headers, ["id", "p.a", "q"]);
        assert_eq!(super::flat_rows(&answer, &["q", "id"]).0, ["q", "id", "p.a"]);
        assert_eq!(super::tsv(&headers, &rows), "id\tp.a\tq\n1\tx\\ty\t\n2\t\t\n");
        let (headers, rows) = super::flat_rows(&json!({"email": "a@b.c", "ok": true, "tags": [1, 2]}), &[]);
        // An object with `items` of its own (an order's lines) is one row, not a list.
        let order = json!({"id": 7, "items": [{"product_id": 1}], "status": "placed"});
        assert_eq!(super::flat_rows(&order, &["id"]).0, ["id", "items", "status"]);
        // A list in a cell is counted (`--json` keeps it): one scalar per cell.
        assert_eq!(super::tsv(&headers, &rows), "email\tok\ttags\na@b.c\ttrue\t2\n");
    }

    /// Every line of `table` at most `width` characters, and every word of every header whole on
    /// one line.
    fn assert_fits_with_whole_headers(table: &str, headers: &[&str], width: usize) {
        for line in table.lines() {
            assert!(line.chars().count() <= width, "a line over {width} columns:\n{table}");
        }
        for word in headers.iter().flat_map(|h| h.split_whitespace()) {
            let whole = table.lines().any(|l| l.split(['│', '┆']).any(|c| c.split_whitespace().any(|w| w == word)));
            assert!(whole, "the header word {word:?} is cut:\n{table}");
        }
    }

    #[test]
    fn headers_never_break_inside_a_word_at_80_columns() {
        // `shards status`: ten columns on 80, with long cells.
        let headers =
            ["shard", "buckets", "backends", "map", "primary", "replica", "lag", "users", "orders", "last write"];
        let row =
            ["a", "0-998 (500)", "1/2 ready", "3", "up", "up", "0.2 s", "1234567", "7654321", "2026-12-07T09:37:38Z"];
        let rows = vec![row.iter().map(|c| c.to_string()).collect::<Vec<_>>(); 2];
        for colour in [false, true] {
            let t = super::render(&headers, super::plain(rows.clone()), colour, Some(80));
            let t = if colour { t.replace("\u{1b}[1m", "").replace("\u{1b}[0m", "") } else { t };

            assert_fits_with_whole_headers(&t, &headers, 80);
        }
        // `whoami` with a long email: the email wraps, `created` and `active` stay whole.
        let headers = ["id", "email", "active", "admin", "created"];
        let email = "a-rather-long-address-for-a-shopper-of-this-shop@example.com";
        let rows =
            vec![vec!["123456".into(), email.into(), "true".into(), "false".into(), "2026-12-07T09:37:38Z".into()]];
        let t = super::render(&headers, super::plain(rows), false, Some(80));
        assert_fits_with_whole_headers(&t, &headers, 80);
        assert!(t.contains("a-rather-long"), "{t}");
    }

    #[test]
    fn money() {
        assert_eq!(super::money(&json!(1234)), "12.34");
        assert_eq!(super::money(&json!(-5)), "-0.05");
    }
}
