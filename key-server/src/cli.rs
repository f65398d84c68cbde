//! The operator's commands, shared by `varsel-key-server` and `varsel key-server`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::error::Result;
use crate::keyside::{ExportKeyAction, KeyService, export_keys, verify_exports};
use crate::server::KeyServer;
use crate::store::VerificationStore;

/// `varsel-key-server [--config FILE] COMMAND`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML configuration file; `VARSEL_KEY_SERVER__SECTION__FIELD` variables override it.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every enabled router on the configured address until interrupted.
    Serve,
    /// Manage the signing keys of tokens and certificates.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage health-authority accounts.
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// Print the OpenAPI document of every route.
    Openapi,
    /// Write or check the export files.
    #[command(subcommand)]
    Exports(ExportsCommand),
}

/// `exports ...`.
#[derive(Debug, Subcommand)]
pub enum ExportsCommand {
    /// Export every window that is due now, apply retention and rewrite the index.
    Now {
        /// Act as if the time were this Unix second, to rehearse what a later run will do.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Check every listed file's signature and the index's consistency with the tree.
    Verify,
}

/// `keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print every key's id, creation time, whether it signs, and its public key as PEM.
    List,
    /// Create a new signing key; older keys keep verifying until retired.
    Rotate,
    /// Remove a key that no longer signs, so it stops verifying.
    Retire {
        /// The key id.
        kid: String,
    },
    /// Create a new export signing key; every export key signs until retired.
    RotateExport,
    /// Stop signing exports with a key (its version, as `keys list` prints it).
    RetireExport {
        /// The key's version.
        version: String,
    },
}

/// `authority ...`.
#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// Create an account and print its API key (shown only this once).
    Add {
        /// The account's name.
        name: String,
        /// Codes it may issue per UTC day, instead of the configured default.
        #[arg(long)]
        daily_quota: Option<u64>,
    },
    /// List the accounts.
    List,
    /// Revoke an account; its API key stops working.
    Revoke {
        /// The account's name.
        name: String,
    },
}

/// Runs one command.
///
/// # Errors
///
/// Configuration, storage and socket failures.
pub fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let clock: SharedClock = Arc::new(SystemClock);
    match args.command {
        Command::Serve => serve(&config, clock),
        Command::Keys(command) => keys(&config, clock.unix_seconds(), command),
        Command::Authority(command) => authority(&config, clock.unix_seconds(), command),
        Command::Openapi => {
            println!("{}", crate::openapi::render());
            Ok(())
        }
        Command::Exports(command) => exports(&config, clock, command),
    }
}

fn serve(config: &Config, clock: SharedClock) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(log_filter(
            std::env::var("RUST_LOG").as_deref().unwrap_or("info"),
        ))
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = KeyServer::open(config, clock)?;
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        tracing::info!(address = %listener.local_addr()?, "key server listening");
        server.run(listener, shutdown_signal()).await?;
        tracing::info!("key server stopped");
        Ok(())
    })
}

/// The log filter of `serve`: `directives` (`RUST_LOG` syntax), with axum's connection events
/// switched off at every level because they name the client's address.
pub fn log_filter(directives: &str) -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match "axum::serve=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn exports(config: &Config, clock: SharedClock, command: ExportsCommand) -> Result<()> {
    match command {
        ExportsCommand::Now { at } => {
            let clock: SharedClock = match at {
                Some(at) => Arc::new(crate::clock::ManualClock::at(at)),
                None => clock,
            };
            let service = KeyService::open_for_operator(config, clock)?;
            let summary = service.export_now()?;
            println!(
                "wrote {} file(s) with {} key(s); deleted {} key(s) and {} file(s) past retention",
                summary.files_written.len(),
                summary.keys_written,
                summary.keys_deleted,
                summary.files_deleted
            );
            Ok(())
        }
        ExportsCommand::Verify => {
            let service = KeyService::open_for_operator(config, clock)?;
            let (report, consistent) = verify_exports(&service)?;
            print!("{report}");
            if consistent {
                Ok(())
            } else {
                Err(crate::Error::Config(
                    "the export tree has problems".to_owned(),
                ))
            }
        }
    }
}

fn keys(config: &Config, now: u64, command: KeysCommand) -> Result<()> {
    let export_action = match &command {
        KeysCommand::RotateExport => ExportKeyAction::Rotate,
        KeysCommand::RetireExport { version } => ExportKeyAction::Retire(version.clone()),
        _ => ExportKeyAction::List,
    };
    let store = VerificationStore::open(&config.verification_dir())?;
    let mut ring = store.key_ring(now)?;
    match command {
        KeysCommand::List | KeysCommand::RotateExport | KeysCommand::RetireExport { .. } => {}
        KeysCommand::Rotate => {
            let kid = ring.rotate(now)?;
            println!("created signing key {kid}");
        }
        KeysCommand::Retire { kid } => ring.retire(&kid)?,
    }
    let active = ring.active().kid().to_owned();
    for key in ring.keys() {
        let role = if key.kid() == active {
            "signing"
        } else {
            "verifying only"
        };
        println!(
            "kid {} created {} ({role})\n{}",
            key.kid(),
            key.created(),
            key.public_pem()
        );
    }
    print!("{}", export_keys(config, now, export_action)?);
    Ok(())
}

fn authority(config: &Config, now: u64, command: AuthorityCommand) -> Result<()> {
    let store = VerificationStore::open(&config.verification_dir())?;
    let authorities = store.authorities(&store.hash_key()?)?;
    match command {
        AuthorityCommand::Add { name, daily_quota } => {
            let api_key = authorities.add(&name, daily_quota, now)?;
            println!(
                "created authority {name:?}; its API key (shown only now):\n{}",
                *api_key
            );
        }
        AuthorityCommand::List => {
            for authority in authorities.list()? {
                let quota = authority.daily_quota.map_or_else(
                    || format!("default {}", config.verification.daily_quota),
                    |q| q.to_string(),
                );
                let state = authority
                    .revoked
                    .map_or("active".to_owned(), |at| format!("revoked at {at}"));
                println!(
                    "{}\tquota {quota}\tcreated {}\t{state}",
                    authority.name, authority.created
                );
            }
        }
        AuthorityCommand::Revoke { name } => {
            authorities.revoke(&name, now)?;
            println!("revoked authority {name:?}");
        }
    }
    Ok(())
}
