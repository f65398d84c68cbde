//! The index of heard identifiers: compact prefilters in front of an exact sorted table.
//!
//! Almost every identifier derived from a published key was never heard, so the common lookup
//! must be cheap: blocked Bloom filters, one 64-bit word per probe with three bits set per
//! identifier, answer "certainly not heard" for all but about one lookup in a million. The rare
//! "maybe" goes to the exact table, a sorted array searched by bisection, which alone decides
//! what matched.
//!
//! Filters are kept per UTC day, holding the identifiers heard from two hours before the day to
//! two hours and ten minutes after it: everything an identifier valid that day can match. For
//! 3,500 sightings a day they take 40 kB, so while a thread matches the keys of one day they
//! stay in the core's fast caches, however many days of sightings there are.
//!
//! Each day has two filters in a row:
//!
//! 1. A **raw** filter indexed by the identifier's own bits. Identifiers derived from published
//!    keys are AES outputs, so their bits are as good as a hash, and this stage costs one memory
//!    word per identifier and no cryptography. It is kept small, a few kilobytes a day, so it
//!    stays in the first-level cache, and lets one or two unheard identifiers in a hundred on.
//! 2. A **keyed** filter indexed by AES-128 of the identifier under a random key the device
//!    never reveals, asked only about the few identifiers the raw filter lets through.
//!
//! Heard identifiers are chosen by whoever broadcasts them. An attacker can pick identifiers
//! that crowd into a few raw filter words, which lets more lookups through the first stage; at
//! worst every lookup then costs the keyed hash, which is what a single keyed filter costs
//! anyway. The keyed stage cannot be crowded, because without the key nobody can tell which
//! identifiers collide in it, so the exact table still sees only rare "maybe"s. The exact table
//! itself cannot be degraded at all: bisection costs the same whatever the identifiers are.

use aes::Aes128Enc;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use rand_core::CryptoRngCore;
use varsel_protocol::interval::INTERVAL_SECONDS;
use varsel_protocol::keys::{KEY_LEN, RollingProximityIdentifier};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::TOLERANCE_SECONDS;

/// Raw filter bits per distinct identifier (before rounding up to a power of two): small, so
/// that a day's raw filter stays in the first-level cache; it lets about one unheard identifier
/// in a hundred through to the keyed stage.
const RAW_BITS_PER_ENTRY: usize = 8;

/// Keyed filter bits per distinct identifier: with three bits per entry in one word this lets
/// roughly one in a few thousand through to the exact table.
const KEYED_BITS_PER_ENTRY: usize = 32;

/// The secret key of the prefilter's hash.
///
/// Generate a fresh one for every [`Matcher`](super::Matcher); it never needs to be stored.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrefilterKey([u8; KEY_LEN]);

impl PrefilterKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from known bytes, for tests that must reproduce collisions.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
}

impl core::fmt::Debug for PrefilterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PrefilterKey(<redacted>)")
    }
}

/// Seconds in a UTC day.
const DAY_SECONDS: u64 = 86_400;

/// A sighting can match an identifier whose interval starts after `time - BEFORE`...
const BEFORE: u64 = TOLERANCE_SECONDS + INTERVAL_SECONDS;
/// ...and no later than `time + AFTER`.
const AFTER: u64 = TOLERANCE_SECONDS;

/// The filters of one UTC day.
#[derive(Clone, Copy, Debug)]
struct DayFilter {
    day: u64,
    raw: Region,
    keyed: Region,
}

/// Where one filter's words are in its shared array, and how many (a power of two).
#[derive(Clone, Copy, Debug)]
struct Region {
    offset: usize,
    mask: usize,
}

/// Where one identifier's hash points in a filter: a word and up to three bits in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    word: usize,
    bits: u64,
}

/// The raw and keyed day filters and the exact table over a set of heard identifiers.
pub(crate) struct IdentifierIndex {
    hasher: Aes128Enc,
    days: Vec<DayFilter>,
    /// Filter words indexed by identifier bits; the same layout as `keyed`.
    raw: Vec<u64>,
    /// Filter words indexed by AES of the identifier under the secret key.
    keyed: Vec<u64>,
    /// Identifier (as a big-endian number) and the position of its sighting, sorted.
    entries: Vec<(u128, u32)>,
}

