//! `shopctl completions SHELL`: print completions for bash, zsh, fish, elvish or powershell.
//!
//! e.g. `shopctl completions bash > ~/.local/share/bash-completion/completions/shopctl`.

use clap::CommandFactory as _;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The shell to complete for.
    pub(crate) shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "shopctl", &mut script);
    crate::output::out_raw(&String::from_utf8_lossy(&script));
    Ok(())
}
