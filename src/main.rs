//! `varsel`: the one command users run.
//!
//! It holds the integrator tools that work on protocol data directly (`derive`, `export
//! inspect`), the `demo` of the whole system, the protocol `selfcheck`, and hands `device` and
//! `key-server` over to those crates.

mod demo;
mod inspect;
mod selfcheck;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{Metadata, TemporaryExposureKey};

/// Varsel: decentralized exposure notification.
#[derive(Parser)]
#[command(name = "varsel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tell the whole story with real parts: a key server on loopback, three simulated phones,
    /// a contact, a positive test, a report, an export, a sync and an alert.
    Demo,
    /// Run the protocol self-check: a fresh key, a day of identifiers, an advertisement, an
    /// upload HMAC and a signed export, each checked as it is made; prints JSON.
    Selfcheck,
    /// Print the 144 identifiers of a Temporary Exposure Key as JSON.
    Derive(DeriveArgs),
    /// Work with diagnosis-key export files.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Varsel on this device: keys, Bluetooth, sync, exposures and reports.
    Device(varsel_device::cli::Args),
    /// The key server: serve, signing keys, health-authority accounts.
    KeyServer(varsel_key_server::cli::Args),
}

#[derive(clap::Args)]
struct DeriveArgs {
    /// The Temporary Exposure Key, 32 hex digits.
    #[arg(long)]
    tek: String,
    /// Its rolling start interval number.
    #[arg(long)]
    start: u32,
    /// Clear metadata, 8 hex digits, to also print each interval's encrypted metadata.
    #[arg(long)]
    metadata: Option<String>,
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Print every field of an export archive and the outcome of each signature as JSON.
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo => demo::run(),
        Command::Selfcheck => selfcheck::run().and_then(|report| print_json(&report)),
        Command::Derive(args) => derive(&args),
        Command::Export(ExportCommand::Inspect(args)) => inspect::run(&args),
        Command::Device(args) => varsel_device::cli::run(args),
        Command::KeyServer(args) => varsel_key_server::cli::run(args).map_err(Into::into),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `varsel derive`: the identifiers of one key.
fn derive(args: &DeriveArgs) -> Result<()> {
    let tek = parse_hex::<16>("--tek", &args.tek).map(TemporaryExposureKey::from_bytes)?;
    let metadata = args
        .metadata
        .as_deref()
        .map(|text| parse_hex::<4>("--metadata", text).map(Metadata::from_bytes))
        .transpose()?;
    let start = EnIntervalNumber::new(args.start);
    let (rpik, aemk) = (tek.rpik(), tek.aemk());

    let identifiers: Vec<_> = (0u32..)
        .zip(rpik.rpis(start))
        .map(|(offset, rpi)| {
            let mut entry = json!({
                "interval": start.value().wrapping_add(offset),
                "rpi": hex::encode(rpi.as_bytes()),
            });
            if let Some(metadata) = &metadata {
                entry["aem"] = hex::encode(aemk.encrypt(&rpi, metadata).to_bytes()).into();
            }
            entry
        })
        .collect();
    let output = json!({
        "rpik": hex::encode(rpik.expose_secret()),
        "aemk": hex::encode(aemk.expose_secret()),
        "identifiers": identifiers,
    });
    print_json(&output)
}

/// Prints a JSON value on stdout, pretty.
fn print_json(value: &serde_json::Value) -> Result<()> {
    write_line(serde_json::to_string_pretty(value)?)
}

/// Prints one line on stdout; a closed pipe (as with `varsel demo | head`) ends output quietly
/// instead of failing.
fn write_line(line: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Parses exactly `N` bytes of hex given for the option `name`.
fn parse_hex<const N: usize>(name: &str, text: &str) -> Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).with_context(|| format!("{name} is not hex"))?;
    match <[u8; N]>::try_from(bytes.as_slice()) {
        Ok(array) => Ok(array),
        Err(_) => bail!(
            "{name} must be {N} bytes ({} hex digits), got {}",
            N * 2,
            bytes.len()
        ),
    }
}
