//! `shopctl`: the shopgate command line. See lib.rs.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    shopgate_core::files::private_umask();
    shopctl::output::errors_as_json_from_args(&std::env::args_os().collect::<Vec<_>>());
    let cli = match shopctl::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with 0; help shown for a missing subcommand is usage (2).
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return fail(&shopctl::usage_line(&e), 2),
    };
    match shopctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&shopctl::error_line(&e), shopctl::exit_code(&e)),
    }
}

fn fail(line: &str, code: u8) -> ExitCode {
    shopctl::output::fail(line, code);
    ExitCode::from(code)
}
