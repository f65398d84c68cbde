//! Benchmark: matching 1,000,000 published diagnosis keys against two weeks of sightings.
//!
//! Run with `cargo bench -p varsel-device --bench matching`.
//!
//! The parent process prepares the data: 1,000,000 random diagnosis keys spread over 14 days,
//! written as four signed export files of 250,000 keys each with the protocol's writer, and
//! 50,000 sightings over the same 14 days, a few of them real sightings of published keys. It
//! then times the bare derivation (RPIK and 144 identifiers per key) for comparison, and runs
//! the whole job in a fresh child process per thread count, so that each child's peak memory
//! (`VmHWM`) is the job's alone. A child times, per round: building the index over the
//! sightings, reading each zip from disk, verifying its signature, deriving, looking up,
//! decrypting metadata of matches, and building exposure windows and daily summaries. It checks
//! that exactly the planted keys were found before reporting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;
use varsel_device::matching::{ExportFile, Matcher, PrefilterKey, WindowParams, exposure_windows};
use varsel_device::sighting::Sighting;
use varsel_protocol::export::wire::decode_export_bin_reference;
use varsel_protocol::export::{
    Compression, Export, ExportArchive, ExportKey, ExportLimits, ExportSigner, ReportType,
    TrustedKey, TrustedKeys, encode_export_bin, parse_export_bin, write_archive,
};
use varsel_protocol::interval::{EK_ROLLING_PERIOD, EnIntervalNumber, INTERVAL_SECONDS};
use varsel_protocol::keys::{
    AssociatedEncryptedMetadata, DiagnosisKey, Metadata, RollingProximityIdentifier,
    TemporaryExposureKey,
};
use varsel_protocol::risk::RiskConfig;

/// Published keys in all.
const KEYS: usize = 1_000_000;
/// Export files they are split into.
const FILES: usize = 4;
/// Sightings the device holds.
const SIGHTINGS: usize = 50_000;
/// Published keys the device really heard.
const PLANTED: usize = 5;
/// Days of keys and sightings.
const DAYS: u32 = 14;
/// Rounds of the whole job per thread count.
const ROUNDS: usize = 5;
/// Keys for the bare derivation measurement.
const DERIVE_KEYS: usize = 200_000;

/// The first second of the two weeks: 2025-03-01T00:00:00Z.
const FIRST_DAY: u64 = 1_740_787_200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--steps") {
        steps(&PathBuf::from(&args[at + 1]));
        return;
    }
    if let Some(at) = args.iter().position(|arg| arg == "--child") {
        let dir = PathBuf::from(&args[at + 1]);
        let threads: usize = args[at + 2].parse().expect("thread count");
        child(&dir, threads);
        return;
    }
    parent();
}

