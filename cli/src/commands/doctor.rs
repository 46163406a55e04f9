//! `shopctl doctor`: every part of the stack checked at once, each failure named with what to do.
//!
//! In order: the config; the auth database (where the current shard map lives); that every shard
//! owning buckets in that map is in the config; a bucket move left unfinished; nginx's
//! `/healthz`; each verifier's and each backend process's `/readyz`; each shard's primary and
//! replica (reachable, replicating within the shard's lag bound); the shard map version each
//! process routes with against the current one; and the kept login, if there is one. Exit 1 if
//! any check fails, naming every part that did.

use serde_json::{json, Value};
use shopgate_core::config::Config;

use super::shards::{moves, shard_status, Lag};
use crate::client::{Client, LoginNeeded};
use crate::health::{Answer, Prober};
use crate::output::{self, out, status_table, Format, Mark};
use crate::{credentials, stack, Context};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

/// One part and what was found.
struct Check {
    part: String,
    ok: bool,
    detail: String,
    /// What to do about a failure.
    fix: Option<String>,
}

impl Check {
    fn ok(part: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { part: part.into(), ok: true, detail: detail.into(), fix: None }
    }

    fn failed(part: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { part: part.into(), ok: false, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn json(&self) -> Value {
        json!({"part": self.part, "ok": self.ok, "detail": self.detail, "fix": self.fix})
    }
}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    match stack::config_path(ctx).map(|p| (stack::load_from(&p), p)) {
        Some((Ok(config), path)) => {
            checks.push(Check::ok("config", path.display().to_string()));
            checks.extend(stack_checks(&config).await?);
        }
        Some((Err(e), path)) => checks.push(Check::failed(
            "config",
            format!("{}: {}", path.display(), crate::error_line(&e)),
            "fix the file, or point --config (SHOP_CONFIG) at the stack's shop.toml",
        )),
        None => checks.push(Check::failed(
            "config",
            "no stack config found",
            "start the stack with scripts/up, or pass --config FILE (or SHOP_CONFIG)",
        )),
    }
    checks.push(kept_login(ctx).await);

    if ctx.format == Format::Table {
        let rows = checks
            .iter()
            .map(|c| {
                let state = if c.ok { ("ok".to_owned(), Mark::Good) } else { ("FAIL".to_owned(), Mark::Bad) };
                let detail = match &c.fix {
                    Some(fix) => format!("{}; {fix}", c.detail),
                    None => c.detail.clone(),
                };
                vec![(c.part.clone(), Mark::Plain), state, (detail, Mark::Plain)]
            })
            .collect();
        out(status_table(&["part", "state", "detail"], rows));
    } else {
        ctx.format.print_in(
            &output::list(checks.iter().map(Check::json).collect(), Value::Null),
            &["part", "ok", "detail", "fix"],
        );
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.part.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!("{} of {} checks failed: {}", failed.len(), checks.len(), failed.join(", "));
    }
    Ok(())
}

/// Every part the config names, asked at once where they are independent.
async fn stack_checks(config: &Config) -> anyhow::Result<Vec<Check>> {
    let shards: Vec<_> = config.shards.iter().cloned().map(|s| tokio::spawn(shard_status(s))).collect();
    let prober = Prober::new(config)?;
    let mut checks = Vec::new();
    let current = match stack::current_map(config).await {
        Ok(map) => {
            checks.push(Check::ok("auth database", format!("shard map version {}", map.version())));
            // Every bucket's owner is a shard of this config (so has backends and an upstream).
            checks.push(match config.check_owners(&map) {
                Ok(()) => Check::ok("shard map", "every shard that owns buckets is in the config"),
                Err(e) => Check::failed(
                    "shard map",
                    e.to_string(),
                    "those users get errors until the shard is back in the config and running",
                ),
            });
            Some(map.version())
        }
        Err(e) => {
            checks.push(Check::failed(
                "auth database",
                crate::error_line(&e),
                "start it (logins, registrations and revocations need it; the check path does not)",
            ));
            None
        }
    };
    // A move stopped midway holds its buckets' users up until it is resumed or rolled back.
    let unfinished = moves::unfinished(config).await.unwrap_or_default();
    if let [what, how] = moves::unfinished_lines(&unfinished).as_slice() {
        checks.push(Check::failed("moves", what.clone(), how.clone()));
    }
    let behind = if unfinished.is_empty() {
        "reload nginx with the current map: shopctl nginx render --output FILE, then nginx -s reload"
    } else {
        "a bucket move is unfinished (see moves): resuming it routes nginx"
    };
    let routes = |part: String, answer: &Answer, fix_down: &str, fix_version: &str| -> Check {
        match (answer, current) {
            (Answer::Ready { map_version: Some(v) }, Some(cur)) if *v != cur => Check::failed(
                part,
                format!("routes with shard map version {v}, the current one is {cur}"),
                fix_version.to_owned(),
            ),
            (Answer::Ready { map_version }, _) => Check::ok(
                part,
                map_version.map_or_else(|| "ready".to_owned(), |v| format!("ready, shard map version {v}")),
            ),
            (other, _) => Check::failed(part, other.error().unwrap_or_default().to_owned(), fix_down.to_owned()),
        }
    };
    checks.extend(certificates(config));
    let nginx = prober.nginx(config).await;
    checks.push(routes(
        "nginx".to_owned(),
        &nginx.answer,
        "start nginx (scripts/up), or look at its error log",
        behind,
    ));
    for v in prober.verifiers(config).await {
        checks.push(routes(
            format!("verifier at {}", v.address),
            &v.answer,
            "start it (scripts/up), or look at its log; if it answers but is not ready, its auth database is down",
            "it follows the map once a second: if this stays, restart it",
        ));
    }
    let backends = prober.backends(&config.shards).await;
    for ((task, shard), processes) in shards.into_iter().zip(&config.shards).zip(backends) {
        let name = &shard.name;
        for b in processes {
            checks.push(routes(
                format!("shard {name}'s backend at {}", b.address),
                &b.answer,
                "start it (scripts/up), or look at its log; if it answers but is not ready, its primary is down",
                "it follows the map once a second: if this stays, restart it",
            ));
        }
        let st = task.await?;
        checks.push(match &st.primary {
            Ok(()) => Check::ok(format!("shard {name}'s primary"), "reachable"),
            Err(e) => Check::failed(
                format!("shard {name}'s primary"),
                e.clone(),
                "start it: this shard's users get 503 for writes until it answers",
            ),
        });
        if let Some(replica) = &st.replica {
            let part = format!("shard {name}'s replica");
            let bound = shard.replica_max_lag_seconds;
            checks.push(match (replica, &st.lag) {
                (Err(e), _) => Check::failed(part, e.clone(), "start it: reads fall back to the primary meanwhile"),
                (Ok(()), Lag::Stopped(why)) => {
                    Check::failed(part, format!("not replicating ({why})"), "start replication on it (START SLAVE)")
                }
                (Ok(()), Lag::Seconds(s, _)) if *s > bound as f64 => Check::failed(
                    part,
                    format!("{s:.1} s behind its primary (bound {bound} s)"),
                    "reads fall back to the primary until it catches up: look at its load and the link",
                ),
                (Ok(()), Lag::Seconds(s, _)) => Check::ok(part, format!("replicating, {s:.1} s behind")),
                (Ok(()), _) => Check::ok(part, "reachable"),
            });
        }
    }
    Ok(checks)
}

/// Each certificate file the config names: readable, valid, and not within 14 days of expiry (the
/// `CertificateExpiresSoon` alert's bound).
fn certificates(config: &Config) -> Vec<Check> {
    const WARN_DAYS: i64 = 14;
    let now = shopgate_core::time::unix_now();
    shopgate_core::certs::files(config)
        .into_iter()
        .map(|f| {
            let part = format!("certificate {}", f.setting);
            match shopgate_core::certs::not_after(&f.path) {
                Err(e) => Check::failed(part, e, "put the file in place, readable by the parts that use it"),
                Ok(at) if at <= now => Check::failed(
                    part,
                    format!("{} expired at {}", f.path.display(), shopgate_core::time::rfc3339(at)),
                    "renew it now: clients refuse it",
                ),
                Ok(at) if at - now < WARN_DAYS * 86_400 => Check::failed(
                    part,
                    format!(
                        "{} expires at {} ({} days)",
                        f.path.display(),
                        shopgate_core::time::rfc3339(at),
                        (at - now) / 86_400
                    ),
                    "renew it: see CertificateExpiresSoon in docs/operations.md",
                ),
                Ok(at) => Check::ok(
                    part,
                    format!(
                        "{} valid until {} ({} days)",
                        f.path.display(),
                        shopgate_core::time::rfc3339(at),
                        (at - now) / 86_400
                    ),
                ),
            }
        })
        .collect()
}

/// The login kept for the gateway (or `SHOPCTL_TOKEN`): none is fine; one the shop refuses is not.
async fn kept_login(ctx: &Context) -> Check {
    let client = match Client::logged_in(ctx) {
        Ok(c) => c,
        Err(e) => {
            return match e.downcast_ref::<LoginNeeded>() {
                Some(LoginNeeded::None { url }) => Check::ok("login", format!("none kept for {url}")),
                _ => Check::failed("login", crate::error_line(&e), "log in again: shopctl login EMAIL"),
            };
        }
    };
    let base = client.base().to_owned();
    match client.get("/auth/me").await {
        Ok(me) => Check::ok("login", format!("{} at {base}", output::cell(&me["email"]))),
        Err(e) if e.downcast_ref::<LoginNeeded>().is_some() => {
            let email = credentials::get(&base).ok().flatten().map_or_else(|| "EMAIL".to_owned(), |c| c.email);
            Check::failed("login", crate::error_line(&e), format!("shopctl login {email}"))
        }
        Err(e) => Check::failed("login", crate::error_line(&e), "the gateway must answer to check the login"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use shopgate_core::config::{ensure_dev_key, ConfigBuilder, DEV_KEY_FILE};

    /// A self-signed certificate in `dir/NAME.crt` valid for `days` days (Debian's openssl).
    fn certificate(dir: &std::path::Path, name: &str, days: u32) {
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-days", &days.to_string(), "-subj", &format!("/CN={name}"), "-keyout"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn certificates_near_expiry_or_missing_fail_and_good_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        certificate(dir.path(), "host", 5);
        certificate(dir.path(), "ca", 400);
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let config = ConfigBuilder::new(addr(8080), &[addr(9000)])
            .shard("a", 0, "all", addr(9001))
            .set("tls.certificate", "host.crt")
            .set("tls.key", "host.key")
            .set("tls.ca", "ca.crt")
            .set("nginx.tls.certificate", "gone.crt")
            .set("nginx.tls.key", "gone.key")
            .write(&dir.path().join("shop.toml"))
            .unwrap();
        let checks = super::certificates(&config);
        let by = |part: &str| checks.iter().find(|c| c.part == part).unwrap_or_else(|| panic!("no {part}"));
        let host = by("certificate tls.certificate");
        assert!(!host.ok && host.detail.contains("expires at"), "{}", host.detail);
        assert!(by("certificate tls.ca").ok);
        let edge = by("certificate nginx.tls.certificate");
        assert!(!edge.ok && edge.detail.contains("gone.crt"), "{}", edge.detail);
    }
}
