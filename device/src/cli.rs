//! The `varsel-device` command line (also `varsel device …`): a thin layer over [`Device`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use varsel_protocol::risk::RiskConfig;

use crate::Device;
use crate::clock::{Clock, SystemClock};
use crate::exposure::date;
use crate::radio::Radio;
use crate::settings::{Consent, TrustedKeySetting};

/// Prints a line on stdout; a closed pipe (as with `| head`) ends output quietly.
macro_rules! say {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))?
    };
}

fn write_line(line: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Varsel on this device: keys, Bluetooth, sync, exposures and reports.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding the device's database.
    #[arg(long, env = "VARSEL_DEVICE_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The device's subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Configure the key server, its export-signing keys and the health authority.
    Init(InitArgs),
    /// Show configuration, consent and what the device holds.
    Status,
    /// List this device's daily keys (dates and validity, never the key bytes).
    Keys,
    /// Advertise and scan once, saving what is heard. Simulated unless built with `ble`.
    Scan(ScanArgs),
    /// Download new export files, verify them and match them against what was heard.
    Sync,
    /// Show exposures found by the last sync.
    Exposures {
        /// Print JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// Report a positive test with the code from the health authority.
    Report {
        /// The code the health authority gave.
        #[arg(long)]
        code: String,
    },
    /// Run a chaff sequence if one is due (what a phone does in the background).
    Chaff {
        /// Send one now, whatever the schedule.
        #[arg(long)]
        now: bool,
    },
    /// Keep running as a phone does: scan on GAEN's duty cycle (with the `ble` feature), sync
    /// every few hours, send chaff when due and apply retention daily, until Ctrl-C.
    Run {
        /// Hours between syncs.
        #[arg(long, default_value_t = 4)]
        sync_every_hours: u64,
    },
    /// Show every request this device has sent.
    Log {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete everything this device holds.
    Wipe {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Give or withdraw consent.
    Consent {
        /// Give or withdraw.
        action: ConsentAction,
        /// What for.
        purpose: ConsentPurpose,
    },
}

/// Arguments of `init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Base URL of the key server, such as `https://keys.example/`.
    #[arg(long)]
    pub server: Option<String>,
    /// PEM file of a public key that signs exports (repeat for several).
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<PathBuf>,
    /// The `verification_key_id` the trusted keys sign as.
    #[arg(long)]
    pub key_id: Option<String>,
    /// The `verification_key_version` the trusted keys sign as.
    #[arg(long)]
    pub key_version: Option<String>,
    /// The health authority's identifier sent with reports.
    #[arg(long)]
    pub authority: Option<String>,
    /// Mean chaff sequences per day; 0 turns chaff off.
    #[arg(long)]
    pub chaff_per_day: Option<f64>,
    /// TOML file with the health authority's risk configuration.
    #[arg(long)]
    pub risk_config: Option<PathBuf>,
}

/// Arguments of `scan`.
#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// How long to scan, in seconds.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// With the simulated radio: how many simulated devices are around.
    #[arg(long, default_value_t = 3)]
    pub simulated_peers: usize,
}

/// Giving or withdrawing consent.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsentAction {
    /// Agree.
    Grant,
    /// Take agreement back.
    Withdraw,
}

/// What consent is about.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsentPurpose {
    /// Sending reports and chaff.
    Upload,
    /// Taking part in research.
    Research,
}

/// `$XDG_DATA_HOME/varsel-device`, or `~/.local/share/varsel-device`, or `./varsel-device`.
fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_default();
    base.join("varsel-device")
}

/// Runs one subcommand.
///
/// # Errors
///
/// Whatever the device meets, with context for the user.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Command::Wipe { yes } = args.command {
        return wipe(&args.data_dir, yes);
    }
    let device = Device::open(&args.data_dir, clock)
        .with_context(|| format!("opening the device database in {:?}", args.data_dir))?;
    match args.command {
        Command::Init(init_args) => init(&device, &init_args),
        Command::Status => status(&device),
        Command::Keys => keys(&device),
        Command::Scan(scan_args) => scan(&device, &scan_args).await,
        Command::Sync => sync(&device).await,
        Command::Exposures { json } => exposures(&device, json),
        Command::Report { code } => report(&device, &code).await,
        Command::Chaff { now } => chaff(&device, now).await,
        Command::Run { sync_every_hours } => run_loop(&device, sync_every_hours).await,
        Command::Log { json } => log(&device, json),
        Command::Consent { action, purpose } => consent(&device, action, purpose),
        Command::Wipe { .. } => unreachable!("handled above"),
    }
}

