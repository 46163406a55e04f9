//! The stack's MySQL/MariaDB URLs and TLS, checked at load: no database on another host is reached
//! in plaintext unless `tls.allow_plaintext_databases` says so, and TLS to one checks its
//! certificate unless the URL says otherwise.
//!
//! A URL's TLS is sqlx's: `ssl-mode` (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`,
//! `VERIFY_IDENTITY`) and `ssl-ca` (a PEM file). What the check does with a `mysql:`/`mariadb:` URL:
//!
//! | the URL | to loopback or a unix socket | to another host |
//! |---|---|---|
//! | no `ssl-mode` | as it is (sqlx: TLS if offered, unchecked) | with `tls.ca`: `ssl-mode=VERIFY_IDENTITY&ssl-ca=<tls.ca>` added; without: refused |
//! | `DISABLED`, `PREFERRED` | as it is | refused |
//! | `REQUIRED` | as it is | as it is: encrypted, the certificate not checked (the operator's explicit choice) |
//! | `VERIFY_CA`, `VERIFY_IDENTITY` | `ssl-ca` = `tls.ca` if it has none | the same |
//!
//! "Refused" is one line naming the setting (`shards.a.primary`) and the host, never the URL (it
//! may hold a password), unless `tls.allow_plaintext_databases = true`, which leaves every such URL
//! as it is. A relative `ssl-ca` is relative to the config's folder, as every path in it.
//! Loopback is 127.0.0.0/8, `::1` and `localhost`; a unix socket is a `socket=` parameter.

use std::net::IpAddr;
use std::path::Path;

use super::{ConfigError, DbUrl, TlsConfig};

