//! Benchmark: deriving the Rolling Proximity Identifier Key and all 144 identifiers of many
//! diagnosis keys, the work a device does per published key when it matches.
//!
//! Run with `cargo bench -p varsel-protocol --bench derive`. It reports keys per second on one
//! thread for the full derivation and, side by side, for its two halves (HKDF alone, AES alone),
//! each the best of several rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::RngCore;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{
    DiagnosisKey, RollingProximityIdentifier, RollingProximityIdentifierKey,
};

/// Keys per measured round.
const KEYS: usize = 200_000;
/// Rounds per measurement; the fastest counts, as the least disturbed by the machine.
const ROUNDS: usize = 5;

fn main() {
    let mut rng = rand::thread_rng();
    let keys: Vec<DiagnosisKey> = (0..KEYS)
        .map(|_| {
            let mut bytes = [0; 16];
            rng.fill_bytes(&mut bytes);
            DiagnosisKey::from_bytes(bytes)
        })
        .collect();
    let rpiks: Vec<RollingProximityIdentifierKey> = keys.iter().map(DiagnosisKey::rpik).collect();
    let start = EnIntervalNumber::new(2_900_000);
    let mut out = [RollingProximityIdentifier::from_bytes([0; 16]); 144];

    println!("derivation of {KEYS} keys, best of {ROUNDS} rounds, one thread");
    let full = best_of(|| {
        for key in &keys {
            key.rpik().rpis_into(start, &mut out);
            black_box(&out);
        }
    });
    report("RPIK + 144 RPIs", full);

    let hkdf = best_of(|| {
        for key in &keys {
            black_box(key.rpik());
        }
    });
    report("RPIK only (HKDF-SHA256)", hkdf);

    let aes = best_of(|| {
        for rpik in &rpiks {
            rpik.rpis_into(start, &mut out);
            black_box(&out);
        }
    });
    report("144 RPIs only (AES-128)", aes);
}

fn best_of(mut work: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(what: &str, elapsed: Duration) {
    let per_second = KEYS as f64 / elapsed.as_secs_f64();
    let nanos = elapsed.as_nanos() as f64 / KEYS as f64;
    println!("{what:<28} {per_second:>12.0} keys/s  {nanos:>8.1} ns/key");
}
