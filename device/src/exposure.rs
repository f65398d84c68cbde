//! From verified exports to stored exposure windows, daily summaries and alerts: the
//! [`ExportHandler`] that sync hands every export to, and the plain-words view of the result.
//!
//! Windows are stored under `day ‖ key ‖ index`, so that a revised key (say, revoked) replaces
//! its earlier windows, and retention deletes whole days. After each sync every stored window
//! is scored again with the configured [`RiskConfig`] and the day summaries are rewritten.

use serde::{Deserialize, Serialize};
use varsel_protocol::interval::{EnIntervalNumber, INTERVAL_SECONDS};
use varsel_protocol::risk::{DailySummary, ExposureWindow, RiskConfig};

use crate::Device;
use crate::Error;
use crate::matching::{Matcher, PrefilterKey, WindowParams, exposure_windows};
use crate::store::Store;
use crate::sync::{ExportHandler, VerifiedExport};

/// Matches exports against the device's sightings and stores their exposure windows.
pub struct MatchingHandler {
    config: RiskConfig,
    params: WindowParams,
    prefilter: PrefilterKey,
    /// Built from the stored sightings at the first file of a sync, used for all its files.
    matcher: Option<Matcher>,
}

impl std::fmt::Debug for MatchingHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchingHandler").finish_non_exhaustive()
    }
}

impl MatchingHandler {
    /// A handler scoring with `config`, grouping sightings as `params` says.
    pub fn new(config: RiskConfig, params: WindowParams) -> Self {
        Self {
            config,
            params,
            prefilter: PrefilterKey::generate(&mut rand_core::OsRng),
            matcher: None,
        }
    }
}

impl ExportHandler for MatchingHandler {
    fn handle(&mut self, store: &Store, export: VerifiedExport<'_>) -> Result<u64, Error> {
        let matcher = match &mut self.matcher {
            Some(matcher) => matcher,
            empty => empty.insert(Matcher::new(&store.sightings()?, &self.prefilter)?),
        };
        let matches = matcher.match_archive(export.archive, export.published_at);

        // Flushed by sync with the record that this export was processed.
        let mut windows = Vec::new();
        for found in &matches {
            let key = hex::encode(found.key.key.as_bytes());
            let of_key = exposure_windows(found, &self.config, &self.params);
            for (index, window) in of_key.into_iter().enumerate() {
                let id = format!("{:012}-{key}-{index:04}", window.day.unix_seconds());
                windows.push((id, window));
            }
        }
        store.put_exposures(&windows)?;
        Ok(matches.len() as u64)
    }

    fn finish(&mut self, store: &Store) -> Result<(), Error> {
        self.matcher = None;
        let windows: Vec<ExposureWindow> = store.exposures()?;
        let days: Vec<(String, DayExposure)> = self
            .config
            .daily_summaries(&windows)
            .iter()
            .map(|summary| {
                let id = format!("{:012}", summary.day.unix_seconds());
                (id, DayExposure::new(&self.config, summary, &windows))
            })
            .collect();
        store.replace_alerts(&days)
    }
}

/// One day's exposure, as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayExposure {
    /// The UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The framework's summary of the day, in seconds.
    pub summary: DailySummary,
    /// Minutes spent near people who later reported, unweighted.
    pub minutes: u64,
    /// The smallest attenuation heard that day, in dB: the closest contact.
    pub closest_attenuation_db: u8,
    /// Whether the day reaches the alert threshold.
    pub alert: bool,
}

impl DayExposure {
    fn new(config: &RiskConfig, summary: &DailySummary, windows: &[ExposureWindow]) -> Self {
        let of_day: Vec<&ExposureWindow> = windows
            .iter()
            .filter(|window| window.day == summary.day && config.counts(window))
            .collect();
        let scans = of_day.iter().flat_map(|window| &window.scan_instances);
        let seconds: u64 = scans
            .clone()
            .map(|scan| u64::from(scan.seconds_since_last_scan))
            .sum();
        Self {
            date: date(summary.day),
            summary: *summary,
            minutes: seconds / 60,
            closest_attenuation_db: scans.map(|scan| scan.min_attenuation_db).min().unwrap_or(0),
            alert: config.alerts(summary),
        }
    }

    /// The day in plain words.
    pub fn describe(&self, config: &RiskConfig) -> String {
        let buckets = &config.attenuation;
        let closeness = match self.closest_attenuation_db {
            a if a <= buckets.immediate_max_db => "very close (about a metre or less)",
            a if a <= buckets.near_max_db => "close (within a few metres)",
            a if a <= buckets.medium_max_db => "at some distance",
            _ => "far away",
        };
        let verdict = if self.alert {
            "This is enough to count as a risky contact: follow your health authority's advice."
        } else {
            "This is below the level that counts as a risky contact."
        };
        format!(
            "{}: about {} minutes near someone who later reported a positive test, at closest \
             {closeness}. {verdict}",
            self.date, self.minutes
        )
    }
}

impl Device {
    /// The day summaries of the last sync, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn exposures(&self) -> Result<Vec<DayExposure>, Error> {
        self.store().alerts()
    }

    /// A handler that matches with this device's risk configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn matching_handler(&self) -> Result<MatchingHandler, Error> {
        let settings = self.store().settings()?;
        Ok(MatchingHandler::new(settings.risk, WindowParams::default()))
    }
}

/// The UTC date of an interval, `YYYY-MM-DD`.
pub fn date(interval: EnIntervalNumber) -> String {
    let days =
        i64::try_from(u64::from(interval.value()) * INTERVAL_SECONDS / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The Gregorian date `days` after 1970-01-01 (the proleptic calendar, days ≥ 0).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_described_in_plain_words() {
        use varsel_protocol::export::ReportType;
        use varsel_protocol::risk::{CalibrationConfidence, Infectiousness, ScanInstance};

        let config = RiskConfig::default();
        let day = EnIntervalNumber::from_unix_seconds(1_700_000_000)
            .unwrap()
            .day_start();
        let scan = ScanInstance {
            typical_attenuation_db: 50,
            min_attenuation_db: 45,
            seconds_since_last_scan: 300,
        };
        let window = ExposureWindow {
            day,
            report_type: ReportType::ConfirmedTest,
            infectiousness: Infectiousness::High,
            calibration_confidence: CalibrationConfidence::Lowest,
            scan_instances: vec![scan; 4],
        };
        let summary = config.daily_summaries(std::slice::from_ref(&window))[0];
        let exposure = DayExposure::new(&config, &summary, &[window]);
        assert_eq!(exposure.minutes, 20);
        assert_eq!(exposure.closest_attenuation_db, 45);
        assert!(
            exposure.alert,
            "20 min immediate at high infectiousness: 35 weighted minutes"
        );
        let words = exposure.describe(&config);
        assert!(words.starts_with("2023-11-14: about 20 minutes"), "{words}");
        assert!(
            words.contains("very close") && words.contains("risky contact:"),
            "{words}"
        );
    }

    #[test]
    fn dates_of_known_days() {
        let date_of = |unix: u64| date(EnIntervalNumber::from_unix_seconds(unix).unwrap());
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_700_000_000), "2023-11-14");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(4_107_542_400), "2100-03-01");
    }
}
