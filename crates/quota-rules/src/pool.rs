//! Pools: a subject (a team, a class, a teacher) whose plan its members draw from, each
//! member within its cap. A member's call is paid wholly by the member's own means when
//! they cover it (its plan's allowance, then its grants, allocations from the pool among
//! them); otherwise wholly by the pool (the pool's allowance, then the pool's grants), and
//! only as far as the member's cap in the pool's window still allows. Never split between
//! the two levels: one ledger row says who paid.

use crate::decide::{split, Split};

/// What a member may still draw from its pool in the pool's current window: its cap less
/// what it drew (None = no cap).
pub fn cap_left(cap: Option<i64>, drawn: i64) -> Option<i64> {
    cap.map(|cap| cap.saturating_sub(drawn).max(0))
}

/// How the pool pays `amount` for a member: from the pool's allowance `room` and grant
/// `balances` as consume pays, but no more of them than `cap_left`. Without
/// `overage_allowed` (consume), None when the cap or the pool cannot cover the amount; with
/// it (record, settle), what the cap or the pool cannot cover is overage, counted in the
/// pool's window and in the member's draws.
pub fn pooled_split(amount: i64, room: Option<i64>, balances: &[i64], cap_left: Option<i64>, overage_allowed: bool) -> Option<Split> {
    let within_cap = cap_left.map_or(amount, |left| amount.min(left));
    if within_cap < amount && !overage_allowed {
        return None;
    }
    if within_cap == 0 {
        return Some(Split { from_allowance: 0, from_grants: Vec::new(), overage: amount });
    }
    let paid = split(within_cap, room, balances, overage_allowed)?;
    let paid = Split { overage: paid.overage + (amount - within_cap), ..paid };
    assert!(
        paid.from_allowance + paid.grants_total() <= within_cap,
        "pooled_split: {paid:?} takes more than the cap leaves ({cap_left:?})"
    );
    Some(paid)
}

/// Whether the member's cap, not the pool, is what denies `amount`: the pool alone could pay.
pub fn cap_binds(amount: i64, room: Option<i64>, balances: &[i64], cap_left: Option<i64>) -> bool {
    cap_left.is_some_and(|left| amount > left) && split(amount, room, balances, false).is_some()
}

/// What a member can still consume from the pool: the pool's remaining, at most its cap left.
pub fn member_remaining(pool_remaining: Option<i64>, cap_left: Option<i64>) -> Option<i64> {
    match (pool_remaining, cap_left) {
        (Some(pool), Some(cap)) => Some(pool.min(cap)),
        (pool, None) => pool,
        (None, cap) => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn the_cap_bounds_what_the_pool_pays() {
        // Allowance first, then the pool's grants, within the cap.
        let paid = pooled_split(5, Some(3), &[10], Some(6), false).expect("fits");
        assert_eq!((paid.from_allowance, paid.from_grants.clone(), paid.overage), (3, vec![(0, 2)], 0));
        assert_eq!(pooled_split(5, Some(100), &[], Some(4), false), None);
        assert_eq!(pooled_split(5, Some(4), &[], None, false), None);
        assert_eq!(pooled_split(5, None, &[], None, false), Some(Split::allowance_only(5)));
        // record: beyond the cap or the pool is overage.
        let recorded = pooled_split(5, Some(100), &[], Some(2), true).expect("record never denies");
        assert_eq!((recorded.from_allowance, recorded.overage), (2, 3));
        let recorded = pooled_split(5, Some(100), &[], Some(0), true).expect("record never denies");
        assert_eq!((recorded.from_allowance, recorded.overage), (0, 5));
        let recorded = pooled_split(5, Some(1), &[2], Some(4), true).expect("record never denies");
        assert_eq!((recorded.from_allowance, recorded.grants_total(), recorded.overage), (1, 2, 2));
    }

    #[test]
    fn the_cap_binds_only_where_the_pool_could_pay() {
        assert!(cap_binds(3, Some(10), &[], Some(2)));
        assert!(!cap_binds(3, Some(2), &[], Some(2)), "the pool cannot pay either: the pool's denial");
        assert!(cap_binds(3, Some(1), &[2], Some(0)), "grants of the pool count");
        assert!(!cap_binds(3, Some(10), &[], Some(3)));
        assert!(!cap_binds(3, None, &[], None));
    }

    #[test]
    fn remaining_is_the_lesser_of_pool_and_cap() {
        assert_eq!(member_remaining(Some(10), Some(3)), Some(3));
        assert_eq!(member_remaining(Some(2), Some(3)), Some(2));
        assert_eq!(member_remaining(None, Some(3)), Some(3));
        assert_eq!(member_remaining(Some(7), None), Some(7));
        assert_eq!(member_remaining(None, None), None);
        assert_eq!(cap_left(Some(20), 25), Some(0));
        assert_eq!(cap_left(None, 25), None);
    }

    /// Against a unit-by-unit model: each unit goes to the allowance while it has room, then
    /// to the first grant with balance, while the cap lasts; the rest is overage or a denial.
    #[test]
    fn pooled_split_matches_a_unit_by_unit_model() {
        let mut rng = Rng::new(0x5EED_0021);
        for _ in 0..20_000 {
            let amount = rng.below(12) as i64 + 1;
            let room = (rng.below(5) != 0).then(|| rng.below(10) as i64);
            let balances: Vec<i64> = (0..rng.below(3)).map(|_| rng.below(6) as i64).collect();
            let cap = (rng.below(4) != 0).then(|| rng.below(12) as i64);
            let overage_allowed = rng.below(2) == 0;
            let (mut allowance_room, mut left, mut cap_room) = (room, balances.clone(), cap);
            let (mut from_allowance, mut from_grants, mut overage) = (0, vec![0i64; balances.len()], 0);
            for _ in 0..amount {
                if cap_room == Some(0) {
                    overage += 1;
                    continue;
                }
                if allowance_room != Some(0) {
                    from_allowance += 1;
                    allowance_room = allowance_room.map(|r| r - 1);
                } else if let Some(index) = left.iter().position(|b| *b > 0) {
                    left[index] -= 1;
                    from_grants[index] += 1;
                } else {
                    overage += 1;
                    continue;
                }
                cap_room = cap_room.map(|c| c - 1);
            }
            let expected = (overage_allowed || overage == 0).then(|| Split {
                from_allowance,
                from_grants: from_grants.iter().enumerate().filter(|(_, t)| **t > 0).map(|(i, t)| (i, *t)).collect(),
                overage,
            });
            assert_eq!(pooled_split(amount, room, &balances, cap, overage_allowed), expected, "{amount} {room:?} {balances:?} {cap:?}");
        }
    }
}
