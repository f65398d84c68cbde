//! Exposure windows and risk scoring with the semantics of GAEN version 2.
//!
//! Matching turns the sightings of one diagnosis key into [`ExposureWindow`]s: runs of at most
//! 30 minutes made of [`ScanInstance`]s, each with the typical and the minimum attenuation heard
//! in one scan and the seconds since the scan before it. A [`RiskConfig`] then scores them the
//! way the Google/Apple framework's version 2 does:
//!
//! 1. Each scan instance falls into an attenuation bucket by its *typical* attenuation:
//!    immediate (`<= immediate_max_db`), near, medium, or other. Its seconds since the last
//!    scan are weighted by that bucket's weight; the sum over a window is the window's
//!    **weighted duration**.
//! 2. The window's **score** is its weighted duration times the weight of the infectiousness
//!    of the key's day (from days since symptom onset) and the weight of its report type.
//! 3. Windows of a UTC day are summed into a [`DailySummary`]: the maximum score, the sum of
//!    scores and the sum of weighted durations, in seconds. Windows whose infectiousness is
//!    `None`, whose report type is `Revoked`, or whose score is below the minimum window score
//!    take no part, as the framework never reports them.
//! 4. A day **alerts** when its score sum reaches [`RiskConfig::daily_threshold_minutes`]: the
//!    "meaningful exposure minutes" that health authorities set thresholds on.
//!
//! All weights are whole percentages (100 = ×1), and the arithmetic is exact integer
//! arithmetic in percent-seconds until the final division, so a score never depends on
//! floating-point rounding order.
//!
//! # Default configuration
//!
//! [`RiskConfig::default`] is the "Narrow Net v2" recommendation of the Linux Foundation Public
//! Health Risk Score Symposium (guidance updated in August 2021 for the Delta variant, published
//! as `risk-scoring.md` in the `lfph/gaen-risk-scoring` repository):
//!
//! - attenuation thresholds 55 / 67 / 75 dB with weights 175 % / 100 % / 33 % / 0 %;
//! - infectiousness high on days −2 to +3 from symptom onset, standard on days −4, −3, +4
//!   and +5, none otherwise; standard weight 30 %, high weight 100 %;
//! - an alert at 15 minutes per day, the close-contact definition (15 cumulative minutes within
//!   24 hours) that guidance cites.
//!
//! The guidance sets no report-type weights; the default weighs confirmed tests, clinical
//! diagnoses and self-reports at 100 % and recursive reports at 0 %, treats a key without a
//! report type as a confirmed test and a key without an onset date as of standard
//! infectiousness, which are the framework's own defaults for those mappings.
//!
//! # Limitations
//!
//! The framework's per-report-type summaries (a day's summary for confirmed tests only, and so
//! on) are not computed; [`RiskConfig::daily_summaries`] gives the combined one.

use crate::Error;
use crate::export::ReportType;
use crate::interval::EnIntervalNumber;

/// The first day of the days-since-onset range GAEN maps to infectiousness.
pub const DAYS_SINCE_ONSET_MIN: i32 = -14;
/// The last day of that range.
pub const DAYS_SINCE_ONSET_MAX: i32 = 14;
/// Number of days in the range −14..=14.
pub const DAYS_SINCE_ONSET_LEN: usize = 29;

/// The largest weight the framework accepts, in percent.
pub const MAX_WEIGHT_PERCENT: u32 = 250;

/// One scan of the receiving device in which a matched key was heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ScanInstance {
    /// The attenuation most representative of the scan (the median of what was heard), in dB.
    pub typical_attenuation_db: u8,
    /// The smallest attenuation heard during the scan, in dB: the closest the devices came.
    pub min_attenuation_db: u8,
    /// Seconds since the receiving device's previous scan: the duration this scan stands for.
    pub seconds_since_last_scan: u32,
}

/// How infectious the key's owner was on the key's day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Infectiousness {
    /// Not infectious: windows are dropped.
    None,
    /// Standard infectiousness.
    #[default]
    Standard,
    /// High infectiousness.
    High,
}

