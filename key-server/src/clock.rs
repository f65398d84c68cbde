//! Where the server reads the time: every expiry, quota day, rate window and token lifetime goes
//! through a [`Clock`], so tests move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time in whole seconds since the Unix epoch (0 before it).
    fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    seconds: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: u64) -> Self {
        Self {
            seconds: Arc::new(AtomicU64::new(unix_seconds)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.seconds.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    /// Sets the clock to `unix_seconds`.
    pub fn set(&self, unix_seconds: u64) {
        self.seconds.store(unix_seconds, Ordering::SeqCst);
    }

    /// The current reading, in Unix seconds.
    pub fn unix(&self) -> u64 {
        self.seconds.load(Ordering::SeqCst)
    }

    /// The current reading as a `SystemTime`.
    pub fn now_system(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.seconds.load(Ordering::SeqCst))
    }
}

/// A shared, dynamically chosen clock.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        let copy = clock.clone();
        assert_eq!(clock.unix_seconds(), 1_000);
        copy.advance(Duration::from_secs(60));
        assert_eq!(clock.unix_seconds(), 1_060);
        clock.set(5);
        assert_eq!(copy.unix_seconds(), 5);
    }
}
