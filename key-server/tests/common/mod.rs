//! Shared test support: a key server on a real socket at 127.0.0.1:0 with a real sled database
//! in a temporary directory and a manual clock, and a small HTTP client.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use varsel_key_server::clients::TrustedProxies;
use varsel_key_server::clock::{ManualClock, SharedClock};
use varsel_key_server::config::Config;
use varsel_key_server::date::Date;
use varsel_key_server::keyside::KeyService;
use varsel_key_server::server::KeyServer;
use varsel_key_server::store::VerificationStore;
use varsel_key_server::verification::Verification;

/// 2026-06-15T12:00:00Z.
pub fn start_time() -> u64 {
    Date::parse("2026-06-15")
        .unwrap()
        .midnight_unix_seconds()
        .unwrap()
        + 12 * 3_600
}

/// A running server.
pub struct TestServer {
    pub address: SocketAddr,
    pub clock: ManualClock,
    pub verification: Verification,
    pub keys: KeyService,
    pub store: VerificationStore,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(mut config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        config.server.data_dir = dir.path().to_owned();
        let clock = ManualClock::at(start_time());
        let shared: SharedClock = Arc::new(clock.clone());
        let store = VerificationStore::open(&config.verification_dir()).unwrap();
        let verification = Verification::with_store(&store, &config, shared.clone()).unwrap();
        let verifier = Some(verification.certificate_verifier());
        let keys = KeyService::open(&config, shared, verifier).unwrap();
        let proxies = TrustedProxies::parse(&config.server.trusted_proxies).unwrap();
        let server = KeyServer::with_services(verification.clone(), keys.clone())
            .with_trusted_proxies(proxies);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async { stop.await.unwrap_or(()) })
                .await
                .unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            address,
            clock,
            verification,
            keys,
            store,
            client,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Creates an authority and returns its API key.
    pub fn authority(&self, name: &str, quota: Option<u64>) -> String {
        let key = self
            .verification
            .authorities()
            .add(name, quota, start_time())
            .unwrap();
        key.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = hyper::Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("POST", path, &all, serde_json::to_vec(body).unwrap())
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// Issues a code pair and returns the reply.
    pub async fn issue(&self, api_key: &str, body: &Value) -> Reply {
        self.post_json("/api/issue", &[("x-api-key", api_key)], body)
            .await
    }

    /// Issues a code for a confirmed test and returns its long form.
    pub async fn long_code(&self, api_key: &str) -> String {
        let issued = self
            .issue(api_key, &json!({ "testType": "confirmed" }))
            .await;
        issued.json()["longCode"].as_str().unwrap().to_owned()
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}
