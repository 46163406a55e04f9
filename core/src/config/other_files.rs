//! Tests that the files which repeat the config's keys and defaults say what the structs say:
//! docs/operations.md's configuration tables, and monitoring/alerts.yml's replica lag bound.
//! Neither file can be generated from the code (one is prose, the other a static file Prometheus
//! loads), so these tests are what keeps them from drifting when a key or a default changes.

#![allow(clippy::unwrap_used)]

use serde_json::Value;

use super::{RawConfig, RawShard, VerifierConfig};

const OPERATIONS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
const ALERTS_YML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitoring/alerts.yml");

/// Every table and key of the file with its default, walked from the structs: a config of
/// defaults with one shard, `NAME`, serialized. `(section, key, default)`, the section as the
/// docs' headings name it (`verifier`, `shards.NAME`).
fn keys_with_defaults() -> Vec<(String, String, Value)> {
    let mut raw = RawConfig::default();
    raw.shards.insert("NAME".into(), RawShard::default());
    let Value::Object(tables) = serde_json::to_value(&raw).unwrap() else { panic!("a config is a table") };
    let mut out = Vec::new();
    for (section, table) in tables {
        let Value::Object(fields) = table else { panic!("[{section}] is not a table") };
        // A table of tables (`[shards.NAME]`): one level further down.
        if fields.values().all(Value::is_object) {
            for (name, inner) in fields {
                let Value::Object(inner) = inner else { unreachable!() };
                out.extend(inner.into_iter().map(|(k, v)| (format!("{section}.{name}"), k, v)));
            }
        } else {
            out.extend(fields.into_iter().map(|(k, v)| (section.clone(), k, v)));
        }
    }
    out
}

/// The rows of the table under the heading ``### `[section]` ``: `(key, default cell, override
/// cell)` for each row whose first cell is a key in backticks.
fn documented_rows(docs: &str, section: &str) -> Option<Vec<(String, String, String)>> {
    let heading = format!("### `[{section}]`");
    let start = docs.lines().position(|l| l.trim() == heading)?;
    let rows = docs
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `key` | type | default | meaning | override |
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((key.to_owned(), (*cells.get(3)?).to_owned(), (*cells.get(5)?).to_owned()))
        })
        .collect();
    Some(rows)
}

/// The literal a default cell claims: its text in backticks when the cell starts with some
/// (`` `64` ``, `` `"auto"` ``, `` `run` beside the config ``), quotes dropped. A cell that starts
/// otherwise (`none`, `required`, `cores - 1, at least 1`) describes a default the code leaves
/// unset or works out at start.
fn claimed_literal(cell: &str) -> Option<&str> {
    let rest = cell.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].trim_matches('"'))
}

/// The default as the docs would write it, or `None` where the struct holds no value: a key
/// without a default (an empty string or list, `None`) or one worked out at start.
fn literal(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.is_empty() => None,
        other => Some(other.to_string()),
    }
}

/// Every key the structs have is in docs/operations.md's table for its section, with the
/// structs' default and its `SHOP__…` variable; every key documented there is one the structs
/// have. So a new key, a changed default or a renamed key fails here until the docs follow.
#[test]
fn operations_md_documents_every_key_with_its_default() {
    let docs = std::fs::read_to_string(OPERATIONS_MD).unwrap();
    let keys = keys_with_defaults();
    assert!(keys.len() > 30, "the walk found the keys: {keys:?}");
    let mut problems = Vec::new();
    let mut sections: Vec<&str> = keys.iter().map(|(s, ..)| s.as_str()).collect();
    sections.dedup();
    for section in sections {
        let Some(rows) = documented_rows(&docs, section) else {
            problems.push(format!("no \"### `[{section}]`\" table"));
            continue;
        };
        for (_, key, value) in keys.iter().filter(|(s, ..)| s == section) {
            let Some((_, default, env)) = rows.iter().find(|(k, ..)| k == key) else {
                problems.push(format!("{section}.{key}: no row"));
                continue;
            };
            match (literal(value), claimed_literal(default)) {
                (Some(code), Some(doc)) if code == doc => {}
                (None, None) => {}
                (code, _) => problems.push(format!(
                    "{section}.{key}: documented default {default:?}, the code's is {}",
                    code.map_or("unset (required, none, or worked out at start)".into(), |c| format!("`{c}`"))
                )),
            }
            let var = format!("SHOP__{}__{}", section.replace('.', "__"), key).to_uppercase();
            if !env.contains(&var) {
                problems.push(format!("{section}.{key}: the override cell {env:?} does not name {var}"));
            }
        }
        for (key, ..) in &rows {
            if !keys.iter().any(|(s, k, _)| s == section && k == key) {
                problems.push(format!("{section}.{key}: documented, but [{section}] has no such key"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/operations.md's configuration tables drifted from core/src/config.rs:\n{}",
        problems.join("\n")
    );
}

/// The whole-number bound of alert `name` in monitoring/alerts.yml, whose `expr` is `SERIES… > N`
/// on `series`.
fn alert_bound(name: &str, series: &str) -> u64 {
    let alerts = std::fs::read_to_string(ALERTS_YML).unwrap();
    let rule: Vec<&str> = alerts
        .lines()
        .skip_while(|l| l.trim() != format!("- alert: {name}"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("- alert:"))
        .collect();
    let expr =
        rule.iter().find_map(|l| l.trim().strip_prefix("expr:")).unwrap_or_else(|| panic!("{name} has no expr line"));
    let (left, bound) = expr.rsplit_once('>').expect("the expr compares with >");
    assert!(left.contains(series), "{expr}");
    bound.trim().parse().unwrap_or_else(|_| panic!("{expr}: the bound is not a whole number"))
}

/// `ReplicaLagging` fires at the lag past which reads leave the replica: the shards' default
/// `replica_max_lag_seconds`. alerts.yml is a static file Prometheus loads, so it holds the number
/// itself, and this holds it to the default.
#[test]
fn replica_lag_alert_fires_at_the_default_bound() {
    assert_eq!(
        alert_bound("ReplicaLagging", "shop_replica_lag_seconds"),
        RawShard::default().replica_max_lag_seconds,
        "monitoring/alerts.yml's ReplicaLagging bound differs from replica_max_lag_seconds' default"
    );
}

/// `AuthReplicaLagging` fires at the lag past which an outage of the auth primary would leave
/// nothing to read: `verifier.database_replica_max_lag_seconds`' default.
#[test]
fn auth_replica_lag_alert_fires_at_the_default_bound() {
    assert_eq!(
        alert_bound("AuthReplicaLagging", "shop_auth_replica_lag_seconds"),
        VerifierConfig::default().database_replica_max_lag_seconds,
        "monitoring/alerts.yml's AuthReplicaLagging bound differs from database_replica_max_lag_seconds' default"
    );
}
