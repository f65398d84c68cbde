//! The key side's costs, measured against real components:
//!
//! 1. verified publishes per second over loopback: a real server with real sled databases in a
//!    temporary directory; each `POST /v1/publish` carries 14 keys and its own certificate
//!    (obtained beforehand through the verification routes, not timed), is checked (ES256,
//!    tekmac, rules) and flushed to disk before its 200. Several rounds run one after the
//!    other on the same server, and the median is reported with each round, since other load
//!    on a shared machine moves single rounds a lot. Each round also reports how many cores
//!    the process kept busy, the bench's own clients included;
//! 2. beside it, the certificate checks alone, the floor under a publish's cost;
//! 3. the store with 1,000,000 keys: writing them as uploads, merging them into hour parts,
//!    rebuilding the index in memory from them (time and resident memory), and reading them
//!    back from the index as one window;
//! 4. the time to pad, sort, split, sign and durably write the export of a window of 1,000,000
//!    keys.
//!
//! `cargo bench -p varsel-key-server --bench publish`; `VARSEL_BENCH_N` sets the publishes per
//! round (default 4,000), `VARSEL_BENCH_ROUNDS` the rounds (default 3) and
//! `VARSEL_BENCH_CLIENTS` the concurrent clients (default 64).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::RngCore;
use serde_json::{Value, json};
use varsel_key_server::certificate::{CertificateVerifier, verify_certificate};
use varsel_key_server::clock::{SharedClock, SystemClock};
use varsel_key_server::config::Config;
use varsel_key_server::exports::{ExportPolicy, ExportTree, Window, build_window};
use varsel_key_server::published::{CertificateHash, PublishedKeys, StoredKey};
use varsel_key_server::server::KeyServer;
use varsel_protocol::export::{ExportKey, ExportSigner, ReportType};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{DiagnosisKey, TemporaryExposureKey};
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn post(client: &HttpClient, url: &str, headers: &[(&str, &str)], body: &Value) -> Value {
    let mut request = hyper::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

/// Fourteen keys of the past fourteen days.
fn device_keys() -> Vec<UploadKey> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let today = EnIntervalNumber::from_unix_seconds(now.as_secs())
        .unwrap()
        .day_start();
    (1..=14)
        .map(|day| UploadKey {
            key: TemporaryExposureKey::generate(&mut rand_core::OsRng).into_diagnosis_key(),
            rolling_start: EnIntervalNumber::new(today.value() - 144 * day),
            rolling_period: 144,
            transmission_risk: 3,
        })
        .collect()
}

/// A ready publish body: code issued, verified and exchanged for a certificate.
async fn prepared_publish(client: &HttpClient, base: &str, api_key: &str) -> Value {
    let issued = post(
        client,
        &format!("{base}/api/issue"),
        &[("x-api-key", api_key)],
        &json!({ "testType": "confirmed" }),
    )
    .await;
    let accept = json!({ "code": issued["code"], "accept": ["confirmed"] });
    let verified = post(client, &format!("{base}/api/verify"), &[], &accept).await;
    let keys = device_keys();
    let secret = HmacKey::generate(&mut rand_core::OsRng);
    let tekmac = TekMac::compute(&secret, &keys).to_base64();
    let exchange = json!({ "token": verified["token"], "ekeyhmac": tekmac });
    let certified = post(client, &format!("{base}/api/certificate"), &[], &exchange).await;
    json!({
        "temporaryExposureKeys": keys.iter().map(|key| json!({
            "key": B64.encode(key.key.as_bytes()),
            "rollingStartNumber": key.rolling_start.value(),
            "rollingPeriod": key.rolling_period,
            "transmissionRisk": key.transmission_risk,
        })).collect::<Vec<_>>(),
        "healthAuthorityID": "varsel",
        "verificationPayload": certified["certificate"],
        "hmacKey": secret.to_base64(),
    })
}

