//! The verification routes: health authorities issue codes, devices exchange a code for a
//! token and a token for a certificate (`spec/verification.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use p256::ecdsa::SigningKey;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use varsel_protocol::tekmac::TekMac;

use crate::authority::{Authorities, Authority};
use crate::certificate::{self, CertificateVerifier, Times, TokenClaims};
use crate::clients::TrustedProxies;
use crate::clock::SharedClock;
use crate::codes::{self, Codes, DailyCounts, Diagnosis, IssuedCodes, Lifetimes, TestType};
use crate::config::{Config, VerificationConfig};
use crate::date::Date;
use crate::error::{Error, Result, TokenRejection};
use crate::hashing::HashKey;
use crate::jwt;
use crate::padding::{TimingMirror, padded_json};
use crate::ratelimit::RateLimiter;
use crate::request::{ApiJson, Chaff};
use crate::signing::KeyRing;
use crate::store::VerificationStore;
use crate::web;

/// The route paths this module serves; a test checks that the OpenAPI document names each.
pub const ROUTES: [&str; 4] = ["/api/issue", "/api/verify", "/api/certificate", JWKS_PATH];
/// Where the public keys are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Oldest symptom or test date accepted, in days before today.
pub const MAX_DATE_AGE_DAYS: i64 = 28;

/// The verification service: its storage, keys, limits and clock.
#[derive(Clone)]
pub struct Verification {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerificationConfig,
    behind_tls: bool,
    clock: SharedClock,
    ring: KeyRing,
    hash: HashKey,
    authorities: Authorities,
    codes: Codes,
    tokens: sled::Tree,
    limiter: RateLimiter,
    sessions: web::Sessions,
    /// Signs chaff answers under the real `kid`, so they look real but never verify.
    chaff_key: SigningKey,
    /// How long real answers take, for chaff to take as long.
    timing: TimingMirror,
}

impl core::fmt::Debug for Verification {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Verification").finish_non_exhaustive()
    }
}

