//! The rows a MariaDB binlog says were written, as `mariadb-binlog --base64-output=DECODE-ROWS -v`
//! prints the row events (`### INSERT INTO`, `### UPDATE … ### WHERE … ### SET …`, `### DELETE
//! FROM`, one `###   @N=value` line per column in the schema's order), reduced to what a bucket
//! move's catch-up needs: which rows of the per-user tables, by table and key, were touched in the
//! moved buckets. The catch-up then copies those keys again, reading the source's current row (or
//! its absence), so the images themselves need not be applied.
//!
//! The tool prints strings unescaped between quotes. A key column's text is always visible ASCII
//! (an `Idempotency-Key`), so everything between the line's first and last quote is the value;
//! any other shape, or a column the registry does not have (a schema that moved on), is an error
//! rather than a guess: the caller then copies the whole batch again.

use std::collections::{BTreeMap, BTreeSet};

use shopgate_core::config::DbUrl;
use sqlx::{AnyPool, Row as _};

use super::per_user::{Kind, PerUserTable, Value, BUCKET, PER_USER_TABLES};

/// The keys touched per per-user table.
pub type Touched = BTreeMap<&'static str, BTreeSet<Vec<Value>>>;

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("line {line}: {message}")]
    Unreadable { line: usize, message: String },
    #[error("reading the binlog: {0}")]
    Tool(String),
    #[error("{0}")]
    Db(#[from] sqlx::Error),
    #[error("copying the changes: {0}")]
    Copy(sqlx::Error),
}

/// A place in a MariaDB server's binlog: a file and an offset in it, as `SHOW MASTER STATUS`
/// gives it, written `file:offset`. A reader starts there directly, where a GTID position would
/// have the server scan its binlog file from the start to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub offset: u64,
}