/// How well the transmitting device's TX power is calibrated, from its metadata (0-3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CalibrationConfidence {
    /// No calibration data for the model.
    #[default]
    Lowest,
    /// Calibrated by a similar model.
    Low,
    /// Calibrated by a manufacturer's measurement.
    Medium,
    /// Calibrated by a measurement of this model.
    High,
}

impl CalibrationConfidence {
    /// Reads the two-bit confidence field of the metadata; higher bits are ignored.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::Lowest,
            1 => Self::Low,
            2 => Self::Medium,
            _ => Self::High,
        }
    }
}

/// At most 30 minutes of one diagnosis key's sightings, as the framework reports them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ExposureWindow {
    /// The first interval of the UTC day the window began on.
    #[cfg_attr(feature = "serde", serde(with = "interval_number"))]
    pub day: EnIntervalNumber,
    /// The key's report type, after mapping a missing one through the configuration.
    #[cfg_attr(feature = "serde", serde(with = "report_type_name"))]
    pub report_type: ReportType,
    /// The infectiousness of the key's day, from its days since symptom onset.
    pub infectiousness: Infectiousness,
    /// The transmitter's calibration confidence, from the metadata of the first scan.
    pub calibration_confidence: CalibrationConfidence,
    /// The scans that heard the key, in time order.
    pub scan_instances: Vec<ScanInstance>,
}

/// Attenuation thresholds and the weight of each bucket they bound.
///
/// A scan instance is *immediate* when its typical attenuation is at most `immediate_max_db`,
/// *near* at most `near_max_db`, *medium* at most `medium_max_db`, and *other* beyond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct AttenuationBuckets {
    /// Largest attenuation of the immediate bucket, in dB.
    pub immediate_max_db: u8,
    /// Largest attenuation of the near bucket, in dB.
    pub near_max_db: u8,
    /// Largest attenuation of the medium bucket, in dB.
    pub medium_max_db: u8,
    /// Weight of immediate scans, in percent.
    pub immediate_weight: u32,
    /// Weight of near scans, in percent.
    pub near_weight: u32,
    /// Weight of medium scans, in percent.
    pub medium_weight: u32,
    /// Weight of scans beyond the medium threshold, in percent.
    pub other_weight: u32,
}

impl AttenuationBuckets {
    /// The weight, in percent, of a scan whose typical attenuation is `attenuation_db`.
    pub const fn weight(&self, attenuation_db: u8) -> u32 {
        if attenuation_db <= self.immediate_max_db {
            self.immediate_weight
        } else if attenuation_db <= self.near_max_db {
            self.near_weight
        } else if attenuation_db <= self.medium_max_db {
            self.medium_weight
        } else {
            self.other_weight
        }
    }
}

/// Weights by the report type of the key, in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ReportTypeWeights {
    /// Weight of keys reported after a positive laboratory test.
    pub confirmed_test: u32,
    /// Weight of keys reported after a clinical diagnosis.
    pub confirmed_clinical_diagnosis: u32,
    /// Weight of self-reported keys.
    pub self_report: u32,
    /// Weight of recursive reports.
    pub recursive: u32,
}

/// Infectiousness weights and the map from days since symptom onset to infectiousness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct InfectiousnessMapping {
    /// Weight of days of standard infectiousness, in percent.
    pub standard_weight: u32,
    /// Weight of days of high infectiousness, in percent.
    pub high_weight: u32,
    /// Infectiousness for days since onset −14, −13, …, +14; days beyond count as `None`.
    pub by_days_since_onset: [Infectiousness; DAYS_SINCE_ONSET_LEN],
    /// Infectiousness of a key published without days since onset.
    pub when_onset_missing: Infectiousness,
}

impl InfectiousnessMapping {
    /// The infectiousness of a key's day, given its days since symptom onset.
    pub fn infectiousness(&self, days_since_onset: Option<i32>) -> Infectiousness {
        let Some(days) = days_since_onset else {
            return self.when_onset_missing;
        };
        usize::try_from(i64::from(days) - i64::from(DAYS_SINCE_ONSET_MIN))
            .ok()
            .and_then(|index| self.by_days_since_onset.get(index).copied())
            .unwrap_or(Infectiousness::None)
    }

