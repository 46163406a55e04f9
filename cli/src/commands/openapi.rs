//! `shopctl openapi`: the public API's OpenAPI 3 document (what nginx serves at `/openapi.json`).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::output::out_raw;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Write to this file (atomically) instead of standard output.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = crate::openapi::to_json();
    match a.output {
        Some(path) => write_atomically(&path, &text),
        None => {
            out_raw(&text);
            Ok(())
        }
    }
}

/// Writes `text` to `path` whole, readable by everyone (nginx's workers run as another user).
pub(crate) fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    shopgate_core::files::replace_public(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
