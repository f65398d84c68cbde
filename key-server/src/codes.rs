//! Upload codes: issued to a health authority, typed in by the diagnosed person, claimed once.
//!
//! A code is stored only as its keyed hash, pointing at a record that holds the test type,
//! dates and expiry times. A short code (8 digits) and a long code (16 of `a-z0-9`) share one
//! record, so claiming either uses up both. Codes are unique while valid: a new code that hashes
//! to a live one is drawn again. Daily issued and used counts are kept per authority.

use rand::Rng;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use varsel_protocol::export::ReportType;
use zeroize::Zeroizing;

use crate::config::VerificationConfig;
use crate::date::{DAY_SECONDS, Date};
use crate::error::{Error, Result};
use crate::hashing::HashKey;

/// Digits in a short code.
pub const SHORT_CODE_LEN: usize = 8;
/// Characters in a long code.
pub const LONG_CODE_LEN: usize = 16;
/// The long code's alphabet.
const LONG_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// How many fresh codes are drawn before giving up on a collision-free one.
const DRAWS: usize = 16;

/// The kind of diagnosis a code stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestType {
    /// A positive laboratory test.
    Confirmed,
    /// A clinical diagnosis without a test.
    Likely,
    /// A negative test that withdraws an earlier likely report.
    Negative,
}

impl TestType {
    /// The export report type the keys of this diagnosis get.
    pub const fn report_type(self) -> ReportType {
        match self {
            Self::Confirmed => ReportType::ConfirmedTest,
            Self::Likely => ReportType::ConfirmedClinicalDiagnosis,
            Self::Negative => ReportType::Revoked,
        }
    }

    /// The name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Likely => "likely",
            Self::Negative => "negative",
        }
    }
}

/// What a code certifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// The kind of diagnosis.
    pub test_type: TestType,
    /// The day symptoms began, when known.
    pub symptom_date: Option<Date>,
    /// The day of the test, when known.
    pub test_date: Option<Date>,
}

/// A stored code record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeRecord {
    authority: String,
    diagnosis: Diagnosis,
    issued: u64,
    short_hash: [u8; 32],
    long_hash: [u8; 32],
    short_expires: u64,
    long_expires: u64,
}

/// A freshly issued pair of codes; the only place they exist in clear. Its `Debug` output
/// shows the expiry times only.
pub struct IssuedCodes {
    /// The 8-digit code, for reading out over the phone.
    pub short_code: Zeroizing<String>,
    /// The 16-character code, for links and messages.
    pub long_code: Zeroizing<String>,
    /// When the short code stops working, in Unix seconds.
    pub short_expires: u64,
    /// When the long code stops working, in Unix seconds.
    pub long_expires: u64,
}

impl core::fmt::Debug for IssuedCodes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IssuedCodes")
            .field("short_code", &"<redacted>")
            .field("long_code", &"<redacted>")
            .field("short_expires", &self.short_expires)
            .field("long_expires", &self.long_expires)
            .finish()
    }
}

/// Lifetimes of new codes, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// Of the short code.
    pub short: u64,
    /// Of the long code.
    pub long: u64,
}

impl Lifetimes {
    /// The lifetimes a verification configuration sets.
    pub fn from_config(config: &VerificationConfig) -> Self {
        Self {
            short: config.short_code_minutes * 60,
            long: config.long_code_hours * 3_600,
        }
    }

    /// When codes issued at `now` expire: the short one, then the long one.
    pub const fn expiries(self, now: u64) -> (u64, u64) {
        (now + self.short, now + self.long)
    }
}

/// Today's counts for one authority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DailyCounts {
    /// Codes issued.
    pub issued: u64,
    /// Codes claimed by a device.
    pub used: u64,
}

/// The code trees.
#[derive(Clone, Debug)]
pub struct Codes {
    records: sled::Tree,
    hashes: sled::Tree,
    claimed: sled::Tree,
    uuids: sled::Tree,
    stats: sled::Tree,
    hash: HashKey,
}

/// The trees [`Codes`] works on.
#[derive(Clone, Debug)]
pub struct CodeTrees {
    /// Record id to record.
    pub records: sled::Tree,
    /// Code hash to record id.
    pub hashes: sled::Tree,
    /// Record id to claim time, for claimed codes.
    pub claimed: sled::Tree,
    /// Idempotency-key hash to its expiry.
    pub uuids: sled::Tree,
    /// Daily counters.
    pub stats: sled::Tree,
}

impl Codes {
    /// Wraps the code trees.
    pub fn new(trees: CodeTrees, hash: HashKey) -> Self {
        let CodeTrees {
            records,
            hashes,
            claimed,
            uuids,
            stats,
        } = trees;
        Self {
            records,
            hashes,
            claimed,
            uuids,
            stats,
            hash,
        }
    }