fn parent() {
    let temporary = tempfile::tempdir().expect("temporary directory");
    // Set VARSEL_BENCH_DIR to keep the prepared files, e.g. to profile one child alone.
    let dir =
        std::env::var_os("VARSEL_BENCH_DIR").map_or(temporary.path().to_owned(), PathBuf::from);
    let mut rng = StdRng::seed_from_u64(2026);
    let started = Instant::now();
    prepare(&dir, &mut rng);
    println!(
        "prepared {KEYS} keys in {FILES} signed files and {SIGHTINGS} sightings in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("machine: {}, {} cores", cpu_model(), num_cores());
    println!();

    bare_derivation(&mut rng);
    println!();

    println!("whole job: index, read zips, verify, derive, look up, windows; {ROUNDS} rounds each");
    for threads in ["1", "2"] {
        run_child(&["--child", path_text(&dir), threads]);
    }
    run_child(&["--steps", path_text(&dir)]);
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Runs this benchmark again with `args` and passes its output on.
fn run_child(args: &[&str]) {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("running a child");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the child {args:?} failed");
}

/// Writes the export files, the sightings, the trusted key and the expected match count.
fn prepare(dir: &Path, rng: &mut StdRng) {
    let signer = ExportSigner::new(SigningKey::random(&mut *rng), "242", "v1");
    let end = FIRST_DAY + u64::from(DAYS) * 86_400;

    let planted: Vec<TemporaryExposureKey> = (0..PLANTED)
        .map(|_| TemporaryExposureKey::generate(&mut *rng))
        .collect();
    let mut sightings = stranger_sightings(rng, SIGHTINGS - PLANTED * 15);
    let mut keys: Vec<ExportKey> = (0..KEYS - PLANTED).map(|_| random_key(rng)).collect();
    for (n, tek) in planted.iter().enumerate() {
        let day = u32::try_from(n).expect("few") * 2 + 1;
        let start = day_start(day);
        sightings.extend(encounter(tek, start, 60 + 7 * n as u32));
        keys.push(export_key(tek.clone().into_diagnosis_key(), start, rng));
    }
    shuffle(&mut keys, rng);

    for (n, chunk) in keys.chunks(KEYS / FILES).enumerate() {
        let export = Export {
            start_timestamp: end - 86_400,
            end_timestamp: end,
            region: "NO".to_owned(),
            batch_num: i32::try_from(n + 1).expect("few"),
            batch_size: i32::try_from(FILES).expect("few"),
            keys: chunk.to_vec(),
            ..Export::default()
        };
        let zip = write_archive(export, std::slice::from_ref(&signer), Compression::Deflated)
            .expect("writing an export");
        std::fs::write(dir.join(format!("export-{n}.zip")), zip).expect("saving an export");
    }

    std::fs::write(dir.join("sightings.bin"), encode_sightings(&sightings)).expect("saving");
    let pem = TrustedKey::any_id(signer.verifying_key())
        .to_pem()
        .expect("public key PEM");
    std::fs::write(dir.join("trusted.pem"), pem).expect("saving the public key");
    std::fs::write(dir.join("expected"), PLANTED.to_string()).expect("saving");
}

/// The first interval of day `day` of the two weeks.
fn day_start(day: u32) -> EnIntervalNumber {
    let seconds = FIRST_DAY + u64::from(day) * 86_400;
    EnIntervalNumber::from_unix_seconds(seconds).expect("in range")
}

fn random_key(rng: &mut StdRng) -> ExportKey {
    let mut bytes = [0; 16];
    rng.fill_bytes(&mut bytes);
    let day = rng.gen_range(0..DAYS);
    export_key(DiagnosisKey::from_bytes(bytes), day_start(day), rng)
}

fn export_key(key: DiagnosisKey, start: EnIntervalNumber, rng: &mut StdRng) -> ExportKey {
    ExportKey {
        key,
        transmission_risk_level: 0,
        rolling_start: start,
        rolling_period: EK_ROLLING_PERIOD,
        report_type: Some(ReportType::ConfirmedTest),
        days_since_onset_of_symptoms: Some(rng.gen_range(-5..=5)),
    }
}

/// Sightings of strangers: random identifiers at random times over the two weeks.
fn stranger_sightings(rng: &mut StdRng, count: usize) -> Vec<Sighting> {
    (0..count)
        .map(|_| {
            let mut rpi = [0; 16];
            rng.fill_bytes(&mut rpi);
            let mut aem = [0; 4];
            rng.fill_bytes(&mut aem);
            Sighting {
                rpi: RollingProximityIdentifier::from_bytes(rpi),
                aem: AssociatedEncryptedMetadata::from_bytes(aem),
                rssi: rng.gen_range(-100..-40),
                time: FIRST_DAY + rng.gen_range(0..u64::from(DAYS) * 86_400),
            }
        })
        .collect()
}

/// Twenty minutes with someone whose key is `tek`: five scans, three sightings each.
fn encounter(tek: &TemporaryExposureKey, start: EnIntervalNumber, offset: u32) -> Vec<Sighting> {
    let rpis = tek.rpik().rpis(start);
    let begin = start.unix_seconds() + u64::from(offset) * INTERVAL_SECONDS;
    (0..5u64)
        .flat_map(|scan| (0..3u64).map(move |n| begin + scan * 300 + n))
        .map(|time| {
            let interval = (time - start.unix_seconds()) / INTERVAL_SECONDS;
            let rpi = rpis[usize::try_from(interval).expect("small")];
            Sighting {
                rpi,
                aem: tek.aemk().encrypt(&rpi, &Metadata::v1(-8)),
                rssi: -63,
                time,
            }
        })
        .collect()
}

fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.gen_range(0..=i));
    }
}

