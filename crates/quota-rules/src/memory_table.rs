//! The table of the shared-memory rate limiter, as plain data: where a rule's state (one
//! GCRA `tat`, see `rate`) lives among a fixed number of slots, and which slot a new key
//! takes. The extension keeps the slots in PostgreSQL's shared memory and locks them; this
//! module only chooses.
//!
//! The table is set-associative: a key hashes to one set of `WAYS` slots and lives in one of
//! them, so a lookup reads at most `WAYS` slots and the table never needs rehashing or
//! cleanup. A key that is not in its set has a full bucket, so only an admitted call stores
//! its key. It takes, in this order: an empty slot; a slot whose bucket is full again
//! (`tat <= now`, which is the same as no state: nothing is lost); else the slot whose bucket
//! is closest to full (the least `tat`), and that key loses its debt, a free burst, which the
//! table counts as a lossy eviction.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::window::Micros;

/// Slots per set.
pub const WAYS: usize = 8;

/// What a state belongs to: a rule (`per_us`) of a metric of a subject, in one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct MemoryKey {
    pub subject: [u8; 16],
    /// A 64-bit digest of the metric's name (see `metric_digest`).
    pub metric: u64,
    pub per_us: i64,
    pub database: u32,
}

impl MemoryKey {
    /// The set a key lives in, of `sets`.
    pub fn set_index(&self, sets: usize) -> usize {
        assert!(sets > 0, "a table of no sets");
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        // The remainder is below `sets`, a usize.
        (hasher.finish() % sets as u64) as usize
    }
}

/// The metric's part of a key. DefaultHasher is the same in every backend of one build of
/// the library, and shared memory does not outlive the server that loaded that build.
pub fn metric_digest(metric: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    metric.hash(&mut hasher);
    hasher.finish()
}

/// One slot: a key and its rule's `tat`, or empty (`used == false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Slot {
    pub key: MemoryKey,
    pub tat_us: Micros,
    pub used: bool,
}

// The size pg_quota.memory_rate_keys' description and the README give.
const _: () = assert!(std::mem::size_of::<Slot>() == 56);

/// Where a key's state is, or goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The key's slot.
    Found(usize),
    /// An empty slot, or one whose bucket is full again: taking it loses nothing.
    Free(usize),
    /// The slot of the key closest to a full bucket: taking it gives that key a free burst.
    Evict(usize),
}

impl Placement {
    pub fn slot(self) -> usize {
        match self {
            Placement::Found(way) | Placement::Free(way) | Placement::Evict(way) => way,
        }
    }
}

/// Finds `key` in its set, or the slot it would take at `now`: not one of `keep`, the slots
/// the same call wrote for its other rules, whose eviction would hand that call's own
/// subject a free burst.
pub fn place(set: &[Slot; WAYS], key: &MemoryKey, now: Micros, keep: &[usize]) -> Placement {
    if let Some(way) = set.iter().position(|slot| slot.used && slot.key == *key) {
        return Placement::Found(way);
    }
    if let Some(way) = set.iter().position(|slot| !slot.used || slot.tat_us <= now) {
        return Placement::Free(way);
    }
    let owing_least = |skip: &[usize]| {
        set.iter().enumerate().filter(|(way, _)| !skip.contains(way)).min_by_key(|(_, slot)| slot.tat_us).map(|(way, _)| way)
    };
    // Only a call with more rules in one set than the set has ways takes back one of its own.
    Placement::Evict(owing_least(keep).or_else(|| owing_least(&[])).expect("WAYS > 0"))
}

/// The state a key has in its set: None when absent (a full bucket).
pub fn state_of(set: &[Slot; WAYS], key: &MemoryKey) -> Option<Micros> {
    set.iter().find(|slot| slot.used && slot.key == *key).map(|slot| slot.tat_us)
}

