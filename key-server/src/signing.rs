//! The verification side's ECDSA P-256 signing keys: created on first start, persisted in their
//! own sled tree, rotated by the operator, and published as PEM and as a JWKS.
//!
//! The newest key signs; every key still in the ring verifies, so rotation never breaks tokens
//! or certificates already handed out. Retiring a key removes it from the ring and the JWKS.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One key of the ring.
pub struct RingKey {
    kid: String,
    created: u64,
    serial: u64,
    secret: SigningKey,
}

impl RingKey {
    /// The key's identifier, as put in the `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the key was created, in Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The secret key, for signing.
    pub fn signing_key(&self) -> &SigningKey {
        &self.secret
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        *self.secret.verifying_key()
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        public_pem(&self.verifying_key())
    }
}

impl core::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A public key as SubjectPublicKeyInfo PEM.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .unwrap_or_else(|_| unreachable!("a P-256 public key always encodes"))
}

/// How a key is stored.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    created: u64,
    /// Creation order, so keys made within the same second still have a newest.
    #[serde(default)]
    serial: u64,
    secret: String,
}

/// The signing keys, newest last.
#[derive(Debug)]
pub struct KeyRing {
    tree: sled::Tree,
    keys: Vec<RingKey>,
}

impl KeyRing {
    /// Loads the ring from `tree`, creating a first key at `now` when it is empty.
    ///
    /// # Errors
    ///
    /// Storage failures, or [`Error::Corrupt`] for a stored key that does not decode.
    pub fn open(tree: sled::Tree, now: u64) -> Result<Self> {
        let mut keys = Vec::new();
        for entry in tree.iter() {
            let (kid, value) = entry?;
            keys.push(decode_key(&kid, &value)?);
        }
        keys.sort_by_key(|key| (key.serial, key.created));
        let mut ring = Self { tree, keys };
        if ring.keys.is_empty() {
            ring.rotate(now)?;
        }
        Ok(ring)
    }

    /// The key that signs.
    pub fn active(&self) -> &RingKey {
        self.keys
            .last()
            .unwrap_or_else(|| unreachable!("a ring is never empty once opened"))
    }

    /// All keys, oldest first.
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The verifying key named `kid`, if it is in the ring.
    pub fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys
            .iter()
            .find(|key| key.kid == kid)
            .map(RingKey::verifying_key)
    }

    /// Creates a new signing key at `now`; older keys keep verifying. Returns the new `kid`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn rotate(&mut self, now: u64) -> Result<String> {
        let secret = SigningKey::random(&mut rand_core::OsRng);
        let kid = key_id(secret.verifying_key());
        let serial = self
            .keys
            .iter()
            .map(|key| key.serial + 1)
            .max()
            .unwrap_or(0);
        let stored = StoredKey {
            created: now,
            serial,
            secret: B64.encode(secret.to_bytes()),
        };
        let encoded =
            Zeroizing::new(serde_json::to_vec(&stored).map_err(|_| Error::Corrupt("key"))?);
        self.tree.insert(kid.as_bytes(), encoded.as_slice())?;
        self.tree.flush()?;
        drop(Zeroizing::new(stored.secret));
        self.keys.push(RingKey {
            kid: kid.clone(),
            created: now,
            serial,
            secret,
        });
        Ok(kid)
    }

    /// Removes a key that no longer signs, so it stops verifying.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for the active key or an unknown `kid`; storage failures.
    pub fn retire(&mut self, kid: &str) -> Result<()> {
        if self.active().kid == kid {
            return Err(Error::InvalidField {
                field: "kid",
                reason: "the active key cannot retire",
            });
        }
        let position =
            self.keys
                .iter()
                .position(|key| key.kid == kid)
                .ok_or(Error::InvalidField {
                    field: "kid",
                    reason: "no such key in the ring",
                })?;
        self.tree.remove(kid.as_bytes())?;
        self.tree.flush()?;
        self.keys.remove(position);
        Ok(())
    }

    /// The public keys as a JSON Web Key Set (RFC 7517).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|key| jwk(key.kid(), &key.verifying_key()))
            .collect();
        json!({ "keys": keys })
    }
}

/// One public key as a JWK.
pub fn jwk(kid: &str, key: &VerifyingKey) -> Value {
    let point = key.to_encoded_point(false);
    let coordinate = |bytes: Option<&p256::FieldBytes>| bytes.map(|b| B64URL.encode(b));
    json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
        "x": coordinate(point.x()),
        "y": coordinate(point.y()),
    })
}

/// A key's identifier: the first 8 bytes of the SHA-256 of its uncompressed point, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.to_encoded_point(false).as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn decode_key(kid: &[u8], value: &[u8]) -> Result<RingKey> {
    let kid = String::from_utf8(kid.to_vec()).map_err(|_| Error::Corrupt("key id"))?;
    let stored: StoredKey = serde_json::from_slice(value).map_err(|_| Error::Corrupt("key"))?;
    let bytes = Zeroizing::new(
        B64.decode(&stored.secret)
            .map_err(|_| Error::Corrupt("key"))?,
    );
    drop(Zeroizing::new(stored.secret));
    let secret = SigningKey::from_slice(&bytes).map_err(|_| Error::Corrupt("key"))?;
    Ok(RingKey {
        kid,
        created: stored.created,
        serial: stored.serial,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_persists_rotates_and_retires() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("keys").unwrap();
        let mut ring = KeyRing::open(tree.clone(), 10).unwrap();
        let first = ring.active().kid().to_owned();
        let second = ring.rotate(10).unwrap();
        assert_ne!(first, second);

        // Created in the same second, the rotated key still counts as the newest after a reload.
        let mut reopened = KeyRing::open(tree, 30).unwrap();
        assert_eq!(reopened.keys().len(), 2);
        assert_eq!(reopened.active().kid(), second);
        assert!(reopened.retire(&second).is_err());
        reopened.retire(&first).unwrap();
        assert!(reopened.verifying_key(&first).is_none());
        assert_eq!(reopened.jwks()["keys"].as_array().unwrap().len(), 1);
        assert!(
            reopened
                .active()
                .public_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }
}
