//! `varsel-device`: Varsel on this device, from a terminal. See `varsel-device --help`.

use std::process::ExitCode;

use clap::Parser;

/// Varsel on this device: keys, Bluetooth, sync, exposures and reports.
#[derive(Parser)]
#[command(name = "varsel-device", version, about)]
struct Cli {
    #[command(flatten)]
    args: varsel_device::cli::Args,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match varsel_device::cli::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
