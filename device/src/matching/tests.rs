//! Tests of matching against sightings made from real keys.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use p256::ecdsa::SigningKey;
use rand::{SeedableRng, rngs::StdRng};
use varsel_protocol::export::{
    Compression, Export, ExportSigner, ReportType, TrustedKey, write_archive,
};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{AssociatedEncryptedMetadata, TemporaryExposureKey};

use super::*;

/// 2025-01-01T00:00:00Z, the start of a UTC day.
const MIDNIGHT: u64 = 1_735_689_600;
/// Long after every sighting of these tests.
const LATER: u64 = MIDNIGHT + 30 * 86_400;

struct Broadcaster {
    tek: TemporaryExposureKey,
    start: EnIntervalNumber,
}

impl Broadcaster {
    fn new(seed: u8) -> Self {
        Self {
            tek: TemporaryExposureKey::from_bytes([seed; 16]),
            start: EnIntervalNumber::from_unix_seconds(MIDNIGHT).unwrap(),
        }
    }

    fn rpi(&self, offset: u32) -> RollingProximityIdentifier {
        self.tek.rpik().rpis(self.start)[offset as usize]
    }

    /// What a receiver records when it hears interval `offset`'s advertisement at `time`.
    fn heard(&self, offset: u32, time: u64, tx_power: i8) -> Sighting {
        let rpi = self.rpi(offset);
        Sighting {
            rpi,
            aem: self.tek.aemk().encrypt(&rpi, &Metadata::v1(tx_power)),
            rssi: -60,
            time,
        }
    }

    fn export_key(&self) -> ExportKey {
        ExportKey {
            key: self.tek.clone().into_diagnosis_key(),
            transmission_risk_level: 0,
            rolling_start: self.start,
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(0),
        }
    }
}

/// Start of interval `offset` of the test day.
fn interval_start(offset: u32) -> u64 {
    MIDNIGHT + u64::from(offset) * INTERVAL_SECONDS
}

fn matcher(sightings: &[Sighting]) -> Matcher {
    let key = PrefilterKey::generate(&mut StdRng::seed_from_u64(7));
    Matcher::new(sightings, &key).unwrap()
}

fn matched_times(sightings: &[Sighting], key: ExportKey, published_at: u64) -> Vec<u64> {
    let found = matcher(sightings).match_keys(&[key], published_at);
    assert!(found.len() <= 1);
    found
        .into_iter()
        .flat_map(|found| found.sightings.into_iter().map(|s| s.time))
        .collect()
}

#[test]
fn heard_identifiers_of_a_published_key_match() {
    let infected = Broadcaster::new(1);
    let stranger = Broadcaster::new(2);
    let sightings = [
        infected.heard(60, interval_start(60) + 30, 8),
        stranger.heard(60, interval_start(60) + 31, 8),
        infected.heard(61, interval_start(61) + 30, 8),
    ];
    let found = matcher(&sightings).match_keys(&[infected.export_key()], LATER);

    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, infected.export_key());
    let times: Vec<u64> = found[0].sightings.iter().map(|s| s.time).collect();
    assert_eq!(times, [interval_start(60) + 30, interval_start(61) + 30]);
    assert_eq!(found[0].sightings[0].metadata, Metadata::v1(8));
    assert_eq!(found[0].sightings[0].rssi, -60);
}

#[test]
fn a_replayed_identifier_outside_two_hours_does_not_match() {
    // Interval 60 runs from 10:00 to 10:10; the tolerance admits 08:00 up to, not including,
    // 12:10.
    let infected = Broadcaster::new(1);
    let start = interval_start(60);
    let end = start + INTERVAL_SECONDS;
    let sightings = [
        infected.heard(60, start - TOLERANCE_SECONDS - 1, 8),
        infected.heard(60, start - TOLERANCE_SECONDS, 8),
        infected.heard(60, end + TOLERANCE_SECONDS - 1, 8),
        infected.heard(60, end + TOLERANCE_SECONDS, 8),
        infected.heard(60, end + 86_400, 8),
    ];
    assert_eq!(
        matched_times(&sightings, infected.export_key(), LATER),
        [start - TOLERANCE_SECONDS, end + TOLERANCE_SECONDS - 1]
    );

    let replays_only = [sightings[0], sightings[3], sightings[4]];
    assert!(matched_times(&replays_only, infected.export_key(), LATER).is_empty());
}

