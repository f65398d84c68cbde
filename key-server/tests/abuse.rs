//! Hostile and odd input over a real socket: chaff, malformed and oversized bodies, unknown
//! fields, forged tokens, and the guessing limits.

mod common;

use std::time::Duration;

use common::TestServer;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use varsel_key_server::config::Config;
use varsel_key_server::jwt;
use varsel_key_server::padding::{MIN_BODY_LEN, SPREAD};

fn token_claims(server: &TestServer) -> Value {
    let now = server.clock.unix();
    json!({
        "iss": "varsel-verification", "aud": "varsel-verification", "iat": now,
        "exp": now + 3_600, "jti": "AAAAAAAAAAAAAAAAAAAAAA", "testtype": "confirmed",
    })
}

fn keys_of(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn chaff_looks_real_and_changes_nothing() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let issued = server
        .issue(
            &api_key,
            &json!({ "testType": "confirmed", "symptomDate": null }),
        )
        .await
        .json();
    let code = issued["code"].as_str().unwrap().to_owned();
    let before = server.store.dump();

    // A chaff verify with a made-up code answers like a real success.
    let chaff = server
        .post_json(
            "/api/verify",
            &[("x-chaff", "1")],
            &json!({ "code": "99999999", "padding": "xyz" }),
        )
        .await;
    assert_eq!(chaff.status, 200);
    let body_len = MIN_BODY_LEN..MIN_BODY_LEN + SPREAD;
    assert!(body_len.contains(&chaff.body.len()));
    let chaff_token = chaff.json()["token"].as_str().unwrap().to_owned();

    // Chaff certificates, and chaff issues, likewise.
    let body =
        json!({ "token": chaff_token, "ekeyhmac": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" });
    let chaff_cert = server
        .post_json("/api/certificate", &[("x-chaff", "1")], &body)
        .await;
    assert_eq!(chaff_cert.status, 200);
    assert!(body_len.contains(&chaff_cert.body.len()));
    let chaff_issue = server
        .post_json(
            "/api/issue",
            &[("x-chaff", "1"), ("x-api-key", &api_key)],
            &json!({ "testType": "confirmed" }),
        )
        .await;
    assert_eq!(chaff_issue.status, 200);
    assert_eq!(server.store.dump(), before, "chaff changed stored state");

    // The real answers have the same fields and size window.
    let real = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    assert_eq!(real.status, 200);
    assert!(body_len.contains(&real.body.len()));
    assert_eq!(keys_of(&real.json()), keys_of(&chaff.json()));
    let token = real.json()["token"].as_str().unwrap().to_owned();
    let body =
        json!({ "token": token, "ekeyhmac": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" });
    let real_cert = server.post_json("/api/certificate", &[], &body).await;
    assert_eq!(keys_of(&real_cert.json()), keys_of(&chaff_cert.json()));
    assert_eq!(
        keys_of(&chaff_issue.json()),
        keys_of(
            &server
                .issue(&api_key, &json!({ "testType": "confirmed" }))
                .await
                .json()
        )
    );

    // A chaff token is not a credential.
    let body =
        json!({ "token": chaff_token, "ekeyhmac": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" });
    let exchanged = server.post_json("/api/certificate", &[], &body).await;
    assert_eq!(exchanged.code(), "token_invalid");

    // Metrics label chaff and real requests alike.
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("route=\"/api/verify\",status=\"200\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_unknown_input_is_refused() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let headers = [
        ("content-type", "application/json"),
        ("x-api-key", api_key.as_str()),
    ];
    for path in ["/api/issue", "/api/verify", "/api/certificate"] {
        let bad = server.send("POST", path, &headers, "{\"code\": ").await;
        assert_eq!(
            (bad.status, bad.code().as_str()),
            (400, "bad_request"),
            "{path}"
        );
        let not_object = server.send("POST", path, &headers, "[1,2]").await;
        assert_eq!(not_object.status, 400, "{path}");
        let huge = format!("{{\"padding\":\"{}\"}}", "x".repeat(20_000));
        let big = server.send("POST", path, &headers, huge).await;
        assert_eq!(
            (big.status, big.code().as_str()),
            (413, "body_too_large"),
            "{path}"
        );
    }
    let unknown = server
        .post_json(
            "/api/verify",
            &[],
            &json!({ "code": "12345678", "admin": true }),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `admin`")
    );
    let unknown = server
        .issue(&api_key, &json!({ "testType": "confirmed", "extra": 1 }))
        .await;
    assert_eq!(unknown.status, 400);
    let bad_type = server
        .issue(&api_key, &json!({ "testType": "positive" }))
        .await;
    assert_eq!(bad_type.status, 400);
    let wrong_type = server
        .post_json("/api/verify", &[], &json!({ "code": 12345678 }))
        .await;
    assert_eq!(wrong_type.status, 400);
    assert!(
        !wrong_type.text().contains("12345678"),
        "error echoes the code"
    );
    let bad_hmac = server
        .post_json(
            "/api/certificate",
            &[],
            &json!({ "token": "x.y.z", "ekeyhmac": "short" }),
        )
        .await;
    assert_eq!(bad_hmac.status, 400);

    // Nothing was issued by any of this.
    assert_eq!(server.verification.counts("Lab").unwrap().issued, 0);
    let missing = server.get("/no/such/route").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "not_found")
    );
    server.stop().await;
}

#[tokio::test]
async fn forged_tokens_get_no_certificate() {
    let server = TestServer::start().await;
    let kid = server.verification.key_ring().active().kid().to_owned();
    let claims = token_claims(&server);
    let hmac = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    let none = jwt::assemble_unchecked(&json!({ "alg": "none", "kid": kid }), &claims, b"");
    let header = json!({ "alg": "HS256", "kid": kid });
    let unsigned = jwt::assemble_unchecked(&header, &claims, b"");
    let public = server
        .verification
        .key_ring()
        .active()
        .verifying_key()
        .to_encoded_point(false);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(public.as_bytes()).unwrap();
    mac.update(unsigned.trim_end_matches('.').as_bytes());
    let hs256 = jwt::assemble_unchecked(&header, &claims, &mac.finalize().into_bytes());
    let stranger = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let impostor = jwt::sign(&claims, &kid, &stranger);

    for forged in [none, hs256, impostor] {
        let reply = server
            .post_json(
                "/api/certificate",
                &[],
                &json!({ "token": forged, "ekeyhmac": hmac }),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "token_invalid")
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_cannot_guess_past_its_bucket() {
    let mut config = Config::default();
    config.verification.rate_limit.client_burst = 3;
    config.verification.rate_limit.client_attempts_per_hour = 6;
    let server = TestServer::start_with(config).await;
    let api_key = server.authority("Lab", None);
    let code = server.long_code(&api_key).await;

    for guess in ["00000001", "00000002", "00000003"] {
        let reply = server
            .post_json("/api/verify", &[], &json!({ "code": guess }))
            .await;
        assert_eq!(reply.code(), "code_not_found");
    }
    // The bucket is empty: even the right code is refused, and the code stays unused.
    let limited = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (429, "quota_exceeded")
    );
    // With no trusted proxy configured, a forwarded-for header is not believed.
    let forged = [("x-forwarded-for", "198.51.100.7")];
    let limited = server
        .post_json("/api/verify", &forged, &json!({ "code": code }))
        .await;
    assert_eq!(limited.status, 429);
    server.clock.advance(Duration::from_secs(600));
    let later = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    assert_eq!(later.status, 200, "{}", later.text());
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_bucket() {
    let mut config = Config::default();
    config.verification.rate_limit.client_burst = 2;
    config.verification.rate_limit.client_attempts_per_hour = 2;
    config.server.trusted_proxies = vec!["127.0.0.1".to_owned()];
    let server = TestServer::start_with(config).await;
    let guess = |forwarded_for: &'static str| {
        let server = &server;
        async move {
            let headers = [("x-forwarded-for", forwarded_for)];
            let body = json!({ "code": "00000001" });
            server
                .post_json("/api/verify", &headers, &body)
                .await
                .code()
        }
    };

    assert_eq!(guess("203.0.113.1").await, "code_not_found");
    assert_eq!(guess("203.0.113.1").await, "code_not_found");
    assert_eq!(guess("203.0.113.1").await, "quota_exceeded");
    // Another client behind the same proxy still has its whole bucket.
    assert_eq!(guess("203.0.113.2").await, "code_not_found");
    // An entry the first client writes itself, left of what the proxy appended, changes
    // nothing.
    assert_eq!(guess("203.0.113.3, 203.0.113.1").await, "quota_exceeded");
    server.stop().await;
}

#[tokio::test]
async fn failures_overall_hit_a_ceiling_per_minute() {
    let mut config = Config::default();
    config.verification.rate_limit.client_burst = 1_000;
    config.verification.rate_limit.client_attempts_per_hour = 1_000;
    config.verification.rate_limit.global_failures_per_minute = 5;
    let server = TestServer::start_with(config).await;
    let api_key = server.authority("Lab", None);
    let code = server.long_code(&api_key).await;

    // Align to the start of a minute, then spend the minute's failures.
    let now = server.clock.unix();
    server.clock.set(now - now % 60);
    for guess in 0..5 {
        let reply = server
            .post_json(
                "/api/verify",
                &[],
                &json!({ "code": format!("{guess:08}") }),
            )
            .await;
        assert_eq!(reply.status, 404);
    }
    let refused = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    assert_eq!(refused.status, 429);
    server.clock.advance(Duration::from_secs(60));
    let accepted = server
        .post_json("/api/verify", &[], &json!({ "code": code }))
        .await;
    assert_eq!(accepted.status, 200);
    server.stop().await;
}