impl Verification {
    /// Opens the verification database named by `config` and loads (or creates) its keys.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn open(config: &Config, clock: SharedClock) -> Result<Self> {
        let store = VerificationStore::open(&config.verification_dir())?;
        Self::with_store(&store, config, clock)
    }

    /// Builds the service over an open store.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn with_store(
        store: &VerificationStore,
        config: &Config,
        clock: SharedClock,
    ) -> Result<Self> {
        let hash = store.hash_key()?;
        let inner = Inner {
            config: config.verification.clone(),
            behind_tls: config.server.behind_tls,
            ring: store.key_ring(clock.unix_seconds())?,
            authorities: store.authorities(&hash)?,
            codes: store.codes(&hash)?,
            tokens: store.tokens()?,
            limiter: RateLimiter::new(config.verification.rate_limit.clone()),
            sessions: web::Sessions::default(),
            chaff_key: SigningKey::random(&mut rand_core::OsRng),
            timing: TimingMirror::default(),
            hash,
            clock,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The routes: the JSON API, the JWKS and the staff pages.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/issue", post(issue))
            .route("/api/verify", post(verify))
            .route("/api/certificate", post(certificate))
            .route(JWKS_PATH, get(jwks))
            .with_state(self.clone())
            .merge(web::router(self.clone()))
    }

    /// A verifier that trusts this service's certificates.
    pub fn certificate_verifier(&self) -> CertificateVerifier {
        let keys = self
            .inner
            .ring
            .keys()
            .iter()
            .map(|key| (key.kid().to_owned(), key.verifying_key()));
        CertificateVerifier::new(
            &self.inner.config.issuer,
            &self.inner.config.certificate_audience,
            keys,
        )
        .with_skew(self.inner.config.allowed_skew_seconds)
    }

    /// The signing keys.
    pub fn key_ring(&self) -> &KeyRing {
        &self.inner.ring
    }

    /// The authority accounts.
    pub fn authorities(&self) -> &Authorities {
        &self.inner.authorities
    }

    /// Deletes expired codes, tokens and idempotency keys; returns how many records went.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn sweep(&self) -> Result<usize> {
        let now = self.inner.clock.unix_seconds();
        let codes = self.inner.codes.sweep(now)?;
        let tokens = codes::sweep_expiries(&self.inner.tokens, now)?;
        Ok(codes + tokens)
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.unix_seconds()
    }

    pub(crate) fn sessions(&self) -> &web::Sessions {
        &self.inner.sessions
    }

    pub(crate) fn config(&self) -> &VerificationConfig {
        &self.inner.config
    }

    pub(crate) fn behind_tls(&self) -> bool {
        self.inner.behind_tls
    }

    /// Issues codes for `authority` (shared by the API and the staff page).
    pub(crate) async fn issue_codes(
        &self,
        authority: &Authority,
        request: &IssueDetails,
    ) -> Result<IssuedCodes> {
        let now = self.now();
        let diagnosis = request.validate(now)?;
        let config = &self.inner.config;
        let quota = authority.daily_quota.unwrap_or(config.daily_quota);
        let lifetimes = Lifetimes::from_config(config);
        let uuid = request.uuid.as_deref();
        let issued =
            self.inner
                .codes
                .issue(&authority.name, quota, diagnosis, uuid, now, lifetimes)?;
        self.inner.codes.flush().await?;
        Ok(issued)
    }

    /// The issued and used counts of `authority` for the current UTC day.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn counts(&self, authority: &str) -> Result<DailyCounts> {
        self.inner.codes.counts(authority, self.now())
    }

    /// A signed token for `diagnosis`, remembered (as a hash) unless it is chaff.
    fn token(&self, diagnosis: &Diagnosis, remember: bool) -> Result<String> {
        let now = self.now();
        let config = &self.inner.config;
        let claims = TokenClaims {
            iss: config.issuer.clone(),
            aud: config.token_audience.clone(),
            iat: now,
            exp: now + config.token_hours * 3_600,
            jti: certificate::random_id(),
            test_type: diagnosis.test_type,
            symptom_date: diagnosis.symptom_date,
            test_date: diagnosis.test_date,
        };
        if remember {
            let hash = self.inner.hash.hash("jti", claims.jti.as_bytes());
            self.inner.tokens.insert(hash, &claims.exp.to_be_bytes())?;
        }
        let (kid, key) = self.signer(remember);
        Ok(jwt::sign(&claims, kid, key))
    }

    /// Checks a token's signature and claims (not yet its single use).
    fn check_token(&self, token: &str) -> Result<TokenClaims, TokenRejection> {
        let ring = &self.inner.ring;
        let keys: Vec<_> = ring
            .keys()
            .iter()
            .map(|key| (key.kid(), key.verifying_key()))
            .collect();
        let claims: TokenClaims = jwt::verify(token, |kid| {
            keys.iter().find(|(id, _)| *id == kid).map(|(_, key)| key)
        })?;
        let config = &self.inner.config;
        certificate::check_claims(
            &claims.iss,
            &claims.aud,
            &config.issuer,
            &config.token_audience,
        )?;
        let times = Times {
            iat: claims.iat,
            nbf: claims.iat,
            exp: claims.exp,
        };
        times.check(
            self.now(),
            config.allowed_skew_seconds,
            config.token_hours * 3_600,
        )?;
        Ok(claims)
    }

    /// Records how long a real success on `route` took, or makes a chaff one take as long as a
    /// recent real one.
    async fn pace(&self, route: &'static str, chaff: bool, started: Instant) {
        if chaff {
            self.inner.timing.imitate(route, started).await;
        } else {
            self.inner.timing.record(route, started.elapsed());
        }
    }

    /// The active key, or for chaff the throwaway key under the active key's name.
    fn signer(&self, real: bool) -> (&str, &SigningKey) {
        let active = self.inner.ring.active();
        let key = if real {
            active.signing_key()
        } else {
            &self.inner.chaff_key
        };
        (active.kid(), key)
    }

    fn sign_certificate(&self, diagnosis: &Diagnosis, tekmac: TekMac, real: bool) -> String {
        let config = &self.inner.config;
        certificate::sign_certificate(
            self.signer(real),
            &config.issuer,
            &config.certificate_audience,
            diagnosis,
            tekmac,
            self.now(),
            config.certificate_minutes * 60,
        )
    }
}

/// The body of `POST /api/issue`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssueDetails {
    pub(crate) test_type: TestType,
    #[serde(default)]
    pub(crate) symptom_date: Option<String>,
    #[serde(default)]
    pub(crate) test_date: Option<String>,
    #[serde(default)]
    pub(crate) tz_offset: i32,
    #[serde(default)]
    pub(crate) uuid: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "padding is accepted and ignored")]
    pub(crate) padding: Option<String>,
}

