//! From a matched key's sightings to GAEN exposure windows.
//!
//! A phone running the framework scans for a few seconds about every five minutes, and hears
//! each nearby device several times per scan. The sightings of one key are therefore grouped
//! into **scan instances** (sightings within [`WindowParams::scan_instance_seconds`] of the
//! first of the group), each summarized by its typical (median) and minimum attenuation, where
//! attenuation is the TX power from the metadata minus the RSSI corrected for this device's
//! model. A scan instance stands for the time since the scan before it that heard the key, at
//! most the nominal scan interval, and for the nominal interval when it is the first. Scan
//! instances are then cut into windows spanning at most 30 minutes from their first scan.
//!
//! # Limitations
//!
//! The device stores what it heard, not when it scanned without hearing anything, so "seconds
//! since the last scan" is inferred from the key's own sightings and capped at the nominal
//! interval; a phone that scanned more often than nominal is credited correctly, one that
//! scanned less often is credited the nominal interval per scan.

use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::risk::{CalibrationConfidence, ExposureWindow, RiskConfig, ScanInstance};

use super::{KeyMatch, MatchedSighting};

/// How sightings become scan instances and windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowParams {
    /// Sightings within this many seconds of a scan instance's first sighting belong to it.
    pub scan_instance_seconds: u64,
    /// The device's nominal time between scans, in seconds: what a scan stands for at most.
    pub scan_interval_seconds: u32,
    /// The longest span of a window, from its first scan to its last, in seconds (exclusive).
    pub max_window_seconds: u64,
    /// Correction added to every RSSI for this device's model, in dB; `None` when unknown.
    pub rssi_correction_db: Option<i16>,
}

impl Default for WindowParams {
    /// Scans of up to a minute every five minutes, windows of 30 minutes, no RSSI correction.
    fn default() -> Self {
        Self {
            scan_instance_seconds: 60,
            scan_interval_seconds: 300,
            max_window_seconds: 30 * 60,
            rssi_correction_db: None,
        }
    }
}

/// One scan instance before it is placed in a window.
struct Scan {
    time: u64,
    instance: ScanInstance,
    calibration: CalibrationConfidence,
}

/// The exposure windows of one matched key, in time order.
///
/// Report type and infectiousness come from the key's published facts through `config`'s
/// mappings.
pub fn exposure_windows(
    found: &KeyMatch,
    config: &RiskConfig,
    params: &WindowParams,
) -> Vec<ExposureWindow> {
    let report_type = config.effective_report_type(found.key.report_type);
    let infectiousness = config
        .infectiousness
        .infectiousness(found.key.days_since_onset_of_symptoms);

    let mut windows: Vec<(u64, ExposureWindow)> = Vec::new();
    for scan in scans(&found.sightings, params) {
        match windows.last_mut() {
            Some((start, window)) if scan.time - *start < params.max_window_seconds => {
                window.scan_instances.push(scan.instance);
            }
            _ => {
                let Ok(interval) = EnIntervalNumber::from_unix_seconds(scan.time) else {
                    continue;
                };
                let window = ExposureWindow {
                    day: interval.day_start(),
                    report_type,
                    infectiousness,
                    calibration_confidence: scan.calibration,
                    scan_instances: vec![scan.instance],
                };
                windows.push((scan.time, window));
            }
        }
    }
    windows.into_iter().map(|(_, window)| window).collect()
}

/// Groups time-ordered sightings into scan instances.
fn scans(sightings: &[MatchedSighting], params: &WindowParams) -> Vec<Scan> {
    let mut scans = Vec::new();
    let mut previous: Option<u64> = None;
    let mut rest = sightings;
    while let Some(first) = rest.first() {
        let within = rest
            .iter()
            .take_while(|s| s.time - first.time <= params.scan_instance_seconds)
            .count();
        let (group, later) = rest.split_at(within);
        rest = later;

        let nominal = u64::from(params.scan_interval_seconds);
        let seconds = previous.map_or(nominal, |time| (first.time - time).min(nominal));
        previous = Some(first.time);
        scans.push(Scan {
            time: first.time,
            instance: summarize(group, seconds, params.rssi_correction_db),
            calibration: CalibrationConfidence::from_bits(first.metadata.tx_power_confidence),
        });
    }
    scans
}

/// The typical (median) and minimum attenuation of one scan's sightings.
fn summarize(group: &[MatchedSighting], seconds: u64, correction: Option<i16>) -> ScanInstance {
    let mut attenuations: Vec<u8> = group
        .iter()
        .map(|sighting| attenuation_db(sighting, correction))
        .collect();
    attenuations.sort_unstable();
    ScanInstance {
        typical_attenuation_db: attenuations[(attenuations.len() - 1) / 2],
        min_attenuation_db: attenuations[0],
        seconds_since_last_scan: u32::try_from(seconds).unwrap_or(u32::MAX),
    }
}

