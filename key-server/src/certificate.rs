//! Verification tokens and certificates: their claims, how they are signed, and how they are
//! checked (`spec/verification.md`, "Tokens" and "Certificates").
//!
//! [`verify_certificate`] is what the publish side calls: it pins ES256, requires a known `kid`,
//! the expected issuer and audience, time claims within a small skew and a bounded lifetime, and
//! recomputes the `tekmac` over the uploaded keys with the protocol crate.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use p256::ecdsa::{SigningKey, VerifyingKey};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use varsel_protocol::export::ReportType;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::tekmac::{HmacKey, TekMac, UploadKey};

use crate::codes::{Diagnosis, TestType};
use crate::date::Date;
use crate::error::{Error, Result, TokenRejection};
use crate::jwt;

/// Skew tolerated on time claims unless configured otherwise, in seconds.
pub const DEFAULT_SKEW_SECONDS: u64 = 60;
/// Longest lifetime a certificate may claim, in seconds.
pub const MAX_CERTIFICATE_LIFETIME: u64 = 3_600;

/// The claims of a verification token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: the verification server itself.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Random identifier; the server keeps only its keyed hash, removed when exchanged.
    pub jti: String,
    /// The diagnosis the code stood for.
    #[serde(rename = "testtype")]
    pub test_type: TestType,
    /// Symptom onset date, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_date: Option<Date>,
    /// Test date, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_date: Option<Date>,
}

/// The claims of a certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: the key server that accepts uploads.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Random identifier, so the key server can accept each certificate once.
    pub jti: String,
    /// `confirmed`, `likely` or `negative`.
    pub report_type: TestType,
    /// Interval number of the UTC midnight starting the symptom date, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_onset_interval: Option<u32>,
    /// Standard base64 of the 32-byte tekmac over the keys to be uploaded.
    pub tekmac: String,
}

/// What a verified certificate allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCertificate {
    /// The diagnosis, as the certificate states it.
    pub test_type: TestType,
    /// The report type the uploaded keys get.
    pub report_type: ReportType,
    /// The interval starting the symptom onset day, when known.
    pub symptom_onset: Option<EnIntervalNumber>,
    /// The certificate's `jti`, for refusing a second use.
    pub id: String,
    /// The last second it is accepted: its `exp` plus the clock skew tolerated, in Unix
    /// seconds. Its `jti` need not be remembered past this.
    pub accepted_until: u64,
}

/// The trusted issuer, audience and keys a certificate is checked against.
#[derive(Clone, Debug)]
pub struct CertificateVerifier {
    issuer: String,
    audience: String,
    keys: Vec<(String, VerifyingKey)>,
    skew: u64,
}

impl CertificateVerifier {
    /// Trusts certificates from `issuer` for `audience` signed by one of `keys` (kid, key).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        keys: impl IntoIterator<Item = (String, VerifyingKey)>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: keys.into_iter().collect(),
            skew: DEFAULT_SKEW_SECONDS,
        }
    }

    /// Sets the tolerated clock skew, in seconds.
    #[must_use]
    pub fn with_skew(mut self, seconds: u64) -> Self {
        self.skew = seconds;
        self
    }

    /// Trusts the keys of a published JWKS (only P-256 keys with a `kid` are taken).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no usable key is in the set.
    pub fn from_jwks(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        jwks: &serde_json::Value,
    ) -> Result<Self> {
        let keys: Vec<_> = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(jwk_key)
            .collect();
        if keys.is_empty() {
            return Err(Error::Config("the JWKS holds no P-256 key".to_owned()));
        }
        Ok(Self::new(issuer, audience, keys))
    }

    fn key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, key)| key)
    }
}

fn jwk_key(jwk: &serde_json::Value) -> Option<(String, VerifyingKey)> {
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return None;
    }
    let coordinate = |name: &str| B64URL.decode(jwk[name].as_str()?).ok();
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let point = p256::EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    let key = VerifyingKey::from_encoded_point(&point).ok()?;
    Some((jwk["kid"].as_str()?.to_owned(), key))
}

/// Verifies a certificate for an upload of `keys` with the device's `hmac_key`.
///
/// # Errors
///
/// [`Error::Certificate`] with the [`TokenRejection`] that applies; crypto failures say
/// nothing more.
pub fn verify_certificate(
    token: &str,
    keys: &[UploadKey],
    hmac_key: &HmacKey,
    trusted: &CertificateVerifier,
    now: SystemTime,
) -> Result<VerifiedCertificate> {
    let now = unix(now);
    let claims: CertificateClaims =
        jwt::verify(token, |kid| trusted.key(kid)).map_err(Error::Certificate)?;
    check_claims(&claims.iss, &claims.aud, &trusted.issuer, &trusted.audience)
        .map_err(Error::Certificate)?;
    let times = Times {
        iat: claims.iat,
        nbf: claims.nbf,
        exp: claims.exp,
    };
    times
        .check(now, trusted.skew, MAX_CERTIFICATE_LIFETIME)
        .map_err(Error::Certificate)?;

    let tekmac = TekMac::from_base64(&claims.tekmac)
        .map_err(|_| Error::Certificate(TokenRejection::Malformed))?;
    tekmac
        .verify(hmac_key, keys)
        .map_err(|_| Error::Certificate(TokenRejection::TekMac))?;
    Ok(VerifiedCertificate {
        test_type: claims.report_type,
        report_type: claims.report_type.report_type(),
        symptom_onset: claims.symptom_onset_interval.map(EnIntervalNumber::new),
        id: claims.jti,
        accepted_until: claims.exp.saturating_add(trusted.skew),
    })
}

