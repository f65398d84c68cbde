//! Reporting a positive test, and the chaff that hides real reports.
//!
//! A report is three requests: `POST /api/verify` exchanges the health authority's code for a
//! token; `POST /api/certificate` exchanges the token and the tekmac of the keys for a
//! certificate; `POST /v1/publish` sends the keys of the last 14 days (today's included: the
//! server embargoes it) with the certificate, the HMAC secret and the revision token of an
//! earlier report, if any, so the server can upgrade its keys. Afterwards a fresh key starts for
//! the rest of the day.
//!
//! Chaff runs the same three requests with `X-Chaff: 1` and random contents. Every body is
//! padded to a target length drawn the same way for real and chaff requests, and a chaff
//! upload carries as many keys as a real one from this device would, so sizes tell an
//! observer nothing. Chaff runs on a Poisson schedule.

use rand::Rng;
use rand::distributions::{Alphanumeric, DistString};
use rand_core::OsRng;
use serde::Serialize;
use serde_json::Value;
use varsel_protocol::interval::{EK_ROLLING_PERIOD, EnIntervalNumber};
use varsel_protocol::keys::DiagnosisKey;
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

use crate::Device;
use crate::Error;
use crate::http::{Answer, HttpClient};
use crate::transparency::Purpose;

/// Route that exchanges a code for a token.
pub const VERIFY_ROUTE: &str = "api/verify";
/// Route that exchanges a token and tekmac for a certificate.
pub const CERTIFICATE_ROUTE: &str = "api/certificate";
/// Route that publishes keys.
pub const PUBLISH_ROUTE: &str = "v1/publish";

/// Test types this device accepts.
pub const ACCEPTED_TEST_TYPES: [&str; 2] = ["confirmed", "likely"];

/// Transmission risk sent with every key; GAEN v2 scores by report type instead.
pub const TRANSMISSION_RISK: u8 = 0;

/// Most bytes read from any answer of the upload routes.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Longest code a user may type.
const MAX_CODE_LEN: usize = 64;
/// Days of keys a report carries, today included.
const REPORT_DAYS: u32 = 14;

/// Padded body lengths: a base per route plus a uniform random extra of up to this many bytes.
const PADDING_JITTER: usize = 256;
/// Base padded length of a verify request.
const VERIFY_BODY_LEN: usize = 512;
/// Base padded length of a certificate request.
const CERTIFICATE_BODY_LEN: usize = 2_048;
/// Base padded length of a publish request: room for 30 keys and a certificate.
const PUBLISH_BODY_LEN: usize = 8_192;

/// What a report achieved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportOutcome {
    /// Keys uploaded.
    pub keys: usize,
    /// Keys the server says it stored, when it says.
    pub inserted: Option<u64>,
    /// The test type the server confirmed for the code, when it says.
    pub test_type: Option<String>,
}

impl Device {
    /// Reports a positive test with the health authority's `code`.
    ///
    /// # Errors
    ///
    /// [`Error::NoConsent`] without upload consent (nothing is sent),
    /// [`Error::InvalidSetting`] for an empty or overlong code, [`Error::Refused`] when the
    /// server refuses a step (the device changes nothing), [`Error::Transport`] and
    /// [`Error::BadResponse`].
    pub async fn report(&self, client: &HttpClient, code: &str) -> Result<ReportOutcome, Error> {
        self.require_upload_consent()?;
        let code = code.trim();
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(Error::InvalidSetting {
                name: "code",
                reason: format!("must be 1-{MAX_CODE_LEN} characters"),
            });
        }
        let settings = self.store().settings()?;
        let keys = self.report_keys()?;

        let verified = self.verify_code(client, code, false).await?;
        let token = string_field(&verified, VERIFY_ROUTE, "token")?;
        let secret = HmacKey::generate(&mut OsRng);
        let tekmac = TekMac::compute(&secret, &keys);
        let certified = self
            .certify(client, &token, &tekmac.to_base64(), false)
            .await?;
        let certificate = string_field(&certified, CERTIFICATE_ROUTE, "certificate")?;
        let published = self
            .publish(
                client,
                &keys,
                &settings.health_authority_id,
                &certificate,
                &secret,
                false,
            )
            .await?;

