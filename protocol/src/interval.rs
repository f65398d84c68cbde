//! Time in the protocol: ten-minute interval numbers (`spec/protocol.md` §2).
//!
//! Every timestamp the protocol exchanges is an [`EnIntervalNumber`]: the number of whole
//! ten-minute intervals since the Unix epoch, in UTC. The protocol never reads a clock; callers
//! pass the current time in.

use crate::Error;

/// Length of one interval in seconds.
pub const INTERVAL_SECONDS: u64 = 600;

/// Number of intervals a Temporary Exposure Key is valid for: one day (`TEKRollingPeriod`).
pub const EK_ROLLING_PERIOD: u32 = 144;

/// An `ENIntervalNumber`: `floor(unix_seconds / 600)` as an unsigned 32-bit number (§2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnIntervalNumber(u32);

impl EnIntervalNumber {
    /// Wraps a raw interval number.
    pub const fn new(value: u32) -> Self {
        Self(value)
    }

    /// The interval containing `unix_seconds`.
    ///
    /// # Errors
    ///
    /// [`Error::TimeOutOfRange`] when the interval number does not fit in 32 bits.
    pub fn from_unix_seconds(unix_seconds: u64) -> Result<Self, Error> {
        u32::try_from(unix_seconds / INTERVAL_SECONDS)
            .map(Self)
            .map_err(|_| Error::TimeOutOfRange { unix_seconds })
    }

    /// The raw interval number.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Unix time, in seconds, at which this interval starts.
    pub const fn unix_seconds(self) -> u64 {
        self.0 as u64 * INTERVAL_SECONDS
    }

    /// The first interval of the UTC day containing this one: the rolling start of that day's key.
    pub const fn day_start(self) -> Self {
        Self(self.0 - self.0 % EK_ROLLING_PERIOD)
    }

    /// This interval moved forward by `intervals`, or `None` past the end of the 32-bit range.
    pub fn checked_add(self, intervals: u32) -> Option<Self> {
        self.0.checked_add(intervals).map(Self)
    }

    /// This interval moved back by `intervals`, saturating at zero.
    pub const fn saturating_sub(self, intervals: u32) -> Self {
        Self(self.0.saturating_sub(intervals))
    }
}

impl From<u32> for EnIntervalNumber {
    fn from(value: u32) -> Self {
        Self(value)
    }
}

impl core::fmt::Display for EnIntervalNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// The validity of one key: `rolling_period` intervals from `rolling_start` (§2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RollingWindow {
    start: EnIntervalNumber,
    period: u32,
}

impl RollingWindow {
    /// A window of `period` intervals starting at `start`.
    ///
    /// # Errors
    ///
    /// [`Error::RollingPeriodOutOfRange`] unless `1 <= period <= 144`.
    pub fn new(start: EnIntervalNumber, period: u32) -> Result<Self, Error> {
        if !(1..=EK_ROLLING_PERIOD).contains(&period) {
            return Err(Error::RollingPeriodOutOfRange { period });
        }
        Ok(Self { start, period })
    }

    /// A full day's window starting at `start`.
    pub const fn full_day(start: EnIntervalNumber) -> Self {
        Self {
            start,
            period: EK_ROLLING_PERIOD,
        }
    }

    /// The first interval of the window (`rolling_start_interval_number`).
    pub const fn start(self) -> EnIntervalNumber {
        self.start
    }

    /// The number of intervals in the window (`rolling_period`).
    pub const fn period(self) -> u32 {
        self.period
    }

    /// The first interval after the window, as a 64-bit number so that it cannot overflow.
    pub const fn end_exclusive(self) -> u64 {
        self.start.0 as u64 + self.period as u64
    }

    /// Whether `interval` lies inside the window.
    pub fn contains(self, interval: EnIntervalNumber) -> bool {
        interval >= self.start && u64::from(interval.0) < self.end_exclusive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_vector_time() {
        let interval = EnIntervalNumber::from_unix_seconds(1_585_785_600).unwrap();
        assert_eq!(interval.value(), 2_642_976);
        assert_eq!(interval.day_start(), interval);
        assert_eq!(interval.unix_seconds(), 1_585_785_600);
    }

    #[test]
    fn interval_floors_partial_intervals() {
        let interval = EnIntervalNumber::from_unix_seconds(1_585_785_600 + 599).unwrap();
        assert_eq!(interval.value(), 2_642_976);
        let next = EnIntervalNumber::from_unix_seconds(1_585_785_600 + 600).unwrap();
        assert_eq!(next.value(), 2_642_977);
        assert_eq!(next.day_start().value(), 2_642_976);
    }

    #[test]
    fn far_future_is_an_error() {
        let too_late = (u64::from(u32::MAX) + 1) * INTERVAL_SECONDS;
        assert!(matches!(
            EnIntervalNumber::from_unix_seconds(too_late),
            Err(Error::TimeOutOfRange { .. })
        ));
    }

    #[test]
    fn rolling_window_bounds() {
        assert!(RollingWindow::new(EnIntervalNumber::new(10), 0).is_err());
        assert!(RollingWindow::new(EnIntervalNumber::new(10), 145).is_err());
        let window = RollingWindow::new(EnIntervalNumber::new(10), 144).unwrap();
        assert!(window.contains(EnIntervalNumber::new(10)));
        assert!(window.contains(EnIntervalNumber::new(153)));
        assert!(!window.contains(EnIntervalNumber::new(154)));
        assert!(!window.contains(EnIntervalNumber::new(9)));
        let edge = RollingWindow::new(EnIntervalNumber::new(u32::MAX), 144).unwrap();
        assert_eq!(edge.end_exclusive(), u64::from(u32::MAX) + 144);
    }
}