/// TX power minus corrected RSSI, clamped to 0-255 dB.
pub fn attenuation_db(sighting: &MatchedSighting, correction: Option<i16>) -> u8 {
    let received = i32::from(sighting.rssi) + i32::from(correction.unwrap_or(0));
    let attenuation = i32::from(sighting.metadata.tx_power) - received;
    u8::try_from(attenuation.clamp(0, 255)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use varsel_protocol::export::{ExportKey, ReportType};
    use varsel_protocol::keys::{DiagnosisKey, Metadata};
    use varsel_protocol::risk::Infectiousness;

    use super::*;

    /// 2025-01-01T00:00:00Z, the start of a UTC day.
    const MIDNIGHT: u64 = 1_735_689_600;

    fn heard(time: u64, rssi: i16, tx_power: i8) -> MatchedSighting {
        MatchedSighting {
            time,
            rssi,
            metadata: Metadata {
                tx_power_confidence: 2,
                ..Metadata::v1(tx_power)
            },
        }
    }

    fn found(sightings: Vec<MatchedSighting>, days_since_onset: Option<i32>) -> KeyMatch {
        KeyMatch {
            key: ExportKey {
                key: DiagnosisKey::from_bytes([1; 16]),
                transmission_risk_level: 0,
                rolling_start: EnIntervalNumber::from_unix_seconds(MIDNIGHT).unwrap(),
                rolling_period: 144,
                report_type: None,
                days_since_onset_of_symptoms: days_since_onset,
            },
            revised: false,
            sightings,
        }
    }

    #[test]
    fn scans_and_windows_by_hand() {
        // TX power −10 dBm. Scans at 10:00 (three sightings, RSSI −60, −70, −64), 10:05
        // (RSSI −55), 10:12 (RSSI −80, −82) and 10:31 (RSSI −66).
        //   10:00: attenuations 50, 60, 54 → typical (median) 54, min 50; first scan: 300 s.
        //   10:05: attenuation 45; 300 s since 10:00.
        //   10:12: attenuations 70, 72 → median of two is the lower, 70; min 70; 420 s since
        //          10:05, capped at 300 s.
        //   10:31: 31 minutes after 10:00, so it opens a second window; 19 min since 10:12,
        //          capped at 300 s; attenuation 56.
        let ten = MIDNIGHT + 10 * 3600;
        let sightings = vec![
            heard(ten, -60, -10),
            heard(ten + 2, -70, -10),
            heard(ten + 4, -64, -10),
            heard(ten + 300, -55, -10),
            heard(ten + 720, -80, -10),
            heard(ten + 721, -82, -10),
            heard(ten + 1860, -66, -10),
        ];
        let config = RiskConfig::default();
        let windows = exposure_windows(&found(sightings, Some(1)), &config, &Default::default());

        assert_eq!(windows.len(), 2);
        let day = EnIntervalNumber::from_unix_seconds(MIDNIGHT).unwrap();
        assert!(windows.iter().all(|w| w.day == day));
        assert_eq!(windows[0].report_type, ReportType::ConfirmedTest);
        assert_eq!(windows[0].infectiousness, Infectiousness::High);
        assert_eq!(
            windows[0].calibration_confidence,
            CalibrationConfidence::Medium
        );
        let scan = |typical, min, seconds| ScanInstance {
            typical_attenuation_db: typical,
            min_attenuation_db: min,
            seconds_since_last_scan: seconds,
        };
        assert_eq!(
            windows[0].scan_instances,
            [scan(54, 50, 300), scan(45, 45, 300), scan(70, 70, 300)]
        );
        assert_eq!(windows[1].scan_instances, [scan(56, 56, 300)]);

        // Scored with the default configuration: 54 and 45 dB are immediate (175 %), 70 dB is
        // medium (33 %): 300 × 1.75 × 2 + 300 × 0.33 = 1050 + 99 = 1149 s; the second window
        // is near (56 dB, 100 %): 300 s. High infectiousness, confirmed test: the day's score
        // sum is 1449 s, over the 15-minute threshold.
        let summaries = config.daily_summaries(&windows);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].maximum_score, 1149.0);
        assert_eq!(summaries[0].score_sum, 1449.0);
        assert!(config.alerts(&summaries[0]));
    }

    #[test]
    fn frequent_scans_count_their_real_spacing() {
        // Scans every 120 s: the first stands for 300 s, the next two for 120 s each.
        let sightings = vec![
            heard(MIDNIGHT, -60, 0),
            heard(MIDNIGHT + 120, -60, 0),
            heard(MIDNIGHT + 240, -60, 0),
        ];
        let windows = exposure_windows(
            &found(sightings, None),
            &RiskConfig::default(),
            &Default::default(),
        );
        let seconds: Vec<u32> = windows[0]
            .scan_instances
            .iter()
            .map(|scan| scan.seconds_since_last_scan)
            .collect();
        assert_eq!(seconds, [300, 120, 120]);
        assert_eq!(windows[0].infectiousness, Infectiousness::Standard);
    }

    #[test]
    fn rssi_correction_and_clamping() {
        // TX 8 dBm, RSSI -60, correction +5 dB: 8 - (-55) = 63 dB. A correction that would
        // make the attenuation negative clamps to 0.
        let sighting = heard(MIDNIGHT, -60, 8);
        assert_eq!(attenuation_db(&sighting, None), 68);
        assert_eq!(attenuation_db(&sighting, Some(5)), 63);
        assert_eq!(attenuation_db(&sighting, Some(100)), 0);
        assert_eq!(attenuation_db(&heard(MIDNIGHT, i16::MIN, 20), None), 255);
    }

    #[test]
    fn a_window_spans_at_most_thirty_minutes() {
        // Seven scans five minutes apart: 0, 5, …, 25 min fall in the first window (span
        // 25 min), 30 min opens the second.
        let sightings = (0..7).map(|n| heard(MIDNIGHT + n * 300, -60, 0)).collect();
        let windows = exposure_windows(
            &found(sightings, None),
            &RiskConfig::default(),
            &Default::default(),
        );
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].scan_instances.len(), 6);
        assert_eq!(windows[1].scan_instances.len(), 1);
    }
}
