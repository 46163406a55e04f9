//! `shopctl register EMAIL`: create an account.

use serde_json::json;

use crate::client::Client;
use crate::output::{cell, out, table, Format};
use crate::Context;

pub use super::AccountArgs as Args;

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let password = super::read_new_password(args.password_stdin, "Password: ", "Repeat the password: ")?;
    let user =
        Client::new(ctx)?.post_json("/auth/register", &json!({"email": args.email, "password": password}), &[]).await?;
    if ctx.format != Format::Table {
        ctx.format.print(&user);
    } else {
        out(table(
            &["id", "email", "created"],
            vec![vec![cell(&user["id"]), cell(&user["email"]), cell(&user["created_at"])]],
        ));
        out(format_args!("Registered. Next: shopctl login {}", cell(&user["email"])));
    }
    Ok(())
}