/// Sightings as fixed 30-byte records: identifier, metadata, RSSI, time.
fn encode_sightings(sightings: &[Sighting]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(sightings.len() * 30);
    for sighting in sightings {
        bytes.extend_from_slice(sighting.rpi.as_bytes());
        bytes.extend_from_slice(&sighting.aem.to_bytes());
        bytes.extend_from_slice(&sighting.rssi.to_le_bytes());
        bytes.extend_from_slice(&sighting.time.to_le_bytes());
    }
    bytes
}

fn decode_sightings(bytes: &[u8]) -> Vec<Sighting> {
    bytes
        .chunks_exact(30)
        .map(|record| {
            let (rpi, rest) = record.split_at(16);
            let (aem, rest) = rest.split_at(4);
            let (rssi, time) = rest.split_at(2);
            Sighting {
                rpi: RollingProximityIdentifier::from_bytes(rpi.try_into().expect("16")),
                aem: AssociatedEncryptedMetadata::from_bytes(aem.try_into().expect("4")),
                rssi: i16::from_le_bytes(rssi.try_into().expect("2")),
                time: u64::from_le_bytes(time.try_into().expect("8")),
            }
        })
        .collect()
}

/// RPIK and 144 identifiers per key, on one thread and on two.
fn bare_derivation(rng: &mut StdRng) {
    let keys: Vec<DiagnosisKey> = (0..DERIVE_KEYS)
        .map(|_| {
            let mut bytes = [0; 16];
            rng.fill_bytes(&mut bytes);
            DiagnosisKey::from_bytes(bytes)
        })
        .collect();
    let start = day_start(0);
    println!("bare derivation, RPIK + 144 identifiers per key, {DERIVE_KEYS} keys, best of 3");
    for threads in [1, 2] {
        let pool = pool(threads);
        let best = (0..3)
            .map(|_| {
                let started = Instant::now();
                pool.install(|| {
                    keys.par_chunks(512).for_each(|chunk| {
                        let mut out = [RollingProximityIdentifier::from_bytes([0; 16]); 144];
                        for key in chunk {
                            key.rpik().rpis_into(start, &mut out);
                            std::hint::black_box(&out);
                        }
                    });
                });
                started.elapsed()
            })
            .min()
            .unwrap_or_default();
        println!(
            "  {threads} thread(s): {:>10.0} keys/s ({:.0} ns/key)",
            DERIVE_KEYS as f64 / best.as_secs_f64(),
            best.as_nanos() as f64 / DERIVE_KEYS as f64
        );
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// What one round of the job found.
struct Found {
    keys: usize,
    windows: usize,
    alert_days: usize,
}

/// What the parent prepared: sightings, export paths, the trusted key, the expected matches.
fn inputs(dir: &Path) -> (Vec<Sighting>, Vec<PathBuf>, TrustedKeys, usize) {
    let sightings = decode_sightings(&std::fs::read(dir.join("sightings.bin")).expect("sightings"));
    let pem = std::fs::read_to_string(dir.join("trusted.pem")).expect("public key");
    let trusted: TrustedKeys = [TrustedKey::from_pem(&pem).expect("PEM")]
        .into_iter()
        .collect();
    let expected: usize = std::fs::read_to_string(dir.join("expected"))
        .expect("expected count")
        .parse()
        .expect("a number");
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|n| dir.join(format!("export-{n}.zip")))
        .collect();
    (sightings, paths, trusted, expected)
}

fn child(dir: &Path, threads: usize) {
    let (sightings, paths, trusted, expected) = inputs(dir);
    let baseline = memory_kib("VmRSS");

    let pool = pool(threads);
    let mut times: Vec<Duration> = Vec::new();
    let mut cpu_times: Vec<f64> = Vec::new();
    for _ in 0..ROUNDS {
        let (started, cpu_before) = (Instant::now(), cpu_seconds());
        let found = pool.install(|| job(&sightings, &paths, &trusted));
        times.push(started.elapsed());
        cpu_times.push(cpu_seconds() - cpu_before);
        assert_eq!(found.keys, expected, "matched keys");
        assert!(found.windows >= expected && found.alert_days >= 1);
    }

    times.sort();
    cpu_times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "  {threads} thread(s): best {:.3} s ({:.0} keys/s), median {:.3} s; CPU time per round \
         {:.2}-{:.2} s; peak memory {:.1} MB (VmHWM; {:.1} MB before the job); found \
         {expected} of {expected} planted keys",
        best.as_secs_f64(),
        KEYS as f64 / best.as_secs_f64(),
        median.as_secs_f64(),
        cpu_times[0],
        cpu_times[cpu_times.len() - 1],
        memory_kib("VmHWM") as f64 / 1024.0,
        baseline as f64 / 1024.0,
    );
}