async fn publishes_per_second(count: usize, rounds: usize, clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_owned();
    config.verification.daily_quota = 10_000_000;
    config.verification.rate_limit.client_attempts_per_hour = 10_000_000;
    config.verification.rate_limit.client_burst = 10_000_000;
    let clock: SharedClock = Arc::new(SystemClock);
    let server = KeyServer::open(&config, clock.clone()).unwrap();
    let api_key = server
        .verification()
        .unwrap()
        .authorities()
        .add("Bench", None, clock.unix_seconds())
        .unwrap()
        .to_string();
    let verifier = server.verification().unwrap().certificate_verifier();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { server.run(listener, std::future::pending()).await.unwrap() });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Certificates first, through the verification routes; not timed.
    let bodies = prepared_publishes(&client, &base, &api_key, count * rounds, clients).await;
    eprintln!("{} certificates ready; publishing", bodies.len());
    certificate_checks_per_second(&bodies[..count], &verifier);

    let url = format!("{base}/v1/publish");
    let mut rates = Vec::new();
    let mut busy = Vec::new();
    for round in bodies.chunks(count) {
        let round = round.to_vec();
        let cpu = cpu_seconds();
        let elapsed = publish_all(&client, &url, round, clients).await;
        rates.push(count as f64 / elapsed);
        busy.push(format!("{:.2}", (cpu_seconds() - cpu) / elapsed));
    }
    let listed: Vec<String> = rates.iter().map(|rate| format!("{rate:.0}")).collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "publish: {count} verified publishes of 14 keys per round, {clients} clients: median \
         {:.0} publishes/s (rounds: {}; cores busy, clients included: {})",
        rates[rates.len() / 2],
        listed.join(", "),
        busy.join(", ")
    );
}

/// CPU time this process has used, user and system, in seconds (from `/proc/self/stat`, in
/// clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    // utime and stime, fields 14 and 15 of the line, are 11 and 12 counting from 0 after it.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// `total` publish bodies, each with its own certificate, fetched `clients` at a time.
async fn prepared_publishes(
    client: &HttpClient,
    base: &str,
    api_key: &str,
    total: usize,
    clients: usize,
) -> Vec<Value> {
    let mut bodies = Vec::with_capacity(total);
    let mut batch = Vec::new();
    for _ in 0..total {
        let (client, base, api_key) = (client.clone(), base.to_owned(), api_key.to_owned());
        batch.push(tokio::spawn(async move {
            prepared_publish(&client, &base, &api_key).await
        }));
        if batch.len() == clients {
            for task in batch.drain(..) {
                bodies.push(task.await.unwrap());
            }
        }
    }
    for task in batch {
        bodies.push(task.await.unwrap());
    }
    bodies
}

/// Sends every body with `clients` concurrent clients; returns the seconds it took.
async fn publish_all(client: &HttpClient, url: &str, bodies: Vec<Value>, clients: usize) -> f64 {
    let queue = Arc::new(Mutex::new(bodies));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (queue, client, url) = (queue.clone(), client.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(body) = next else { break };
                let answer = post(&client, &url, &[], &body).await;
                assert_eq!(answer["insertedExposures"], 14);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// The certificate check alone (ES256 signature, claims, tekmac), on two threads, without HTTP
/// or storage: the floor under the cost of a publish.
fn certificate_checks_per_second(bodies: &[Value], verifier: &CertificateVerifier) {
    let uploads: Vec<(String, Vec<UploadKey>, HmacKey)> = bodies
        .iter()
        .map(|body| {
            let keys = body["temporaryExposureKeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| UploadKey {
                    key: DiagnosisKey::from_slice(
                        &B64.decode(key["key"].as_str().unwrap()).unwrap(),
                    )
                    .unwrap(),
                    rolling_start: EnIntervalNumber::new(
                        key["rollingStartNumber"].as_u64().unwrap() as u32,
                    ),
                    rolling_period: key["rollingPeriod"].as_u64().unwrap() as u32,
                    transmission_risk: key["transmissionRisk"].as_u64().unwrap() as u8,
                })
                .collect();
            let secret = HmacKey::from_base64(body["hmacKey"].as_str().unwrap()).unwrap();
            (
                body["verificationPayload"].as_str().unwrap().to_owned(),
                keys,
                secret,
            )
        })
        .collect();
    let now = std::time::SystemTime::now();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for half in uploads.chunks(uploads.len().div_ceil(2)) {
            scope.spawn(move || {
                for (certificate, keys, secret) in half {
                    verify_certificate(certificate, keys, secret, verifier, now).unwrap();
                }
            });
        }
    });
    let elapsed = started.elapsed();
    println!(
        "certificate checks alone (ES256, claims, tekmac), 2 threads: {:.0} per second",
        uploads.len() as f64 / elapsed.as_secs_f64()
    );
}

