//! `varsel demo`: the story of [`varsel::scenario`], told in plain words as it happens: a key
//! server on a loopback port, three people with simulated phones, twenty minutes together, a
//! positive test, the report, the export, the sync, who is alerted and why, and what left each
//! phone. Exits with an error when the story does not turn out as it should.

use anyhow::{Context, Result, bail};
use varsel::scenario::{
    AUTHORITY, Options, Person, Role, Sender, World, log_matches, only_sync_downloads,
};
use varsel_device::sync::SyncReport;
use varsel_device::upload::ReportOutcome;
use varsel_key_server::worker::RunSummary;
use varsel_protocol::risk::{DailySummary, ExposureWindow, Infectiousness, RiskConfig};

use crate::write_line;

const DAY: u64 = 86_400;
/// Width the narration is wrapped to.
const WIDTH: usize = 100;
/// Indent of a step's continuation lines, under the text after its time.
const INDENT: &str = "       ";
/// Indent of the details under a person.
const DETAIL: &str = "    ";

/// Runs the story on a fresh runtime and narrates it on stdout.
pub fn run() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(story())
}

async fn story() -> Result<()> {
    let mut world = World::start(Options::default()).await?;
    introduce(&world)?;

    world.meet().await?;
    tell_meeting(&world)?;
    let code = world.issue_code().await?;
    tell_code(&world)?;
    let outcome = world.report(&code).await?;
    tell_report(&world, &outcome)?;
    let evening = world.export_evening()?;
    tell_evening(&world, &evening)?;
    let morning = world.export_morning()?;
    tell_morning(&world, &morning)?;
    for role in [Role::NearContact, Role::FarContact] {
        let report = world.sync(role).await?;
        tell_sync(&world, role, &report)?;
    }

    tell_alerts(&world)?;
    tell_traffic(&world)?;
    let problems = world.problems()?;
    world.stop().await?;
    verdict(&problems)
}

fn introduce(world: &World) -> Result<()> {
    say(
        "",
        &format!(
            "Varsel demo: three people, one café, one positive test. Everything runs on this \
             machine: a real key server on {} with its databases in a temporary directory, three \
             simulated phones sharing one simulated radio space, and one simulated clock that \
             all of them read. The health authority \"{AUTHORITY}\" has an account on the \
             server and an API key.",
            world.server().address()
        ),
    )?;
    let meeting = world.options().timeline.meeting;
    write_line(format_args!("\n{}", day_heading(meeting)))?;
    for person in world.people() {
        at(meeting, &format!("{} is {}.", person.name, person.place))?;
    }
    say(
        INDENT,
        "Every phone broadcasts a random identifier that changes every 10 minutes, and listens \
         for a few seconds every few minutes.",
    )
}

fn tell_meeting(world: &World) -> Result<()> {
    let mut kept = Vec::new();
    for person in world.people() {
        let count = world.sightings(person.role)?.len();
        kept.push(format!("{}'s {count}", person.name));
    }
    at(
        world.now(),
        &format!(
            "Alice and Bob part. Advertisements heard and kept on each phone: {}. No phone has \
             sent anything to anyone.",
            kept.join(", ")
        ),
    )?;
    Ok(())
}

fn tell_code(world: &World) -> Result<()> {
    at(
        world.now(),
        &format!(
            "Alice tests positive; her symptoms began this morning. The test centre's system \
             asks the key server for a one-time code (confirmed test, symptoms since {}) and \
             gives it to Alice.",
            world.options().timeline.meeting_date()
        ),
    )
}

fn tell_report(world: &World, outcome: &ReportOutcome) -> Result<()> {
    let stored = outcome
        .inserted
        .map_or_else(|| "an unknown number".to_owned(), |n| n.to_string());
    at(
        world.now(),
        &format!(
            "Alice enters the code and agrees to share her keys. Her phone trades the code for \
             a token, the token for a certificate bound to her keys, and uploads {} daily \
             key(s); the server stored {stored}. Her phone starts a new key.",
            outcome.keys
        ),
    )
}

fn tell_evening(world: &World, summary: &RunSummary) -> Result<()> {
    at(
        world.now(),
        &format!(
            "The export worker runs and writes {} file(s): Alice's key is still in use today, \
             so the server holds it back until two hours after it expires at midnight.",
            summary.files_written.len()
        ),
    )
}

