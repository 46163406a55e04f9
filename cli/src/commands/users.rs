//! `shopctl users locate|disable|enable|unlock ID|EMAIL`: accounts, straight from the databases.
//!
//! An email is resolved to an id in the auth database. `disable` clears `is_active` and moves the
//! user's `tokens_valid_after` cut-off past now, so every token issued so far is revoked: each
//! verifier reloads cut-offs every `revocation_refresh_ms`, so the revocation is in force
//! everywhere within the config's revocation bound. `enable` lets the user log in again; tokens
//! revoked by the disable stay revoked. `unlock` clears the account's failed logins on every
//! verifier (the same schedule and bound: each follows the auth database's `login_unlocks`).

use clap::Subcommand;
use serde_json::{json, Value};
use shopgate_core::config::Config;
use shopgate_core::shardmap::bucket;
use shopgate_core::time::rfc3339;
use shopgate_core::token::revoke_all_cutoff;
use shopgate_core::{Email, UserId};
use shopgate_store::{orders, users as profiles};
use shopgate_verifier::users::{self, User};

use crate::client::now;
use crate::db::{bounded, Db};
use crate::output::{out, table, warn, Format};
use crate::{stack, Context, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum UsersCommand {
    /// Where a user lives: bucket, owning shard, and whether their rows are there.
    Locate(UserArg),
    /// Stop a user logging in and revoke every token they hold.
    Disable(UserArg),
    /// Let a disabled user log in again.
    Enable(UserArg),
    /// Clear the account's failed logins on every verifier, so a right password works at once.
    Unlock(UserArg),
}

#[derive(clap::Args, Debug)]
pub(crate) struct UserArg {
    /// A user id (e.g. 1042) or an email address.
    #[arg(value_name = "ID|EMAIL")]
    pub user: String,
}

/// What the operator named.
enum Who {
    Id(UserId),
    Email(Email),
}

fn parse_who(s: &str) -> Result<Who, UsageError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return UserId::parse_decimal(s).map(Who::Id).map_err(|e| UsageError(format!("{s:?}: {e}")));
    }
    Email::parse(s)
        .map(Who::Email)
        .map_err(|e| UsageError(format!("{s:?} is neither a user id nor an email address ({e})")))
}

/// The account as the auth database (the verifier's) has it.
async fn account(auth: &Db, who: &Who) -> anyhow::Result<Option<User>> {
    match who {
        Who::Id(id) => bounded(users::by_id(&auth.pool, *id)).await,
        Who::Email(e) => bounded(users::by_email(&auth.pool, e)).await,
    }
    .map_err(|e| anyhow::anyhow!("reading the auth database ({}): {}", auth.url, auth.explain(&e)))
}

fn no_such_user(who: &Who) -> anyhow::Error {
    match who {
        Who::Id(id) => anyhow::anyhow!("there is no user {id} in the auth database"),
        Who::Email(e) => anyhow::anyhow!("there is no user with email {e} in the auth database"),
    }
}

async fn auth_db(config: &Config) -> anyhow::Result<Db> {
    crate::db::auth_primary(config).await
}

pub async fn run(ctx: &Context, cmd: UsersCommand) -> anyhow::Result<()> {
    let (who, action) = match &cmd {
        UsersCommand::Unlock(a) => return unlock(ctx, &stack::load_config(ctx)?, parse_who(&a.user)?).await,
        UsersCommand::Locate(a) => (parse_who(&a.user)?, None),
        UsersCommand::Disable(a) => (parse_who(&a.user)?, Some(false)),
        UsersCommand::Enable(a) => (parse_who(&a.user)?, Some(true)),
    };
    let config = stack::load_config(ctx)?;
    match action {
        None => locate(ctx, &config, who).await,
        Some(active) => set_active(ctx, &config, who, active).await,
    }
}

async fn locate(ctx: &Context, config: &Config, who: Who) -> anyhow::Result<()> {
    // An id can be located without the auth database (it may be down); an email cannot. An
    // unknown id is the same failure (exit 1) as an unknown email, naming where it would live.
    let (id, acct) = match &who {
        Who::Id(id) => match auth_db(config).await {
            Ok(auth) => {
                let a = account(&auth, &who).await?;
                auth.close().await;
                if a.is_none() {
                    let map = stack::current_map(config).await?;
                    let (bucket, shard) = (bucket(*id), map.shard_for(*id));
                    let why = format!("{} (its bucket {bucket:03} is on shard {shard})", no_such_user(&who));
                    return Err(anyhow::anyhow!(why));
                }
                (*id, a)
            }
            Err(e) => {
                warn(format_args!("{e:#}; locating by id only"));
                (*id, None)
            }
        },
        Who::Email(_) => {
            let auth = auth_db(config).await?;
            let a = account(&auth, &who).await?.ok_or_else(|| no_such_user(&who))?;
            auth.close().await;
            (a.id, Some(a))
        }
    };
    let map = stack::current_map(config).await?;
    let shard_name = map.shard_for(id);
    let shard =
        config.shard(shard_name.as_str()).ok_or_else(|| anyhow::anyhow!("shard {shard_name} is not in the config"))?;
    let db = Db::connect(&shard.primary, &format!("shard {shard_name}'s primary")).await?;
    let rows = async {
        let profile = bounded(profiles::find(&db.pool, id)).await?;
        let orders = bounded(orders::count_for_user(&db.pool, id)).await?;
        Ok::<_, sqlx::Error>((profile.is_some(), orders))
    }
    .await
    .map_err(|e| anyhow::anyhow!("reading shard {shard_name} ({}): {}", db.url, db.explain(&e)))?;
    db.close().await;
    let (profile, orders) = rows;
    if ctx.format != Format::Table {
        ctx.format.print_in(
            &json!({
                "id": id.get(),
                "email": acct.as_ref().map(|a| a.email.clone()),
                "in_auth_database": acct.is_some(),
                "is_active": acct.as_ref().map(|a| a.is_active),
                "bucket": bucket(id),
                "shard": shard_name.as_str(),
                "profile_on_shard": profile,
                "orders_on_shard": orders,
            }),
            &["id", "email", "shard", "bucket"],
        );
    } else {
        let email = acct.as_ref().map_or_else(|| "(not in the auth database)".to_owned(), |a| a.email.clone());
        let active = acct.as_ref().map_or_else(String::new, |a| if a.is_active { "yes".into() } else { "no".into() });
        let row = vec![
            id.to_string(),
            email,
            active,
            format!("{:03}", bucket(id)),
            shard_name.to_string(),
            if profile { "yes".into() } else { "no".into() },
            orders.to_string(),
        ];
        out(table(&["id", "email", "active", "bucket", "shard", "profile", "orders"], vec![row]));
    }
    Ok(())
}