#[test]
fn tolerance_reaches_across_midnight() {
    // Interval 0 (00:00-00:10) heard at 22:00 the day before; interval 143 (23:50-24:00) heard
    // at 01:59 the day after; a key starting at noon, valid into the next day, heard there.
    let infected = Broadcaster::new(1);
    let sightings = [
        infected.heard(0, MIDNIGHT - TOLERANCE_SECONDS, 0),
        infected.heard(143, interval_start(144) + TOLERANCE_SECONDS - 1, 0),
    ];
    assert_eq!(
        matched_times(&sightings, infected.export_key(), LATER),
        [
            MIDNIGHT - TOLERANCE_SECONDS,
            interval_start(144) + TOLERANCE_SECONDS - 1
        ]
    );

    let mut noon = infected.export_key();
    noon.rolling_start = EnIntervalNumber::new(infected.start.value() + 72);
    let rpi = infected.tek.rpik().rpis(noon.rolling_start)[100];
    let heard_at = interval_start(172) + 20;
    let sighting = Sighting {
        rpi,
        aem: infected.tek.aemk().encrypt(&rpi, &Metadata::v1(0)),
        rssi: -60,
        time: heard_at,
    };
    assert_eq!(matched_times(&[sighting], noon, LATER), [heard_at]);
}

#[test]
fn sightings_after_publication_do_not_match() {
    let infected = Broadcaster::new(1);
    let heard_at = interval_start(100) + 10;
    let sightings = [infected.heard(100, heard_at, 8)];
    assert!(matched_times(&sightings, infected.export_key(), heard_at).is_empty());
    assert!(matched_times(&sightings, infected.export_key(), heard_at - 3600).is_empty());
    assert_eq!(
        matched_times(&sightings, infected.export_key(), heard_at + 1),
        [heard_at]
    );
}

#[test]
fn implausible_tx_power_is_dropped() {
    let infected = Broadcaster::new(1);
    let at = |offset| interval_start(offset) + 5;
    let sightings = [
        infected.heard(10, at(10), -51),
        infected.heard(11, at(11), -50),
        infected.heard(12, at(12), 20),
        infected.heard(13, at(13), 21),
        infected.heard(14, at(14), i8::MAX),
    ];
    assert_eq!(
        matched_times(&sightings, infected.export_key(), LATER),
        [at(11), at(12)]
    );

    let only_implausible = [sightings[0], sightings[3]];
    assert!(matched_times(&only_implausible, infected.export_key(), LATER).is_empty());
}

#[test]
fn metadata_under_another_key_does_not_decrypt_to_its_power() {
    // An identifier heard with the metadata of another broadcast decrypts to noise; the match
    // stands or falls with the TX power that noise gives, never with the claimed one.
    let infected = Broadcaster::new(1);
    let mut sighting = infected.heard(20, interval_start(20), 8);
    sighting.aem = AssociatedEncryptedMetadata::from_bytes([0xff; 4]);
    let found = matcher(&[sighting]).match_keys(&[infected.export_key()], LATER);
    let decrypted = infected
        .tek
        .aemk()
        .decrypt(&sighting.rpi, &sighting.aem)
        .tx_power;
    assert_eq!(
        found.len(),
        usize::from(TX_POWER_RANGE.contains(&decrypted))
    );
}

#[test]
fn identifiers_beyond_the_rolling_period_do_not_match() {
    let infected = Broadcaster::new(1);
    let mut key = infected.export_key();
    key.rolling_period = 50;
    let sightings = [
        infected.heard(49, interval_start(49), 0),
        infected.heard(50, interval_start(50), 0),
    ];
    assert_eq!(matched_times(&sightings, key, LATER), [interval_start(49)]);
}

#[test]
fn keys_of_days_without_sightings_are_skipped_and_do_not_match() {
    let infected = Broadcaster::new(1);
    let mut key = infected.export_key();
    key.rolling_start = EnIntervalNumber::new(infected.start.value() - 144 * 3);
    let sightings = [infected.heard(0, interval_start(0), 0)];
    assert!(matched_times(&sightings, key, LATER).is_empty());
    assert!(matched_times(&[], infected.export_key(), LATER).is_empty());
}

#[test]
fn hostile_identifiers_crafted_to_collide_do_not_change_the_outcome() {
    // With the prefilter key in hand, craft 500 identifiers whose hashes land on the same word
    // and bits as the real identifier of interval 70: all of them pass the prefilter together
    // with the real one, and only the real sighting may match.
    let infected = Broadcaster::new(1);
    let key_bytes = [42; 16];
    let cipher = aes::Aes128Enc::new(GenericArray::from_slice(&key_bytes));
    let inverse = aes::Aes128Dec::new(GenericArray::from_slice(&key_bytes));
    let mut target_hash = GenericArray::from(infected.rpi(70).to_bytes());
    cipher.encrypt_block(&mut target_hash);

    let at = interval_start(70) + 60;
    let mut sightings: Vec<Sighting> = (1..=500u16)
        .map(|n| {
            let mut colliding = target_hash;
            colliding[14..].copy_from_slice(&n.to_le_bytes());
            inverse.decrypt_block(&mut colliding);
            Sighting {
                rpi: RollingProximityIdentifier::from_bytes(colliding.into()),
                ..infected.heard(70, at, 0)
            }
        })
        .collect();
    let impostors_only = Matcher::new(&sightings, &PrefilterKey::from_bytes(key_bytes)).unwrap();
    let index = &impostors_only.index;
    let keyed = |rpi| {
        index
            .probes(rpi, interval_start(70))
            .map(|(_, keyed)| keyed)
    };
    assert!(index.passes(&infected.rpi(70), interval_start(70))[1]);
    let target = infected.rpi(70);
    assert!(sightings.iter().all(|s| keyed(&s.rpi) == keyed(&target)));
    assert!(
        impostors_only
            .match_keys(&[infected.export_key()], LATER)
            .is_empty()
    );

    sightings.push(infected.heard(70, at + 1, 0));
    let found = Matcher::new(&sightings, &PrefilterKey::from_bytes(key_bytes))
        .unwrap()
        .match_keys(&[infected.export_key()], LATER);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].sightings.len(), 1);
    assert_eq!(found[0].sightings[0].time, at + 1);
}