impl IssueDetails {
    /// The diagnosis, with dates checked against the authority's local day at `now`.
    fn validate(&self, now: u64) -> Result<Diagnosis> {
        if !(-720..=840).contains(&self.tz_offset) {
            return Err(Error::InvalidField {
                field: "tzOffset",
                reason: "minutes in -720..=840",
            });
        }
        let uuid_ok = |uuid: &String| {
            (1..=64).contains(&uuid.len())
                && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if self.uuid.as_ref().is_some_and(|uuid| !uuid_ok(uuid)) {
            return Err(Error::InvalidField {
                field: "uuid",
                reason: "1-64 letters, digits or '-'",
            });
        }
        let today = Date::from_unix_seconds(now, self.tz_offset);
        Ok(Diagnosis {
            test_type: self.test_type,
            symptom_date: check_date("symptomDate", self.symptom_date.as_deref(), today)?,
            test_date: check_date("testDate", self.test_date.as_deref(), today)?,
        })
    }
}

/// An optional date that must be today or in the 28 days before.
fn check_date(field: &'static str, text: Option<&str>, today: Date) -> Result<Option<Date>> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let date = Date::parse(text).ok_or(Error::InvalidField {
        field,
        reason: "expected YYYY-MM-DD",
    })?;
    if date > today {
        return Err(Error::InvalidField {
            field,
            reason: "date is in the future",
        });
    }
    if today.days() - date.days() > MAX_DATE_AGE_DAYS {
        return Err(Error::InvalidField {
            field,
            reason: "date is more than 28 days old",
        });
    }
    Ok(Some(date))
}

/// The client's address (through trusted proxies, `crate::clients`), used only as rate-limit
/// input.
pub(crate) struct ClientAddr(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let address = match parts.extensions.get::<TrustedProxies>() {
            Some(proxies) => proxies.client(peer, &parts.headers),
            None => peer,
        };
        Ok(Self(address))
    }
}

/// The header carrying a health authority's API key.
pub const API_KEY_HEADER: &str = "x-api-key";

async fn issue(
    State(service): State<Verification>,
    Chaff(chaff): Chaff,
    headers: HeaderMap,
    ApiJson(request): ApiJson<IssueDetails>,
) -> Result<Response> {
    let started = Instant::now();
    let api_key = headers
        .get(API_KEY_HEADER)
        .and_then(|value| value.to_str().ok());
    let authority = service.inner.authorities.authenticate(api_key)?;
    let issued = if chaff {
        request.validate(service.now())?;
        fake_codes(service.now(), Lifetimes::from_config(service.config()))
    } else {
        service.issue_codes(&authority, &request).await?
    };
    service.pace("/api/issue", chaff, started).await;
    Ok(padded_json(
        StatusCode::OK,
        json!({
            "code": issued.short_code.as_str(),
            "expiresAtTimestamp": issued.short_expires,
            "longCode": issued.long_code.as_str(),
            "longExpiresAtTimestamp": issued.long_expires,
            "uuid": request.uuid,
        }),
    ))
}

/// Codes drawn exactly as real ones are, but never stored.
fn fake_codes(now: u64, lifetimes: Lifetimes) -> IssuedCodes {
    let mut rng = rand::thread_rng();
    let (short_expires, long_expires) = lifetimes.expiries(now);
    IssuedCodes {
        short_code: codes::short_code(&mut rng),
        long_code: codes::long_code(&mut rng),
        short_expires,
        long_expires,
    }
}

/// The body of `POST /api/verify`; no `Debug`, since it holds a code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    code: String,
    #[serde(default = "default_accept")]
    accept: Vec<TestType>,
    #[serde(default)]
    #[allow(dead_code, reason = "padding is accepted and ignored")]
    padding: Option<String>,
}

fn default_accept() -> Vec<TestType> {
    vec![TestType::Confirmed]
}