fn tell_morning(world: &World, summary: &RunSummary) -> Result<()> {
    let now = world.now();
    write_line(format_args!("\n{}", day_heading(now)))?;
    let published = world.server().published()?;
    at(
        now,
        &format!(
            "The export worker publishes {} file(s) holding {} keys: Alice's, padded with random \
             fake keys so that no one can tell how many people reported, and signed with the \
             server's export key. The operator's check: {} live file(s), every signature \
             verifies.",
            summary.files_written.len(),
            summary.keys_written,
            published.len()
        ),
    )?;
    Ok(())
}

fn tell_sync(world: &World, role: Role, report: &SyncReport) -> Result<()> {
    at(
        world.now(),
        &format!(
            "{}'s phone downloads the index and {} new file(s), checks the signatures ({} \
             refused) and, on the phone, compares the keys with what it heard: {} published \
             key(s) match.",
            world.person(role).name,
            report.processed.len(),
            report.rejected.len(),
            report.matched_keys()
        ),
    )
}

fn tell_alerts(world: &World) -> Result<()> {
    write_line("\nWho is alerted, and why")?;
    for role in [Role::NearContact, Role::FarContact] {
        explain(world, role)?;
    }
    Ok(())
}

/// One person's outcome: the phone's own summary, then the arithmetic behind it.
fn explain(world: &World, role: Role) -> Result<()> {
    let name = world.person(role).name;
    let config = world.risk(role)?;
    let days = world.exposures(role)?;
    let windows = world.windows(role)?;
    let alerted = days.iter().any(|day| day.alert);
    write_line(format_args!(
        "  {name}: {}",
        if alerted { "ALERT" } else { "no alert" }
    ))?;
    if days.is_empty() {
        say(
            DETAIL,
            "The phone matched no published key to anything it heard.",
        )?;
    }
    for day in &days {
        say(DETAIL, &day.describe(&config))?;
        let of_day: Vec<&ExposureWindow> = windows
            .iter()
            .filter(|window| window.day == day.summary.day && config.counts(window))
            .collect();
        say(
            DETAIL,
            &arithmetic(&config, &of_day, &day.summary, day.minutes),
        )?;
    }
    say(DETAIL, &simulation_view(world, role)?)?;
    Ok(())
}

/// How the score of a day's counting windows comes about, in words, with the day's summary.
fn arithmetic(
    config: &RiskConfig,
    windows: &[&ExposureWindow],
    summary: &DailySummary,
    minutes: u64,
) -> String {
    let scans: Vec<_> = windows
        .iter()
        .flat_map(|window| &window.scan_instances)
        .collect();
    let typical = scans.iter().map(|scan| scan.typical_attenuation_db);
    let (low, high) = (
        typical.clone().min().unwrap_or(0),
        typical.max().unwrap_or(0),
    );
    let Some(first) = windows.first() else {
        return "No exposure window was built.".to_owned();
    };
    let buckets = &config.attenuation;
    let threshold = config.daily_threshold_minutes;
    format!(
        "Why: {} scans over {minutes} minutes heard Alice's published key at a typical \
         attenuation of {low}-{high} dB. Weighted by closeness (up to {} dB: {} %, {} dB: {} %, \
         {} dB: {} %, beyond: {} %) that is {:.1} minutes; times {} % for Alice's {} \
         infectiousness that day and {} % for a {} report, {:.1} meaningful minutes against an \
         alert threshold of {threshold}.",
        scans.len(),
        buckets.immediate_max_db,
        buckets.immediate_weight,
        buckets.near_max_db,
        buckets.near_weight,
        buckets.medium_max_db,
        buckets.medium_weight,
        buckets.other_weight,
        summary.weighted_duration_sum / 60.0,
        config.infectiousness.weight(first.infectiousness),
        infectiousness_name(first.infectiousness),
        config.report_type_weight(first.report_type),
        first.report_type.name().replace('_', " "),
        summary.score_sum / 60.0,
    )
}