/// `url`, the database of setting `key`, as the stack is to use it (see the module's doc), or why
/// it may not be used.
pub(crate) fn check(key: &str, url: DbUrl, tls: &TlsConfig, base: &Path) -> Result<DbUrl, ConfigError> {
    if !url.is_mysql() {
        return Ok(url);
    }
    let invalid = |message: String| ConfigError::Invalid(format!("{key}: {message}"));
    // `url` parses both schemes alike (neither is "special" to it); sqlx gets `mysql:` later.
    let mut parsed = url::Url::parse(url.expose()).map_err(|e| invalid(format!("not a valid database URL ({e})")))?;
    let param =
        |names: &[&str]| parsed.query_pairs().find(|(k, _)| names.contains(&k.as_ref())).map(|(_, v)| v.into_owned());
    let given_mode = param(&["ssl-mode", "sslmode"]);
    let mode = given_mode.as_deref().map(str::to_ascii_lowercase);
    let ca = param(&["ssl-ca", "sslca"]);
    let host = parsed.host_str().unwrap_or("").to_owned();
    let local = param(&["socket"]).is_some() || is_loopback(&host);
    let refuse = |why: &str| {
        Err(invalid(format!(
            "the database on {host} {why}: give its URL ?ssl-mode=VERIFY_IDENTITY&ssl-ca=CA_FILE (or set tls.ca), \
             or set tls.allow_plaintext_databases = true (docs/operations.md, \"Database TLS\")"
        )))
    };
    let mut add: Vec<(&str, String)> = Vec::new();
    match mode.as_deref() {
        None if local || tls.allow_plaintext_databases => {}
        None => match &tls.ca {
            Some(tls_ca) => {
                add.push(("ssl-mode", "VERIFY_IDENTITY".into()));
                if ca.is_none() {
                    add.push(("ssl-ca", tls_ca.display().to_string()));
                }
            }
            None => return refuse("would be reached without TLS (the URL has no ssl-mode)"),
        },
        Some("disabled" | "preferred") if local || tls.allow_plaintext_databases => {}
        Some(m @ ("disabled" | "preferred")) => {
            return refuse(&format!("would be reached without TLS (ssl-mode={})", m.to_ascii_uppercase()))
        }
        Some("required") => {}
        Some("verify_ca" | "verify_identity") => {
            if let (None, Some(tls_ca)) = (&ca, &tls.ca) {
                add.push(("ssl-ca", tls_ca.display().to_string()));
            }
        }
        Some(_) => {
            return Err(invalid(format!(
                "ssl-mode={:?} is none of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
                given_mode.unwrap_or_default()
            )))
        }
    }
    // A relative `ssl-ca` the URL gives: relative to the config's folder.
    let relative_ca = ca.as_deref().filter(|c| !c.starts_with("-----") && Path::new(c).is_relative());
    if add.is_empty() && relative_ca.is_none() {
        return Ok(url);
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| match (k.as_ref(), relative_ca) {
            ("ssl-ca" | "sslca", Some(rel)) => (k.into_owned(), base.join(rel).display().to_string()),
            _ => (k.into_owned(), v.into_owned()),
        })
        .chain(add.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(DbUrl::new(String::from(parsed)))
}

/// Whether a URL's host is this host's loopback (an empty host is sqlx's default, `localhost`).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.is_empty() || bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tls(ca: Option<&str>, allow: bool) -> TlsConfig {
        TlsConfig { ca: ca.map(Into::into), allow_plaintext_databases: allow, ..TlsConfig::default() }
    }

    fn check_url(url: &str, tls: &TlsConfig) -> Result<String, String> {
        check("shards.a.primary", DbUrl::new(url), tls, Path::new("/etc/shop"))
            .map(|u| u.expose().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plaintext_to_another_host_is_refused_with_the_setting_and_no_password() {
        for url in [
            "mysql://shop:hunter2@10.0.0.5:3306/shard_a",
            "mariadb://shop:hunter2@db.internal/shard_a?ssl-mode=PREFERRED",
            "mysql://shop:hunter2@[2001:db8::5]:3306/shard_a?ssl-mode=disabled",
        ] {
            let e = check_url(url, &tls(None, false)).unwrap_err();
            assert!(e.starts_with("config: shards.a.primary: the database on "), "{e}");
            assert!(e.contains("tls.allow_plaintext_databases") && !e.contains("hunter2") && !e.contains('\n'), "{e}");
            assert_eq!(check_url(url, &tls(None, true)).unwrap(), url, "the flag leaves it as it is");
        }
        // A CA does not make ssl-mode=DISABLED encrypted.
        assert!(check_url("mysql://u:p@10.0.0.5/d?ssl-mode=DISABLED", &tls(Some("/ca.crt"), false)).is_err());
    }

    #[test]
    fn loopback_and_sockets_may_be_plaintext() {
        for url in [
            "mysql://shop:p@127.0.0.1:3306/a",
            "mysql://shop:p@127.8.9.10/a?ssl-mode=DISABLED",
            "mysql://shop:p@[::1]:3306/a",
            "mariadb://shop:p@LocalHost/a?ssl-mode=PREFERRED",
            "mysql://shop:p@db.internal/a?socket=/run/mysqld/mysqld.sock",
            "sqlite:///var/shop/a.db",
        ] {
            assert_eq!(check_url(url, &tls(None, false)).unwrap(), url);
        }
    }

    #[test]
    fn remote_tls_is_verified_by_default_with_the_stacks_ca() {
        let ca = tls(Some("/etc/shop/certs/ca.crt"), false);
        let u = check_url("mysql://shop:p%40ss@10.0.0.5:3306/shard_a", &ca).unwrap();
        assert_eq!(
            u,
            "mysql://shop:p%40ss@10.0.0.5:3306/shard_a?ssl-mode=VERIFY_IDENTITY&ssl-ca=%2Fetc%2Fshop%2Fcerts%2Fca.crt"
        );
        // Its own CA stays; a relative one is the config folder's; REQUIRED is left as asked.
        let u = check_url("mysql://u:p@10.0.0.5/d?ssl-mode=verify_ca&ssl-ca=certs/db.crt", &ca).unwrap();
        assert_eq!(u, "mysql://u:p@10.0.0.5/d?ssl-mode=verify_ca&ssl-ca=%2Fetc%2Fshop%2Fcerts%2Fdb.crt");
        let u = check_url("mysql://u:p@10.0.0.5/d?ssl-mode=VERIFY_IDENTITY", &ca).unwrap();
        assert!(u.ends_with("ssl-mode=VERIFY_IDENTITY&ssl-ca=%2Fetc%2Fshop%2Fcerts%2Fca.crt"), "{u}");
        let required = "mysql://u:p@10.0.0.5/d?ssl-mode=REQUIRED";
        assert_eq!(check_url(required, &tls(None, false)).unwrap(), required);
        let e = check_url("mysql://u:hunter2@10.0.0.5/d?ssl-mode=SOMETIMES", &ca).unwrap_err();
        assert!(e.contains("SOMETIMES") && !e.contains("hunter2"), "{e}");
    }
}
