//! Limits on guessing codes, kept in memory only.
//!
//! Each client has a token bucket keyed by a salted hash of its address; the salt is random per
//! process and never leaves memory, so neither the table nor anything derived from it can be
//! linked back to an address. Separately, failed attempts from all clients share a per-minute
//! ceiling; once it is reached, every attempt is refused until the minute ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use rand_core::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::RateLimitConfig;

/// A client's bucket: tokens left (scaled by 3,600 so refills stay integral) and when it was
/// last refilled.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    scaled_tokens: u64,
    updated: u64,
}

/// The state behind the limits.
#[derive(Debug, Default)]
struct State {
    clients: HashMap<[u8; 16], Bucket>,
    failures_minute: u64,
    failures: u32,
    /// When a full table was last scanned for clients to forget.
    last_scan: Option<u64>,
}

/// The verification rate limiter.
pub struct RateLimiter {
    config: RateLimitConfig,
    salt: Zeroizing<[u8; 32]>,
    state: Mutex<State>,
}

impl core::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with a fresh random salt.
    pub fn new(config: RateLimitConfig) -> Self {
        let mut salt = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(salt.as_mut());
        Self {
            config,
            salt,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes one attempt for `client` at `now`; `false` means refuse it.
    pub fn admit(&self, client: IpAddr, now: u64) -> bool {
        let key = self.client_key(client);
        let mut state = crate::locks::lock(&self.state);
        if state.failures_minute == now / 60
            && state.failures >= self.config.global_failures_per_minute
        {
            return false;
        }
        if !state.clients.contains_key(&key)
            && state.clients.len() >= self.config.max_tracked_clients
        {
            // A scan finds nothing new within the second of the last one: buckets refill by
            // the second, and those added since have just spent a token.
            if state.last_scan != Some(now) {
                state.last_scan = Some(now);
                self.forget_full_buckets(&mut state, now);
            }
            if state.clients.len() >= self.config.max_tracked_clients {
                return false;
            }
        }
        let capacity = self.capacity();
        let bucket = state.clients.entry(key).or_insert(Bucket {
            scaled_tokens: capacity,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.scaled_tokens < 3_600 {
            return false;
        }
        bucket.scaled_tokens -= 3_600;
        true
    }

    /// Records a failed attempt (unknown, used or expired code) at `now`.
    pub fn record_failure(&self, now: u64) {
        let mut state = crate::locks::lock(&self.state);
        let minute = now / 60;
        if state.failures_minute != minute {
            state.failures_minute = minute;
            state.failures = 0;
        }
        state.failures = state.failures.saturating_add(1);
    }

    /// Clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        crate::locks::lock(&self.state).clients.len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.config.client_burst.max(1)) * 3_600
    }

    fn refill(&self, bucket: &mut Bucket, now: u64) {
        let elapsed = now.saturating_sub(bucket.updated);
        let gained = elapsed.saturating_mul(u64::from(self.config.client_attempts_per_hour));
        bucket.scaled_tokens = bucket
            .scaled_tokens
            .saturating_add(gained)
            .min(self.capacity());
        bucket.updated = now;
    }

    /// Drops clients whose bucket has refilled completely: they are indistinguishable from new.
    fn forget_full_buckets(&self, state: &mut State, now: u64) {
        let capacity = self.capacity();
        state.clients.retain(|_, bucket| {
            let mut copy = *bucket;
            self.refill(&mut copy, now);
            copy.scaled_tokens < capacity
        });
    }

    fn client_key(&self, client: IpAddr) -> [u8; 16] {
        let address = match client {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let digest = Sha256::new()
            .chain_update(*self.salt)
            .chain_update(address)
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, per_hour: u32, failures: u32, clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            client_attempts_per_hour: per_hour,
            client_burst: burst,
            global_failures_per_minute: failures,
            max_tracked_clients: clients,
        })
    }

    #[test]
    fn bucket_empties_and_refills() {
        let limiter = limiter(3, 12, 100, 10);
        let client: IpAddr = [10, 0, 0, 1].into();
        assert!((0..3).all(|_| limiter.admit(client, 1_000)));
        assert!(!limiter.admit(client, 1_000));
        assert!(limiter.admit([10, 0, 0, 2].into(), 1_000));
        assert!(!limiter.admit(client, 1_299));
        assert!(limiter.admit(client, 1_300));
        assert!(!limiter.admit(client, 1_300));
    }

    #[test]
    fn global_failure_ceiling_lasts_the_minute() {
        let limiter = limiter(100, 100, 5, 10);
        (0..5).for_each(|_| limiter.record_failure(600));
        assert!(!limiter.admit([1, 1, 1, 1].into(), 659));
        assert!(limiter.admit([1, 1, 1, 1].into(), 660));
    }

    #[test]
    fn table_is_bounded() {
        let limiter = limiter(1, 1, 100, 2);
        assert!(limiter.admit([1, 0, 0, 1].into(), 0));
        assert!(limiter.admit([1, 0, 0, 2].into(), 0));
        assert!(!limiter.admit([1, 0, 0, 3].into(), 0));
        assert!(limiter.admit([1, 0, 0, 3].into(), 3_600));
        assert!(limiter.tracked_clients() <= 2);
    }

    #[test]
    fn full_table_is_scanned_once_a_second() {
        let limiter = limiter(1, 1, 100, 2);
        assert!(limiter.admit([1, 0, 0, 1].into(), 0));
        assert!(limiter.admit([1, 0, 0, 2].into(), 0));
        assert!(!limiter.admit([1, 0, 0, 3].into(), 3_599));
        assert_eq!(crate::locks::lock(&limiter.state).last_scan, Some(3_599));
        assert!(!limiter.admit([1, 0, 0, 4].into(), 3_599));
        // A second later both buckets are full again and the next scan forgets them.
        assert!(limiter.admit([1, 0, 0, 3].into(), 3_600));
        assert!(limiter.admit([1, 0, 0, 4].into(), 3_600));
        assert!(!limiter.admit([1, 0, 0, 5].into(), 3_600));
        assert_eq!(limiter.tracked_clients(), 2);
    }
}