/// What the simulation knows and no phone does: how often this phone caught Alice's signal.
fn simulation_view(world: &World, role: Role) -> Result<String> {
    let heard = world.heard(role, Role::Reporter)?;
    let tx_power = i16::from(world.tx_power(Role::Reporter)?);
    let attenuation = heard.iter().map(|sighting| tx_power - sighting.rssi);
    let (low, high) = (attenuation.clone().min(), attenuation.max());
    Ok(match (low, high) {
        (Some(low), Some(high)) => format!(
            "(The simulation's view: this phone caught Alice's signal {} times, at {low}-{high} \
             dB attenuation.)",
            heard.len()
        ),
        _ => "(The simulation's view: this phone never caught Alice's signal.)".to_owned(),
    })
}

fn infectiousness_name(infectiousness: Infectiousness) -> &'static str {
    match infectiousness {
        Infectiousness::High => "high",
        Infectiousness::Standard => "standard",
        Infectiousness::None => "no",
    }
}

/// What left each phone, from its transparency log, checked against what the server received.
fn tell_traffic(world: &World) -> Result<()> {
    write_line("\nWhat left each phone (from each phone's transparency log)")?;
    for person in world.people() {
        tell_phone(world, person)?;
    }

    let issued = world.received_from(Sender::Authority).len();
    say(
        "  ",
        &format!("The test centre's system sent {issued} request(s), to issue the code."),
    )?;
    let mut heard = 0;
    for person in world.people() {
        heard += world.sightings(person.role)?.len();
    }
    say(
        "  ",
        &format!(
            "Requests the server received: {}. Of those, carrying an identifier from any of the \
             {heard} advertisements the phones heard (raw, hex or base64): {}.",
            world.traffic().len(),
            world.identifier_leaks()?.len()
        ),
    )?;
    Ok(())
}

/// One phone's log, line by line, and how it compares with what the server received.
fn tell_phone(world: &World, person: &Person) -> Result<()> {
    let log = world.log(person.role)?;
    let received = world.received_from(Sender::Phone(person.role));
    write_line(format_args!(
        "  {}'s phone: {} request(s)",
        person.name,
        log.len()
    ))?;
    for entry in &log {
        write_line(format_args!(
            "    {}  {:<4} {}  {:<44} {:>5} bytes  {}",
            clock(entry.time),
            entry.method,
            entry.host,
            entry.route,
            entry.bytes,
            entry.purpose.name()
        ))?;
    }

    let host = world.server().address().to_string();
    let matches = log_matches(&log, &received, &host)
        .map_or_else(|difference| difference, |()| "the same.".to_owned());
    say(
        DETAIL,
        &format!("What the server received from it: {matches}"),
    )?;
    if person.role != Role::Reporter {
        let only_sync = only_sync_downloads(&log, &received)
            .map_or_else(|other| other, |()| "nothing but sync downloads.".to_owned());
        say(
            DETAIL,
            &format!("Without upload consent it sent {only_sync}"),
        )?;
    }
    Ok(())
}

fn verdict(problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        write_line("")?;
        say(
            "",
            "Everything turned out as it should: Bob was alerted, Carol was not, and no phone \
             sent anything its log does not show.",
        )?;
        return Ok(());
    }
    write_line("\nThe story did not turn out as it should:")?;
    for problem in problems {
        say("  - ", problem)?;
    }
    bail!("{} check(s) of the demo failed", problems.len())
}

/// Prints `text` after the time of `unix`, wrapped under itself.
fn at(unix: u64, text: &str) -> Result<()> {
    say(&format!("{}  ", clock(unix)), text)
}

/// Prints `text` wrapped to [`WIDTH`] columns: the first line after `first`, the others
/// indented as deep.
fn say(first: &str, text: &str) -> Result<()> {
    let indent = " ".repeat(first.chars().count());
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            write_line(&line)?;
            line.clone_from(&indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    write_line(&line)
}

/// `HH:MM` of a Unix time, UTC.
fn clock(unix: u64) -> String {
    let seconds = unix % DAY;
    format!("{:02}:{:02}", seconds / 3_600, seconds % 3_600 / 60)
}

/// `Day N, Weekday YYYY-MM-DD (UTC, simulated)` for the day of `unix`.
fn day_heading(unix: u64) -> String {
    const WEEKDAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix / DAY;
    // 1 January 1970 was a Thursday.
    let weekday = WEEKDAYS[((days + 3) % 7) as usize];
    let date = varsel_key_server::date::Date::from_unix_seconds(unix, 0);
    format!("{weekday} {date} (simulated time, UTC)")
}
