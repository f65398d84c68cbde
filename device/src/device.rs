//! [`Device`]: the embeddable facade over the store, the key schedule and the clock.
//!
//! An app (or the `varsel-device` command) opens one `Device` on a data directory, asks it for
//! the advertisement to broadcast, hands it what the radio heard, and calls
//! [`maintain`](Device::maintain) from time to time; [`sync`](Device::sync) and
//! [`report`](Device::report) talk to the key server.

use std::path::Path;
use std::sync::Arc;

use varsel_protocol::advertisement::Advertisement;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::Metadata;

use crate::Error;
use crate::clock::Clock;
use crate::http::HttpClient;
use crate::sighting::Sighting;
use crate::store::{RetentionReport, Store};

/// How often retention runs while the device is up: daily.
const RETENTION_EVERY_SECONDS: u64 = 86_400;

/// Varsel on one device.
#[derive(Clone)]
pub struct Device {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens the device's database in `dir` and deletes whatever is past retention.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`].
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let device = Self {
            store: Store::open(dir)?,
            clock,
        };
        device.run_retention()?;
        Ok(device)
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current time, Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The advertisement to broadcast now: the identifier of the current interval under the
    /// day's key, with this device's TX power in the encrypted metadata. It changes with every
    /// interval and with every new key.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], or [`Error::Protocol`] for a clock beyond the interval range.
    pub fn advertisement(&self) -> Result<Advertisement, Error> {
        let now = self.now();
        let key = self.store.current_key(now)?;
        let interval = EnIntervalNumber::from_unix_seconds(now)?;
        let rpi = key.tek.rpik().rpi(interval);
        let metadata = Metadata::v1(self.store.settings()?.tx_power);
        let aem = key.tek.aemk().encrypt(&rpi, &metadata);
        Ok(Advertisement { rpi, aem })
    }

    /// Saves what the radio heard.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn record(&self, sightings: &[Sighting]) -> Result<(), Error> {
        self.store.add_sightings(sightings)
    }

    /// Runs retention when it has not run for a day (or the clock went back). Returns what
    /// it deleted, or `None` when it was not due.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn maintain(&self) -> Result<Option<RetentionReport>, Error> {
        let last = self.store.upload_state()?.retention_ran_at;
        let now = self.now();
        let due = last.is_none_or(|last| now < last || now - last >= RETENTION_EVERY_SECONDS);
        if due {
            self.run_retention().map(Some)
        } else {
            Ok(None)
        }
    }

    fn run_retention(&self) -> Result<RetentionReport, Error> {
        let now = self.now();
        let report = self.store.enforce_retention(now)?;
        let mut state = self.store.upload_state()?;
        state.retention_ran_at = Some(now);
        self.store.set_upload_state(&state)?;
        Ok(report)
    }

    /// The HTTP client for the configured server, logging to this device's transparency log.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] without a server URL, [`Error::InvalidSetting`] for a bad one.
    pub fn client(&self) -> Result<HttpClient, Error> {
        let url = self
            .store
            .settings()?
            .server_url
            .ok_or(Error::NotConfigured { what: "server URL" })?;
        HttpClient::new(&url, self.store.clone(), self.clock.clone())
    }

    /// Deletes everything the device holds.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn wipe(&self) -> Result<(), Error> {
        self.store.wipe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    const T0: u64 = 1_700_000_000;

    fn device(clock: &ManualClock) -> (tempfile::TempDir, Device) {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::open(dir.path(), Arc::new(clock.clone())).unwrap();
        (dir, device)
    }

    #[test]
    fn identifier_changes_every_interval_in_step_with_the_key() {
        let clock = ManualClock::new(T0 - T0 % 600);
        let (_dir, device) = device(&clock);
        let first = device.advertisement().unwrap();
        clock.advance(Duration::from_secs(599));
        assert_eq!(device.advertisement().unwrap(), first);
        clock.advance(Duration::from_secs(1));
        let second = device.advertisement().unwrap();
        assert_ne!(second.rpi, first.rpi);

        let key = device.store().current_key(device.now()).unwrap();
        let interval = EnIntervalNumber::from_unix_seconds(device.now()).unwrap();
        assert_eq!(second.rpi, key.tek.rpik().rpi(interval));
        let metadata = key.tek.aemk().decrypt(&second.rpi, &second.aem);
        assert_eq!(metadata, Metadata::v1(crate::settings::DEFAULT_TX_POWER));
    }

    #[test]
    fn retention_runs_on_start_and_daily() {
        let clock = ManualClock::new(T0);
        let dir = tempfile::tempdir().unwrap();
        let old = Sighting {
            rpi: varsel_protocol::keys::RollingProximityIdentifier::from_bytes([1; 16]),
            aem: varsel_protocol::keys::AssociatedEncryptedMetadata::from_bytes([0; 4]),
            rssi: -60,
            time: T0,
        };
        {
            let device = Device::open(dir.path(), Arc::new(clock.clone())).unwrap();
            device.record(&[old]).unwrap();
        }
        clock.advance(Duration::from_secs(15 * 86_400));
        let device = Device::open(dir.path(), Arc::new(clock.clone())).unwrap();
        assert_eq!(device.store().sighting_count(), 0, "deleted on start");

        device
            .record(&[Sighting {
                time: device.now(),
                ..old
            }])
            .unwrap();
        assert_eq!(device.maintain().unwrap(), None, "ran less than a day ago");
        clock.advance(Duration::from_secs(14 * 86_400 + 1));
        let report = device.maintain().unwrap().unwrap();
        assert_eq!(report.sightings, 1);
    }
}
