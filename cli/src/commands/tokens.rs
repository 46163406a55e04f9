//! `shopctl tokens mint`: a token signed with the stack's key, for tests and operators.
//! Printing the token is the point of this command; nothing else prints one.

use clap::Subcommand;
use serde_json::json;
use shopgate_core::token::{issued_at, new_claims};
use shopgate_core::UserId;

use crate::client::now;
use crate::output::{out, Format};
use crate::{stack, Context, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum TokensCommand {
    /// Print a token for a user id (no account needed: the check path does not look).
    Mint(MintArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct MintArgs {
    /// The user id (1 to 2^53-1).
    #[arg(long)]
    pub(crate) user_id: u64,
    /// The email claim.
    #[arg(long, default_value = "minted@shopgate.local")]
    pub email: String,
    /// Lifetime in seconds, at most the config's jwt.ttl_seconds (the check refuses a longer
    /// one) [default: jwt.ttl_seconds].
    #[arg(long)]
    pub(crate) ttl: Option<i64>,
}

pub async fn run(ctx: &Context, cmd: TokensCommand) -> anyhow::Result<()> {
    let TokensCommand::Mint(a) = cmd;
    let user = UserId::new(a.user_id).map_err(UsageError)?;
    let config = stack::load_config(ctx)?;
    let most = config.jwt.policy.ttl_seconds;
    let ttl = a.ttl.unwrap_or(most);
    if !(1..=most).contains(&ttl) {
        return Err(UsageError(format!(
            "--ttl must be between 1 and {most} seconds: no token may live longer than jwt.ttl_seconds ({most} s in {}), \
             which every part's check enforces",
            config.path.display()
        ))
        .into());
    }
    // Stamped no earlier than the user's revocation cut-off (as the token endpoint does), so a
    // token minted right after `users enable` or a password change is not born revoked.
    let iat = issued_at(now(), revocation_cutoff(&config, user).await);
    let claims = new_claims(user, &a.email, &config.jwt.policy, iat, ttl);
    let token = config
        .jwt
        .sign(&claims)
        .ok_or_else(|| anyhow::anyhow!("the key set in {} has no signing key", config.path.display()))?;
    if ctx.format == Format::Json {
        ctx.format
            .print(&json!({"access_token": token, "token_type": "bearer", "expires_in": ttl, "user_id": user.get()}));
    } else {
        out(token);
    }
    Ok(())
}

/// The user's `tokens_valid_after` in the auth database; 0 when there is no such account or the
/// database cannot be read (minting needs no account: the check path does not look).
async fn revocation_cutoff(config: &shopgate_core::config::Config, user: UserId) -> i64 {
    let Ok(db) = crate::db::Db::connect(&config.verifier.database_url, "the auth database").await else {
        return 0;
    };
    let account = crate::db::bounded(shopgate_verifier::users::by_id(&db.pool, user)).await;
    let cutoff = account.ok().flatten().map_or(0, |u| u.tokens_valid_after);
    db.close().await;
    cutoff
}