fn export_of_a_million() {
    const KEYS: usize = 1_000_000;
    let mut rng = rand::thread_rng();
    let keys: Vec<ExportKey> = (0..KEYS)
        .map(|i| {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            ExportKey {
                key: DiagnosisKey::from_bytes(bytes),
                transmission_risk_level: 3,
                rolling_start: EnIntervalNumber::new(2_950_000 + 144 * (i as u32 % 14)),
                rolling_period: 144,
                report_type: Some(ReportType::ConfirmedTest),
                days_since_onset_of_symptoms: Some((i % 14) as i32 - 3),
            }
        })
        .collect();
    let signer = ExportSigner::new(
        p256::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        "varsel",
        "v1",
    );
    let dir = tempfile::tempdir().unwrap();
    let tree = ExportTree::open(dir.path()).unwrap();
    let window = Window {
        start: 1_770_000_000,
        end: 1_770_003_600,
    };

    for (name, policy) in [
        ("deflated", ExportPolicy::default()),
        (
            "stored",
            ExportPolicy {
                compression: varsel_protocol::export::Compression::Stored,
                ..ExportPolicy::default()
            },
        ),
    ] {
        let started = Instant::now();
        let files = build_window(
            window,
            keys.clone(),
            Vec::new(),
            &policy,
            std::slice::from_ref(&signer),
        )
        .unwrap();
        let built = started.elapsed();
        for file in &files {
            tree.write_file(&file.path, &file.bytes).unwrap();
        }
        let elapsed = started.elapsed();
        let bytes: usize = files.iter().map(|file| file.bytes.len()).sum();
        println!(
            "export ({name}): {KEYS} keys in {} signed files ({:.1} MB): {:.2} s to pad, sort, \
             split, sign and zip, {:.2} s with durable writes",
            files.len(),
            bytes as f64 / 1e6,
            built.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
}

/// Stores 1,000,000 keys as uploads of 14, merges them into hour parts, then reopens the
/// store: the index rebuilt from the tree, its time and the resident memory it adds.
fn index_of_a_million() {
    const KEYS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let keys = PublishedKeys::open(db.open_tree("keys").unwrap(), 0, 0).unwrap();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    for upload in 0..KEYS.div_ceil(14) {
        let records: Vec<StoredKey> = (0..14)
            .map(|day| stored_key(&mut rng, upload, day))
            .collect();
        let certificate = CertificateHash::of(&format!("certificate {upload}"));
        let upload = keys.upload();
        let hour = upload.hour_for(records[0].upload_hour);
        upload.commit(&records, &certificate, 0, hour).unwrap();
    }
    let stored = keys.len();
    let written = started.elapsed();
    let started = Instant::now();
    keys.merge_ended_hours(u64::MAX / 2).unwrap();
    let merged = started.elapsed();
    db.flush().unwrap();
    drop(keys);

    let before = resident_bytes();
    let started = Instant::now();
    let keys = PublishedKeys::open(db.open_tree("keys").unwrap(), 0, 0).unwrap();
    let rebuilt = started.elapsed();
    let grew = resident_bytes().saturating_sub(before);
    assert_eq!(keys.len(), stored);
    let started = Instant::now();
    assert_eq!(keys.released_in(0, u64::MAX).unwrap().len(), stored);
    let read = started.elapsed();
    println!(
        "store: {stored} keys written as uploads of 14 in {:.2} s (no HTTP or checks), merged \
         into hour parts in {:.2} s; the index rebuilt from the parts in {:.2} s, adding {:.0} MB \
         resident ({:.0} bytes per key); all of them read back as one window in {:.3} s",
        written.as_secs_f64(),
        merged.as_secs_f64(),
        rebuilt.as_secs_f64(),
        grew as f64 / 1e6,
        grew as f64 / stored as f64,
        read.as_secs_f64()
    );
}

fn stored_key(rng: &mut impl RngCore, upload: usize, day: u32) -> StoredKey {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    let hour = 1_770_000_000 + (upload as u64 / 100) * 3_600;
    StoredKey {
        key: ExportKey {
            key: DiagnosisKey::from_bytes(bytes),
            transmission_risk_level: 3,
            rolling_start: EnIntervalNumber::new(2_950_000 + 144 * day),
            rolling_period: 144,
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(day as i32 - 3),
        },
        upload_hour: hour,
        release_at: hour,
        revised_release_at: None,
    }
}

/// Resident set size of this process, from `VmRSS` in `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kilobytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        });
    kilobytes.unwrap_or(0) * 1_024
}

fn main() {
    let count = setting("VARSEL_BENCH_N", 4_000);
    let rounds = setting("VARSEL_BENCH_ROUNDS", 3).max(1);
    let clients = setting("VARSEL_BENCH_CLIENTS", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(publishes_per_second(count, rounds, clients));
    drop(runtime);
    index_of_a_million();
    export_of_a_million();
}