/// The set count of a table of at least `keys` slots.
pub fn sets_for(keys: usize) -> usize {
    keys.div_ceil(WAYS).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{RateOutcome, RateRule};
    use crate::rng::Rng;

    fn key(n: u8) -> MemoryKey {
        MemoryKey { subject: [n; 16], metric: metric_digest("api"), per_us: 1_000_000, database: 5 }
    }

    fn full_set(tats: [Micros; WAYS]) -> [Slot; WAYS] {
        let mut set = [Slot::default(); WAYS];
        for (way, tat_us) in tats.into_iter().enumerate() {
            set[way] = Slot { key: key(way as u8 + 1), tat_us, used: true };
        }
        set
    }

    #[test]
    fn a_stored_key_is_found_before_anything_is_taken() {
        let mut set = full_set([50; WAYS]);
        set[0].used = false;
        assert_eq!(place(&set, &key(4), 100, &[]), Placement::Found(3));
    }

    #[test]
    fn a_new_key_takes_an_empty_slot_then_a_full_bucket_then_the_least_debt() {
        let mut set = full_set([500, 400, 300, 900, 800, 700, 600, 550]);
        set[5].used = false;
        assert_eq!(place(&set, &key(99), 100, &[]), Placement::Free(5));
        let set = full_set([500, 400, 300, 900, 800, 700, 600, 550]);
        // At 450, the buckets of the keys in ways 1 and 2 are full again.
        assert_eq!(place(&set, &key(99), 450, &[]), Placement::Free(1));
        // At 100 every bucket owes; way 2 owes least, then way 1.
        assert_eq!(place(&set, &key(99), 100, &[]), Placement::Evict(2));
        // Way 2 was written by the same call for another of its rules: the next least.
        assert_eq!(place(&set, &key(99), 100, &[2]), Placement::Evict(1));
    }

    #[test]
    fn sets_cover_the_capacity_and_spread_keys() {
        assert_eq!(sets_for(1), 1);
        assert_eq!(sets_for(8), 1);
        assert_eq!(sets_for(9), 2);
        let sets = 64;
        let mut counts = vec![0usize; sets];
        for n in 0..64_000u32 {
            let subject = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &n.to_le_bytes()).into_bytes();
            counts[MemoryKey { subject, metric: metric_digest("api"), per_us: 1, database: 1 }.set_index(sets)] += 1;
        }
        // 1,000 keys a set on average; a hash that clumped would leave some sets far off.
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_ne!(metric_digest("api"), metric_digest("apj"));
    }

    /// The table against a model that keeps every key's state forever: with room for every
    /// key, the two admit exactly the same calls; with too little room, the table never
    /// admits less than the model (an eviction only forgets debt) and every extra admission
    /// is explained by a lossy eviction of that key.
    #[test]
    fn the_table_decides_as_unbounded_state_unless_it_evicts() {
        let rule = RateRule::new(3, 1_000_000, 5).expect("valid rule");
        for (keys, fits) in [(6u8, true), (12u8, false)] {
            let mut rng = Rng::new(u64::from(keys));
            let mut set = [Slot::default(); WAYS];
            let mut model: std::collections::HashMap<u8, Micros> = Default::default();
            let (mut now, mut lossy, mut extra) = (0i64, 0u32, 0u32);
            for _ in 0..20_000 {
                // Calls every 10 ms on average: every bucket keeps owing.
                now += rng.below(20_000) as i64;
                let n = rng.below(u64::from(keys)) as u8 + 1;
                let amount = rng.below(3) as i64 + 1;
                let in_model = rule.decide(model.get(&n).copied(), now, amount);
                let in_table = rule.decide(state_of(&set, &key(n)), now, amount);
                if let RateOutcome::Admitted { tat_after } = in_model {
                    model.insert(n, tat_after);
                }
                match (in_model, in_table) {
                    (RateOutcome::Limited { .. }, RateOutcome::Admitted { .. }) => extra += 1,
                    (RateOutcome::Admitted { .. }, RateOutcome::Limited { .. }) => panic!("the table admitted less"),
                    _ => {}
                }
                if let RateOutcome::Admitted { tat_after } = in_table {
                    let placement = place(&set, &key(n), now, &[]);
                    if matches!(placement, Placement::Evict(_)) {
                        lossy += 1;
                    }
                    set[placement.slot()] = Slot { key: key(n), tat_us: tat_after, used: true };
                    // Keep the model's state in step where the table's was forgotten.
                    model.insert(n, tat_after);
                }
            }
            if fits {
                assert_eq!((lossy, extra), (0, 0), "six keys fit in a set of eight");
            } else {
                assert!(lossy > 0 && extra > 0 && extra <= lossy * 5, "lossy {lossy}, extra admissions {extra}");
            }
        }
    }
}
