//! Calendar dates (`YYYY-MM-DD`) as whole days since 1970-01-01, for symptom and test dates.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds in a day.
pub const DAY_SECONDS: u64 = 86_400;

/// A proleptic Gregorian calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i64);

impl Date {
    /// The date `days` days after 1970-01-01.
    pub const fn from_days(days: i64) -> Self {
        Self(days)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> i64 {
        self.0
    }

    /// The date of a moment given in seconds since the epoch, shifted by `offset_minutes`.
    pub fn from_unix_seconds(seconds: u64, offset_minutes: i32) -> Self {
        let shifted = i64::try_from(seconds).unwrap_or(i64::MAX) + i64::from(offset_minutes) * 60;
        Self(shifted.div_euclid(86_400))
    }

    /// Seconds since the epoch of this date's UTC midnight, or `None` before 1970.
    pub fn midnight_unix_seconds(self) -> Option<u64> {
        u64::try_from(self.0).ok().map(|days| days * DAY_SECONDS)
    }

    /// Parses exactly `YYYY-MM-DD`; `None` for anything else or an impossible date.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: core::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        Some(Self(days_from_civil(year, month, day)))
    }

    /// The `(year, month, day)` of this date.
    pub fn civil(self) -> (i64, i64, i64) {
        civil_from_days(self.0)
    }
}

impl core::fmt::Display for Date {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("expected a YYYY-MM-DD date"))
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date, counting in 400-year eras that start on 1 March.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(Date::parse("1970-01-01"), Some(Date::from_days(0)));
        assert_eq!(
            Date::parse("2020-04-02").unwrap().midnight_unix_seconds(),
            Some(1_585_785_600)
        );
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(
            Date::from_unix_seconds(1_585_785_600 - 1, 0).to_string(),
            "2020-04-01"
        );
        assert_eq!(
            Date::from_unix_seconds(1_585_785_600 - 1, 60).to_string(),
            "2020-04-02"
        );
    }

    #[test]
    fn bad_dates() {
        for text in [
            "2023-02-29",
            "2020-13-01",
            "2020-00-10",
            "2020-1-01",
            "20200401",
            "+020-01-01",
        ] {
            assert_eq!(Date::parse(text), None, "{text}");
        }
    }

    #[test]
    fn round_trip_over_centuries() {
        for days in (0..2_900_000).step_by(997) {
            let date = Date::from_days(days);
            assert_eq!(Date::parse(&date.to_string()), Some(date), "{days}");
        }
    }
}