    /// The weight, in percent, of an infectiousness level; `None` weighs 0.
    pub const fn weight(&self, infectiousness: Infectiousness) -> u32 {
        match infectiousness {
            Infectiousness::None => 0,
            Infectiousness::Standard => self.standard_weight,
            Infectiousness::High => self.high_weight,
        }
    }
}

/// Everything that turns exposure windows into scores and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct RiskConfig {
    /// Report type assumed for keys published without one.
    #[cfg_attr(feature = "serde", serde(with = "report_type_name"))]
    pub report_type_when_missing: ReportType,
    /// Windows scoring less than this many seconds are left out of the daily summaries.
    pub minimum_window_score_seconds: u32,
    /// A day alerts when its score sum reaches this many minutes.
    pub daily_threshold_minutes: u32,
    /// Attenuation buckets and their weights.
    pub attenuation: AttenuationBuckets,
    /// Weights by report type.
    pub report_type_weights: ReportTypeWeights,
    /// Infectiousness weights and the days-since-onset map.
    pub infectiousness: InfectiousnessMapping,
}

/// The scores of one UTC day, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DailySummary {
    /// The first interval of the day.
    #[cfg_attr(feature = "serde", serde(with = "interval_number"))]
    pub day: EnIntervalNumber,
    /// The highest window score of the day.
    pub maximum_score: f64,
    /// The sum of the day's window scores: the figure the alert threshold applies to.
    pub score_sum: f64,
    /// The sum of the day's weighted durations, without infectiousness or report-type weights.
    pub weighted_duration_sum: f64,
    /// How many windows took part.
    pub windows: usize,
}

impl Default for RiskConfig {
    /// The LFPH "Narrow Net v2" configuration; see the module documentation for its source.
    fn default() -> Self {
        use Infectiousness::{High as H, None as N, Standard as S};
        #[rustfmt::skip]
        let by_days_since_onset = [
            // −14 … −8
            N, N, N, N, N, N, N,
            // −7 … −1
            N, N, N, S, S, H, H,
            // 0 … 6
            H, H, H, H, S, S, N,
            // 7 … 14
            N, N, N, N, N, N, N, N,
        ];
        Self {
            report_type_when_missing: ReportType::ConfirmedTest,
            minimum_window_score_seconds: 0,
            daily_threshold_minutes: 15,
            attenuation: AttenuationBuckets {
                immediate_max_db: 55,
                near_max_db: 67,
                medium_max_db: 75,
                immediate_weight: 175,
                near_weight: 100,
                medium_weight: 33,
                other_weight: 0,
            },
            report_type_weights: ReportTypeWeights {
                confirmed_test: 100,
                confirmed_clinical_diagnosis: 100,
                self_report: 100,
                recursive: 0,
            },
            infectiousness: InfectiousnessMapping {
                standard_weight: 30,
                high_weight: 100,
                by_days_since_onset,
                when_onset_missing: S,
            },
        }
    }
}

impl RiskConfig {
    /// Checks that thresholds ascend, weights are within 0-250 % and a missing report type maps
    /// to one that can be weighed.
    ///
    /// # Errors
    ///
    /// [`Error::FieldOutOfRange`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let buckets = &self.attenuation;
        ascending(
            "attenuation.near_max_db",
            buckets.immediate_max_db,
            buckets.near_max_db,
        )?;
        ascending(
            "attenuation.medium_max_db",
            buckets.near_max_db,
            buckets.medium_max_db,
        )?;