/// Issuer and audience must match exactly.
pub(crate) fn check_claims(
    iss: &str,
    aud: &str,
    issuer: &str,
    audience: &str,
) -> Result<(), TokenRejection> {
    if iss != issuer {
        return Err(TokenRejection::Issuer);
    }
    if aud != audience {
        return Err(TokenRejection::Audience);
    }
    Ok(())
}

/// The time claims of a token.
pub(crate) struct Times {
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
}

impl Times {
    /// Valid at `now` give or take `skew`, and not granted for longer than `max_lifetime`.
    pub(crate) fn check(
        &self,
        now: u64,
        skew: u64,
        max_lifetime: u64,
    ) -> Result<(), TokenRejection> {
        if self.iat.max(self.nbf) > now.saturating_add(skew) {
            return Err(TokenRejection::NotYetValid);
        }
        if now >= self.exp.saturating_add(skew) {
            return Err(TokenRejection::Expired);
        }
        if self.exp.saturating_sub(self.iat) > max_lifetime || self.exp < self.iat {
            return Err(TokenRejection::Lifetime);
        }
        Ok(())
    }
}

/// Signs a certificate for `diagnosis` binding `tekmac`, valid for `lifetime` seconds.
pub(crate) fn sign_certificate(
    (kid, key): (&str, &SigningKey),
    issuer: &str,
    audience: &str,
    diagnosis: &Diagnosis,
    tekmac: TekMac,
    now: u64,
    lifetime: u64,
) -> String {
    let claims = CertificateClaims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        jti: random_id(),
        report_type: diagnosis.test_type,
        symptom_onset_interval: diagnosis.symptom_date.and_then(onset_interval),
        tekmac: tekmac.to_base64(),
    };
    jwt::sign(&claims, kid, key)
}

/// The interval number of the UTC midnight starting `date`.
pub fn onset_interval(date: Date) -> Option<u32> {
    let seconds = date.midnight_unix_seconds()?;
    EnIntervalNumber::from_unix_seconds(seconds)
        .ok()
        .map(EnIntervalNumber::value)
}

