//! The upload HMAC, "tekmac", that binds a verification certificate to exactly the keys
//! uploaded with it (`spec/protocol.md` §5).
//!
//! The device picks a secret [`HmacKey`], computes the HMAC over its keys and sends only the HMAC
//! to the verification server, which signs it into the certificate. When the device uploads its
//! keys with the certificate and the secret, the key server recomputes the HMAC and compares.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;
use crate::interval::EnIntervalNumber;
use crate::keys::DiagnosisKey;

/// Shortest accepted HMAC secret, in bytes.
pub const MIN_HMAC_KEY_LEN: usize = 16;
/// Longest accepted HMAC secret, in bytes.
pub const MAX_HMAC_KEY_LEN: usize = 128;
/// Length of a tekmac, in bytes.
pub const TEKMAC_LEN: usize = 32;
/// Most keys one tekmac may cover; far above what any upload carries.
pub const MAX_TEKMAC_KEYS: usize = 1_000;

/// The device's secret for one upload: 16 to 128 bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// Wraps secret bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`] when shorter than 16 or longer than 128 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if !(MIN_HMAC_KEY_LEN..=MAX_HMAC_KEY_LEN).contains(&bytes.len()) {
            return Err(Error::InvalidLength {
                what: "HMAC key",
                expected: MIN_HMAC_KEY_LEN,
                actual: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// Generates a fresh 32-byte secret.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut bytes = vec![0; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the standard base64 form used in upload requests.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBase64`] or [`Error::InvalidLength`].
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_HMAC_KEY_LEN * 2 {
            return Err(Error::InvalidBase64 { what: "HMAC key" });
        }
        let bytes = BASE64
            .decode(text)
            .map_err(|_| Error::InvalidBase64 { what: "HMAC key" })?;
        Self::new(bytes)
    }

    /// The standard base64 form, for the upload request. The result is secret.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }
}

impl core::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// One key as the tekmac covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadKey {
    /// The key itself.
    pub key: DiagnosisKey,
    /// Its rolling start interval.
    pub rolling_start: EnIntervalNumber,
    /// Its rolling period, in intervals.
    pub rolling_period: u32,
    /// Its transmission risk level, 0-8.
    pub transmission_risk: u8,
}

/// An HMAC-SHA256 tag over a set of keys.
#[derive(Clone, Copy)]
pub struct TekMac([u8; TEKMAC_LEN]);

impl TekMac {
    /// Computes the four-part tekmac of `keys`, the form Varsel devices send (§5.1).
    pub fn compute(secret: &HmacKey, keys: &[UploadKey]) -> Self {
        Self::over(secret, &cleartext(keys, Form::FourPart))
    }

    /// Computes the older three-part tekmac, without transmission risks (§5.1).
    pub fn compute_three_part(secret: &HmacKey, keys: &[UploadKey]) -> Self {
        Self::over(secret, &cleartext(keys, Form::ThreePart))
    }

    /// Checks, in constant time, that this tekmac covers exactly `keys` under `secret` (§5.2).
    ///
    /// The four-part form always counts; the three-part form counts only when every
    /// transmission risk is 0, since it says nothing about them.
    ///
    /// # Errors
    ///
    /// [`Error::TekMacMismatch`], which says nothing about why, and [`Error::TooManyKeys`].
    pub fn verify(&self, secret: &HmacKey, keys: &[UploadKey]) -> Result<(), Error> {
        if keys.len() > MAX_TEKMAC_KEYS {
            return Err(Error::TooManyKeys {
                limit: MAX_TEKMAC_KEYS,
            });
        }
        let four_part = Self::compute(secret, keys).0.ct_eq(&self.0);
        let three_part = Self::compute_three_part(secret, keys).0.ct_eq(&self.0);
        let all_risks_zero =
            subtle::Choice::from(u8::from(keys.iter().all(|key| key.transmission_risk == 0)));
        if bool::from(four_part | (three_part & all_risks_zero)) {
            Ok(())
        } else {
            Err(Error::TekMacMismatch)
        }
    }

    /// Wraps a raw 32-byte tag.
    pub const fn from_bytes(bytes: [u8; TEKMAC_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw tag.
    pub const fn to_bytes(self) -> [u8; TEKMAC_LEN] {
        self.0
    }

    /// Parses the standard base64 form of a 32-byte tag (§5.1).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBase64`] or [`Error::InvalidLength`].
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        if text.len() > 64 {
            return Err(Error::InvalidBase64 { what: "tekmac" });
        }
        let bytes = BASE64
            .decode(text)
            .map_err(|_| Error::InvalidBase64 { what: "tekmac" })?;
        crate::keys::fixed_bytes("tekmac", &bytes).map(Self)
    }

    /// The standard base64 form, as carried in certificates.
    pub fn to_base64(self) -> String {
        BASE64.encode(self.0)
    }

    fn over(secret: &HmacKey, cleartext: &str) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(cleartext.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }
}

impl core::fmt::Debug for TekMac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TekMac(<redacted>)")
    }
}

impl PartialEq for TekMac {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TekMac {}

/// Which segment form the cleartext uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    FourPart,
    ThreePart,
}

/// The text the tekmac is computed over (§5.1): segments sorted by their base64 key, joined by
/// commas.
fn cleartext(keys: &[UploadKey], form: Form) -> String {
    let mut segments: Vec<String> = keys
        .iter()
        .map(|key| {
            let mut segment = format!(
                "{}.{}.{}",
                BASE64.encode(key.key.as_bytes()),
                key.rolling_start,
                key.rolling_period
            );
            if form == Form::FourPart {
                segment.push('.');
                segment.push_str(&key.transmission_risk.to_string());
            }
            segment
        })
        .collect();
    segments.sort_unstable();
    segments.join(",")
}

/// The four-part cleartext of `keys`, for tests and diagnostics.
pub fn four_part_cleartext(keys: &[UploadKey]) -> String {
    cleartext(keys, Form::FourPart)
}

/// The three-part cleartext of `keys`, for tests and diagnostics.
pub fn three_part_cleartext(keys: &[UploadKey]) -> String {
    cleartext(keys, Form::ThreePart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_rejected() {
        assert!(HmacKey::new(vec![0; 15]).is_err());
        assert!(HmacKey::new(vec![0; 16]).is_ok());
        assert!(HmacKey::new(vec![0; 129]).is_err());
    }

    #[test]
    fn tekmac_base64_needs_32_bytes() {
        assert!(TekMac::from_base64(&BASE64.encode([0; 31])).is_err());
        assert!(TekMac::from_base64("not base64!").is_err());
        let tag = TekMac::from_base64(&BASE64.encode([9; 32])).unwrap();
        assert_eq!(tag.to_bytes(), [9; 32]);
    }
}
