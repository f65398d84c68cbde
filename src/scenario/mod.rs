//! The story Varsel exists for, played with real parts: a key server on 127.0.0.1 with its sled
//! databases in a temporary directory, three simulated phones on one simulated air, and one
//! clock that all of them read.
//!
//! Alice and Bob spend twenty minutes at a café table, one metre apart, phones in hand; Carol
//! waits at the counter ten metres away with her phone in her pocket. That afternoon Alice
//! tests positive (her symptoms began that morning); the test centre asks the key server for a
//! one-time code, and Alice's phone reports with it. The key is still in use that day, so the
//! export worker holds it back in the evening and publishes it the next morning. Bob's and
//! Carol's phones then sync: Bob is alerted, Carol is not.
//!
//! Each step is a method of [`World`] that moves the clock to its time in the [`Timeline`] and
//! does what the people and systems do at that moment; the caller narrates (`varsel demo`) or
//! asserts (`tests/end_to_end.rs`) between steps. [`World::problems`] lists whatever did not
//! turn out as the story and the design's promises say.
//!
//! # Limitations
//!
//! - The export worker is run by the scenario ([`World::export_evening`],
//!   [`World::export_morning`]) rather than by its timer, which counts wall-clock time.
//! - Every phone reaches the server from 127.0.0.1, so requests are told apart by when they
//!   arrived: the steps run one after the other, and each step's requests are its sender's.
//! - The people stand still for the whole meeting and the phones only meet once; the radio
//!   model behind it is `varsel-device`'s simulated air, fitted between 0.2 and 5 m.

mod checks;
mod clock;
mod server;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;
use varsel_device::Device;
use varsel_device::exposure::DayExposure;
use varsel_device::radio::sim::{Carry, PathLossModel, Position};
use varsel_device::settings::{Consent, Settings};
use varsel_device::sighting::Sighting;
use varsel_device::simulation::{SimDeviceId, Simulation};
use varsel_device::sync::SyncReport;
use varsel_device::transparency::LogEntry;
use varsel_device::upload::ReportOutcome;
use varsel_key_server::date::Date;
use varsel_key_server::worker::RunSummary;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::risk::{ExposureWindow, RiskConfig};
use zeroize::Zeroizing;

pub use checks::{carries, identifier_forms, log_matches, only_sync_downloads};
pub use clock::WorldClock;
pub use server::{LoopbackServer, Received};

use crate::Error;

/// The health authority's account name on the key server.
pub const AUTHORITY: &str = "Riverside Test Centre";

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;

/// When each step happens, Unix seconds (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Alice and Bob sit down together (day one, 09:00).
    pub meeting: u64,
    /// How long they stay.
    pub together: Duration,
    /// Alice's positive test: the test centre asks for a code (day one, 15:00).
    pub code_issued: u64,
    /// Alice enters the code in her app (day one, 15:05).
    pub reported: u64,
    /// The export worker's evening run (day one, 18:00), while Alice's key is held back.
    pub evening_export: u64,
    /// The export worker's morning run (day two, 06:00), once the embargo is over.
    pub morning_export: u64,
    /// Bob's and Carol's phones sync (day two, 07:00).
    pub sync: u64,
}

impl Timeline {
    /// The story's timeline with the meeting at 09:00 on the UTC day starting at `midnight`
    /// (Unix seconds).
    pub const fn on_day(midnight: u64) -> Self {
        Self {
            meeting: midnight + 9 * HOUR,
            together: Duration::from_secs(20 * MINUTE),
            code_issued: midnight + 15 * HOUR,
            reported: midnight + 15 * HOUR + 5 * MINUTE,
            evening_export: midnight + 18 * HOUR,
            morning_export: midnight + 30 * HOUR,
            sync: midnight + 31 * HOUR,
        }
    }

