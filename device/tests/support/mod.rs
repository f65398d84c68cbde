//! A test double of the key server's routes, for testing the device's HTTP client. It is not
//! the key server: it checks what a client sends (the tekmac, the chaff header) and records
//! every request it receives so tests can compare them with the device's transparency log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

/// The code the double accepts.
pub const GOOD_CODE: &str = "12345678";

/// One request as the double received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub bytes: u64,
    pub chaff: bool,
    pub body: Vec<u8>,
}

/// What the double holds and saw.
#[derive(Default)]
pub struct DoubleState {
    pub files: HashMap<String, Vec<u8>>,
    pub received: Vec<Received>,
    pub published: Vec<Vec<UploadKey>>,
    tekmacs: HashMap<String, String>,
}

/// A running double on 127.0.0.1:0.
pub struct Double {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<DoubleState>>,
}

impl Double {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(DoubleState::default()));
        let app = Router::new()
            .route("/exports/{*path}", get(file))
            .route("/api/verify", post(verify))
            .route("/api/certificate", post(certificate))
            .route("/v1/publish", post(publish))
            .fallback(fallback)
            .with_state(state.clone())
            .layer(axum::middleware::from_fn_with_state(state.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn put_file(&self, path: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().files.insert(path.into(), bytes);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

type Shared = Arc<Mutex<DoubleState>>;

async fn record(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    state.lock().unwrap().received.push(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        bytes: bytes.len() as u64,
        chaff: parts.headers.contains_key("x-chaff"),
        body: bytes.to_vec(),
    });
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    next.run(request).await
}

async fn fallback(method: Method, uri: Uri) -> Response {
    (StatusCode::NOT_FOUND, format!("{method} {uri}")).into_response()
}

async fn file(State(state): State<Shared>, Path(path): Path<String>) -> Response {
    match state.lock().unwrap().files.get(&path) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn parse(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap()
}

fn refuse(code: &str) -> Response {
    let body = json!({ "error": "refused by the double", "code": code, "padding": "" });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn verify(headers: HeaderMap, body: Bytes) -> Response {
    let body = parse(&body);
    assert!(body["padding"].is_string());
    assert_eq!(body["accept"], json!(["confirmed", "likely"]));
    if headers.contains_key("x-chaff") {
        return axum::Json(json!({ "token": "chaff", "padding": "" })).into_response();
    }
    if body["code"] != GOOD_CODE {
        return refuse("code_invalid");
    }
    axum::Json(json!({ "testtype": "confirmed", "token": "token-1", "padding": "" }))
        .into_response()
}

async fn certificate(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body = parse(&body);
    if headers.contains_key("x-chaff") {
        return axum::Json(json!({ "certificate": "chaff", "padding": "" })).into_response();
    }
    if body["token"] != "token-1" {
        return refuse("token_invalid");
    }
    let tekmac = body["ekeyhmac"].as_str().unwrap().to_owned();
    let certificate = format!("certificate-{}", state.lock().unwrap().tekmacs.len());
    state
        .lock()
        .unwrap()
        .tekmacs
        .insert(certificate.clone(), tekmac);
    axum::Json(json!({ "certificate": certificate, "padding": "" })).into_response()
}

async fn publish(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body = parse(&body);
    if headers.contains_key("x-chaff") {
        return axum::Json(json!({ "revisionToken": "chaff", "padding": "" })).into_response();
    }
    let keys: Vec<UploadKey> =
        body["temporaryExposureKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| UploadKey {
                key: DiagnosisKey::from_slice(
                    &BASE64.decode(key["key"].as_str().unwrap()).unwrap(),
                )
                .unwrap(),
                rolling_start: EnIntervalNumber::new(
                    key["rollingStartNumber"].as_u64().unwrap() as u32
                ),
                rolling_period: key["rollingPeriod"].as_u64().unwrap() as u32,
                transmission_risk: key["transmissionRisk"].as_u64().unwrap() as u8,
            })
            .collect();
    let secret = HmacKey::from_base64(body["hmacKey"].as_str().unwrap()).unwrap();
    let certificate = body["verificationPayload"].as_str().unwrap();
    let mut state = state.lock().unwrap();
    let Some(expected) = state.tekmacs.remove(certificate) else {
        return refuse("certificate_invalid");
    };
    if TekMac::from_base64(&expected)
        .unwrap()
        .verify(&secret, &keys)
        .is_err()
    {
        return refuse("tekmac_mismatch");
    }
    let inserted = keys.len();
    state.published.push(keys);
    axum::Json(json!({
        "insertedExposures": inserted,
        "revisionToken": "revision-1",
        "padding": "",
    }))
    .into_response()
}
