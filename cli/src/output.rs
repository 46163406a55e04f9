//! Tables for people, JSON for scripts, colour only on a terminal.
//!
//! Everything a command prints to standard output goes through [`out`], so a reader that goes away
//! (`shopctl nginx render | head`) ends the program quietly instead of a panic on a broken pipe.

use std::fmt::Display;
use std::io::{IsTerminal as _, Write as _};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table};
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

/// Prints a line to standard output. A closed pipe ends the program with success: the reader
/// has what it wanted.
pub(crate) fn out(text: impl Display) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Prints text to standard output as it is (no newline added).
pub(crate) fn out_raw(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
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
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if stdout_colour() {
        t.set_header(headers.iter().map(|h| Cell::new(h).add_attribute(Attribute::Bold)));
    } else {
        t.force_no_tty();
        t.set_header(headers.to_vec());
    }
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// A table whose cells may be marked good (green) or bad (red) on a terminal.
pub(crate) fn status_table(headers: &[&str], rows: Vec<Vec<(String, Mark)>>) -> String {
    let colour = stdout_colour();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
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
    t.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Plain,
    Good,
    Bad,
}

pub(crate) fn print_json(v: &Value) {
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
    fn money() {
        assert_eq!(super::money(&json!(1234)), "12.34");
        assert_eq!(super::money(&json!(-5)), "-0.05");
    }
}