        self.after_report(&published)?;
        tracing::info!(keys = keys.len(), "report published");
        Ok(ReportOutcome {
            keys: keys.len(),
            inserted: published.get("insertedExposures").and_then(Value::as_u64),
            test_type: verified
                .get("testtype")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The keys a report uploads: every stored key of today and the 13 days before.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Protocol`].
    pub fn report_keys(&self) -> Result<Vec<UploadKey>, Error> {
        let now = self.now();
        self.store().current_key(now)?;
        let today = EnIntervalNumber::from_unix_seconds(now)?.day_start();
        let first = today.saturating_sub((REPORT_DAYS - 1) * EK_ROLLING_PERIOD);
        Ok(self
            .store()
            .keys()?
            .into_iter()
            .filter(|key| key.window.start() >= first && key.window.start() <= today)
            .map(|key| UploadKey {
                key: key.tek.clone().into_diagnosis_key(),
                rolling_start: key.window.start(),
                rolling_period: key.window.period(),
                transmission_risk: TRANSMISSION_RISK,
            })
            .collect())
    }

    /// Saves the revision token and starts a fresh key for the rest of the day.
    fn after_report(&self, published: &Value) -> Result<(), Error> {
        let now = self.now();
        let mut state = self.store().upload_state()?;
        if let Some(token) = published.get("revisionToken").and_then(Value::as_str) {
            state.revision_token = Some(token.to_owned());
        }
        state.last_report_at = Some(now);
        self.store().set_upload_state(&state)?;
        self.store().start_new_key(now)?;
        Ok(())
    }

    /// Runs one chaff sequence now: the three report requests with random contents, marked
    /// `X-Chaff`. Answers are read and dropped; nothing on the device changes.
    ///
    /// # Errors
    ///
    /// [`Error::NoConsent`] without upload consent, [`Error::Transport`].
    pub async fn send_chaff(&self, client: &HttpClient) -> Result<(), Error> {
        self.require_upload_consent()?;
        let keys = self.chaff_keys()?;
        let authority = self.store().settings()?.health_authority_id;
        let code = Alphanumeric.sample_string(&mut OsRng, 8);
        let token = Alphanumeric.sample_string(&mut OsRng, 600);
        let certificate = Alphanumeric.sample_string(&mut OsRng, 900);
        let tekmac = TekMac::from_bytes(OsRng.r#gen::<[u8; 32]>());
        let secret = HmacKey::generate(&mut OsRng);

        self.verify_code(client, &code, true).await?;
        self.certify(client, &token, &tekmac.to_base64(), true)
            .await?;
        self.publish(client, &keys, &authority, &certificate, &secret, true)
            .await?;
        Ok(())
    }

    /// Runs chaff if its time has come, and schedules the next one by a Poisson process with
    /// the configured rate. Does nothing without upload consent or with a rate of 0. Returns
    /// whether chaff was sent.
    ///
    /// # Errors
    ///
    /// As [`send_chaff`](Self::send_chaff); the next chaff is scheduled even so.
    pub async fn chaff_if_due(&self, client: &HttpClient) -> Result<bool, Error> {
        let rate = self.store().settings()?.chaff_per_day;
        if !self.store().consent()?.upload || rate <= 0.0 {
            return Ok(false);
        }
        let now = self.now();
        let mut state = self.store().upload_state()?;
        let due = state.next_chaff_at.is_some_and(|at| at <= now);
        if state.next_chaff_at.is_none() || due {
            state.next_chaff_at = Some(now + next_chaff_delay(rate, &mut OsRng));
            self.store().set_upload_state(&state)?;
        }
        if due {
            self.send_chaff(client).await?;
        }
        Ok(due)
    }

    /// Random keys shaped like the ones a real report from this device would carry.
    fn chaff_keys(&self) -> Result<Vec<UploadKey>, Error> {
        Ok(self
            .report_keys()?
            .into_iter()
            .map(|key| UploadKey {
                key: DiagnosisKey::from_bytes(OsRng.r#gen()),
                ..key
            })
            .collect())
    }

    fn require_upload_consent(&self) -> Result<(), Error> {
        if self.store().consent()?.upload {
            Ok(())
        } else {
            Err(Error::NoConsent {
                purpose: "upload",
                consent: "upload",
            })
        }
    }

    async fn verify_code(
        &self,
        client: &HttpClient,
        code: &str,
        chaff: bool,
    ) -> Result<Value, Error> {
        let body = serde_json::json!({ "code": code, "accept": ACCEPTED_TEST_TYPES });
        post(client, VERIFY_ROUTE, body, VERIFY_BODY_LEN, chaff).await
    }

    async fn certify(
        &self,
        client: &HttpClient,
        token: &str,
        ekeyhmac: &str,
        chaff: bool,
    ) -> Result<Value, Error> {
        let body = serde_json::json!({ "token": token, "ekeyhmac": ekeyhmac });
        post(client, CERTIFICATE_ROUTE, body, CERTIFICATE_BODY_LEN, chaff).await
    }

    async fn publish(
        &self,
        client: &HttpClient,
        keys: &[UploadKey],
        authority: &str,
        certificate: &str,
        secret: &HmacKey,
        chaff: bool,
    ) -> Result<Value, Error> {
        let keys: Vec<Value> = keys.iter().map(key_json).collect();
        // The HMAC secret goes to the server in this body. reqwest's copy of the body cannot be
        // zeroized, so neither are the copies before it; `secret` itself is.
        let mut body = serde_json::json!({
            "temporaryExposureKeys": keys,
            "healthAuthorityID": authority,
            "verificationPayload": certificate,
            "hmacKey": secret.to_base64(),
        });
        if let Some(token) = self.store().upload_state()?.revision_token {
            body["revisionToken"] = Value::String(if chaff {
                Alphanumeric.sample_string(&mut OsRng, token.len())
            } else {
                token
            });
        }
        post(client, PUBLISH_ROUTE, body, PUBLISH_BODY_LEN, chaff).await
    }
}

/// One key as the publish route reads it.
fn key_json(key: &UploadKey) -> Value {
    use base64::Engine;
    serde_json::json!({
        "key": base64::engine::general_purpose::STANDARD.encode(key.key.as_bytes()),
        "rollingStartNumber": key.rolling_start.value(),
        "rollingPeriod": key.rolling_period,
        "transmissionRisk": key.transmission_risk,
    })
}

/// Seconds until the next chaff: exponentially distributed with mean `1 / rate` days.
pub fn next_chaff_delay(rate_per_day: f64, rng: &mut impl Rng) -> u64 {
    let uniform: f64 = rng.r#gen_range(f64::MIN_POSITIVE..1.0);
    let days = -uniform.ln() / rate_per_day;
    (days * 86_400.0).min(365.0 * 86_400.0) as u64
}

/// Pads `body` with a random `padding` field to `base` plus a random jitter bytes, sends it,
/// and reads the JSON answer; a non-2xx status becomes [`Error::Refused`].
async fn post(
    client: &HttpClient,
    route: &str,
    body: Value,
    base: usize,
    chaff: bool,
) -> Result<Value, Error> {
    let target = base + OsRng.r#gen_range(0..=PADDING_JITTER);
    let bytes = padded(body, target)?;
    let purpose = if chaff {
        Purpose::Chaff
    } else {
        Purpose::Report
    };
    let answer = client
        .post_json(purpose, route, bytes, chaff, MAX_ANSWER_BYTES)
        .await?;
    read_answer(route, &answer)
}

/// Serializes `body` with a `padding` field that brings it to `target` bytes (or leaves the
/// padding empty when the body is longer already).
fn padded(mut body: Value, target: usize) -> Result<Vec<u8>, Error> {
    body["padding"] = Value::String(String::new());
    let bare = serde_json::to_vec(&body)?.len();
    let padding = Alphanumeric.sample_string(&mut OsRng, target.saturating_sub(bare));
    body["padding"] = Value::String(padding);
    Ok(serde_json::to_vec(&body)?)
}

/// Parses an answer: JSON for 2xx, [`Error::Refused`] with the server's code otherwise.
fn read_answer(route: &str, answer: &Answer) -> Result<Value, Error> {
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    if (200..300).contains(&answer.status) {
        return json.ok_or_else(|| Error::BadResponse {
            route: route.to_owned(),
            reason: "the answer is not JSON".into(),
        });
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|json| json.get(name))
            .and_then(Value::as_str)
            .map(|text| text.chars().take(200).collect::<String>())
    };
    Err(Error::Refused {
        route: route.to_owned(),
        status: answer.status,
        code: field("code").or_else(|| field("errorCode")),
        message: field("error").unwrap_or_else(|| "no reason given".into()),
    })
}

/// A string field of a JSON answer.
fn string_field(json: &Value, route: &str, name: &str) -> Result<String, Error> {
    json.get(name)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty() && text.len() <= 16 << 10)
        .map(str::to_owned)
        .ok_or_else(|| Error::BadResponse {
            route: route.to_owned(),
            reason: format!("no {name} in the answer"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn padding_reaches_the_target_exactly() {
        let body = serde_json::json!({ "code": "12345678", "accept": ACCEPTED_TEST_TYPES });
        let bytes = padded(body, 700).unwrap();
        assert_eq!(bytes.len(), 700);
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["code"], "12345678");
        let long = serde_json::json!({ "x": "y".repeat(100) });
        assert!(padded(long, 10).unwrap().len() > 100);
    }

    #[test]
    fn chaff_delays_follow_the_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws = 20_000;
        let total: u64 = (0..draws).map(|_| next_chaff_delay(0.2, &mut rng)).sum();
        let mean_days = total as f64 / f64::from(draws) / 86_400.0;
        assert!(
            (4.7..5.3).contains(&mean_days),
            "mean {mean_days} days, expected 5"
        );
    }

    #[test]
    fn refusals_carry_the_servers_code() {
        let answer = Answer {
            status: 400,
            body: br#"{"error":"code expired","code":"code_expired"}"#.to_vec(),
        };
        match read_answer(VERIFY_ROUTE, &answer) {
            Err(Error::Refused { status, code, .. }) => {
                assert_eq!(status, 400);
                assert_eq!(code.as_deref(), Some("code_expired"));
            }
            other => panic!("{other:?}"),
        }
        let garbage = Answer {
            status: 200,
            body: b"<html>".to_vec(),
        };
        assert!(matches!(
            read_answer(VERIFY_ROUTE, &garbage),
            Err(Error::BadResponse { .. })
        ));
    }

    #[test]
    fn padding_keeps_every_field_and_is_alphanumeric() {
        let body = serde_json::json!({ "token": "t\"}", "ekeyhmac": "AAAA" });
        let parsed: Value = serde_json::from_slice(&padded(body.clone(), 300).unwrap()).unwrap();
        let padding = parsed["padding"].as_str().unwrap().to_owned();
        assert!(
            padding.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{padding}"
        );
        let mut fields = parsed.as_object().unwrap().clone();
        fields.remove("padding");
        assert_eq!(Value::Object(fields), body);

        let empty: Value =
            serde_json::from_slice(&padded(serde_json::json!({}), 40).unwrap()).unwrap();
        assert_eq!(
            empty["padding"].as_str().unwrap().len(),
            40 - r#"{"padding":""}"#.len()
        );
    }
}
