//! The scenario's key server: the real `varsel-key-server` router with its sled databases in a
//! directory of the scenario's, served on 127.0.0.1:0 by the key server's own `serve` and
//! reading the scenario's [`WorldClock`]. A recorder in front of the router keeps every request
//! that arrives, so what the phones logged can be compared with what the server received.
//!
//! The export worker does not tick on its own here (it would tick by wall-clock time, which
//! the scenario does not use); the scenario runs it with [`LoopbackServer::export_now`] when
//! its clock says a window is due.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use varsel_device::settings::{Settings, TrustedKeySetting};
use varsel_key_server::config::Config;
use varsel_key_server::keyside::KeyService;
use varsel_key_server::server::{KeyServer, serve};
use varsel_key_server::worker::RunSummary;
use varsel_protocol::export::{ExportArchive, ExportLimits};
use zeroize::Zeroizing;

use super::WorldClock;
use crate::Error;

/// Largest request body the recorder keeps; the key server's own limits are far below it.
const MAX_RECORDED_BYTES: usize = 1 << 20;
/// Largest answer the authority's client reads.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// The route a health authority issues codes on.
const ISSUE_ROUTE: &str = "/api/issue";

/// One request as it arrived at the key server.
#[derive(Clone, PartialEq, Eq)]
pub struct Received {
    /// The HTTP method.
    pub method: String,
    /// The path asked for, without the query.
    pub path: String,
    /// The request line and headers, as text.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
    /// Whether it carried the chaff header.
    pub chaff: bool,
}

impl Received {
    fn new(parts: &Parts, body: &[u8]) -> Self {
        let mut head = format!("{} {}\n", parts.method, parts.uri);
        for (name, value) in &parts.headers {
            head.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        Self {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            head,
            body: body.to_vec(),
            chaff: parts
                .headers
                .contains_key(varsel_device::http::CHAFF_HEADER),
        }
    }

    /// The size of the body, in bytes.
    pub fn bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

impl std::fmt::Debug for Received {
    /// Method, path and size only: bodies carry codes, tokens and keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("bytes", &self.body.len())
            .field("chaff", &self.chaff)
            .finish_non_exhaustive()
    }
}

/// Every request received, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Received>>>);

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps a copy of the request, then hands it on unchanged.
async fn record(State(recorder): State<Recorder>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_RECORDED_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    recorder.lock().push(Received::new(&parts, &body));
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// A key server running on loopback for a scenario.
pub struct LoopbackServer {
    address: SocketAddr,
    keys: KeyService,
    server: KeyServer,
    recorder: Recorder,
    http: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), varsel_key_server::Error>>>,
}

impl std::fmt::Debug for LoopbackServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LoopbackServer {
    /// Opens a key server with the default configuration and its data in `data_dir`, and
    /// serves it on a free loopback port.
    ///
    /// # Errors
    ///
    /// The key server's storage errors and socket errors.
    pub async fn start(data_dir: &Path, clock: WorldClock) -> Result<Self, Error> {
        let mut config = Config::default();
        config.server.data_dir = data_dir.to_owned();
        let server = KeyServer::open(&config, Arc::new(clock))?;
        let keys = server
            .keys()
            .cloned()
            .ok_or_else(|| Error::Scenario("the key side is disabled".into()))?;

        let recorder = Recorder::default();
        let router = server.router().layer(axum::middleware::from_fn_with_state(
            recorder.clone(),
            record,
        ));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, async {
            let _ = stop.await;
        }));
        Ok(Self {
            address,
            keys,
            server,
            recorder,
            http: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL phones are configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// The key side: stored keys, export tree, export worker.
    pub fn keys(&self) -> &KeyService {
        &self.keys
    }

    /// What a phone of this server's region is configured with: the server's URL and its
    /// export verification keys, pinned to the id and version each signs as.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if a key cannot be written as PEM.
    pub fn device_settings(&self) -> Result<Settings, Error> {
        let trusted_keys = self
            .keys
            .export_verification_keys()
            .into_iter()
            .map(|key| {
                Ok(TrustedKeySetting {
                    pem: key.to_pem()?,
                    key_id: key.key_id,
                    key_version: key.key_version,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Settings {
            server_url: Some(self.base_url()),
            trusted_keys,
            ..Settings::default()
        })
    }

    /// Creates a health-authority account, as the operator does, and returns its API key.
    ///
    /// # Errors
    ///
    /// The key server's errors (a bad or taken name, storage).
    pub fn add_authority(&self, name: &str, now: u64) -> Result<Zeroizing<String>, Error> {
        let verification = self
            .server
            .verification()
            .ok_or_else(|| Error::Scenario("the verification side is disabled".into()))?;
        Ok(verification.authorities().add(name, None, now)?)
    }

    /// Asks for a one-time code over HTTP with the authority's API key, as the authority's
    /// own systems do, and returns the short code.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] when the request fails, is refused or has no code in its answer.
    pub async fn issue_code(
        &self,
        api_key: &str,
        details: &Value,
    ) -> Result<Zeroizing<String>, Error> {
        let failed = |reason: String| Error::Http {
            route: ISSUE_ROUTE,
            reason,
        };
        let request = hyper::Request::post(format!("http://{}{ISSUE_ROUTE}", self.address))
            .header("content-type", "application/json")
            .header(varsel_key_server::verification::API_KEY_HEADER, api_key)
            .body(Full::new(Bytes::from(details.to_string())))
            .map_err(|error| failed(error.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| failed(error.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let answer: Value =
            serde_json::from_slice(&body).map_err(|_| failed("the answer is not JSON".into()))?;
        answer["code"]
            .as_str()
            .map(|code| Zeroizing::new(code.to_owned()))
            .ok_or_else(|| failed("no code in the answer".into()))
    }

    /// Runs the export worker once, as it does on each tick.
    ///
    /// # Errors
    ///
    /// The worker's storage, file and signing errors.
    pub fn export_now(&self) -> Result<RunSummary, Error> {
        Ok(self.keys.export_now()?)
    }

    /// Every live export file, read from the export tree and verified with the server's own
    /// export keys, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::KeyServer`] for an unreadable tree, [`Error::Protocol`] for a file that does
    /// not parse or verify.
    pub fn published(&self) -> Result<Vec<(String, ExportArchive)>, Error> {
        let tree = self.keys.tree();
        let trusted = self.keys.trusted_export_keys();
        let mut archives = Vec::new();
        for path in tree.read_index()? {
            let archive = ExportArchive::read(&tree.read_file(&path)?, &ExportLimits::default())?;
            archive.verify(&trusted)?;
            archives.push((path, archive));
        }
        Ok(archives)
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.recorder.lock().clone()
    }

    /// How many requests were received so far.
    pub fn received_count(&self) -> usize {
        self.recorder.lock().len()
    }

    /// Stops serving and waits for the server to finish.
    ///
    /// # Errors
    ///
    /// The server's socket errors, or [`Error::Scenario`] if its task failed.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|error| Error::Scenario(format!("the server task failed: {error}")))?
                .map_err(Error::from),
            None => Ok(()),
        }
    }
}