    /// Issues a code pair for `authority`, charging its daily `quota`.
    ///
    /// A repeated `uuid` from the same authority, while the first code lives, is refused.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateUuid`], [`Error::QuotaExceeded`], storage failures.
    pub fn issue(
        &self,
        authority: &str,
        quota: u64,
        diagnosis: Diagnosis,
        uuid: Option<&str>,
        now: u64,
        lifetimes: Lifetimes,
    ) -> Result<IssuedCodes> {
        // The idempotency key is claimed first and released if the quota refuses.
        let uuid_hash = uuid.map(|uuid| self.uuid_hash(authority, uuid));
        if let Some(hash) = &uuid_hash {
            self.claim_uuid(hash, now, now + lifetimes.long)?;
        }
        if let Err(error) = self.charge(authority, quota, now) {
            if let Some(hash) = &uuid_hash {
                self.uuids.remove(hash)?;
            }
            return Err(error);
        }

        // Both codes get one record; each hash is claimed only if no live code holds it.
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        let (short_code, short_hash) = self.reserve(&id, now, short_code)?;
        let (long_code, long_hash) = self.reserve(&id, now, long_code)?;
        let (short_expires, long_expires) = lifetimes.expiries(now);
        let record = CodeRecord {
            authority: authority.to_owned(),
            diagnosis,
            issued: now,
            short_hash,
            long_hash,
            short_expires,
            long_expires,
        };
        self.records.insert(id, encode(&record)?)?;
        Ok(IssuedCodes {
            short_code,
            long_code,
            short_expires: record.short_expires,
            long_expires: record.long_expires,
        })
    }

    /// Claims `code` once, for a device that accepts the test types `accept`.
    ///
    /// Nothing changes unless the claim succeeds; an unaccepted test type leaves the code live.
    ///
    /// # Errors
    ///
    /// [`Error::CodeInvalid`] (malformed or used), [`Error::CodeNotFound`],
    /// [`Error::CodeExpired`], [`Error::UnsupportedTestType`], storage failures.
    pub fn claim(&self, code: &str, accept: &[TestType], now: u64) -> Result<Diagnosis> {
        let is_short = is_short_code(code);
        if !is_short && !is_long_code(code) {
            return Err(Error::CodeInvalid);
        }
        let id = self
            .hashes
            .get(self.hash.hash("code", code.as_bytes()))?
            .ok_or(Error::CodeNotFound)?;
        let record = match self.records.get(&id)? {
            Some(bytes) => decode(&bytes)?,
            None => return Err(Error::CodeNotFound),
        };

        // Checks in the order that leaks least: existence, expiry, use, then type.
        let expires = if is_short {
            record.short_expires
        } else {
            record.long_expires
        };
        if now >= expires {
            return Err(Error::CodeExpired);
        }
        if self.claimed.contains_key(&id)? {
            return Err(Error::CodeInvalid);
        }
        if !accept.contains(&record.diagnosis.test_type) {
            return Err(Error::UnsupportedTestType);
        }
        if self
            .claimed
            .compare_and_swap(&id, None::<&[u8]>, Some(&now.to_be_bytes()[..]))?
            .is_err()
        {
            return Err(Error::CodeInvalid);
        }
        self.bump(&record.authority, now, "used")?;
        Ok(record.diagnosis)
    }