/// The whole job: index the sightings, match every file, build windows and summaries.
fn job(sightings: &[Sighting], paths: &[PathBuf], trusted: &TrustedKeys) -> Found {
    let key = PrefilterKey::generate(&mut rand_core::OsRng);
    let matcher = Matcher::new(sightings, &key).expect("index");
    let fetched_at = FIRST_DAY + u64::from(DAYS + 1) * 86_400;
    let files = paths.iter().map(|path| ExportFile {
        bytes: std::fs::read(path).expect("reading an export"),
        fetched_at,
    });
    let outcomes = matcher.match_files(files, trusted, &ExportLimits::default());

    let config = RiskConfig::default();
    let params = WindowParams::default();
    let mut found = Found {
        keys: 0,
        windows: 0,
        alert_days: 0,
    };
    let mut windows = Vec::new();
    for outcome in outcomes {
        for key_match in outcome.expect("a valid export") {
            found.keys += 1;
            windows.extend(exposure_windows(&key_match, &config, &params));
        }
    }
    found.windows = windows.len();
    let summaries = config.daily_summaries(&windows);
    found.alert_days = summaries.iter().filter(|day| config.alerts(day)).count();
    found
}

/// Times the job's steps one after another on one thread: reading and verifying, then
/// matching the keys already in memory.
fn steps(dir: &Path) {
    let (sightings, paths, trusted, _) = inputs(dir);
    pool(1).install(|| phases(&sightings, &paths, &trusted));
}

fn phases(sightings: &[Sighting], paths: &[PathBuf], trusted: &TrustedKeys) {
    let started = Instant::now();
    let matcher =
        Matcher::new(sightings, &PrefilterKey::generate(&mut rand_core::OsRng)).expect("index");
    let indexed = started.elapsed();

    let mut exports = Vec::new();
    let started = Instant::now();
    for path in paths {
        let bytes = std::fs::read(path).expect("reading an export");
        let archive = ExportArchive::read(&bytes, &ExportLimits::default()).expect("valid");
        archive.verify(trusted).expect("trusted");
        exports.push(archive.export);
    }
    let read = started.elapsed();
    let bins: Vec<Vec<u8>> = exports.iter().map(encode_export_bin).collect();
    let keys: Vec<ExportKey> = exports.into_iter().flat_map(|export| export.keys).collect();

    let decode = |parse: fn(&[u8], &ExportLimits) -> Result<Export, varsel_protocol::Error>| {
        let started = Instant::now();
        for bin in &bins {
            std::hint::black_box(parse(bin, &ExportLimits::default()).expect("valid"));
        }
        started.elapsed().as_secs_f64()
    };
    let (prost, one_pass) = (
        decode(decode_export_bin_reference),
        decode(parse_export_bin),
    );
    drop(bins);

    let mut found = 0;
    let matched = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            found = matcher.match_keys(&keys, u64::MAX).len();
            started.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "  steps on one thread: index {:.3} s, read+verify {:.3} s, match {:.3} s (best of \
         {ROUNDS}; {found} keys); \
         decoding export.bin alone: {prost:.3} s with prost, {one_pass:.3} s in one pass",
        indexed.as_secs_f64(),
        read.as_secs_f64(),
        matched.as_secs_f64()
    );
}

/// User and system CPU time of this process so far, in seconds (at the kernel's tick
/// resolution), or 0 where `/proc` is missing: a figure other processes on the machine do not
/// inflate, unlike wall time.
fn cpu_seconds() -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name come state (field 3 of the file) and on; utime and stime are
    // fields 14 and 15, so 11 and 12 here.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// A figure from `/proc/self/status`, in KiB, or 0 where there is none.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags")?.split_once(':'))
        .map_or("", |(_, flags)| flags);
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let features: Vec<&str> = ["aes", "sha_ni", "vaes", "avx2"]
        .into_iter()
        .filter(|flag| has(flag))
        .collect();
    format!("{model} ({})", features.join(", "))
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