    /// The meeting's UTC date, `YYYY-MM-DD`: the day Alice's symptoms began.
    pub fn meeting_date(&self) -> String {
        Date::from_unix_seconds(self.meeting, 0).to_string()
    }
}

/// Monday 2 March 2026, 00:00 UTC: the day of the meeting unless told otherwise.
pub const MEETING_DAY: u64 = 1_772_409_600;

/// Where Carol is during the meeting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// Her distance from Alice, in metres.
    pub distance_m: f64,
    /// How she carries her phone.
    pub carry: Carry,
}

/// How a scenario is set up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// When things happen.
    pub timeline: Timeline,
    /// Fixes the radio noise and the phones' scan timing.
    pub seed: u64,
    /// Where Carol is: 10 m from Alice with her phone in her pocket, unless told otherwise.
    pub far_contact: Placement,
}

impl Default for Options {
    /// The meeting on [`MEETING_DAY`], radio seed 42, Carol 10 m away with her phone in her
    /// pocket.
    fn default() -> Self {
        Self {
            timeline: Timeline::on_day(MEETING_DAY),
            seed: 42,
            far_contact: Placement {
                distance_m: 10.0,
                carry: Carry::Pocket,
            },
        }
    }
}

/// Each person's part in the story.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Alice: tests positive and reports.
    Reporter,
    /// Bob: twenty minutes one metre from Alice.
    NearContact,
    /// Carol: in the same café, ten metres away, phone in her pocket.
    FarContact,
}

impl Role {
    /// Every role, in the order the story introduces them.
    pub const ALL: [Role; 3] = [Role::Reporter, Role::NearContact, Role::FarContact];
}

/// One person and their phone.
#[derive(Debug)]
pub struct Person {
    /// Their first name.
    pub name: &'static str,
    /// Their part in the story.
    pub role: Role,
    /// Where they are during the meeting, in metres.
    pub position: Position,
    /// How they carry their phone.
    pub carry: Carry,
    /// Where they are, in words.
    pub place: String,
    id: SimDeviceId,
}

/// Who sent a request the key server received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The test centre's system, issuing a code.
    Authority,
    /// A person's phone.
    Phone(Role),
    /// Nobody in the story should have sent anything at that moment.
    Unexpected,
}