        let weights = &self.report_type_weights;
        let infectiousness = &self.infectiousness;
        [
            ("attenuation.immediate_weight", buckets.immediate_weight),
            ("attenuation.near_weight", buckets.near_weight),
            ("attenuation.medium_weight", buckets.medium_weight),
            ("attenuation.other_weight", buckets.other_weight),
            ("report_type_weights.confirmed_test", weights.confirmed_test),
            (
                "report_type_weights.confirmed_clinical_diagnosis",
                weights.confirmed_clinical_diagnosis,
            ),
            ("report_type_weights.self_report", weights.self_report),
            ("report_type_weights.recursive", weights.recursive),
            (
                "infectiousness.standard_weight",
                infectiousness.standard_weight,
            ),
            ("infectiousness.high_weight", infectiousness.high_weight),
        ]
        .into_iter()
        .try_for_each(|(field, weight)| at_most_max_weight(field, weight))?;

        match self.report_type_when_missing {
            ReportType::Unknown | ReportType::Revoked => Err(Error::FieldOutOfRange {
                field: "report_type_when_missing",
                value: self.report_type_when_missing.to_i32().into(),
            }),
            _ => Ok(()),
        }
    }

    /// The report type a window gets from a key's published one: a missing or `Unknown` type
    /// becomes [`report_type_when_missing`](Self::report_type_when_missing).
    pub const fn effective_report_type(&self, published: Option<ReportType>) -> ReportType {
        match published {
            None | Some(ReportType::Unknown) => self.report_type_when_missing,
            Some(report_type) => report_type,
        }
    }

    /// The weight, in percent, of a report type; revoked reports weigh 0, and `Unknown` weighs
    /// what [`report_type_when_missing`](Self::report_type_when_missing) does.
    pub const fn report_type_weight(&self, report_type: ReportType) -> u32 {
        let weights = &self.report_type_weights;
        match self.effective_report_type(Some(report_type)) {
            ReportType::ConfirmedTest => weights.confirmed_test,
            ReportType::ConfirmedClinicalDiagnosis => weights.confirmed_clinical_diagnosis,
            ReportType::SelfReport => weights.self_report,
            ReportType::Recursive => weights.recursive,
            ReportType::Unknown | ReportType::Revoked => 0,
        }
    }

    /// A window's weighted duration in seconds: each scan's seconds weighted by the bucket of
    /// its typical attenuation.
    pub fn weighted_duration_seconds(&self, window: &ExposureWindow) -> f64 {
        percent_seconds_to_seconds(self.weighted_percent_seconds(window))
    }

    /// A window's score in seconds: its weighted duration times the infectiousness and
    /// report-type weights.
    pub fn window_score(&self, window: &ExposureWindow) -> f64 {
        self.score_of(window, self.weighted_percent_seconds(window))
    }

    /// Whether a window takes part in the daily summaries.
    pub fn counts(&self, window: &ExposureWindow) -> bool {
        self.counts_with_score(window, self.window_score(window))
    }

    /// One summary per UTC day that has a counting window, in day order.
    pub fn daily_summaries(&self, windows: &[ExposureWindow]) -> Vec<DailySummary> {
        // Each window's weighted duration and score, worked out once.
        let mut counting: Vec<(&ExposureWindow, f64, f64)> = windows
            .iter()
            .filter_map(|window| {
                let percent_seconds = self.weighted_percent_seconds(window);
                let score = self.score_of(window, percent_seconds);
                let weighted = percent_seconds_to_seconds(percent_seconds);
                self.counts_with_score(window, score)
                    .then_some((window, score, weighted))
            })
            .collect();
        counting.sort_by_key(|(window, ..)| window.day);

        let mut summaries: Vec<DailySummary> = Vec::new();
        for (window, score, weighted) in counting {
            match summaries.last_mut() {
                Some(summary) if summary.day == window.day => {
                    summary.maximum_score = summary.maximum_score.max(score);
                    summary.score_sum += score;
                    summary.weighted_duration_sum += weighted;
                    summary.windows += 1;
                }
                _ => summaries.push(DailySummary {
                    day: window.day,
                    maximum_score: score,
                    score_sum: score,
                    weighted_duration_sum: weighted,
                    windows: 1,
                }),
            }
        }
        summaries
    }

    /// Whether a day's summary reaches the alert threshold.
    pub fn alerts(&self, summary: &DailySummary) -> bool {
        summary.score_sum >= f64::from(self.daily_threshold_minutes) * 60.0
    }

    /// A window's score in seconds, given its weighted percent-seconds.
    fn score_of(&self, window: &ExposureWindow, percent_seconds: u64) -> f64 {
        let infectiousness = u128::from(self.infectiousness.weight(window.infectiousness));
        let report_type = u128::from(self.report_type_weight(window.report_type));
        let scaled = u128::from(percent_seconds) * infectiousness * report_type;
        scaled as f64 / 1_000_000.0
    }

    /// Whether a window whose score is `score` takes part in the daily summaries.
    fn counts_with_score(&self, window: &ExposureWindow, score: f64) -> bool {
        window.infectiousness != Infectiousness::None
            && window.report_type != ReportType::Revoked
            && score >= f64::from(self.minimum_window_score_seconds)
    }

    /// Sum over the window's scans of seconds × bucket weight, in percent-seconds, saturating.
    fn weighted_percent_seconds(&self, window: &ExposureWindow) -> u64 {
        window.scan_instances.iter().fold(0u64, |sum, scan| {
            let weight = u64::from(self.attenuation.weight(scan.typical_attenuation_db));
            sum.saturating_add(u64::from(scan.seconds_since_last_scan) * weight)
        })
    }
}