impl IdentifierIndex {
    /// Indexes heard `(identifier, time)` pairs; entry `i` of the exact table refers to
    /// position `i` of the input. Callers keep the count below 2³².
    pub(crate) fn build(
        heard: impl Iterator<Item = (RollingProximityIdentifier, u64)>,
        key: &PrefilterKey,
    ) -> Self {
        let mut times = Vec::new();
        let mut entries: Vec<(u128, u32)> = heard
            .zip(0u32..)
            .map(|((rpi, time), position)| {
                times.push(time);
                (u128::from_be_bytes(rpi.to_bytes()), position)
            })
            .collect();
        entries.sort_unstable();

        let hasher = Aes128Enc::new(GenericArray::from_slice(&key.0));
        let groups: Vec<&[(u128, u32)]> = entries.chunk_by(|a, b| a.0 == b.0).collect();
        let mut hashes: Vec<aes::Block> = groups
            .iter()
            .map(|group| GenericArray::from(group[0].0.to_be_bytes()))
            .collect();
        hasher.encrypt_blocks(&mut hashes);

        let pairs = day_pairs(&groups, &times);
        let (days, raw_words, keyed_words) = size_days(&pairs);
        let mut index = Self {
            hasher,
            days,
            raw: vec![0; raw_words],
            keyed: vec![0; keyed_words],
            entries: Vec::new(),
        };
        for &(day, group) in &pairs {
            let Some(filter) = index.day_filter(day) else {
                continue;
            };
            let raw = filter.raw.probe(&groups[group as usize][0].0.to_be_bytes());
            index.raw[raw.word] |= raw.bits;
            let keyed = filter.keyed.probe(&hashes[group as usize].into());
            index.keyed[keyed.word] |= keyed.bits;
        }
        index.entries = entries;
        index
    }

    /// Asks both filters about a batch of at most one day of consecutive identifiers, the
    /// first valid from `first_start` (Unix seconds), and appends the offsets of those that may
    /// have been heard within tolerance to `maybe`; every other one certainly was not. Those
    /// passing the raw filter are hashed for the keyed one in a single AES call.
    pub(crate) fn filter(
        &self,
        rpis: &[RollingProximityIdentifier],
        first_start: u64,
        scratch: &mut [aes::Block],
        maybe: &mut Vec<usize>,
    ) {
        // A batch spans at most one midnight: identifiers before `split` belong to the first
        // day, the rest to the next.
        let first_day = first_start / DAY_SECONDS;
        let next_day_start = (first_day + 1) * DAY_SECONDS;
        let split =
            ((next_day_start - first_start).div_ceil(INTERVAL_SECONDS) as usize).min(rpis.len());
        let filters = [self.day_filter(first_day), self.day_filter(first_day + 1)];
        let filter_of = |offset: usize| filters[usize::from(offset >= split)];

        let first = maybe.len();
        for (offset, rpi) in rpis.iter().enumerate() {
            let Some(filter) = filter_of(offset) else {
                continue;
            };
            if passes(&self.raw, filter.raw.probe(rpi.as_bytes())) {
                maybe.push(offset);
            }
        }
        if maybe.len() == first {
            return;
        }

        let blocks = &mut scratch[..maybe.len() - first];
        for (block, offset) in blocks.iter_mut().zip(&maybe[first..]) {
            *block = GenericArray::from(rpis[*offset].to_bytes());
        }
        self.hasher.encrypt_blocks(blocks);
        let mut kept = first;
        for (index, block) in blocks.iter().enumerate() {
            let offset = maybe[first + index];
            let keyed = filter_of(offset).map(|filter| filter.keyed.probe(&(*block).into()));
            if keyed.is_some_and(|probe| passes(&self.keyed, probe)) {
                maybe[kept] = offset;
                kept += 1;
            }
        }
        maybe.truncate(kept);
    }

