//! Durability: the real `varsel-key-server` process is killed with SIGKILL in the middle of a
//! stream of publishes; after a restart, every key whose upload was answered 200 is in the
//! exports. A 200 from `POST /v1/publish` promises exactly that.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use varsel_protocol::export::{ExportArchive, ExportLimits};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::{DiagnosisKey, TemporaryExposureKey};
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

const BINARY: &str = env!("CARGO_BIN_EXE_varsel-key-server");

/// Concurrent device-like clients.
const CLIENTS: usize = 4;

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Option<Value> {
        let mut request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        let response = self.client.request(request).await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    async fn healthy(&self) -> bool {
        let Ok(uri) = format!("{}/healthz", self.base).parse() else {
            return false;
        };
        matches!(self.client.get(uri).await, Ok(response) if response.status() == 200)
    }
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("key-server.toml");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[verification]
daily_quota = 1000000

[verification.rate_limit]
client_attempts_per_hour = 1000000
client_burst = 1000000

[exports]
min_keys = 10
padding_jitter = 0
worker_interval_seconds = 3600
"#,
        data = dir.join("data").display()
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn run(config: &Path, args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn start(config: &Path) -> Child {
    Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(http: &Http) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.healthy().await {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One device's whole report: code, token, certificate, publish. Returns the keys when the
/// publish was answered 200.
async fn report(http: &Http, api_key: &str) -> Option<Vec<DiagnosisKey>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let today = EnIntervalNumber::from_unix_seconds(now)
        .unwrap()
        .day_start()
        .value();
    let keys: Vec<UploadKey> = (1..=3)
        .map(|day| UploadKey {
            key: TemporaryExposureKey::generate(&mut rand_core::OsRng).into_diagnosis_key(),
            rolling_start: EnIntervalNumber::new(today - 144 * day),
            rolling_period: 144,
            transmission_risk: 2,
        })
        .collect();

    let issued = http
        .post(
            "/api/issue",
            &[("x-api-key", api_key)],
            &json!({ "testType": "confirmed" }),
        )
        .await?;
    let accept = json!({ "code": issued["code"], "accept": ["confirmed"] });
    let verified = http.post("/api/verify", &[], &accept).await?;
    let secret = HmacKey::generate(&mut rand_core::OsRng);
    let tekmac = TekMac::compute(&secret, &keys).to_base64();
    let exchange = json!({ "token": verified["token"], "ekeyhmac": tekmac });
    let certified = http.post("/api/certificate", &[], &exchange).await?;

    let body = json!({
        "temporaryExposureKeys": keys.iter().map(|key| json!({
            "key": B64.encode(key.key.as_bytes()),
            "rollingStartNumber": key.rolling_start.value(),
            "rollingPeriod": key.rolling_period,
            "transmissionRisk": key.transmission_risk,
        })).collect::<Vec<_>>(),
        "healthAuthorityID": "varsel",
        "verificationPayload": certified["certificate"],
        "hmacKey": secret.to_base64(),
    });
    let published = http.post("/v1/publish", &[], &body).await?;
    (published["insertedExposures"] == 3).then(|| keys.iter().map(|key| key.key).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_key_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let created = run(&config, &["authority", "add", "Lab"]);
    let api_key = created.lines().last().unwrap().trim().to_owned();

    let http = Arc::new(Http {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://127.0.0.1:{port}"),
    });
    let mut server = start(&config);
    wait_healthy(&http).await;

    // Several clients report continuously; the server is killed while they do.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, api_key, acknowledged) = (http.clone(), api_key.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = 0;
            while Instant::now() < stop_at && failures < 20 {
                match report(&http, &api_key).await {
                    Some(keys) => acknowledged.lock().unwrap().extend(keys),
                    None => failures += 1,
                }
            }
        }));
    }
    let wait_for = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            while acknowledged.lock().unwrap().len() < count && Instant::now() < stop_at {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(150).await;
    server.kill().unwrap();
    server.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged: HashSet<DiagnosisKey> =
        acknowledged.lock().unwrap().iter().copied().collect();
    assert!(
        acknowledged.len() >= 150,
        "only {} keys acknowledged",
        acknowledged.len()
    );

    // After a restart the server answers again; then every acknowledged key is exported.
    let mut server = start(&config);
    wait_healthy(&http).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 4 * 3_600;
    run(&config, &["exports", "now", "--at", &later.to_string()]);
    run(&config, &["exports", "verify"]);

    let exports = dir.path().join("data").join("exports");
    let index = std::fs::read_to_string(exports.join("index.txt")).unwrap();
    let mut exported = HashSet::new();
    for path in index.lines() {
        let zip = std::fs::read(exports.join(path)).unwrap();
        let archive = ExportArchive::read(&zip, &ExportLimits::default()).unwrap();
        exported.extend(archive.export.keys.iter().map(|key| key.key));
    }
    let missing = acknowledged.difference(&exported).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged keys lost",
        acknowledged.len()
    );
}
