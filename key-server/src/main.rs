//! `varsel-key-server`: the key server's own binary; the same commands as `varsel key-server`.

use std::process::ExitCode;

use clap::Parser;
use varsel_key_server::cli;

/// Varsel key server: upload codes, verification certificates and key publishing.
#[derive(Parser)]
#[command(name = "varsel-key-server", version, about)]
struct Cli {
    #[command(flatten)]
    args: cli::Args,
}

fn main() -> ExitCode {
    match cli::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}