#[test]
fn identifiers_crowding_the_raw_filter_do_not_change_the_outcome() {
    // No key is needed to make identifiers collide in the raw filter: sharing the first eleven
    // bytes of a real identifier is enough. 500 of them, heard at the right time, must neither
    // match on their own nor hide the real sighting.
    let infected = Broadcaster::new(1);
    let at = interval_start(90) + 10;
    let mut sightings: Vec<Sighting> = (1..=500u32)
        .map(|n| {
            let mut bytes = infected.rpi(90).to_bytes();
            bytes[12..].copy_from_slice(&n.to_le_bytes());
            Sighting {
                rpi: RollingProximityIdentifier::from_bytes(bytes),
                ..infected.heard(90, at, 0)
            }
        })
        .collect();
    assert!(matched_times(&sightings, infected.export_key(), LATER).is_empty());

    sightings.push(infected.heard(90, at + 5, 0));
    assert_eq!(
        matched_times(&sightings, infected.export_key(), LATER),
        [at + 5]
    );
}

#[test]
fn many_keys_in_parallel_find_exactly_the_heard_ones() {
    let broadcasters: Vec<Broadcaster> = (0..=255).map(Broadcaster::new).collect();
    let heard: Vec<Sighting> = broadcasters
        .iter()
        .step_by(16)
        .map(|b| b.heard(80, interval_start(80) + 3, 0))
        .collect();
    let keys: Vec<ExportKey> = broadcasters.iter().map(Broadcaster::export_key).collect();
    let mut found: Vec<ExportKey> = matcher(&heard)
        .match_keys(&keys, LATER)
        .into_iter()
        .map(|found| found.key)
        .collect();
    found.sort_by_key(|key| key.key);
    let mut expected: Vec<ExportKey> = keys.iter().step_by(16).copied().collect();
    expected.sort_by_key(|key| key.key);
    assert_eq!(found, expected);
}

fn signed_file(keys: Vec<ExportKey>, signer: &ExportSigner, end: u64) -> ExportFile {
    let export = Export {
        start_timestamp: end - 3600,
        end_timestamp: end,
        region: "NO".to_owned(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..Export::default()
    };
    ExportFile {
        bytes: write_archive(export, std::slice::from_ref(signer), Compression::Deflated).unwrap(),
        fetched_at: end + 600,
    }
}

#[test]
fn export_files_are_verified_and_matched_one_by_one() {
    let mut rng = StdRng::seed_from_u64(11);
    let signer = ExportSigner::new(SigningKey::random(&mut rng), "242", "v1");
    let stranger = ExportSigner::new(SigningKey::random(&mut rng), "242", "v1");
    let trusted: TrustedKeys = [TrustedKey::any_id(signer.verifying_key())]
        .into_iter()
        .collect();

    let infected = Broadcaster::new(1);
    let late = Broadcaster::new(2);
    let heard_at = interval_start(30);
    let sightings = [infected.heard(30, heard_at, 0), late.heard(30, heard_at, 0)];
    let files = vec![
        signed_file(vec![infected.export_key()], &signer, LATER),
        signed_file(vec![infected.export_key()], &stranger, LATER),
        ExportFile {
            bytes: b"not a zip".to_vec(),
            fetched_at: LATER,
        },
        // Published (by its end timestamp) before the sighting: a replay, not a match.
        signed_file(vec![late.export_key()], &signer, heard_at),
    ];

    let outcomes = matcher(&sightings).match_files(files, &trusted, &ExportLimits::default());
    assert_eq!(outcomes.len(), 4);
    let first = outcomes[0].as_ref().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key.key, infected.export_key().key);
    assert!(matches!(
        outcomes[1],
        Err(Error::Protocol(
            varsel_protocol::Error::SignatureNotVerified
        ))
    ));
    assert!(matches!(
        outcomes[2],
        Err(Error::Protocol(varsel_protocol::Error::Zip(_)))
    ));
    assert!(outcomes[3].as_ref().unwrap().is_empty());
}