/// Percent-seconds as seconds.
fn percent_seconds_to_seconds(percent_seconds: u64) -> f64 {
    percent_seconds as f64 / 100.0
}

fn ascending(field: &'static str, lower: u8, value: u8) -> Result<(), Error> {
    if value < lower {
        return Err(Error::FieldOutOfRange {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

fn at_most_max_weight(field: &'static str, weight: u32) -> Result<(), Error> {
    if weight > MAX_WEIGHT_PERCENT {
        return Err(Error::FieldOutOfRange {
            field,
            value: weight.into(),
        });
    }
    Ok(())
}

/// Serializes a [`ReportType`] by its name (`confirmed_test`, …), as configuration files
/// write it.
#[cfg(feature = "serde")]
mod report_type_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::export::ReportType;

    pub fn serialize<S: Serializer>(value: &ReportType, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ReportType, D::Error> {
        let name = String::deserialize(deserializer)?;
        (0..=5)
            .filter_map(ReportType::from_i32)
            .find(|report_type| report_type.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown report type {name:?}")))
    }
}

/// Serializes an [`EnIntervalNumber`] as its number.
#[cfg(feature = "serde")]
mod interval_number {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::interval::EnIntervalNumber;

    pub fn serialize<S: Serializer>(
        value: &EnIntervalNumber,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(value.value())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<EnIntervalNumber, D::Error> {
        u32::deserialize(deserializer).map(EnIntervalNumber::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: EnIntervalNumber = EnIntervalNumber::new(2_900_016);

    fn scan(typical: u8, seconds: u32) -> ScanInstance {
        ScanInstance {
            typical_attenuation_db: typical,
            min_attenuation_db: typical.saturating_sub(3),
            seconds_since_last_scan: seconds,
        }
    }

    fn window(infectiousness: Infectiousness, scans: Vec<ScanInstance>) -> ExposureWindow {
        ExposureWindow {
            day: DAY,
            report_type: ReportType::ConfirmedTest,
            infectiousness,
            calibration_confidence: CalibrationConfidence::Medium,
            scan_instances: scans,
        }
    }

    #[test]
    fn default_is_valid_and_matches_its_source() {
        let config = RiskConfig::default();
        config.validate().unwrap();
        let map = &config.infectiousness;
        let at = |days| map.infectiousness(Some(days));
        assert_eq!(at(-5), Infectiousness::None);
        assert_eq!(at(-4), Infectiousness::Standard);
        assert_eq!(at(-3), Infectiousness::Standard);
        assert_eq!(at(-2), Infectiousness::High);
        assert_eq!(at(3), Infectiousness::High);
        assert_eq!(at(5), Infectiousness::Standard);
        assert_eq!(at(6), Infectiousness::None);
        assert_eq!(at(-14), Infectiousness::None);
        assert_eq!(at(14), Infectiousness::None);
        assert_eq!(at(15), Infectiousness::None);
        assert_eq!(at(i32::MIN), Infectiousness::None);
        assert_eq!(map.infectiousness(None), Infectiousness::Standard);
    }

    #[test]
    fn buckets_are_inclusive_at_their_thresholds() {
        let buckets = RiskConfig::default().attenuation;
        assert_eq!(buckets.weight(0), 175);
        assert_eq!(buckets.weight(55), 175);
        assert_eq!(buckets.weight(56), 100);
        assert_eq!(buckets.weight(67), 100);
        assert_eq!(buckets.weight(68), 33);
        assert_eq!(buckets.weight(75), 33);
        assert_eq!(buckets.weight(76), 0);
        assert_eq!(buckets.weight(255), 0);
    }

    #[test]
    fn weighted_duration_and_score_by_hand() {
        // Six scans of five minutes, default configuration:
        //   2 × 300 s at 50 dB (immediate, 175 %) = 1050 s
        //   2 × 300 s at 60 dB (near, 100 %)      =  600 s
        //   1 × 300 s at 70 dB (medium, 33 %)     =   99 s
        //   1 × 300 s at 80 dB (other, 0 %)       =    0 s
        // Weighted duration 1749 s. High infectiousness (100 %) and a confirmed test (100 %)
        // leave the score at 1749 s; standard infectiousness (30 %) makes it 524.7 s.
        let config = RiskConfig::default();
        let scans = vec![
            scan(50, 300),
            scan(50, 300),
            scan(60, 300),
            scan(60, 300),
            scan(70, 300),
            scan(80, 300),
        ];
        let high = window(Infectiousness::High, scans.clone());
        assert_eq!(config.weighted_duration_seconds(&high), 1749.0);
        assert_eq!(config.window_score(&high), 1749.0);

        let standard = window(Infectiousness::Standard, scans);
        assert_eq!(config.weighted_duration_seconds(&standard), 1749.0);
        assert!((config.window_score(&standard) - 524.7).abs() < 1e-9);
    }

    #[test]
    fn report_type_weights_apply() {
        // Self-report weighted 50 %: 4 × 300 s near (100 %) = 1200 s, × 100 % high
        // infectiousness × 50 % = 600 s. Recursive weighs 0 % by default; revoked always 0.
        let mut config = RiskConfig::default();
        config.report_type_weights.self_report = 50;
        let mut window = window(Infectiousness::High, vec![scan(60, 300); 4]);
        window.report_type = ReportType::SelfReport;
        assert_eq!(config.window_score(&window), 600.0);

        window.report_type = ReportType::Recursive;
        assert_eq!(config.window_score(&window), 0.0);
        window.report_type = ReportType::Revoked;
        assert_eq!(config.window_score(&window), 0.0);
        assert!(!config.counts(&window));

        window.report_type = ReportType::Unknown;
        assert_eq!(config.window_score(&window), 1200.0);
        assert_eq!(
            config.effective_report_type(None),
            ReportType::ConfirmedTest
        );
        assert_eq!(
            config.effective_report_type(Some(ReportType::SelfReport)),
            ReportType::SelfReport
        );
    }

    #[test]
    fn daily_summaries_by_hand() {
        // Day A: window 1 = 3 × 300 s immediate at high infectiousness
        //          = 3 × 300 × 1.75 = 1575 s weighted, score 1575 s;
        //        window 2 = 2 × 300 s near at standard infectiousness
        //          = 600 s weighted, score 600 × 0.30 = 180 s.
        //        max 1575, sum 1755 s (29.25 min ≥ 15 min: alerts), weighted sum 2175 s.
        // Day B: one window of 2 × 300 s medium at high infectiousness
        //          = 600 × 0.33 = 198 s weighted and scored: 3.3 min, no alert.
        // A window at infectiousness None takes no part at all.
        let config = RiskConfig::default();
        let day_b = EnIntervalNumber::new(DAY.value() + 144);
        let mut later = window(Infectiousness::High, vec![scan(72, 300); 2]);
        later.day = day_b;
        let windows = [
            later,
            window(Infectiousness::High, vec![scan(40, 300); 3]),
            window(Infectiousness::None, vec![scan(40, 300); 6]),
            window(Infectiousness::Standard, vec![scan(60, 300); 2]),
        ];

        let summaries = config.daily_summaries(&windows);
        assert_eq!(summaries.len(), 2);
        let [a, b] = [summaries[0], summaries[1]];
        assert_eq!(a.day, DAY);
        assert_eq!(a.maximum_score, 1575.0);
        assert!((a.score_sum - 1755.0).abs() < 1e-9);
        assert_eq!(a.weighted_duration_sum, 2175.0);
        assert_eq!(a.windows, 2);
        assert!(config.alerts(&a));

        assert_eq!(b.day, day_b);
        assert_eq!(b.score_sum, 198.0);
        assert_eq!(b.weighted_duration_sum, 198.0);
        assert!(!config.alerts(&b));
    }

    #[test]
    fn threshold_is_reached_exactly_at_fifteen_minutes() {
        // 3 scans × 300 s near at high infectiousness = 900 s = 15 min: alerts.
        // One second less is 899 s: no alert.
        let config = RiskConfig::default();
        let at_threshold = [window(Infectiousness::High, vec![scan(60, 300); 3])];
        let summary = config.daily_summaries(&at_threshold)[0];
        assert_eq!(summary.score_sum, 900.0);
        assert!(config.alerts(&summary));

        let below = [window(
            Infectiousness::High,
            vec![scan(60, 300), scan(60, 300), scan(60, 299)],
        )];
        assert!(!config.alerts(&config.daily_summaries(&below)[0]));
    }

    #[test]
    fn minimum_window_score_drops_small_windows() {
        // A 300 s near window at standard infectiousness scores 90 s; with a minimum window
        // score of 100 s it is left out, and a day with nothing else has no summary.
        let mut config = RiskConfig {
            minimum_window_score_seconds: 100,
            ..RiskConfig::default()
        };
        let windows = [window(Infectiousness::Standard, vec![scan(60, 300)])];
        assert_eq!(config.window_score(&windows[0]), 90.0);
        assert!(config.daily_summaries(&windows).is_empty());
        config.minimum_window_score_seconds = 90;
        assert_eq!(config.daily_summaries(&windows).len(), 1);
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        let config = RiskConfig::default();
        let window = window(Infectiousness::High, vec![scan(0, u32::MAX); 1 << 12]);
        assert!(config.window_score(&window).is_finite());
        assert!(config.weighted_duration_seconds(&window) > 0.0);
    }

    #[test]
    fn validation_names_the_field() {
        let mut config = RiskConfig::default();
        config.attenuation.near_max_db = 50;
        assert!(matches!(
            config.validate(),
            Err(Error::FieldOutOfRange {
                field: "attenuation.near_max_db",
                value: 50
            })
        ));

        let mut config = RiskConfig::default();
        config.infectiousness.high_weight = 251;
        assert!(matches!(
            config.validate(),
            Err(Error::FieldOutOfRange {
                field: "infectiousness.high_weight",
                ..
            })
        ));

        let config = RiskConfig {
            report_type_when_missing: ReportType::Revoked,
            ..RiskConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn calibration_confidence_bits() {
        assert_eq!(
            CalibrationConfidence::from_bits(0),
            CalibrationConfidence::Lowest
        );
        assert_eq!(
            CalibrationConfidence::from_bits(3),
            CalibrationConfidence::High
        );
        assert_eq!(
            CalibrationConfidence::from_bits(6),
            CalibrationConfidence::Medium
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn default_round_trips_through_toml() {
        let config = RiskConfig::default();
        let text = toml::to_string(&config).unwrap();
        assert!(
            text.contains("report_type_when_missing = \"confirmed_test\""),
            "{text}"
        );
        let parsed: RiskConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed, config);
        let unknown = text.replace("immediate_weight", "immediate_wieght");
        assert!(toml::from_str::<RiskConfig>(&unknown).is_err());
    }
}
