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

/// Writes `text` to `path` through a temporary file beside it, readable by everyone (nginx's
/// workers run as another user).
pub(crate) fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