    /// Positions of the sightings of exactly this identifier.
    pub(crate) fn positions(
        &self,
        rpi: &RollingProximityIdentifier,
    ) -> impl Iterator<Item = usize> + '_ {
        let wanted = u128::from_be_bytes(rpi.to_bytes());
        let first = self.entries.partition_point(|(entry, _)| *entry < wanted);
        self.entries[first..]
            .iter()
            .take_while(move |(entry, _)| *entry == wanted)
            .map(|(_, position)| *position as usize)
    }

    fn day_filter(&self, day: u64) -> Option<DayFilter> {
        let at = self
            .days
            .binary_search_by_key(&day, |filter| filter.day)
            .ok()?;
        Some(self.days[at])
    }

    /// The raw and keyed probes of an identifier valid from `start`, for tests that craft
    /// collisions.
    #[cfg(test)]
    pub(crate) fn probes(
        &self,
        rpi: &RollingProximityIdentifier,
        start: u64,
    ) -> Option<(Probe, Probe)> {
        let filter = self.day_filter(start / DAY_SECONDS)?;
        let mut block = GenericArray::from(rpi.to_bytes());
        self.hasher.encrypt_block(&mut block);
        Some((
            filter.raw.probe(rpi.as_bytes()),
            filter.keyed.probe(&block.into()),
        ))
    }

    /// Whether an identifier valid from `start` passes the raw and the keyed filter, for tests.
    #[cfg(test)]
    pub(crate) fn passes(&self, rpi: &RollingProximityIdentifier, start: u64) -> [bool; 2] {
        self.probes(rpi, start).map_or([false; 2], |(raw, keyed)| {
            [passes(&self.raw, raw), passes(&self.keyed, keyed)]
        })
    }

    /// Number of keyed filter words of the day holding `start`, for tests.
    #[cfg(test)]
    pub(crate) fn words_of_day(&self, start: u64) -> usize {
        self.day_filter(start / DAY_SECONDS)
            .map_or(0, |filter| filter.keyed.mask + 1)
    }
}

/// Whether `words` may hold the identifier behind `probe`; `false` is certain.
fn passes(words: &[u64], probe: Probe) -> bool {
    words[probe.word] & probe.bits == probe.bits
}

impl Region {
    /// The word and bits of an identifier, or of its keyed hash, in this filter.
    fn probe(&self, hash: &[u8; KEY_LEN]) -> Probe {
        let (low, high) = hash.split_at(8);
        let low = u64::from_le_bytes(low.try_into().unwrap_or_default());
        let high = u64::from_le_bytes(high.try_into().unwrap_or_default());
        let bits = (1 << (high & 63)) | (1 << ((high >> 6) & 63)) | (1 << ((high >> 12) & 63));
        Probe {
            word: self.offset + (low as usize & self.mask),
            bits,
        }
    }
}