fn init(device: &Device, args: &InitArgs) -> Result<()> {
    let mut settings = device.store().settings()?;
    if let Some(server) = &args.server {
        settings.server_url = Some(server.clone());
    }
    if !args.trusted_keys.is_empty() {
        settings.trusted_keys = args
            .trusted_keys
            .iter()
            .map(|path| {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(TrustedKeySetting {
                    pem,
                    key_id: args.key_id.clone(),
                    key_version: args.key_version.clone(),
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(authority) = &args.authority {
        settings.health_authority_id = authority.clone();
    }
    if let Some(rate) = args.chaff_per_day {
        settings.chaff_per_day = rate;
    }
    if let Some(path) = &args.risk_config {
        settings.risk = read_risk_config(path)?;
    }
    device.store().set_settings(&settings)?;
    device.store().current_key(device.now())?;
    say!("Device configured in {}.", device.store().dir().display());
    Ok(())
}

fn read_risk_config(path: &Path) -> Result<RiskConfig> {
    const MAX_BYTES: u64 = 64 << 10;
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_BYTES {
        bail!("{} is larger than {MAX_BYTES} bytes", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn status(device: &Device) -> Result<()> {
    let store = device.store();
    let settings = store.settings()?;
    let consent = store.consent()?;
    let upload = store.upload_state()?;
    let yes_no = |flag: bool| if flag { "given" } else { "not given" };
    say!("Data directory:    {}", store.dir().display());
    say!(
        "Key server:        {}",
        settings.server_url.as_deref().unwrap_or("(not set)")
    );
    say!("Trusted keys:      {}", settings.trusted_keys.len());
    say!("Health authority:  {}", settings.health_authority_id);
    say!("Upload consent:    {}", yes_no(consent.upload));
    say!("Research consent:  {}", yes_no(consent.research));
    say!("Keys held:         {}", store.keys()?.len());
    say!("Sightings held:    {}", store.sighting_count());
    say!("Exports processed: {}", store.export_records()?.len());
    let alerts = device.exposures()?.iter().filter(|day| day.alert).count();
    say!("Days with alerts:  {alerts}");
    let when = |time: Option<u64>| time.map_or("never".to_owned(), format_time);
    say!("Last report:       {}", when(upload.last_report_at));
    Ok(())
}

fn keys(device: &Device) -> Result<()> {
    device.store().current_key(device.now())?;
    say!(
        "{:<12} {:>12} {:>7} {:>9}",
        "date",
        "start",
        "period",
        "sequence"
    );
    for key in device.store().keys()? {
        say!(
            "{:<12} {:>12} {:>7} {:>9}",
            date(key.window.start()),
            key.window.start().value(),
            key.window.period(),
            key.sequence
        );
    }
    Ok(())
}

#[cfg(not(feature = "ble"))]
async fn scan(device: &Device, args: &ScanArgs) -> Result<()> {
    use crate::radio::sim::{Air, Carry, PathLossModel, Position};
    use crate::settings::DEFAULT_TX_POWER;
    use rand::Rng;
    use varsel_protocol::interval::EnIntervalNumber;
    use varsel_protocol::keys::{Metadata, TemporaryExposureKey};

    let air = Air::new(PathLossModel::default(), rand::thread_rng().r#gen());
    let clock = device.clock().clone();
    let mut radio = air.join(Position::default(), Carry::Hand, clock.clone());
    let interval = EnIntervalNumber::from_unix_seconds(device.now())?;
    let mut rng = rand::thread_rng();
    for _ in 0..args.simulated_peers {
        let position = Position::new(rng.gen_range(0.5..8.0), rng.gen_range(0.5..8.0));
        let mut peer = air.join(position, Carry::Pocket, clock.clone());
        let tek = TemporaryExposureKey::generate(&mut rand_core::OsRng);
        let rpi = tek.rpik().rpi(interval);
        let aem = tek.aemk().encrypt(&rpi, &Metadata::v1(DEFAULT_TX_POWER));
        peer.advertise(&varsel_protocol::advertisement::Advertisement { rpi, aem })
            .await?;
    }
    radio.advertise(&device.advertisement()?).await?;
    let heard = radio.scan(Duration::from_secs(args.seconds)).await?;
    device.record(&heard)?;
    say!(
        "Simulated radio: heard {} advertisements from {} simulated devices and saved them. \
         Build with `--features ble` for real Bluetooth.",
        heard.len(),
        args.simulated_peers
    );
    Ok(())
}

#[cfg(feature = "ble")]
async fn scan(device: &Device, args: &ScanArgs) -> Result<()> {
    let mut radio = crate::radio::ble::BleRadio::first_adapter(device.clock().clone()).await?;
    if let Err(error) = radio.advertise(&device.advertisement()?).await {
        eprintln!("note: not advertising: {error}");
    }
    let heard = radio.scan(Duration::from_secs(args.seconds)).await?;
    device.record(&heard)?;
    say!("Bluetooth: heard and saved {} advertisements.", heard.len());
    Ok(())
}

async fn sync(device: &Device) -> Result<()> {
    let client = device.client()?;
    let mut handler = device.matching_handler()?;
    let progress = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    progress.set_message("Matching");
    let report = device.sync(&client, &mut handler, &progress).await?;
    say!(
        "Index lists {} files: {} new, {} processed before, {} refused. {} keys matched.",
        report.listed,
        report.processed.len(),
        report.already_processed,
        report.rejected.len(),
        report.matched_keys()
    );
    for rejection in &report.rejected {
        say!("refused {}: {}", rejection.path, rejection.reason);
    }
    let alerts = device.exposures()?.iter().filter(|day| day.alert).count();
    if alerts > 0 {
        say!("Exposure found on {alerts} day(s): run `varsel-device exposures`.");
    }
    Ok(())
}

fn exposures(device: &Device, json: bool) -> Result<()> {
    let days = device.exposures()?;
    if json {
        say!("{}", serde_json::to_string_pretty(&days)?);
        return Ok(());
    }
    if days.is_empty() {
        say!("No exposures found.");
    }
    let config = device.store().settings()?.risk;
    for day in &days {
        say!("{}", day.describe(&config));
    }
    Ok(())
}

async fn report(device: &Device, code: &str) -> Result<()> {
    let client = device.client()?;
    let outcome = device.report(&client, code).await?;
    say!(
        "Reported: {} keys sent, {} stored by the server. A new key is in use from now on.",
        outcome.keys,
        outcome
            .inserted
            .map_or_else(|| "an unknown number".to_owned(), |n| n.to_string())
    );
    Ok(())
}

async fn chaff(device: &Device, now: bool) -> Result<()> {
    let client = device.client()?;
    if now {
        device.send_chaff(&client).await?;
        say!("Chaff sent.");
    } else if device.chaff_if_due(&client).await? {
        say!("Chaff was due and was sent.");
    } else {
        say!("No chaff due.");
    }
    Ok(())
}

async fn run_loop(device: &Device, sync_every_hours: u64) -> Result<()> {
    let schedule = crate::radio::ScanSchedule::default();
    #[cfg(feature = "ble")]
    let mut radio = crate::radio::ble::BleRadio::first_adapter(device.clock().clone()).await?;
    #[cfg(not(feature = "ble"))]
    say!("No Bluetooth in this build (`--features ble`): syncing and chaff only.");
    let mut next_sync = 0;
    loop {
        device.maintain()?;
        #[cfg(feature = "ble")]
        match crate::radio::advertise_and_scan(device, &mut radio, schedule.window).await {
            Ok(count) => tracing::debug!(count, "scan saved"),
            Err(error) => tracing::warn!(%error, "scan failed"),
        }
        let now = device.now();
        if now >= next_sync {
            match device.sync_and_match().await {
                Ok(report) => tracing::info!(new = report.processed.len(), "synced"),
                Err(error) => tracing::warn!(%error, "sync failed"),
            }
            next_sync = now + sync_every_hours.max(1) * 3_600;
        }
        if let Err(error) = background_chaff(device).await {
            tracing::warn!(%error, "chaff failed");
        }

        let pause = schedule.next_after(now, &mut rand::thread_rng()) - now;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(pause)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn background_chaff(device: &Device) -> Result<(), crate::Error> {
    device.chaff_if_due(&device.client()?).await.map(drop)
}

fn log(device: &Device, json: bool) -> Result<()> {
    let entries = device.store().transparency_log()?;
    if json {
        say!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        say!("This device has sent nothing.");
    }
    for entry in entries {
        say!(
            "{}  {:<8} {:<4} {}{}  {} bytes",
            format_time(entry.time),
            entry.purpose.name(),
            entry.method,
            entry.host,
            entry.route,
            entry.bytes
        );
    }
    Ok(())
}

fn consent(device: &Device, action: ConsentAction, purpose: ConsentPurpose) -> Result<()> {
    let mut consent: Consent = device.store().consent()?;
    let value = matches!(action, ConsentAction::Grant);
    match purpose {
        ConsentPurpose::Upload => consent.upload = value,
        ConsentPurpose::Research => consent.research = value,
    }
    device.store().set_consent(consent)?;
    say!(
        "Consent to {} {}.",
        match purpose {
            ConsentPurpose::Upload => "upload",
            ConsentPurpose::Research => "research",
        },
        if value { "given" } else { "withdrawn" }
    );
    Ok(())
}

fn wipe(dir: &Path, yes: bool) -> Result<()> {
    if !yes {
        bail!("wipe deletes every key, sighting and setting; run again with --yes to confirm");
    }
    if !dir.join("db").exists() {
        say!("Nothing to delete in {}.", dir.display());
        return Ok(());
    }
    crate::store::Store::open(dir)?.destroy()?;
    say!(
        "Everything this device held in {} is deleted.",
        dir.display()
    );
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(unix: u64) -> String {
    let interval = varsel_protocol::interval::EnIntervalNumber::from_unix_seconds(unix)
        .map_or_else(|_| "?".to_owned(), date);
    let seconds = unix % 86_400;
    format!(
        "{interval} {:02}:{:02}:{:02} UTC",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}