async fn set_active(ctx: &Context, config: &Config, who: Who, active: bool) -> anyhow::Result<()> {
    let auth = auth_db(config).await?;
    let acct = account(&auth, &who).await?.ok_or_else(|| no_such_user(&who))?;
    // Disabling moves the cut-off past now: tokens are stamped with whole seconds, and one issued
    // in this very second must be revoked too. Logins after `enable` are stamped no earlier than
    // the cut-off, so they work at once.
    let cutoff = if active { acct.tokens_valid_after } else { revoke_all_cutoff(acct.tokens_valid_after, now()) };
    let updated = bounded(users::set_active(&auth.pool, acct.id, active, cutoff))
        .await
        .map_err(|e| anyhow::anyhow!("updating the auth database ({}): {}", auth.url, auth.explain(&e)))?;
    auth.close().await;
    if !updated {
        return Err(no_such_user(&who));
    }
    // The shard's copy of the profile says the same, where there is one; the auth database is
    // what counts, so a shard that is down is only a warning.
    let map = stack::current_map(config).await?;
    let shard_name = map.shard_for(acct.id);
    if let Some(shard) = config.shard(shard_name.as_str()) {
        let mirrored = async {
            let db = Db::connect(&shard.primary, &format!("shard {shard_name}'s primary")).await?;
            let r = bounded(profiles::set_active(&db.pool, acct.id, active))
                .await
                .map_err(|e| anyhow::anyhow!("shard {shard_name}: {}", db.explain(&e)));
            db.close().await;
            r
        };
        if let Err(e) = mirrored.await {
            warn(format_args!("the shard copy of the profile was not updated ({e:#}); the auth database is updated"));
        }
    }
    let bound = config.verifier.revocation_bound();
    if ctx.format != Format::Table {
        let mut v =
            json!({"id": acct.id.get(), "email": acct.email, "is_active": active, "was_active": acct.is_active});
        if !active {
            v["tokens_revoked_before"] = Value::from(rfc3339(cutoff));
            v["in_force_within_ms"] = Value::from(bound.as_millis() as u64);
        }
        ctx.format.print(&v);
    } else if active {
        out(format_args!("Enabled user {} ({}): they can log in again.", acct.id, acct.email));
    } else {
        out(format_args!(
            "Disabled user {} ({}): logins refused; every token issued so far is revoked on all verifiers within {} ms.",
            acct.id,
            acct.email,
            bound.as_millis()
        ));
    }
    Ok(())
}

/// Records the unlock in the auth database, then waits the revocation bound: every verifier reads
/// unlocks on the schedule of its revocations, so when this returns the account's failed logins
/// are forgotten everywhere. Its client addresses keep their counts.
async fn unlock(ctx: &Context, config: &Config, who: Who) -> anyhow::Result<()> {
    let auth = auth_db(config).await?;
    let acct = account(&auth, &who).await?.ok_or_else(|| no_such_user(&who))?;
    let recorded = bounded(shopgate_verifier::unlocks::record(&auth.pool, &acct.email))
        .await
        .map_err(|e| anyhow::anyhow!("updating the auth database ({}): {}", auth.url, auth.explain(&e)));
    auth.close().await;
    recorded?;
    let bound = config.verifier.revocation_bound();
    tokio::time::sleep(bound).await;
    if ctx.format != Format::Table {
        let waited = bound.as_millis() as u64;
        ctx.format.print(&json!({"id": acct.id.get(), "email": acct.email, "unlocked": true, "waited_ms": waited}));
    } else {
        out(format_args!(
            "Unlocked user {} ({}): every verifier has forgotten its failed logins (waited {} ms); \
             the right password works now.",
            acct.id,
            acct.email,
            bound.as_millis()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_who, Who};

    #[test]
    fn ids_and_emails() {
        assert!(matches!(parse_who("42"), Ok(Who::Id(id)) if id.get() == 42));
        assert!(matches!(parse_who(" Ann@Example.com "), Ok(Who::Email(e)) if e.as_str() == "ann@example.com"));
        for bad in ["0", "ann", "", "99999999999999999999", "-3"] {
            assert!(parse_who(bad).is_err(), "{bad:?}");
        }
    }
}