/// The running scenario.
pub struct World {
    options: Options,
    clock: WorldClock,
    sim: Simulation,
    server: LoopbackServer,
    people: Vec<Person>,
    api_key: Zeroizing<String>,
    traffic: Vec<(Sender, Received)>,
    report: Option<ReportOutcome>,
    _dir: TempDir,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.clock.unix())
            .field("server", &self.server)
            .field("people", &self.people)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Starts the key server, creates the test centre's account and sets up the three phones,
    /// each configured with the server's URL and export keys, at the time of the meeting.
    ///
    /// # Errors
    ///
    /// Storage, socket and configuration errors.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let clock = WorldClock::new(options.timeline.meeting);
        let server = LoopbackServer::start(&dir.path().join("key-server"), clock.clone()).await?;
        let api_key = server.add_authority(AUTHORITY, clock.unix())?;
        let settings = server.device_settings()?;

        let mut sim = Simulation::new(
            clock.manual().clone(),
            PathLossModel::default(),
            options.seed,
        );
        let mut people = Vec::new();
        for role in Role::ALL {
            people.push(join(&mut sim, dir.path(), role, &options, &settings)?);
        }
        Ok(Self {
            options,
            clock,
            sim,
            server,
            people,
            api_key,
            traffic: Vec::new(),
            report: None,
            _dir: dir,
        })
    }

    /// Alice and Bob spend their time together while Carol waits nearby: every phone
    /// broadcasts and scans as the framework does. Nothing should be sent to the server.
    ///
    /// # Errors
    ///
    /// The phones' store errors.
    pub async fn meet(&mut self) -> Result<(), Error> {
        self.clock.advance_to(self.options.timeline.meeting)?;
        self.sim.run_for(self.options.timeline.together).await?;
        self.attribute(Sender::Unexpected);
        Ok(())
    }

    /// The test centre asks the key server for a code for Alice's confirmed test, giving the
    /// day of the meeting as the day her symptoms began.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] when the server refuses.
    pub async fn issue_code(&mut self) -> Result<Zeroizing<String>, Error> {
        self.clock.advance_to(self.options.timeline.code_issued)?;
        let details = json!({
            "testType": "confirmed",
            "symptomDate": self.options.timeline.meeting_date(),
        });
        let code = self.server.issue_code(&self.api_key, &details).await;
        self.attribute(Sender::Authority);
        code
    }

    /// Alice agrees to share her keys and her phone reports with `code`: verify, certificate,
    /// publish.
    ///
    /// # Errors
    ///
    /// The phone's errors, such as the server refusing a step.
    pub async fn report(&mut self, code: &str) -> Result<ReportOutcome, Error> {
        self.clock.advance_to(self.options.timeline.reported)?;
        let device = self.device(Role::Reporter).clone();
        let consent = Consent {
            upload: true,
            research: false,
        };
        device.store().set_consent(consent)?;
        let outcome = match device.client() {
            Ok(client) => device.report(&client, code).await,
            Err(error) => Err(error),
        };
        self.attribute(Sender::Phone(Role::Reporter));
        let outcome = outcome?;
        self.report = Some(outcome.clone());
        Ok(outcome)
    }

    /// The export worker's evening run, while Alice's key is still embargoed.
    ///
    /// # Errors
    ///
    /// The worker's errors.
    pub fn export_evening(&mut self) -> Result<RunSummary, Error> {
        self.clock
            .advance_to(self.options.timeline.evening_export)?;
        self.server.export_now()
    }

    /// The export worker's morning run, once Alice's key may be published.
    ///
    /// # Errors
    ///
    /// The worker's errors.
    pub fn export_morning(&mut self) -> Result<RunSummary, Error> {
        self.clock
            .advance_to(self.options.timeline.morning_export)?;
        self.server.export_now()
    }

    /// `role`'s phone syncs: downloads the index and new files, verifies their signatures,
    /// matches and scores.
    ///
    /// # Errors
    ///
    /// The phone's errors.
    pub async fn sync(&mut self, role: Role) -> Result<SyncReport, Error> {
        self.clock.advance_to(self.options.timeline.sync)?;
        let report = self.device(role).sync_and_match().await;
        self.attribute(Sender::Phone(role));
        Ok(report?)
    }

    /// Tags the requests received since the last step with who sent them. Steps run one after
    /// the other, so every request between two steps came from that step's sender.
    fn attribute(&mut self, sender: Sender) {
        let received = self.server.received();
        let new = received.into_iter().skip(self.traffic.len());
        self.traffic.extend(new.map(|request| (sender, request)));
    }

    /// The options the world runs with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The current time, Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.unix()
    }

    /// The key server.
    pub fn server(&self) -> &LoopbackServer {
        &self.server
    }

    /// Everyone, in the order the story introduces them.
    pub fn people(&self) -> &[Person] {
        &self.people
    }

    /// The person playing `role`.
    pub fn person(&self, role: Role) -> &Person {
        let index = Role::ALL
            .iter()
            .position(|r| *r == role)
            .unwrap_or_default();
        &self.people[index]
    }

    /// The phone of the person playing `role`.
    pub fn device(&self, role: Role) -> &Device {
        self.sim.device(self.person(role).id)
    }

    /// What Alice's report achieved, once she reported.
    pub fn report_outcome(&self) -> Option<&ReportOutcome> {
        self.report.as_ref()
    }

    /// The risk configuration the phones score with.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn risk(&self, role: Role) -> Result<RiskConfig, Error> {
        Ok(self.device(role).store().settings()?.risk)
    }

    /// The day summaries `role`'s phone computed at its last sync.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn exposures(&self, role: Role) -> Result<Vec<DayExposure>, Error> {
        Ok(self.device(role).exposures()?)
    }

    /// The exposure windows `role`'s phone built from the keys it matched.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn windows(&self, role: Role) -> Result<Vec<ExposureWindow>, Error> {
        Ok(self.device(role).store().exposures()?)
    }

    /// Every request `role`'s phone sent, from its transparency log.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn log(&self, role: Role) -> Result<Vec<LogEntry>, Error> {
        Ok(self.device(role).store().transparency_log()?)
    }

    /// Every identifier `role`'s phone heard.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn sightings(&self, role: Role) -> Result<Vec<Sighting>, Error> {
        Ok(self.device(role).store().sightings()?)
    }

    /// What `listener`'s phone heard of `speaker`'s phone: the simulation's view, which no
    /// phone has, found by deriving the speaker's identifiers for each sighting's interval.
    ///
    /// # Errors
    ///
    /// The phones' store errors, [`Error::Protocol`] for a time beyond the interval range.
    pub fn heard(&self, listener: Role, speaker: Role) -> Result<Vec<Sighting>, Error> {
        let rpiks: Vec<_> = self
            .device(speaker)
            .store()
            .keys()?
            .iter()
            .map(|key| key.tek.rpik())
            .collect();
        let mut heard = Vec::new();
        for sighting in self.sightings(listener)? {
            let interval = EnIntervalNumber::from_unix_seconds(sighting.time)?;
            if rpiks.iter().any(|rpik| rpik.rpi(interval) == sighting.rpi) {
                heard.push(sighting);
            }
        }
        Ok(heard)
    }

    /// The TX power `role`'s phone advertises, in dBm: attenuation is this minus the RSSI.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn tx_power(&self, role: Role) -> Result<i8, Error> {
        Ok(self.device(role).store().settings()?.tx_power)
    }

    /// Every request the server received, with who sent it.
    pub fn traffic(&self) -> &[(Sender, Received)] {
        &self.traffic
    }

    /// The requests the server received from `sender`.
    pub fn received_from(&self, sender: Sender) -> Vec<&Received> {
        self.traffic
            .iter()
            .filter(|(from, _)| *from == sender)
            .map(|(_, request)| request)
            .collect()
    }

    /// Stops the key server.
    ///
    /// # Errors
    ///
    /// The server's errors.
    pub async fn stop(self) -> Result<(), Error> {
        self.server.stop().await
    }
}

