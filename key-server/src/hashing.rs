//! Keyed hashes: how the server stores codes, token ids, idempotency keys and API keys without
//! keeping them in clear. HMAC-SHA256 under a server secret, with a domain label per use.

use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// The name of the stored secret in its tree.
const SECRET_NAME: &[u8] = b"hash-key";

/// The secret under which stored values are hashed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HashKey([u8; 32]);

impl HashKey {
    /// Loads the secret from `tree`, creating it on first use.
    ///
    /// # Errors
    ///
    /// Storage failures, or [`Error::Corrupt`] for a stored secret of the wrong size.
    pub fn load_or_create(tree: &sled::Tree) -> Result<Self> {
        let mut fresh = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut fresh);
        let stored = match tree.compare_and_swap(SECRET_NAME, None::<&[u8]>, Some(&fresh[..]))? {
            Ok(()) => fresh,
            Err(existing) => {
                let current = existing.current.ok_or(Error::Corrupt("hash key"))?;
                <[u8; 32]>::try_from(current.as_ref()).map_err(|_| Error::Corrupt("hash key"))?
            }
        };
        fresh.zeroize();
        tree.flush()?;
        Ok(Self(stored))
    }

    /// A key for tests and for in-memory uses.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The keyed hash of `value` for the use named `domain`.
    pub fn hash(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts 32-byte keys"));
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

impl core::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_key_and_domain_and_persist() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("secrets").unwrap();
        let key = HashKey::load_or_create(&tree).unwrap();
        let again = HashKey::load_or_create(&tree).unwrap();
        assert_eq!(
            key.hash("code", b"12345678"),
            again.hash("code", b"12345678")
        );
        assert_ne!(key.hash("code", b"12345678"), key.hash("jti", b"12345678"));
        assert_ne!(key.hash("code", b"1"), HashKey::random().hash("code", b"1"));
    }
}
