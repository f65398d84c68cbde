//! One clock for the whole simulated world: the phones' manual clock, which the key server
//! reads too, so that the server and the phones can never disagree about the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use varsel_device::clock::ManualClock;

use crate::Error;

/// The simulation's manual clock, shared by every phone and, through its
/// [`varsel_key_server::clock::Clock`] implementation, by the key server. Moving it moves
/// everyone's time at once.
#[derive(Clone, Debug)]
pub struct WorldClock(ManualClock);

impl WorldClock {
    /// A clock standing at `unix_seconds`.
    pub fn new(unix_seconds: u64) -> Self {
        Self(ManualClock::new(unix_seconds))
    }

    /// The phones' view of this clock, for the device simulation.
    pub fn manual(&self) -> &ManualClock {
        &self.0
    }

    /// The current time, Unix seconds.
    pub fn unix(&self) -> u64 {
        varsel_device::Clock::now(&self.0)
    }

    /// Moves the clock forward to `unix_seconds`; standing still is fine.
    ///
    /// # Errors
    ///
    /// [`Error::Scenario`] for a time before the current one: the story only moves forward.
    pub fn advance_to(&self, unix_seconds: u64) -> Result<(), Error> {
        let now = self.unix();
        if unix_seconds < now {
            return Err(Error::Scenario(format!(
                "the clock cannot go back from {now} to {unix_seconds}"
            )));
        }
        self.0.advance(Duration::from_secs(unix_seconds - now));
        Ok(())
    }
}

impl varsel_key_server::clock::Clock for WorldClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varsel_key_server::clock::Clock as _;

    #[test]
    fn server_and_phones_read_the_same_time() {
        let clock = WorldClock::new(1_000);
        let phones = clock.manual().clone();
        clock.advance_to(1_600).unwrap();
        assert_eq!(varsel_device::Clock::now(&phones), 1_600);
        assert_eq!(clock.unix_seconds(), 1_600);
        assert!(clock.advance_to(1_599).is_err());
        assert_eq!(clock.unix(), 1_600);
    }
}
