//! The OpenAPI document: served as built, kept in `spec/` unchanged, and naming every route.
//! Run with `VARSEL_UPDATE_SPEC=1` to rewrite the copy in `spec/` after changing a route.

mod common;

use std::path::PathBuf;

use common::TestServer;
use varsel_key_server::openapi;
use varsel_key_server::verification::{self, JWKS_PATH};

fn spec_copy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/key-server-openapi.json")
}

#[test]
fn spec_copy_is_current() {
    let current = openapi::render();
    if std::env::var("VARSEL_UPDATE_SPEC").as_deref() == Ok("1") {
        std::fs::write(spec_copy(), &current).unwrap();
    }
    let kept = std::fs::read_to_string(spec_copy()).expect("spec/key-server-openapi.json");
    assert!(
        kept == current,
        "spec/key-server-openapi.json is stale; rerun with VARSEL_UPDATE_SPEC=1"
    );
}

#[tokio::test]
async fn every_route_is_documented_and_answers() {
    let server = TestServer::start().await;
    let served = server.get("/openapi.json").await.json();
    assert_eq!(served, openapi::document());
    let paths = served["paths"].as_object().unwrap();
    for path in ["/healthz", "/metrics", "/openapi.json", "/staff"] {
        assert!(paths.contains_key(path), "{path}");
        assert_eq!(server.get(path).await.status, 200, "{path}");
    }
    let posted = verification::ROUTES
        .into_iter()
        .filter(|path| *path != JWKS_PATH);
    for path in posted.chain(["/staff/login", "/staff/issue"]) {
        assert!(paths.contains_key(path), "{path}");
        assert_ne!(
            server.send("POST", path, &[], "").await.status,
            404,
            "{path}"
        );
    }
    assert!(verification::ROUTES.contains(&JWKS_PATH));
    assert!(paths.contains_key(JWKS_PATH));
    assert_eq!(server.get(JWKS_PATH).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn health_metrics_and_keys() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").await.json()["status"], "ok");
    let jwks = server.get("/.well-known/jwks.json").await.json();
    let kid = server.verification.key_ring().active().kid().to_owned();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "the JWKS must not hold the private key"
    );
    let metrics = server.get("/metrics").await.text();
    assert!(metrics.contains("varsel_http_requests_total{route=\"/healthz\",status=\"200\"} 1"));
    assert!(metrics.contains("varsel_http_request_duration_seconds_bucket{route=\"/healthz\""));
    assert!(!metrics.contains("127.0.0.1"));
    server.stop().await;
}
