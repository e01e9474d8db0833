//! `shoal`: parse the command line, run it, turn an error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use shoal_agent::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
