//! Many simulated devices on one [`Air`], driven by a [`ManualClock`]: each advertises its
//! current identifier and scans on GAEN's duty cycle while the simulation moves time forward.
//!
//! ```
//! # async fn demo() -> Result<(), varsel_device::Error> {
//! use std::time::Duration;
//! use varsel_device::clock::ManualClock;
//! use varsel_device::radio::sim::{Carry, PathLossModel, Position};
//! use varsel_device::simulation::Simulation;
//!
//! let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
//! let mut sim = Simulation::new(ManualClock::new(1_700_000_000), PathLossModel::default(), 7);
//! let alice = sim.add_device(dirs[0].path(), Position::new(0.0, 0.0), Carry::Hand)?;
//! let bob = sim.add_device(dirs[1].path(), Position::new(1.0, 0.0), Carry::Pocket)?;
//! sim.run_for(Duration::from_secs(20 * 60)).await?;
//! assert!(sim.device(bob).store().sighting_count() > 0);
//! # let _ = alice;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! Reports and syncs go through each device's own [`crate::http::HttpClient`], so a test can
//! point them at a real key server on loopback:
//!
//! 1. save [`crate::settings::Settings`] on each device with the server's base URL and its
//!    export verification key, and give the reporter upload consent
//!    ([`crate::store::Store::set_consent`]);
//! 2. run the contact with [`Simulation::run_for`];
//! 3. report with [`Device::report`] and a code the server issued; the server embargoes the
//!    day's key until two hours after the day ends, so it publishes only once its clock has
//!    moved that far;
//! 4. move this simulation's clock past the publication too, then call
//!    [`Device::sync_and_match`] on the other devices and read [`Device::exposures`].
//!
//! With [`PathLossModel::default`], phones held in the hand 10 m apart see about 65 dB of
//! attenuation, which the default risk configuration counts as near; a phone in a pocket or
//! bag, or a wall ([`Air::add_wall`]), puts 10 m well beyond it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::Device;
use crate::Error;
use crate::clock::{Clock, ManualClock};
use crate::radio::sim::{Air, Carry, PathLossModel, Position, SimRadio};
use crate::radio::{Radio, ScanSchedule};

/// Names a device in a [`Simulation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimDeviceId(usize);

struct Member {
    device: Device,
    radio: SimRadio,
    next_scan: u64,
}

/// Simulated devices sharing an air and a clock.
pub struct Simulation {
    air: Air,
    clock: ManualClock,
    schedule: ScanSchedule,
    rng: StdRng,
    members: Vec<Member>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("devices", &self.members.len())
            .field("now", &self.clock.now())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// An empty simulation at `clock`'s time; `seed` fixes the noise and scan timing.
    pub fn new(clock: ManualClock, model: PathLossModel, seed: u64) -> Self {
        Self {
            air: Air::new(model, seed),
            clock,
            schedule: ScanSchedule::default(),
            rng: StdRng::seed_from_u64(seed.wrapping_add(1)),
            members: Vec::new(),
        }
    }

    /// The shared air, to add walls or move phones.
    pub fn air(&self) -> &Air {
        &self.air
    }

    /// The shared clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Opens a device with its database in `dir`, places it on the air and schedules its first
    /// scan within one scan period.
    ///
    /// # Errors
    ///
    /// [`Device::open`]'s errors.
    pub fn add_device(
        &mut self,
        dir: &Path,
        position: Position,
        carry: Carry,
    ) -> Result<SimDeviceId, Error> {
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let device = Device::open(dir, clock.clone())?;
        let radio = self.air.join(position, carry, clock);
        let now = self.clock.now();
        let first =
            self.schedule.next_after(now, &mut self.rng) - self.schedule.min_period.as_secs();
        self.members.push(Member {
            device,
            radio,
            next_scan: first,
        });
        Ok(SimDeviceId(self.members.len() - 1))
    }

    /// A device.
    ///
    /// # Panics
    ///
    /// For an id from another simulation.
    pub fn device(&self, id: SimDeviceId) -> &Device {
        &self.members[id.0].device
    }

    /// Moves a device.
    pub fn move_device(&self, id: SimDeviceId, position: Position) {
        self.members[id.0].radio.set_position(position);
    }

    /// Moves time forward by `duration`: at every scan due, every device advertises its
    /// current identifier and the scanning devices save what they hear. Retention runs as it
    /// would on a phone.
    ///
    /// # Errors
    ///
    /// The devices' store errors.
    pub async fn run_for(&mut self, duration: Duration) -> Result<(), Error> {
        let end = self.clock.now() + duration.as_secs();
        while let Some(next) = self.members.iter().map(|m| m.next_scan).min() {
            if next > end {
                break;
            }
            self.clock.set(next.max(self.clock.now()));
            self.step(next).await?;
        }
        self.clock.set(end);
        Ok(())
    }

    /// Refreshes every advertisement, then runs the scans due at `now`.
    async fn step(&mut self, now: u64) -> Result<(), Error> {
        for member in &mut self.members {
            let advertisement = member.device.advertisement()?;
            member.radio.advertise(&advertisement).await?;
        }
        for member in &mut self.members {
            if member.next_scan > now {
                continue;
            }
            member.device.maintain()?;
            let heard = member.radio.scan(self.schedule.window).await?;
            member.device.record(&heard)?;
            member.next_scan = self.schedule.next_after(now, &mut self.rng);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use varsel_protocol::interval::EnIntervalNumber;

    #[tokio::test]
    async fn devices_hear_each_others_current_identifiers() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let start = 1_700_000_000;
        let mut sim = Simulation::new(ManualClock::new(start), PathLossModel::default(), 11);
        let a = sim
            .add_device(dirs[0].path(), Position::new(0.0, 0.0), Carry::Hand)
            .unwrap();
        let b = sim
            .add_device(dirs[1].path(), Position::new(1.0, 0.0), Carry::Hand)
            .unwrap();
        let c = sim
            .add_device(dirs[2].path(), Position::new(30.0, 0.0), Carry::Pocket)
            .unwrap();
        sim.run_for(Duration::from_secs(20 * 60)).await.unwrap();
        assert_eq!(sim.clock().now(), start + 20 * 60);

        let key = sim.device(a).store().current_key(start).unwrap();
        let heard_by_b = sim.device(b).store().sightings().unwrap();
        let scans: HashSet<u64> = heard_by_b.iter().map(|s| s.time - s.time % 60).collect();
        assert!(
            (4..=7).contains(&scans.len()),
            "b scanned {} times",
            scans.len()
        );
        let from_a: Vec<_> = heard_by_b
            .iter()
            .filter(|s| {
                let interval = EnIntervalNumber::from_unix_seconds(s.time).unwrap();
                s.rpi == key.tek.rpik().rpi(interval)
            })
            .collect();
        assert!(from_a.len() >= 8, "b heard a {} times", from_a.len());

        let far = sim.device(c).store().sightings().unwrap();
        let near_median = median(from_a.iter().map(|s| s.rssi).collect());
        if !far.is_empty() {
            assert!(median(far.iter().map(|s| s.rssi).collect()) < near_median - 15);
        }
    }

    fn median(mut values: Vec<i16>) -> i16 {
        values.sort_unstable();
        values[values.len() / 2]
    }
}