    /// The counts of the UTC day containing `now` for `authority`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn counts(&self, authority: &str, now: u64) -> Result<DailyCounts> {
        let read = |what| -> Result<u64> {
            Ok(self
                .stats
                .get(stat_key(authority, now, what))?
                .map_or(0, |value| be_u64(&value)))
        };
        Ok(DailyCounts {
            issued: read("issued")?,
            used: read("used")?,
        })
    }

    /// Deletes records, hashes and idempotency keys whose codes have all expired by `now`,
    /// and counters older than two days. Returns how many code records went.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub fn sweep(&self, now: u64) -> Result<usize> {
        let mut removed = 0;
        for entry in self.records.iter() {
            let (id, bytes) = entry?;
            let record = decode(&bytes)?;
            if record.long_expires.max(record.short_expires) > now {
                continue;
            }
            self.hashes
                .compare_and_swap(record.short_hash, Some(&id), None::<&[u8]>)?
                .ok();
            self.hashes
                .compare_and_swap(record.long_hash, Some(&id), None::<&[u8]>)?
                .ok();
            self.claimed.remove(&id)?;
            self.records.remove(&id)?;
            removed += 1;
        }
        sweep_expiries(&self.uuids, now)?;
        let oldest_day = (now / DAY_SECONDS).saturating_sub(2);
        for entry in self.stats.iter() {
            let (key, _) = entry?;
            if stat_day(&key).is_some_and(|day| day < oldest_day) {
                self.stats.remove(key)?;
            }
        }
        Ok(removed)
    }

    /// Waits until every change so far is on disk.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn flush(&self) -> Result<()> {
        crate::store::flush(&self.records).await
    }

    fn uuid_hash(&self, authority: &str, uuid: &str) -> [u8; 32] {
        self.hash
            .hash("uuid", format!("{authority}\0{uuid}").as_bytes())
    }

    fn claim_uuid(&self, hash: &[u8; 32], now: u64, expires: u64) -> Result<()> {
        let fresh = expires.to_be_bytes();
        match self
            .uuids
            .compare_and_swap(hash, None::<&[u8]>, Some(&fresh[..]))?
        {
            Ok(()) => Ok(()),
            Err(clash)
                if clash
                    .current
                    .as_deref()
                    .is_some_and(|old| be_u64(old) <= now) =>
            {
                let replaced =
                    self.uuids
                        .compare_and_swap(hash, clash.current, Some(&fresh[..]))?;
                replaced.map_err(|_| Error::DuplicateUuid)
            }
            Err(_) => Err(Error::DuplicateUuid),
        }
    }

    /// Adds one to today's issued count unless it has reached `quota`.
    fn charge(&self, authority: &str, quota: u64, now: u64) -> Result<()> {
        let key = stat_key(authority, now, "issued");
        let before = self.stats.fetch_and_update(&key, |old| {
            let count = old.map_or(0, be_u64);
            Some(
                count
                    .saturating_add(u64::from(count < quota))
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        if before.as_deref().map_or(0, be_u64) >= quota {
            return Err(Error::QuotaExceeded { limit: quota });
        }
        Ok(())
    }

    fn bump(&self, authority: &str, now: u64, what: &str) -> Result<()> {
        self.stats
            .fetch_and_update(stat_key(authority, now, what), |old| {
                Some((old.map_or(0, be_u64) + 1).to_be_bytes().to_vec())
            })?;
        Ok(())
    }

    /// Draws codes with `draw` until one's hash is free (or held by a dead record), and points
    /// it at `id`.
    fn reserve(
        &self,
        id: &[u8; 16],
        now: u64,
        draw: fn(&mut rand::rngs::ThreadRng) -> Zeroizing<String>,
    ) -> Result<(Zeroizing<String>, [u8; 32])> {
        let mut rng = rand::thread_rng();
        for _ in 0..DRAWS {
            let code = draw(&mut rng);
            let hash = self.hash.hash("code", code.as_bytes());
            let current = self.hashes.get(hash)?;
            let taken = match &current {
                Some(holder) => self.is_live(holder, now)?,
                None => false,
            };
            if taken {
                continue;
            }
            if self
                .hashes
                .compare_and_swap(hash, current, Some(&id[..]))?
                .is_ok()
            {
                return Ok((code, hash));
            }
        }
        Err(Error::Corrupt("no free code after repeated draws"))
    }

    fn is_live(&self, id: &[u8], now: u64) -> Result<bool> {
        Ok(match self.records.get(id)? {
            Some(bytes) => decode(&bytes)?.long_expires > now,
            // A hash whose record is not written yet belongs to an issue in progress.
            None => true,
        })
    }
}

/// Whether `code` has the short form.
pub fn is_short_code(code: &str) -> bool {
    code.len() == SHORT_CODE_LEN && code.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `code` has the long form.
pub fn is_long_code(code: &str) -> bool {
    code.len() == LONG_CODE_LEN && code.bytes().all(|b| LONG_ALPHABET.contains(&b))
}

/// Draws a short code: 8 uniformly random digits.
pub(crate) fn short_code(rng: &mut rand::rngs::ThreadRng) -> Zeroizing<String> {
    Zeroizing::new(format!("{:08}", rng.gen_range(0..100_000_000u32)))
}

/// Draws a long code: 16 uniformly random characters of `a-z0-9`.
pub(crate) fn long_code(rng: &mut rand::rngs::ThreadRng) -> Zeroizing<String> {
    let code = (0..LONG_CODE_LEN)
        .map(|_| char::from(LONG_ALPHABET[rng.gen_range(0..LONG_ALPHABET.len())]))
        .collect();
    Zeroizing::new(code)
}

/// Deletes the entries of `tree` whose value, a big-endian Unix time of expiry, is at or
/// before `now`; returns how many went.
///
/// # Errors
///
/// Storage failures.
pub(crate) fn sweep_expiries(tree: &sled::Tree, now: u64) -> Result<usize> {
    let mut removed = 0;
    for entry in tree.iter() {
        let (key, expiry) = entry?;
        if be_u64(&expiry) <= now {
            tree.remove(key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn stat_key(authority: &str, now: u64, what: &str) -> Vec<u8> {
    format!("{}\0{authority}\0{what}", now / DAY_SECONDS).into_bytes()
}

fn stat_day(key: &[u8]) -> Option<u64> {
    let day = key.split(|&b| b == 0).next()?;
    std::str::from_utf8(day).ok()?.parse().ok()
}

fn be_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

fn encode(record: &CodeRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|_| Error::Corrupt("code record"))
}

fn decode(bytes: &[u8]) -> Result<CodeRecord> {
    serde_json::from_slice(bytes).map_err(|_| Error::Corrupt("code record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIMES: Lifetimes = Lifetimes {
        short: 900,
        long: 86_400,
    };
    const NOW: u64 = 1_800_000_000;

    fn codes() -> Codes {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        let trees = CodeTrees {
            records: tree("r"),
            hashes: tree("h"),
            claimed: tree("c"),
            uuids: tree("u"),
            stats: tree("s"),
        };
        Codes::new(trees, HashKey::random())
    }

    fn confirmed() -> Diagnosis {
        Diagnosis {
            test_type: TestType::Confirmed,
            symptom_date: None,
            test_date: None,
        }
    }

    #[test]
    fn code_forms() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            assert!(is_short_code(&short_code(&mut rng)));
            assert!(is_long_code(&long_code(&mut rng)));
        }
        assert!(!is_short_code("1234567a"));
        assert!(!is_long_code("ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn debug_hides_the_codes() {
        let issued = IssuedCodes {
            short_code: Zeroizing::new("12345678".to_owned()),
            long_code: Zeroizing::new("abcdefghijklmnop".to_owned()),
            short_expires: 900,
            long_expires: 86_400,
        };
        let shown = format!("{issued:?}");
        assert!(!shown.contains("12345678"), "{shown}");
        assert!(!shown.contains("abcdefghijklmnop"), "{shown}");
        assert!(shown.contains("86400"), "{shown}");
    }

    #[test]
    fn claim_once_either_code() {
        let codes = codes();
        let issued = codes
            .issue("lab", 10, confirmed(), None, NOW, LIFETIMES)
            .unwrap();
        let all = [TestType::Confirmed];
        assert_eq!(
            codes.claim(&issued.long_code, &all, NOW + 1).unwrap(),
            confirmed()
        );
        assert!(matches!(
            codes.claim(&issued.short_code, &all, NOW + 2),
            Err(Error::CodeInvalid)
        ));
        assert_eq!(
            codes.counts("lab", NOW).unwrap(),
            DailyCounts { issued: 1, used: 1 }
        );
    }

    #[test]
    fn expiry_type_and_unknown() {
        let codes = codes();
        let issued = codes
            .issue("lab", 10, confirmed(), None, NOW, LIFETIMES)
            .unwrap();
        let short = &issued.short_code;
        assert!(matches!(
            codes.claim(short, &[TestType::Confirmed], NOW + 900),
            Err(Error::CodeExpired)
        ));
        assert!(matches!(
            codes.claim(&issued.long_code, &[TestType::Likely], NOW + 900),
            Err(Error::UnsupportedTestType)
        ));
        assert!(
            codes
                .claim(&issued.long_code, &[TestType::Confirmed], NOW + 901)
                .is_ok()
        );
        assert!(
            codes
                .claim("00000000", &[TestType::Confirmed], NOW)
                .is_err()
        );
        assert!(matches!(
            codes.claim("0000", &[TestType::Confirmed], NOW),
            Err(Error::CodeInvalid)
        ));
    }

    #[test]
    fn quota_uuid_and_sweep() {
        let codes = codes();
        codes
            .issue("lab", 2, confirmed(), Some("u1"), NOW, LIFETIMES)
            .unwrap();
        assert!(matches!(
            codes.issue("lab", 2, confirmed(), Some("u1"), NOW, LIFETIMES),
            Err(Error::DuplicateUuid)
        ));
        codes
            .issue("lab", 2, confirmed(), Some("u2"), NOW, LIFETIMES)
            .unwrap();
        assert!(matches!(
            codes.issue("lab", 2, confirmed(), Some("u3"), NOW, LIFETIMES),
            Err(Error::QuotaExceeded { limit: 2 })
        ));
        // The refused request did not burn its uuid.
        let tomorrow = NOW + DAY_SECONDS;
        assert!(
            codes
                .issue("lab", 2, confirmed(), Some("u3"), tomorrow, LIFETIMES)
                .is_ok()
        );

        assert_eq!(codes.sweep(NOW + DAY_SECONDS).unwrap(), 2);
        assert_eq!(codes.records.len(), 1);
        assert_eq!(codes.hashes.len(), 2);
        assert_eq!(codes.uuids.len(), 1);
    }
}
