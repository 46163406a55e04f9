//! `shopctl tokens mint`: a token signed with the stack's key, for tests and operators.
//! Printing the token is the point of this command; nothing else prints one.

use clap::Subcommand;
use serde_json::json;
use shopgate_core::token::new_claims;
use shopgate_core::UserId;

use crate::client::now;
use crate::output::{out, print_json};
use crate::{stack, Context, UsageError};

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Print a token for a user id (no account needed: the check path does not look).
    Mint(MintArgs),
}

#[derive(clap::Args, Debug)]
pub struct MintArgs {
    /// The user id (1 to 2^53-1).
    #[arg(long)]
    pub user_id: u64,
    /// The email claim.
    #[arg(long, default_value = "minted@shopgate.local")]
    pub email: String,
    /// Lifetime in seconds [default: the config's jwt.ttl_seconds].
    #[arg(long)]
    pub ttl: Option<i64>,
}

pub async fn run(ctx: &Context, cmd: TokensCommand) -> anyhow::Result<()> {
    let TokensCommand::Mint(a) = cmd;
    let user = UserId::new(a.user_id).map_err(UsageError)?;
    let config = stack::load_config(ctx)?;
    let ttl = a.ttl.unwrap_or(config.jwt.ttl_seconds);
    if ttl < 1 {
        return Err(UsageError("--ttl must be at least 1 second".into()).into());
    }
    let claims = new_claims(user, &a.email, &config.jwt.policy, now(), ttl);
    let token = config
        .jwt
        .sign(&claims)
        .ok_or_else(|| anyhow::anyhow!("the key set in {} has no signing key", config.path.display()))?;
    if ctx.json {
        print_json(&json!({"access_token": token, "token_type": "bearer", "expires_in": ttl, "user_id": user.get()}));
    } else {
        out(token);
    }
    Ok(())
}
