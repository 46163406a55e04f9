//! `shopctl completions SHELL`: print completions for bash, zsh, fish, elvish or powershell.

use clap::CommandFactory as _;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "shopctl", &mut std::io::stdout());
    Ok(())
}