/// Places the person playing `role` in the café with a phone configured by `settings`.
fn join(
    sim: &mut Simulation,
    dir: &Path,
    role: Role,
    options: &Options,
    settings: &Settings,
) -> Result<Person, Error> {
    let far = options.far_contact;
    let (name, position, carry, place) = match role {
        Role::Reporter => (
            "Alice",
            Position::new(0.0, 0.0),
            Carry::Hand,
            "at a café table, her phone in her hand".to_owned(),
        ),
        Role::NearContact => (
            "Bob",
            Position::new(1.0, 0.0),
            Carry::Hand,
            "across the table, 1 m from Alice, his phone in his hand".to_owned(),
        ),
        Role::FarContact => (
            "Carol",
            Position::new(0.0, far.distance_m),
            far.carry,
            format!(
                "at the counter, {} m from Alice, her phone in her {}",
                far.distance_m,
                carried_in(far.carry)
            ),
        ),
    };
    let id = sim.add_device(&dir.join(name.to_lowercase()), position, carry)?;
    sim.device(id).store().set_settings(settings)?;
    Ok(Person {
        name,
        role,
        position,
        carry,
        place,
        id,
    })
}

/// Where a phone carried so is, in words.
fn carried_in(carry: Carry) -> &'static str {
    match carry {
        Carry::Hand => "hand",
        Carry::Pocket => "pocket",
        Carry::Bag => "bag",
    }
}