/// 16 random bytes in base64url: a `jti`.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Diagnosis;
    use crate::signing::key_id;
    use hmac::{Hmac, Mac};
    use serde_json::json;
    use sha2::Sha256;
    use varsel_protocol::keys::TemporaryExposureKey;

    const NOW: u64 = 1_800_000_000;

    struct Fixture {
        key: SigningKey,
        kid: String,
        keys: Vec<UploadKey>,
        secret: HmacKey,
        trusted: CertificateVerifier,
    }

    fn fixture() -> Fixture {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let kid = key_id(key.verifying_key());
        let keys = vec![UploadKey {
            key: TemporaryExposureKey::generate(&mut rand_core::OsRng).into_diagnosis_key(),
            rolling_start: EnIntervalNumber::new(2_900_000),
            rolling_period: 144,
            transmission_risk: 2,
        }];
        let trusted = CertificateVerifier::new("iss", "aud", [(kid.clone(), *key.verifying_key())]);
        let secret = HmacKey::generate(&mut rand_core::OsRng);
        Fixture {
            key,
            kid,
            keys,
            secret,
            trusted,
        }
    }

    impl Fixture {
        fn claims(&self) -> CertificateClaims {
            CertificateClaims {
                iss: "iss".into(),
                aud: "aud".into(),
                iat: NOW,
                nbf: NOW,
                exp: NOW + 900,
                jti: random_id(),
                report_type: TestType::Confirmed,
                symptom_onset_interval: Some(2_900_000),
                tekmac: TekMac::compute(&self.secret, &self.keys).to_base64(),
            }
        }

        fn signed(&self, claims: &CertificateClaims) -> String {
            jwt::sign(claims, &self.kid, &self.key)
        }

        fn check(&self, token: &str, at: u64) -> Result<VerifiedCertificate> {
            let now = UNIX_EPOCH + std::time::Duration::from_secs(at);
            verify_certificate(token, &self.keys, &self.secret, &self.trusted, now)
        }

        fn rejection(&self, token: &str, at: u64) -> TokenRejection {
            match self.check(token, at) {
                Err(Error::Certificate(rejection)) => rejection,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_good_certificate_passes() {
        let f = fixture();
        let verified = f.check(&f.signed(&f.claims()), NOW + 10).unwrap();
        assert_eq!(verified.report_type, ReportType::ConfirmedTest);
        assert_eq!(
            verified.symptom_onset,
            Some(EnIntervalNumber::new(2_900_000))
        );
        let diagnosis = Diagnosis {
            test_type: TestType::Likely,
            symptom_date: None,
            test_date: None,
        };
        let tekmac = TekMac::compute(&f.secret, &f.keys);
        let signed = sign_certificate((&f.kid, &f.key), "iss", "aud", &diagnosis, tekmac, NOW, 900);
        assert_eq!(
            f.check(&signed, NOW).unwrap().report_type,
            ReportType::ConfirmedClinicalDiagnosis
        );
    }

    #[test]
    fn forged_algorithms_are_refused() {
        let f = fixture();
        let claims = f.claims();
        let none = jwt::assemble_unchecked(&json!({ "alg": "none", "kid": f.kid }), &claims, b"");
        assert_eq!(f.rejection(&none, NOW), TokenRejection::Algorithm);

        // HS256 keyed with the public key: the classic algorithm-confusion forgery.
        let header = json!({ "alg": "HS256", "kid": f.kid, "typ": "JWT" });
        let unsigned = jwt::assemble_unchecked(&header, &claims, b"");
        let signing_input = unsigned.trim_end_matches('.');
        let public = f.key.verifying_key().to_encoded_point(false);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(public.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        let tag = mac.finalize().into_bytes();
        let hs256 = jwt::assemble_unchecked(&header, &claims, &tag);
        assert_eq!(f.rejection(&hs256, NOW), TokenRejection::Algorithm);
    }

    #[test]
    fn unknown_key_and_bad_signature_are_refused() {
        let f = fixture();
        let stranger = SigningKey::random(&mut rand_core::OsRng);
        let unknown = jwt::sign(&f.claims(), "someone-else", &stranger);
        assert_eq!(f.rejection(&unknown, NOW), TokenRejection::UnknownKey);
        let impostor = jwt::sign(&f.claims(), &f.kid, &stranger);
        assert_eq!(f.rejection(&impostor, NOW), TokenRejection::Signature);
        assert_eq!(f.rejection("a.b", NOW), TokenRejection::Malformed);
    }

    #[test]
    fn issuer_audience_and_times_are_checked() {
        let f = fixture();
        let with = |change: fn(&mut CertificateClaims)| {
            let mut claims = f.claims();
            change(&mut claims);
            f.signed(&claims)
        };
        assert_eq!(
            f.rejection(&with(|c| c.iss = "evil".into()), NOW),
            TokenRejection::Issuer
        );
        assert_eq!(
            f.rejection(&with(|c| c.aud = "other".into()), NOW),
            TokenRejection::Audience
        );
        let good = f.signed(&f.claims());
        assert_eq!(f.rejection(&good, NOW - 61), TokenRejection::NotYetValid);
        assert!(f.check(&good, NOW - 60).is_ok());
        assert!(f.check(&good, NOW + 900 + 59).is_ok());
        assert_eq!(f.rejection(&good, NOW + 900 + 60), TokenRejection::Expired);
        let long = with(|c| c.exp = c.iat + MAX_CERTIFICATE_LIFETIME + 1);
        assert_eq!(f.rejection(&long, NOW), TokenRejection::Lifetime);
        let backwards = with(|c| c.nbf = NOW + 3_600);
        assert_eq!(f.rejection(&backwards, NOW), TokenRejection::NotYetValid);
    }

    #[test]
    fn tekmac_must_cover_the_uploaded_keys() {
        let f = fixture();
        let token = f.signed(&f.claims());
        let other_secret = HmacKey::generate(&mut rand_core::OsRng);
        let now = UNIX_EPOCH + std::time::Duration::from_secs(NOW);
        let wrong_secret = verify_certificate(&token, &f.keys, &other_secret, &f.trusted, now);
        assert!(matches!(
            wrong_secret,
            Err(Error::Certificate(TokenRejection::TekMac))
        ));
        let mut changed = f.keys.clone();
        changed[0].transmission_risk = 3;
        let wrong_keys = verify_certificate(&token, &changed, &f.secret, &f.trusted, now);
        assert!(matches!(
            wrong_keys,
            Err(Error::Certificate(TokenRejection::TekMac))
        ));
    }

    #[test]
    fn jwks_round_trip_trusts_the_same_keys() {
        let f = fixture();
        let jwks = json!({ "keys": [crate::signing::jwk(&f.kid, f.key.verifying_key())] });
        let trusted = CertificateVerifier::from_jwks("iss", "aud", &jwks).unwrap();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(NOW);
        let token = f.signed(&f.claims());
        assert!(verify_certificate(&token, &f.keys, &f.secret, &trusted, now).is_ok());
        assert!(CertificateVerifier::from_jwks("iss", "aud", &json!({ "keys": [] })).is_err());
    }
}
