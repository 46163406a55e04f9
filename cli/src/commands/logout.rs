//! `shopctl logout`: revoke the kept token on the server (`POST /auth/logout`), then forget it.
//!
//! If the server cannot be asked (the gateway is down), the token stays kept and the command fails
//! (exit 1) saying so: forgetting a token that is still valid would leave no way to revoke it from
//! here. `--forget` forgets it anyway, with a warning of how long it stays valid elsewhere.

use serde_json::json;
use shopgate_core::time::rfc3339;

use crate::client::{now, Client, LoginNeeded};
use crate::credentials;
use crate::output::{out, warn, Format};
use crate::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Forget the login here even if the server cannot revoke the token now.
    #[arg(long)]
    forget: bool,
}

/// What became of the token on the server.
enum Revoked {
    Yes,
    AlreadyInvalid,
    No(String),
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let base = Client::new(ctx)?.base().to_owned();
    let Some(cred) = credentials::get(&base)? else {
        if ctx.format != Format::Table {
            ctx.format.print(&json!({"logged_out": false, "revoked": false, "url": base}));
        } else {
            out(format_args!("Not logged in to {base}."));
        }
        return Ok(());
    };
    let revoked = if cred.expires_at <= now() {
        Revoked::AlreadyInvalid
    } else {
        let client = Client::with_token(ctx, cred.access_token.clone(), cred.email.clone())?;
        match client.post_json("/auth/logout", &json!({}), &[]).await {
            Ok(_) => Revoked::Yes,
            Err(e) if matches!(e.downcast_ref::<LoginNeeded>(), Some(LoginNeeded::Refused { .. })) => {
                Revoked::AlreadyInvalid
            }
            Err(e) => Revoked::No(crate::error_line(&e)),
        }
    };
    if let (Revoked::No(why), false) = (&revoked, args.forget) {
        anyhow::bail!(
            "the token could not be revoked ({why}); it is still kept here and valid until {}: run `shopctl \
             logout` again when the shop answers, or `shopctl logout --forget`",
            rfc3339(cred.expires_at)
        );
    }
    credentials::remove(&base)?;
    if ctx.format != Format::Table {
        let (revoked, warning) = match &revoked {
            Revoked::Yes => (json!(true), json!(null)),
            Revoked::AlreadyInvalid => (json!("already_invalid"), json!(null)),
            Revoked::No(why) => (json!(false), json!(why)),
        };
        ctx.format.print(&json!({
            "logged_out": true, "email": cred.email, "url": base, "revoked": revoked, "warning": warning,
        }));
    } else {
        match &revoked {
            Revoked::Yes => out(format_args!("Logged out of {base} ({}); the token is revoked.", cred.email)),
            Revoked::AlreadyInvalid => out(format_args!(
                "Logged out of {base} ({}); the token had already expired or been revoked.",
                cred.email
            )),
            Revoked::No(_) => out(format_args!("Forgot the login to {base} ({}) on this machine.", cred.email)),
        }
    }
    if let Revoked::No(why) = revoked {
        warn(format_args!(
            "the server did not revoke the token ({why}); it stays valid until {} unless revoked there",
            rfc3339(cred.expires_at)
        ));
    }
    Ok(())
}
