//! Revision tokens (`spec/key-server.md`, "Revisions"): what the first upload of a set of keys
//! returns, encrypted under a key only this server holds, so that only the device that made
//! the upload can later change those keys' report type.
//!
//! The plaintext lists each key with its rolling start and the report type it was stored with.
//! AES-256-GCM with a random nonce keeps it confidential and unforgeable; the token carries
//! nothing about the device.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand_core::RngCore;
use varsel_protocol::interval::EnIntervalNumber;
use varsel_protocol::keys::DiagnosisKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Name of the secret in the key side's `secrets` tree.
const SECRET_NAME: &[u8] = b"revision_token_key";
/// Format version of the plaintext.
const VERSION: u8 = 1;
/// Bytes per key in the plaintext: key, then rolling start.
const ENTRY_LEN: usize = 20;
/// Most keys a token lists; matches the publish limit with room to spare.
const MAX_ENTRIES: usize = 64;
/// Longest token text accepted.
pub const MAX_TOKEN_LEN: usize = 4 * (1 + 12 + 16 + 2 + MAX_ENTRIES * ENTRY_LEN) / 3 + 4;

/// The key that seals revision tokens.
#[derive(Clone)]
pub struct RevisionKey(Zeroizing<[u8; 32]>);

impl core::fmt::Debug for RevisionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RevisionKey(<redacted>)")
    }
}

/// What a token says: these keys were uploaded together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionClaims {
    /// The keys, with their rolling starts.
    pub keys: Vec<(DiagnosisKey, EnIntervalNumber)>,
}

impl RevisionClaims {
    /// Whether the token covers `key` starting at `start`.
    pub fn covers(&self, key: &DiagnosisKey, start: EnIntervalNumber) -> bool {
        self.keys.iter().any(|(k, s)| k == key && *s == start)
    }
}

impl RevisionKey {
    /// Loads the key from `secrets`, creating it on first use.
    ///
    /// # Errors
    ///
    /// Storage failures and a corrupt stored key.
    pub fn load_or_create(secrets: &sled::Tree) -> Result<Self> {
        if let Some(bytes) = secrets.get(SECRET_NAME)? {
            let key: [u8; 32] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| Error::Corrupt("revision key"))?;
            return Ok(Self(Zeroizing::new(key)));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(key.as_mut());
        secrets.insert(SECRET_NAME, key.as_slice())?;
        secrets.flush()?;
        Ok(Self(key))
    }

    /// A key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Seals `claims` into a token.
    pub fn seal(&self, claims: &RevisionClaims) -> String {
        let mut plaintext = Zeroizing::new(Vec::with_capacity(2 + claims.keys.len() * ENTRY_LEN));
        plaintext.push(VERSION);
        plaintext.push(claims.keys.len().min(MAX_ENTRIES) as u8);
        for (key, start) in claims.keys.iter().take(MAX_ENTRIES) {
            plaintext.extend_from_slice(key.as_bytes());
            plaintext.extend_from_slice(&start.value().to_be_bytes());
        }
        let mut nonce = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_slice())
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts any short message"));
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        B64.encode(token)
    }

    /// Opens a token this server sealed.
    ///
    /// # Errors
    ///
    /// [`Error::RevisionToken`] for anything else, without saying why.
    pub fn open(&self, token: &str) -> Result<RevisionClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::RevisionToken);
        }
        let bytes = B64.decode(token).map_err(|_| Error::RevisionToken)?;
        let (nonce, sealed) = bytes.split_at_checked(12).ok_or(Error::RevisionToken)?;
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(Nonce::from_slice(nonce), sealed)
                .map_err(|_| Error::RevisionToken)?,
        );
        parse_plaintext(&plaintext).ok_or(Error::RevisionToken)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("the key is 32 bytes"))
    }
}

fn parse_plaintext(plaintext: &[u8]) -> Option<RevisionClaims> {
    let (&[version, count], entries) = plaintext.split_first_chunk::<2>()?;
    if version != VERSION || entries.len() != usize::from(count) * ENTRY_LEN {
        return None;
    }
    let keys = entries
        .chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let key = DiagnosisKey::from_slice(&entry[..16]).ok()?;
            let start = u32::from_be_bytes(entry[16..].try_into().ok()?);
            Some((key, EnIntervalNumber::new(start)))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(RevisionClaims { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> RevisionClaims {
        RevisionClaims {
            keys: vec![
                (
                    DiagnosisKey::from_bytes([1; 16]),
                    EnIntervalNumber::new(100),
                ),
                (
                    DiagnosisKey::from_bytes([2; 16]),
                    EnIntervalNumber::new(244),
                ),
            ],
        }
    }

    #[test]
    fn tokens_round_trip_and_cover_their_keys() {
        let key = RevisionKey::from_bytes([7; 32]);
        let token = key.seal(&claims());
        let opened = key.open(&token).unwrap();
        assert_eq!(opened, claims());
        assert!(opened.covers(
            &DiagnosisKey::from_bytes([2; 16]),
            EnIntervalNumber::new(244)
        ));
        assert!(!opened.covers(
            &DiagnosisKey::from_bytes([2; 16]),
            EnIntervalNumber::new(100)
        ));
        assert!(token.len() <= MAX_TOKEN_LEN);
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let key = RevisionKey::from_bytes([7; 32]);
        let token = key.seal(&claims());
        let other = RevisionKey::from_bytes([8; 32]);
        assert!(matches!(other.open(&token), Err(Error::RevisionToken)));

        let mut bytes = B64.decode(&token).unwrap();
        bytes[20] ^= 1;
        assert!(matches!(
            key.open(&B64.encode(bytes)),
            Err(Error::RevisionToken)
        ));
        assert!(matches!(key.open("not base64"), Err(Error::RevisionToken)));
        assert!(matches!(key.open(""), Err(Error::RevisionToken)));
        assert!(matches!(
            key.open(&"A".repeat(MAX_TOKEN_LEN + 4)),
            Err(Error::RevisionToken)
        ));
    }
}
