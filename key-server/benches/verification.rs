//! Requests per second of `POST /api/verify` and `POST /api/certificate` over loopback, against
//! a real server with a real sled database in a temporary directory.
//!
//! `cargo bench -p varsel-key-server --bench verification`; `VARSEL_BENCH_N` sets how many code
//! pairs are issued first (default 2,000) and `VARSEL_BENCH_CLIENTS` the concurrent clients
//! (default 16).

use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use varsel_key_server::clock::{SharedClock, SystemClock};
use varsel_key_server::config::Config;
use varsel_key_server::server::KeyServer;
use varsel_key_server::store::VerificationStore;
use varsel_key_server::verification::Verification;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn post(client: &HttpClient, url: &str, headers: &[(&str, &str)], body: Value) -> Value {
    let mut request = hyper::Request::builder().method("POST").uri(url);
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

/// Runs `bodies` through `path` with `clients` concurrent workers; returns requests per second.
async fn measure(
    client: &HttpClient,
    url: String,
    bodies: Vec<Value>,
    clients: usize,
) -> (f64, Vec<Value>) {
    let count = bodies.len();
    let queue = Arc::new(std::sync::Mutex::new(
        bodies.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (queue, client, url) = (queue.clone(), client.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((index, body)) = next else { break };
                answers.push((index, post(&client, &url, &[], body).await));
            }
            answers
        }));
    }
    let mut answers = Vec::with_capacity(count);
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    answers.sort_by_key(|(index, _)| *index);
    (
        rate,
        answers.into_iter().map(|(_, answer)| answer).collect(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let (n, clients) = (
        setting("VARSEL_BENCH_N", 2_000),
        setting("VARSEL_BENCH_CLIENTS", 16),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_owned();
    config.verification.rate_limit.client_burst = u32::MAX;
    config.verification.rate_limit.client_attempts_per_hour = u32::MAX;
    let clock: SharedClock = Arc::new(SystemClock);
    let store = VerificationStore::open(&config.verification_dir()).unwrap();
    let verification = Verification::with_store(&store, &config, clock).unwrap();
    let api_key = verification
        .authorities()
        .add("Bench", Some(u64::MAX), 0)
        .unwrap();
    let server = KeyServer::with_verification(verification);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { server.run(listener, std::future::pending()).await });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Codes to verify, issued over the same API.
    let mut codes = Vec::with_capacity(n);
    let (issue_url, headers) = (
        format!("{base}/api/issue"),
        [("x-api-key", api_key.as_str())],
    );
    for _ in 0..n {
        let body = json!({ "testType": "confirmed" });
        let issued = post(&client, &issue_url, &headers, body).await;
        codes.push(issued["code"].as_str().unwrap().to_owned());
    }

    let bodies = codes.iter().map(|code| json!({ "code": code })).collect();
    let (verify_rate, answers) =
        measure(&client, format!("{base}/api/verify"), bodies, clients).await;
    let hmac = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let bodies = answers
        .iter()
        .map(|answer| json!({ "token": answer["token"], "ekeyhmac": hmac }))
        .collect();
    let url = format!("{base}/api/certificate");
    let (certificate_rate, _) = measure(&client, url, bodies, clients).await;

    println!("loopback, {n} requests each, {clients} concurrent clients:");
    println!("  POST /api/verify       {verify_rate:>8.0} requests/s");
    println!("  POST /api/certificate  {certificate_rate:>8.0} requests/s");
}
