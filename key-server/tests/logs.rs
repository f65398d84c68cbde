//! Logs at every level, captured during a full flow with errors, hold no code, token, key, HMAC,
//! API key or client address.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestServer;
use serde_json::json;
use varsel_key_server::cli::log_filter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_hold_no_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        // The binary's filter at its most verbose; the test's own HTTP client is not the server.
        .with_env_filter(log_filter("trace,hyper_util::client=off"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let issued = server
        .issue(&api_key, &json!({ "testType": "confirmed" }))
        .await
        .json();
    let code = issued["code"].as_str().unwrap().to_owned();
    let long = issued["longCode"].as_str().unwrap().to_owned();
    let token = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let hmac = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let body = json!({ "token": token, "ekeyhmac": hmac });
    let certificate = server
        .post_json("/api/certificate", &[], &body)
        .await
        .json()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    // Failures log too: reuse, a wrong code, a bad key.
    server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    server
        .post_json("/api/verify", &[], &json!({ "code": "87654321" }))
        .await;
    server.post_json("/api/certificate", &[], &body).await;
    server
        .issue("vks_guessed-key", &json!({ "testType": "confirmed" }))
        .await;
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/api/verify"), "nothing was logged:\n{logs}");
    let secrets = [&code, &long, &token, &certificate, &api_key];
    for secret in secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
    for needle in [hmac, "87654321", "vks_guessed-key", "127.0.0.1"] {
        let line = logs.lines().find(|line| line.contains(needle));
        assert!(line.is_none(), "{needle} reached the logs: {line:?}");
    }
}
