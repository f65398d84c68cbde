//! The radio: advertising this device's identifier and scanning for others'.
//!
//! [`Radio`] has two implementations: [`sim::SimRadio`], on an in-memory [`sim::Air`] shared
//! by simulated devices, and (with the `ble` feature) `ble::BleRadio`, real Bluetooth LE:
//! scanning through btleplug and, on Linux, advertising through BlueZ. [`ScanSchedule`] is
//! GAEN's duty cycle: a few seconds of scanning every few minutes.

#[cfg(feature = "ble")]
pub mod ble;
pub mod sim;

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use varsel_protocol::advertisement::Advertisement;

use crate::Device;
use crate::Error;
use crate::sighting::Sighting;

/// A Bluetooth LE radio as Exposure Notification uses it.
pub trait Radio {
    /// Starts advertising `advertisement`, replacing what was advertised before.
    ///
    /// # Errors
    ///
    /// [`Error::Radio`] when the radio fails or the platform does not let a program advertise.
    fn advertise(
        &mut self,
        advertisement: &Advertisement,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Scans for `window` and returns every Exposure Notification advertisement heard.
    ///
    /// # Errors
    ///
    /// [`Error::Radio`] when the radio fails.
    fn scan(
        &mut self,
        window: Duration,
    ) -> impl Future<Output = Result<Vec<Sighting>, Error>> + Send;
}

/// GAEN's scanning duty cycle: a scan of `window` every `min_period` to `max_period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanSchedule {
    /// How long each scan lasts.
    pub window: Duration,
    /// Shortest time from one scan to the next.
    pub min_period: Duration,
    /// Longest time from one scan to the next.
    pub max_period: Duration,
}

impl Default for ScanSchedule {
    /// About 4 seconds every 3.5 to 5 minutes, as the Google/Apple framework scans.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(4),
            min_period: Duration::from_secs(210),
            max_period: Duration::from_secs(300),
        }
    }
}

impl ScanSchedule {
    /// When the scan after one at `now` starts, Unix seconds.
    pub fn next_after(&self, now: u64, rng: &mut impl Rng) -> u64 {
        let low = self.min_period.as_secs();
        let high = self.max_period.as_secs().max(low);
        now + rng.gen_range(low..=high)
    }
}

/// One duty cycle: advertises the device's current identifier, scans for `window` and saves
/// what was heard. Returns the number of sightings saved.
///
/// # Errors
///
/// The radio's and the store's errors.
pub async fn advertise_and_scan(
    device: &Device,
    radio: &mut impl Radio,
    window: Duration,
) -> Result<usize, Error> {
    radio.advertise(&device.advertisement()?).await?;
    let sightings = radio.scan(window).await?;
    device.record(&sightings)?;
    Ok(sightings.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scans_come_every_few_minutes() {
        let schedule = ScanSchedule::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..1_000 {
            let gap = schedule.next_after(1_000, &mut rng) - 1_000;
            assert!((210..=300).contains(&gap));
        }
    }
}
