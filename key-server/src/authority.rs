//! Health-authority accounts. Each has a name, an optional own daily quota, and one API key
//! that is stored only as a keyed hash; revoking an account keeps its record (for the audit of
//! who issued what) but stops its key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hashing::HashKey;

/// The prefix of every API key, so leaked keys are easy to recognise.
pub const API_KEY_PREFIX: &str = "vks_";
/// Longest API key header accepted, in characters.
const MAX_API_KEY_LEN: usize = 128;

/// An authority account as stored (no key in clear).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Authority {
    /// The account's unique name.
    pub name: String,
    /// Codes it may issue per UTC day; `None` uses the configured default.
    pub daily_quota: Option<u64>,
    /// When it was created, in Unix seconds.
    pub created: u64,
    /// When it was revoked, in Unix seconds.
    pub revoked: Option<u64>,
}

/// The accounts, over two trees: names to records, API-key hashes to names.
#[derive(Clone, Debug)]
pub struct Authorities {
    records: sled::Tree,
    api_keys: sled::Tree,
    hash: HashKey,
}

impl Authorities {
    /// Wraps the account trees.
    pub fn new(records: sled::Tree, api_keys: sled::Tree, hash: HashKey) -> Self {
        Self {
            records,
            api_keys,
            hash,
        }
    }

    /// Creates an account and returns its API key, which is shown once and never stored.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a bad name, [`Error::AuthorityExists`], storage failures.
    pub fn add(&self, name: &str, daily_quota: Option<u64>, now: u64) -> Result<Zeroizing<String>> {
        check_name(name)?;
        let authority = Authority {
            name: name.to_owned(),
            daily_quota,
            created: now,
            revoked: None,
        };
        let record = serde_json::to_vec(&authority).map_err(|_| Error::Corrupt("authority"))?;
        if self
            .records
            .compare_and_swap(name.as_bytes(), None::<&[u8]>, Some(record))?
            .is_err()
        {
            return Err(Error::AuthorityExists(name.to_owned()));
        }

        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(secret.as_mut());
        let api_key = Zeroizing::new(format!("{API_KEY_PREFIX}{}", B64URL.encode(*secret)));
        self.api_keys
            .insert(self.key_hash(&api_key), name.as_bytes())?;
        self.records.flush()?;
        self.api_keys.flush()?;
        Ok(api_key)
    }

    /// Every account, by name.
    ///
    /// # Errors
    ///
    /// Storage failures or a record that does not decode.
    pub fn list(&self) -> Result<Vec<Authority>> {
        self.records
            .iter()
            .values()
            .map(|value| decode(&value?))
            .collect()
    }

    /// Revokes the account `name` at `now`; its API key stops working at once.
    ///
    /// # Errors
    ///
    /// [`Error::AuthorityNotFound`], storage failures.
    pub fn revoke(&self, name: &str, now: u64) -> Result<()> {
        let mut authority = self
            .get(name)?
            .ok_or_else(|| Error::AuthorityNotFound(name.to_owned()))?;
        authority.revoked.get_or_insert(now);
        let record = serde_json::to_vec(&authority).map_err(|_| Error::Corrupt("authority"))?;
        self.records.insert(name.as_bytes(), record)?;
        let stale: Vec<_> = self
            .api_keys
            .iter()
            .filter_map(|entry| entry.ok())
            .filter(|(_, owner)| owner.as_ref() == name.as_bytes())
            .map(|(hash, _)| hash)
            .collect();
        for hash in stale {
            self.api_keys.remove(hash)?;
        }
        self.records.flush()?;
        self.api_keys.flush()?;
        Ok(())
    }

    /// The live account whose API key is `api_key`.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] for a missing, unknown or revoked key; storage failures.
    pub fn authenticate(&self, api_key: Option<&str>) -> Result<Authority> {
        let api_key = api_key
            .filter(|key| key.len() <= MAX_API_KEY_LEN && key.starts_with(API_KEY_PREFIX))
            .ok_or(Error::Unauthorized)?;
        let name = self
            .api_keys
            .get(self.key_hash(api_key))?
            .ok_or(Error::Unauthorized)?;
        let name = std::str::from_utf8(&name).map_err(|_| Error::Corrupt("authority name"))?;
        match self.get(name)? {
            Some(authority) if authority.revoked.is_none() => Ok(authority),
            _ => Err(Error::Unauthorized),
        }
    }

    /// The account `name`, if any.
    ///
    /// # Errors
    ///
    /// Storage failures or a record that does not decode.
    pub fn get(&self, name: &str) -> Result<Option<Authority>> {
        self.records
            .get(name.as_bytes())?
            .map(|value| decode(&value))
            .transpose()
    }

    fn key_hash(&self, api_key: &str) -> [u8; 32] {
        self.hash.hash("api-key", api_key.as_bytes())
    }
}

fn decode(value: &[u8]) -> Result<Authority> {
    serde_json::from_slice(value).map_err(|_| Error::Corrupt("authority"))
}

/// Names are 1-64 characters of letters, digits, space, `.`, `_` and `-`.
fn check_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(Error::InvalidField {
            field: "name",
            reason: "1-64 letters, digits, spaces, '.', '_' or '-'",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorities() -> Authorities {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Authorities::new(
            db.open_tree("a").unwrap(),
            db.open_tree("k").unwrap(),
            HashKey::random(),
        )
    }

    #[test]
    fn add_authenticate_revoke() {
        let authorities = authorities();
        let key = authorities.add("Lab One", Some(3), 100).unwrap();
        assert!(matches!(
            authorities.add("Lab One", None, 101),
            Err(Error::AuthorityExists(_))
        ));
        assert_eq!(
            authorities.authenticate(Some(&key)).unwrap().daily_quota,
            Some(3)
        );
        assert!(authorities.authenticate(Some("vks_wrong")).is_err());
        assert!(authorities.authenticate(None).is_err());

        authorities.revoke("Lab One", 200).unwrap();
        assert!(matches!(
            authorities.authenticate(Some(&key)),
            Err(Error::Unauthorized)
        ));
        assert_eq!(authorities.list().unwrap()[0].revoked, Some(200));
        assert!(authorities.revoke("Nobody", 1).is_err());
    }

    #[test]
    fn stored_trees_never_hold_the_key() {
        let authorities = authorities();
        let key = authorities.add("lab", None, 1).unwrap();
        let needle = key.as_bytes();
        for tree in [&authorities.records, &authorities.api_keys] {
            for entry in tree.iter() {
                let (k, v) = entry.unwrap();
                assert!(!k.windows(needle.len()).any(|w| w == needle));
                assert!(!v.windows(needle.len()).any(|w| w == needle));
            }
        }
        assert!(authorities.add("bad/name", None, 1).is_err());
    }
}