/// Every (day, identifier group) pair such that an identifier valid that day could match one of
/// the group's sightings, sorted and without repeats.
fn day_pairs(groups: &[&[(u128, u32)]], times: &[u64]) -> Vec<(u64, u32)> {
    let mut pairs = Vec::with_capacity(groups.len() * 5 / 4);
    for (group, sightings) in (0u32..).zip(groups) {
        for (_, position) in sightings.iter() {
            let time = times[*position as usize];
            let first = time.saturating_sub(BEFORE - 1) / DAY_SECONDS;
            let last = time.saturating_add(AFTER) / DAY_SECONDS;
            pairs.extend((first..=last).map(|day| (day, group)));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The filters of every day with entries, sized for its count, and the total raw and keyed
/// words.
fn size_days(pairs: &[(u64, u32)]) -> (Vec<DayFilter>, usize, usize) {
    let mut days = Vec::new();
    let (mut raw_words, mut keyed_words) = (0, 0);
    let region = |total: &mut usize, entries: usize, bits: usize| {
        let words = (entries * bits / 64).next_power_of_two();
        let region = Region {
            offset: *total,
            mask: words - 1,
        };
        *total += words;
        region
    };
    for day_pairs in pairs.chunk_by(|a, b| a.0 == b.0) {
        let entries = day_pairs.len();
        days.push(DayFilter {
            day: day_pairs[0].0,
            raw: region(&mut raw_words, entries, RAW_BITS_PER_ENTRY),
            keyed: region(&mut keyed_words, entries, KEYED_BITS_PER_ENTRY),
        });
    }
    (days, raw_words, keyed_words)
}

#[cfg(test)]
mod tests {
    use aes::cipher::BlockDecrypt;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

    use super::*;

    /// 2025-01-01T00:00:00Z.
    const MIDNIGHT: u64 = 1_735_689_600;

    fn random_rpis(rng: &mut StdRng, count: usize) -> Vec<RollingProximityIdentifier> {
        (0..count)
            .map(|_| {
                let mut bytes = [0; KEY_LEN];
                rng.fill_bytes(&mut bytes);
                RollingProximityIdentifier::from_bytes(bytes)
            })
            .collect()
    }

    /// The start of the interval holding `time`.
    fn interval_of(time: u64) -> u64 {
        time - time % INTERVAL_SECONDS
    }

    #[test]
    fn finds_every_indexed_identifier_and_only_those() {
        let mut rng = StdRng::seed_from_u64(1);
        let heard: Vec<(RollingProximityIdentifier, u64)> = random_rpis(&mut rng, 5_000)
            .into_iter()
            .map(|rpi| (rpi, MIDNIGHT + rng.gen_range(0..3 * DAY_SECONDS)))
            .collect();
        let key = PrefilterKey::generate(&mut rng);
        let index = IdentifierIndex::build(heard.iter().copied(), &key);
        for (position, (rpi, time)) in heard.iter().enumerate() {
            assert_eq!(index.passes(rpi, interval_of(*time)), [true, true]);
            assert_eq!(index.positions(rpi).collect::<Vec<_>>(), [position]);
        }

        // The raw stage lets a few unheard identifiers in a hundred through, the keyed one
        // about one in a thousand, both together about one in 100,000.
        let unheard = random_rpis(&mut rng, 100_000);
        let stages: Vec<[bool; 2]> = unheard
            .iter()
            .map(|rpi| index.passes(rpi, MIDNIGHT + DAY_SECONDS + 3600))
            .collect();
        let raw = stages.iter().filter(|stage| stage[0]).count();
        let keyed = stages.iter().filter(|stage| stage[1]).count();
        let both = stages.iter().filter(|stage| stage[0] && stage[1]).count();
        assert!(
            raw < 5_000 && keyed < 300 && both < 20,
            "{raw} {keyed} {both}"
        );
        assert!(
            unheard
                .iter()
                .all(|rpi| index.positions(rpi).next().is_none())
        );
        assert_eq!(
            index.passes(&heard[0].0, MIDNIGHT + 10 * DAY_SECONDS),
            [false; 2]
        );
    }

    #[test]
    fn a_day_filter_holds_what_its_identifiers_can_match_across_midnight() {
        // Heard at 23:59 on day 1: identifiers of day 2 valid from up to 01:59 may match it.
        // Heard at 00:01 on day 1: identifiers of day 0 valid from 21:51 on may match it.
        let mut rng = StdRng::seed_from_u64(4);
        let rpis = random_rpis(&mut rng, 2);
        let day_1 = MIDNIGHT + DAY_SECONDS;
        let late = day_1 + DAY_SECONDS - 60;
        let early = day_1 + 60;
        let heard = [(rpis[0], late), (rpis[1], early)];
        let index = IdentifierIndex::build(heard.into_iter(), &PrefilterKey::generate(&mut rng));

        let both = [true, true];
        assert_eq!(index.passes(&rpis[0], late + TOLERANCE_SECONDS - 60), both);
        assert_eq!(index.passes(&rpis[0], interval_of(late)), both);
        assert_eq!(
            index.passes(&rpis[1], early - TOLERANCE_SECONDS - INTERVAL_SECONDS + 1),
            both
        );
        assert_eq!(index.passes(&rpis[1], interval_of(early)), both);
        assert_eq!(index.words_of_day(MIDNIGHT + 3 * DAY_SECONDS), 0);
    }

    #[test]
    fn batched_filter_equals_single_probes() {
        // 144 identifiers from 18:00, so the batch runs into the next day.
        let mut rng = StdRng::seed_from_u64(2);
        let rpis = random_rpis(&mut rng, 144);
        let first_start = MIDNIGHT + 18 * 3600;
        let start = |offset: usize| first_start + offset as u64 * INTERVAL_SECONDS;
        let heard = [3, 77, 143].map(|offset| (rpis[offset], start(offset) + 30));
        let index = IdentifierIndex::build(heard.into_iter(), &PrefilterKey::generate(&mut rng));
        let mut scratch = [aes::Block::default(); 144];
        let mut maybe = Vec::new();
        index.filter(&rpis, first_start, &mut scratch, &mut maybe);
        let single: Vec<usize> = (0..rpis.len())
            .filter(|&offset| index.passes(&rpis[offset], start(offset)) == [true, true])
            .collect();
        assert_eq!(maybe, single);
        assert!([3, 77, 143].iter().all(|offset| maybe.contains(offset)));
    }

    #[test]
    fn repeated_identifiers_keep_every_position() {
        let mut rng = StdRng::seed_from_u64(3);
        let rpis = random_rpis(&mut rng, 2);
        let heard = [rpis[0], rpis[1], rpis[0], rpis[0]].map(|rpi| (rpi, MIDNIGHT));
        let index = IdentifierIndex::build(heard.into_iter(), &PrefilterKey::generate(&mut rng));
        assert_eq!(index.positions(&rpis[0]).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(index.positions(&rpis[1]).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn crafted_keyed_collisions_fill_one_word_but_the_exact_table_decides() {
        // Whoever knows the key can invert the hash and craft identifiers that land on the same
        // keyed word and bits as a target. Such a crowd makes the target a keyed "maybe", and
        // the exact table must still tell the target from every impostor.
        let key = PrefilterKey::from_bytes([9; KEY_LEN]);
        let cipher = Aes128Enc::new(GenericArray::from_slice(&[9; KEY_LEN]));
        let decrypt = aes::Aes128Dec::new(GenericArray::from_slice(&[9; KEY_LEN]));
        let target = RollingProximityIdentifier::from_bytes([7; KEY_LEN]);
        let mut hash = GenericArray::from(target.to_bytes());
        cipher.encrypt_block(&mut hash);

        let impostors: Vec<RollingProximityIdentifier> = (1u8..=200)
            .map(|n| {
                let mut colliding = hash;
                colliding[15] ^= n;
                decrypt.decrypt_block(&mut colliding);
                RollingProximityIdentifier::from_bytes(colliding.into())
            })
            .collect();
        let index = IdentifierIndex::build(impostors.iter().map(|rpi| (*rpi, MIDNIGHT)), &key);
        assert!(index.words_of_day(MIDNIGHT) >= 64);
        let keyed = |rpi| index.probes(rpi, MIDNIGHT).map(|(_, keyed)| keyed);
        assert!(impostors.iter().all(|rpi| keyed(rpi) == keyed(&target)));
        assert!(index.passes(&target, MIDNIGHT)[1]);
        assert_eq!(index.positions(&target).count(), 0);
        assert_eq!(index.positions(&impostors[17]).collect::<Vec<_>>(), [17]);
    }

    #[test]
    fn crafted_raw_collisions_pass_the_raw_filter_only() {
        // Identifiers sharing their first eleven bytes with a target collide in the raw filter
        // without any key. They let the target through the raw stage; the keyed stage, which
        // they do not crowd, stops it.
        let mut rng = StdRng::seed_from_u64(6);
        let target = random_rpis(&mut rng, 1)[0];
        let impostors: Vec<RollingProximityIdentifier> = (1u32..=200)
            .map(|n| {
                let mut bytes = target.to_bytes();
                bytes[12..].copy_from_slice(&n.to_le_bytes());
                RollingProximityIdentifier::from_bytes(bytes)
            })
            .collect();
        let index = IdentifierIndex::build(
            impostors.iter().map(|rpi| (*rpi, MIDNIGHT)),
            &PrefilterKey::generate(&mut rng),
        );
        let raw = |rpi| index.probes(rpi, MIDNIGHT).map(|(raw, _)| raw);
        assert!(impostors.iter().all(|rpi| raw(rpi) == raw(&target)));
        assert_eq!(index.passes(&target, MIDNIGHT), [true, false]);
        assert_eq!(index.positions(&target).count(), 0);
    }
}
