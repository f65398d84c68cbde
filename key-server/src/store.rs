//! The verification side's sled database and the names of its trees. The key side keeps its own
//! database, so the two can run in separate processes on separate disks; both open and dump
//! theirs through the helpers here.

use std::path::Path;

use crate::authority::Authorities;
use crate::codes::{CodeTrees, Codes};
use crate::error::{Error, Result};
use crate::hashing::HashKey;
use crate::signing::KeyRing;

/// The verification database.
#[derive(Clone, Debug)]
pub struct VerificationStore {
    db: sled::Db,
}

impl VerificationStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    ///
    /// Storage failures, including another process holding the database.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self { db: open_db(dir)? })
    }

    /// A database that lives in memory and a temporary file, for tests and benchmarks.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn temporary() -> Result<Self> {
        Ok(Self {
            db: sled::Config::new().temporary(true).open()?,
        })
    }

    /// The signing keys, created at `now` when there are none.
    ///
    /// # Errors
    ///
    /// Storage failures or corrupt keys.
    pub fn key_ring(&self, now: u64) -> Result<KeyRing> {
        KeyRing::open(self.db.open_tree("signing_keys")?, now)
    }

    /// The secret under which codes, token ids and API keys are hashed.
    ///
    /// # Errors
    ///
    /// Storage failures or a corrupt secret.
    pub fn hash_key(&self) -> Result<HashKey> {
        HashKey::load_or_create(&self.db.open_tree("secrets")?)
    }

    /// The authority accounts.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn authorities(&self, hash: &HashKey) -> Result<Authorities> {
        Ok(Authorities::new(
            self.db.open_tree("authorities")?,
            self.db.open_tree("api_keys")?,
            hash.clone(),
        ))
    }

    /// The code trees.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn codes(&self, hash: &HashKey) -> Result<Codes> {
        let trees = CodeTrees {
            records: self.db.open_tree("code_records")?,
            hashes: self.db.open_tree("code_hashes")?,
            claimed: self.db.open_tree("code_claims")?,
            uuids: self.db.open_tree("issue_uuids")?,
            stats: self.db.open_tree("daily_counts")?,
        };
        Ok(Codes::new(trees, hash.clone()))
    }

    /// Hashes of the `jti` of tokens not yet exchanged, with their expiry.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn tokens(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree("tokens")?)
    }

    /// Every tree's name and contents, for tests that check nothing is stored in clear.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        dump_db(&self.db)
    }
}

/// Opens (or creates) a sled database in `dir`, creating the directory first.
///
/// # Errors
///
/// Storage failures, including another process holding the database.
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db> {
    std::fs::create_dir_all(dir)?;
    Ok(sled::Config::new().path(dir).open()?)
}

/// Every tree's name and every entry in it, as `(tree, key, value)`; entries that cannot be
/// read are left out.
pub(crate) fn dump_db(db: &sled::Db) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for name in db.tree_names() {
        let Ok(tree) = db.open_tree(&name) else {
            continue;
        };
        for (key, value) in tree.iter().flatten() {
            all.push((name.to_vec(), key.to_vec(), value.to_vec()));
        }
    }
    all
}

/// Waits until every change to `tree`'s database is on disk, without blocking the runtime.
///
/// sled's own `flush_async` can deadlock when several flushes are polled at once (sled issues
/// 1241 and 1308), so the blocking `flush` runs on tokio's blocking pool instead.
///
/// # Errors
///
/// Storage failures.
pub async fn flush(tree: &sled::Tree) -> Result<()> {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || tree.flush())
        .await
        .map_err(|_| Error::Io(std::io::Error::other("the flush task failed")))??;
    Ok(())
}