async fn verify(
    State(service): State<Verification>,
    Chaff(chaff): Chaff,
    ClientAddr(client): ClientAddr,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Response> {
    if request.code.len() > 64 || request.accept.is_empty() || request.accept.len() > 3 {
        return Err(Error::InvalidField {
            field: "code",
            reason: "a code and 1-3 test types",
        });
    }
    let started = Instant::now();
    let (diagnosis, remember) = if chaff {
        (chaff_diagnosis(service.now()), false)
    } else {
        (claim(&service, client, &request).await?, true)
    };
    let token = service.token(&diagnosis, remember)?;
    if remember {
        crate::store::flush(&service.inner.tokens).await?;
    }
    service.pace("/api/verify", chaff, started).await;
    Ok(padded_json(
        StatusCode::OK,
        json!({
            "testtype": diagnosis.test_type,
            "symptomDate": diagnosis.symptom_date,
            "testDate": diagnosis.test_date,
            "token": token,
        }),
    ))
}

/// Rate-limits and claims a real code.
async fn claim(
    service: &Verification,
    client: IpAddr,
    request: &VerifyRequest,
) -> Result<Diagnosis> {
    let now = service.now();
    if !service.inner.limiter.admit(client, now) {
        return Err(Error::RateLimited);
    }
    match service
        .inner
        .codes
        .claim(&request.code, &request.accept, now)
    {
        Err(error @ (Error::CodeNotFound | Error::CodeInvalid | Error::CodeExpired)) => {
            service.inner.limiter.record_failure(now);
            Err(error)
        }
        other => other,
    }
}

/// A plausible diagnosis for a chaff answer: confirmed, with recent dates.
fn chaff_diagnosis(now: u64) -> Diagnosis {
    let today = Date::from_unix_seconds(now, 0);
    let mut rng = rand::thread_rng();
    let symptom = Date::from_days(today.days() - rng.gen_range(2..10));
    Diagnosis {
        test_type: TestType::Confirmed,
        symptom_date: Some(symptom),
        test_date: Some(Date::from_days(symptom.days() + 1)),
    }
}

/// The body of `POST /api/certificate`; no `Debug`, since it holds a token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    token: String,
    ekeyhmac: String,
    #[serde(default)]
    #[allow(dead_code, reason = "padding is accepted and ignored")]
    padding: Option<String>,
}

async fn certificate(
    State(service): State<Verification>,
    Chaff(chaff): Chaff,
    ApiJson(request): ApiJson<CertificateRequest>,
) -> Result<Response> {
    let started = Instant::now();
    let certificate = if chaff {
        let tekmac = TekMac::from_bytes(rand::thread_rng().r#gen());
        service.sign_certificate(&chaff_diagnosis(service.now()), tekmac, false)
    } else {
        exchange(&service, &request).await?
    };
    service.pace("/api/certificate", chaff, started).await;
    Ok(padded_json(
        StatusCode::OK,
        json!({ "certificate": certificate }),
    ))
}

/// Checks a real token, uses it up and signs its certificate.
async fn exchange(service: &Verification, request: &CertificateRequest) -> Result<String> {
    let claims = service.check_token(&request.token).map_err(Error::Token)?;
    let tekmac = TekMac::from_base64(&request.ekeyhmac).map_err(|_| Error::HmacInvalid)?;
    let hash = service.inner.hash.hash("jti", claims.jti.as_bytes());
    if service.inner.tokens.remove(hash)?.is_none() {
        return Err(Error::Token(TokenRejection::Used));
    }
    crate::store::flush(&service.inner.tokens).await?;
    let diagnosis = Diagnosis {
        test_type: claims.test_type,
        symptom_date: claims.symptom_date,
        test_date: claims.test_date,
    };
    Ok(service.sign_certificate(&diagnosis, tekmac, true))
}

async fn jwks(State(service): State<Verification>) -> Json<serde_json::Value> {
    Json(service.inner.ring.jwks())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIMES: Lifetimes = Lifetimes {
        short: 900,
        long: 86_400,
    };

    #[test]
    fn chaff_codes_are_drawn_like_real_ones() {
        let mut long_chars = std::collections::HashMap::<char, usize>::new();
        for _ in 0..1_000 {
            let fake = fake_codes(1_000, LIFETIMES);
            assert!(codes::is_short_code(&fake.short_code));
            assert!(codes::is_long_code(&fake.long_code));
            assert_eq!((fake.short_expires, fake.long_expires), (1_900, 87_400));
            for c in fake.long_code.chars() {
                *long_chars.entry(c).or_default() += 1;
            }
        }
        // 16,000 uniform draws of 36 symbols: each about 444 times, none near the 750 that
        // a symbol standing in for three others of 64 would get.
        assert_eq!(long_chars.len(), 36);
        assert!(
            long_chars
                .values()
                .all(|&count| (300..600).contains(&count))
        );
    }
}