impl BinlogPos {
    pub fn parse(text: &str) -> Option<BinlogPos> {
        let (file, offset) = text.rsplit_once(':')?;
        Some(BinlogPos { file: file.to_owned(), offset: offset.parse().ok()? }).filter(|p| !p.file.is_empty())
    }
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// Where the server at `db` is writing its binlog now; `None` if it writes none. Every
/// transaction committed before the call is before it. The user needs `BINLOG MONITOR`.
pub async fn position(db: &AnyPool) -> Result<Option<BinlogPos>, ChangesError> {
    let Some(row) = sqlx::query("SHOW MASTER STATUS").fetch_optional(db).await? else { return Ok(None) };
    let file: String = row.try_get(0)?;
    let offset = match row.try_get::<i64, _>(1) {
        Ok(n) => u64::try_from(n).ok(),
        Err(_) => row.try_get::<String, _>(1).ok().and_then(|s| s.parse().ok()),
    };
    let offset = offset.ok_or_else(|| ChangesError::Tool("SHOW MASTER STATUS gave no position".into()))?;
    Ok(Some(BinlogPos { file, offset }))
}

/// Reads the row events of the MariaDB server at `url` from `from` to the end of its binlog (at
/// least up to every transaction committed before the call) as a replica reads them
/// (`mariadb-binlog --read-from-remote-server`; the URL's user needs `REPLICATION SLAVE`), and
/// gives each line of the output to `reader`: nothing but a line is ever held. The password
/// goes to the tool in its environment, never on its command line; the URL's TLS goes to it as
/// its options ([`tls_options`]).
pub async fn read_binlog(url: &DbUrl, from: &BinlogPos, reader: &mut TouchedReader<'_>) -> Result<(), ChangesError> {
    use tokio::io::AsyncBufReadExt as _;
    let parsed = url::Url::parse(url.expose()).map_err(|e| ChangesError::Tool(format!("the database URL: {e}")))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(3306).to_string();
    let mut child = tokio::process::Command::new("mariadb-binlog")
        .args(["--read-from-remote-server", "--host", &host, "--port", &port])
        .args(tls_options(&parsed))
        .arg("--user")
        .arg(percent_decode(parsed.username()))
        .arg(format!("--start-position={}", from.offset))
        .args(["--to-last-log", "--base64-output=DECODE-ROWS", "--verbose"])
        .arg(&from.file)
        .env("MYSQL_PWD", percent_decode(parsed.password().unwrap_or("")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ChangesError::Tool(format!("cannot run mariadb-binlog (install mariadb-client): {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| ChangesError::Tool("no output".into()))?;
    let mut stderr = child.stderr.take().ok_or_else(|| ChangesError::Tool("no output".into()))?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });
    // Lines as bytes: a row image prints binary values as they are (a VARBINARY of any table or
    // database on the server), which are no UTF-8; the keys read here are numbers and keys of
    // visible ASCII, which come through a lossy decoding unchanged.
    let mut lines = tokio::io::BufReader::new(stdout).split(b'\n');
    while let Some(line) = lines.next_segment().await.map_err(|e| ChangesError::Tool(format!("its output: {e}")))? {
        reader.line(&String::from_utf8_lossy(&line))?;
    }
    let status = child.wait().await.map_err(|e| ChangesError::Tool(e.to_string()))?;
    if !status.success() {
        let stderr = errors.await.unwrap_or_default();
        return Err(ChangesError::Tool(stderr.lines().last().unwrap_or("mariadb-binlog failed").to_owned()));
    }
    Ok(())
}

/// What one round of catching up did.
#[derive(Debug, Clone)]
pub struct Round {
    /// The source's position the target now has every change up to.
    pub to: BinlogPos,
    /// The keys of the moved buckets written on the source meanwhile, copied again.
    pub touched: Touched,
    pub written: u64,
    pub deleted: u64,
}

impl Round {
    pub fn keys(&self) -> usize {
        self.touched.values().map(BTreeSet::len).sum()
    }
}

/// Copies to `target` the rows of `buckets` written on `source` (at `url`) since `from`: the
/// keys its binlog shows touched, each read again from the source as it is now
/// ([`super::buckets::copy_keys`]).
pub async fn catch_up(
    source: &AnyPool,
    url: &DbUrl,
    target: &AnyPool,
    dialect: crate::Dialect,
    buckets: &[u16],
    from: &BinlogPos,
) -> Result<Round, ChangesError> {
    let to = position(source).await?.ok_or_else(|| ChangesError::Tool("the source writes no binlog now".into()))?;
    if to == *from {
        return Ok(Round { to, touched: Touched::new(), written: 0, deleted: 0 });
    }
    let database: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(source).await?;
    let mut reader = TouchedReader::new(&database, buckets);
    read_binlog(url, from, &mut reader).await?;
    let touched = reader.finish()?;
    let (written, deleted) =
        super::buckets::copy_keys(source, target, dialect, &touched).await.map_err(ChangesError::Copy)?;
    Ok(Round { to, touched, written, deleted })
}

/// The `mariadb-binlog` options that make its connection what the URL's `ssl-mode` and `ssl-ca`
/// (sqlx's parameters) make the services': `REQUIRED` encrypted; `VERIFY_CA` also checks the
/// certificate against the CA (the client checks the chain whenever it has a CA);
/// `VERIFY_IDENTITY` also its name (`--ssl-verify-server-cert`); `DISABLED` plaintext. Without
/// `ssl-mode` (or `PREFERRED`), the tool's own default: TLS if the server offers it, unchecked.
fn tls_options(url: &url::Url) -> Vec<String> {
    let param = |names: [&str; 2]| url.query_pairs().find(|(k, _)| names.contains(&k.as_ref())).map(|(_, v)| v);
    let mode = param(["ssl-mode", "sslmode"]).map(|m| m.to_ascii_lowercase());
    let mut out = Vec::new();
    match mode.as_deref() {
        Some("disabled") => out.push("--skip-ssl".to_owned()),
        Some("required" | "verify_ca" | "verify_identity") => out.push("--ssl".to_owned()),
        _ => {}
    }
    // A CA given inline (sqlx takes PEM text too) is no file the tool can read.
    if let Some(ca) = param(["ssl-ca", "sslca"]).filter(|ca| !ca.starts_with("-----")) {
        out.push(format!("--ssl-ca={ca}"));
    }
    if mode.as_deref() == Some("verify_identity") {
        out.push("--ssl-verify-server-cert".to_owned());
    }
    out
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One row image being read: its table and its columns so far (by `@N`, from 1).
struct Image {
    table: &'static PerUserTable,
    values: Vec<Option<Option<Value>>>,
}

/// The keys of rows in `buckets` that `text` (the tool's output) shows inserted, updated (before
/// or after the update) or deleted in `database`, per table. Rows of other databases, tables and
/// buckets are passed over.
pub fn touched(text: &str, database: &str, buckets: &[u16]) -> Result<Touched, ChangesError> {
    let mut reader = TouchedReader::new(database, buckets);
    for line in text.lines() {
        reader.line(line)?;
    }
    reader.finish()
}

/// [`touched`] a line at a time, for output too long to hold.
pub struct TouchedReader<'a> {
    database: &'a str,
    buckets: &'a [u16],
    out: Touched,
    image: Option<Image>,
    /// The current event's table, if it is a per-user one (its images are read).
    table: Option<&'static PerUserTable>,
    line_no: usize,
}

impl<'a> TouchedReader<'a> {
    pub fn new(database: &'a str, buckets: &'a [u16]) -> Self {
        Self { database, buckets, out: Touched::new(), image: None, table: None, line_no: 0 }
    }

    pub fn line(&mut self, line: &str) -> Result<(), ChangesError> {
        self.line_no += 1;
        let line_no = self.line_no;
        let Some(rest) = line.strip_prefix("###") else {
            return finish(&mut self.image, self.buckets, &mut self.out, line_no);
        };
        let rest = rest.trim_start();
        if let Some(target) =
            ["INSERT INTO ", "UPDATE ", "DELETE FROM "].iter().find_map(|verb| rest.strip_prefix(verb))
        {
            finish(&mut self.image, self.buckets, &mut self.out, line_no)?;
            self.table = table_named(target, self.database);
        } else if rest == "SET" || rest == "WHERE" {
            finish(&mut self.image, self.buckets, &mut self.out, line_no)?;
            self.image = self.table.map(|table| Image { table, values: vec![None; table.columns.len()] });
        } else if let Some(column) = rest.strip_prefix('@') {
            let Some(img) = self.image.as_mut() else { return Ok(()) };
            let fail = |message: String| ChangesError::Unreadable { line: line_no, message };
            let (index, value) = column.split_once('=').ok_or_else(|| fail(format!("no value in {line:?}")))?;
            let index: usize = index.parse().map_err(|_| fail(format!("no column number in {line:?}")))?;
            let Some((name, kind)) = index.checked_sub(1).and_then(|i| img.table.columns.get(i)) else {
                return Err(fail(format!("{} has no column @{index} in the registry", img.table.name)));
            };
            let parsed = parse_value(value, *kind)
                .ok_or_else(|| fail(format!("{}.{name}: cannot read {value:?}", img.table.name)))?;
            img.values[index - 1] = Some(parsed);
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Touched, ChangesError> {
        finish(&mut self.image, self.buckets, &mut self.out, self.line_no)?;
        Ok(self.out)
    }
}

/// The per-user table a `` `db`.`table` `` names, if it is in `database`.
fn table_named(target: &str, database: &str) -> Option<&'static PerUserTable> {
    let (db, name) = target.trim().split_once("`.`")?;
    if db.trim_start_matches('`') != database {
        return None;
    }
    let name = name.trim_end_matches('`');
    PER_USER_TABLES.iter().find(|t| t.name == name)
}

/// A value as the tool prints it: a number, a quoted string, or NULL (`None`).
fn parse_value(text: &str, kind: Kind) -> Option<Option<Value>> {
    // `-vv` adds a type comment after the value.
    let text = text.split(" /*").next().unwrap_or(text);
    if text == "NULL" {
        return Some(None);
    }
    match kind {
        Kind::Int => text.trim().parse().ok().map(|n| Some(Value::Int(n))),
        Kind::Text => {
            let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
            Some(Some(Value::Text(inner.to_owned())))
        }
    }
}

/// Records the finished image's key if its bucket is one of `buckets`.
fn finish(image: &mut Option<Image>, buckets: &[u16], out: &mut Touched, line: usize) -> Result<(), ChangesError> {
    let Some(img) = image.take() else { return Ok(()) };
    let table = img.table;
    let at = |name: &str| table.columns.iter().position(|(c, _)| *c == name);
    let Some(bucket) = at(BUCKET).and_then(|i| img.values[i].clone()) else {
        // A partial image (`binlog_row_image` other than FULL) cannot say whose row it is.
        return Err(ChangesError::Unreadable {
            line,
            message: format!("{}: a row image without its {BUCKET} column (binlog_row_image must be FULL)", table.name),
        });
    };
    // A row whose bucket is NULL is from before the column: no move takes such rows.
    let Some(Value::Int(bucket)) = bucket else { return Ok(()) };
    if !u16::try_from(bucket).is_ok_and(|b| buckets.contains(&b)) {
        return Ok(());
    }
    let mut key = Vec::with_capacity(table.key_len);
    for (i, value) in img.values[..table.key_len].iter().enumerate() {
        match value {
            Some(Some(v)) => key.push(v.clone()),
            _ => {
                return Err(ChangesError::Unreadable {
                    line,
                    message: format!("{}: a row image without its key column {}", table.name, table.columns[i].0),
                })
            }
        }
    }
    out.entry(table.name).or_default().insert(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binlog_reader_connects_with_the_urls_tls() {
        let options = |url: &str| tls_options(&url::Url::parse(url).unwrap());
        let url = "mysql://shop:p@10.0.0.5:3306/shard_a?ssl-mode=VERIFY_IDENTITY&ssl-ca=%2Fdb%2Ftls%2Fca.crt";
        assert_eq!(options(url), ["--ssl", "--ssl-ca=/db/tls/ca.crt", "--ssl-verify-server-cert"]);
        assert_eq!(options("mysql://u:p@h/d?sslmode=verify_ca&sslca=/ca.pem"), ["--ssl", "--ssl-ca=/ca.pem"]);
        assert_eq!(options("mysql://u:p@h/d?ssl-mode=REQUIRED"), ["--ssl"]);
        assert_eq!(options("mysql://u:p@h/d?ssl-mode=DISABLED"), ["--skip-ssl"]);
        assert!(options("mysql://u:p@127.0.0.1/d").is_empty());
    }

    /// Real output of `mariadb-binlog -R --start-position=GTID --stop-position=GTID
    /// --base64-output=DECODE-ROWS -v` from MariaDB 10.11 (a key with a quote and a backslash, a
    /// row without its bucket, an update that moves a row's bucket, a delete).
    const SAMPLE: &str = include_str!("../tests/fixtures/binlog_rows.txt");

    fn key(user: i64, text: &str) -> Vec<Value> {
        vec![Value::Int(user), Value::Text(text.into())]
    }

    #[test]
    fn the_touched_keys_of_the_moved_buckets_only() {
        let got = touched(SAMPLE, "s", &[42]).unwrap();
        assert_eq!(got["idempotency_keys"], BTreeSet::from([key(1042, r"it's a \ key")]));
        assert_eq!(got["users"], BTreeSet::from([vec![Value::Int(1042)]]));
        // The update's after-image is in bucket 44.
        let got = touched(SAMPLE, "s", &[44]).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), ["idempotency_keys"]);
        assert_eq!(got["idempotency_keys"], BTreeSet::from([key(1042, r"it's a \ key")]));
        assert!(touched(SAMPLE, "s", &[7]).unwrap().is_empty());
    }

    #[test]
    fn a_column_the_registry_lacks_is_an_error_not_a_guess() {
        let text = "### INSERT INTO `s`.`users`\n### SET\n###   @1=1042\n###   @9=3\n";
        let err = touched(text, "s", &[42]).unwrap_err();
        assert!(err.to_string().contains("users has no column @9"), "{err}");
        let text = "### INSERT INTO `s`.`users`\n### SET\n###   @1=x\n";
        assert!(touched(text, "s", &[42]).is_err());
    }

    #[test]
    fn another_databases_rows_are_passed_over() {
        assert!(touched(SAMPLE, "shop_shard_b", &[42]).unwrap().is_empty());
    }

    #[test]
    fn a_urls_escapes_are_decoded() {
        assert_eq!(percent_decode("p%40ss%2Fw0rd"), "p@ss/w0rd");
        assert_eq!(percent_decode("plain%"), "plain%");
    }

    #[test]
    fn other_tables_are_passed_over() {
        let text = "### UPDATE `s`.`products`\n### WHERE\n###   @1=1\n###   @99='a'\n### SET\n###   @1=1\n";
        assert!(touched(text, "s", &[42]).unwrap().is_empty());
    }
}
