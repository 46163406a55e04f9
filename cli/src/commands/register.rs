//! `shopctl register EMAIL`: create an account.

use serde_json::json;

use crate::client::Client;
use crate::output::{cell, out, Format};
use crate::Context;

pub use super::AccountArgs as Args;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let password = super::read_new_password(args.password_stdin, "Password: ", "Repeat the password: ")?;
    let user =
        Client::new(ctx)?.post_json("/auth/register", &json!({"email": args.email, "password": password}), &[]).await?;
    super::print_account(ctx, &user);
    if ctx.format == Format::Table {
        out(format_args!("Registered. Next: shopctl login {}", cell(&user["email"])));
    }
    Ok(())
}
