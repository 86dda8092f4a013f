//! Limit arithmetic: which allowance applies, whether an amount fits, what remains.
//! Plain Rust, no pgrx types. Every operation is checked or provably in range: the crate
//! builds with overflow-checks, and an overflow must become a clear SQL error, not a panic.

use crate::window::{Micros, Window};
use crate::CorruptValue;

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    QuotaExceeded,
    /// A rate rule of the metric has no room now (quota_rules::rate).
    RateLimited,
    NoPlan,
    /// Recorded usage beyond the allowance and the grants: counted, and flagged.
    Overage,
    /// Only in the ledger: the row quota.reset() writes.
    Reset,
    /// quota.consume_many(): this metric would have fit, but another metric of the bundle
    /// was denied, so nothing was consumed. Never written to the ledger.
    BundleDenied,
    /// A pool's member asked for more than its cap in the pool still allows, though the pool
    /// itself could pay (quota_rules::pool).
    CapReached,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::RateLimited => "rate_limited",
            Reason::NoPlan => "no_plan",
            Reason::Overage => "overage",
            Reason::Reset => "reset",
            Reason::BundleDenied => "bundle_denied",
            Reason::CapReached => "cap_reached",
        }
    }

    /// A reason read back from the ledger (which never holds bundle_denied); anything else
    /// is a corrupt row.
    pub fn parse(text: &str) -> Result<Reason, CorruptValue> {
        [Reason::Ok, Reason::QuotaExceeded, Reason::RateLimited, Reason::NoPlan, Reason::Overage, Reason::Reset, Reason::CapReached]
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| CorruptValue::new("reason", text))
    }
}

/// What consume / check / require return (the SQL type `quota.decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub metric: String,
    pub amount: i64,
    pub from_allowance: i64,
    pub from_grants: i64,
    /// Counted beyond allowance and grants: record and settle, and consume under a soft
    /// limit (within its ceiling); a hard limit's consume never overspends.
    pub overage: i64,
    /// Usage of the window after this call.
    pub used: i64,
    /// What active holds (reservations) keep in the window.
    pub reserved: i64,
    /// None = unlimited.
    pub allowance: Option<i64>,
    /// Allowance left plus usable grants; None = unlimited.
    pub remaining: Option<i64>,
    /// None = a lifetime window that was never reset.
    pub window_start: Option<Micros>,
    /// None = the window never ends (lifetime).
    pub resets_at: Option<Micros>,
    pub replayed: bool,
    pub reason: Reason,
    pub event_id: Option<i64>,
    /// When the same call would next succeed: a rate rule's next room, or the window's end
    /// for a quota denial that an empty window admits. None when allowed, or when only a
    /// reset or a top-up can help.
    pub retry_after: Option<Micros>,
}

/// A window after a call: its usage, what active holds keep, and the usable grants left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub used: i64,
    pub reserved: i64,
    pub grants_left: i64,
}

impl Decision {
    /// The decision on `amount` of `metric` in `window`: paid as `paid` says (None =
    /// denied), leaving the window as `standing` says.
    pub fn new(metric: &str, amount: i64, paid: Option<&Split>, standing: Standing, allowance: Option<i64>, window: Window) -> Decision {
        // An amount an empty window admits fits again when the window ends.
        let fits_next_window = allowance.is_none_or(|allowance| amount <= allowance);
        let reason = match paid {
            None => Reason::QuotaExceeded,
            Some(split) if split.overage > 0 => Reason::Overage,
            Some(_) => Reason::Ok,
        };
        Decision {
            allowed: paid.is_some(),
            metric: metric.to_string(),
            amount,
            from_allowance: paid.map_or(0, |split| split.from_allowance),
            from_grants: paid.map_or(0, Split::grants_total),
            overage: paid.map_or(0, |split| split.overage),
            used: standing.used,
            reserved: standing.reserved,
            allowance,
            remaining: remaining_with_grants(allowance, standing.used, standing.grants_left, standing.reserved),
            window_start: window.start,
            resets_at: window.end,
            replayed: false,
            reason,
            event_id: None,
            retry_after: window.end.filter(|_| paid.is_none() && fits_next_window),
        }
    }

    /// The denial of a call that a rate rule has no room for now; it fits at `retry_at`.
    pub fn rate_limited(self, retry_at: Option<Micros>) -> Decision {
        Decision { allowed: false, from_allowance: 0, from_grants: 0, overage: 0, reason: Reason::RateLimited, retry_after: retry_at, ..self }
    }

    /// A decision read back from the ledger must be one pg_quota could have written: no
    /// negative part, the parts add up to the amount or to nothing (a denial, a hold not
    /// settled yet), and a denial says why. A corrupt row is an internal error, never `ok`.
    pub fn assert_consistent(&self) -> Result<(), CorruptValue> {
        let paid = i128::from(self.from_allowance) + i128::from(self.from_grants) + i128::from(self.overage);
        let parts_valid = self.from_allowance >= 0 && self.from_grants >= 0 && self.overage >= 0;
        let adds_up = paid == 0 || paid == i128::from(self.amount);
        let denied_for_a_reason = self.allowed || matches!(self.reason, Reason::QuotaExceeded | Reason::RateLimited | Reason::NoPlan | Reason::CapReached);
        if parts_valid && adds_up && denied_for_a_reason {
            Ok(())
        } else {
            Err(CorruptValue::new("decision", &format!("{self:?}")))
        }
    }
}

/// A limit as a plan or an override states it for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The plan has no limit for the metric, or the subject no override.
    Absent,
    Unlimited,
    AtMost(i64),
}

impl Limit {
    /// From a row that may lack the limit (`present`) and whose allowance NULL means unlimited.
    pub fn from_row(present: bool, allowance: Option<i64>) -> Limit {
        match (present, allowance) {
            (false, _) => Limit::Absent,
            (true, None) => Limit::Unlimited,
            (true, Some(allowance)) => Limit::AtMost(allowance),
        }
    }
}

/// The allowance in force: an override replaces the plan's limit, and a metric missing
/// from the plan has allowance 0. `None` means unlimited.
pub fn effective_allowance(plan_limit: Limit, override_limit: Limit) -> Option<i64> {
    let allowance = |limit| match limit {
        Limit::Unlimited => None,
        Limit::AtMost(allowance) => Some(allowance),
        Limit::Absent => Some(0),
    };
    match override_limit {
        Limit::Absent => allowance(plan_limit),
        overridden => allowance(overridden),
    }
}

/// The largest window usage that still admits an amount. Consumption is one conditional
/// update, `used <= ceiling`, so the bound never has to be recomputed under the row lock
/// and `used + amount` never overflows for a limited metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    Unlimited,
    AtMost(i64),
    /// The amount alone is more than the allowance: deny without touching the counter.
    Never,
}

/// `amount` must be positive and `allowance` non-negative (both are validated on input).
pub fn ceiling(allowance: Option<i64>, amount: i64) -> Ceiling {
    match allowance {
        None => Ceiling::Unlimited,
        // allowance >= 0 and amount > 0, so the subtraction cannot overflow.
        Some(allowance) if amount <= allowance => Ceiling::AtMost(allowance - amount),
        Some(_) => Ceiling::Never,
    }
}

impl Ceiling {
    /// Whether a window that has `used` admits the amount this ceiling was made for.
    pub fn admits(self, used: i64) -> bool {
        match self {
            Ceiling::Unlimited => true,
            Ceiling::AtMost(max_used) => used <= max_used,
            Ceiling::Never => false,
        }
    }
}

/// How an amount is paid: the window's allowance first, then grants in spending order,
/// then (record only) overage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub from_allowance: i64,
    /// (index into the balances given, amount taken), in spending order.
    pub from_grants: Vec<(usize, i64)>,
    pub overage: i64,
}

impl Split {
    pub fn allowance_only(amount: i64) -> Split {
        Split { from_allowance: amount, from_grants: Vec::new(), overage: 0 }
    }

    pub fn grants_total(&self) -> i64 {
        // Each part is at most the amount and they sum to at most the amount.
        self.from_grants.iter().map(|(_, taken)| taken).sum()
    }

    /// What the window's counter grows by: grants have balances of their own.
    pub fn counted(&self) -> i64 {
        self.from_allowance + self.overage
    }
}

/// Splits `amount` (positive) between `room` (what the allowance still admits; None =
/// unlimited) and grant balances in spending order. Without `overage_allowed` (consume),
/// it is all or nothing: None when room and grants together cannot cover the amount.
pub fn split(amount: i64, room: Option<i64>, balances: &[i64], overage_allowed: bool) -> Option<Split> {
    let Some(room) = room else {
        return Some(Split::allowance_only(amount));
    };
    let from_allowance = amount.min(room.max(0));
    let mut rest = amount - from_allowance;
    let mut from_grants = Vec::new();
    for (index, balance) in balances.iter().enumerate() {
        if rest == 0 {
            break;
        }
        let taken = rest.min((*balance).max(0));
        if taken > 0 {
            from_grants.push((index, taken));
            rest -= taken;
        }
    }
    if rest > 0 && !overage_allowed {
        return None;
    }
    let paid = Split { from_allowance, from_grants, overage: rest };
    paid.assert_pays(amount, room, balances);
    Some(paid)
}

impl Split {
    /// The split's invariants: its parts add up to the amount, none is negative, the
    /// allowance gives at most its room and no grant more than its balance. A broken one is
    /// a bug in pg_quota: the statement fails (XX000) rather than spend what is not there.
    fn assert_pays(&self, amount: i64, room: i64, balances: &[i64]) {
        let grants: i128 = self.from_grants.iter().map(|(_, taken)| i128::from(*taken)).sum();
        let total = i128::from(self.from_allowance) + grants + i128::from(self.overage);
        assert_eq!(total, i128::from(amount), "split: parts {self:?} do not add up to {amount}");
        assert!((0..=room.max(0)).contains(&self.from_allowance), "split: {self:?} takes more than the room {room}");
        assert!(self.overage >= 0, "split: negative overage in {self:?}");
        for (index, taken) in &self.from_grants {
            assert!(*taken > 0 && *taken <= balances[*index], "split: grant {index} overdrawn in {self:?} of {balances:?}");
        }
    }
}

/// How far a consume may pass the allowance once the allowance and the grants are spent:
/// a hard limit, or a soft one (the limit's `"overage"`) that lets it go on as overage, up to
/// a ceiling of overage per window or without one. Records and settles always may (usage
/// that happened); holds and allocations never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overage {
    Hard,
    AtMost(i64),
    Unbounded,
}

impl Overage {
    /// What is left of it in a window that has `used` against `allowance`: None = no bound.
    /// The window's overage so far is what it used past its allowance.
    pub fn room(self, allowance: Option<i64>, used: i64) -> Option<i64> {
        match (self, allowance) {
            (Overage::Hard, _) => Some(0),
            (Overage::Unbounded, _) | (_, None) => None,
            (Overage::AtMost(max), Some(allowance)) => Some(max.saturating_sub(used.saturating_sub(allowance).max(0)).max(0)),
        }
    }
}

/// split, letting the rest go on as overage of at most `overage_room` (None = no bound): an
/// amount that allowance, grants and that room cannot cover together is not split (None).
pub fn split_within(amount: i64, room: Option<i64>, balances: &[i64], overage_room: Option<i64>) -> Option<Split> {
    split(amount, room, balances, true).filter(|paid| overage_room.is_none_or(|max| paid.overage <= max))
}

/// Sum of grant balances; saturates, since it is only reported, never spent from.
pub fn grants_total(balances: &[i64]) -> i64 {
    balances.iter().fold(0i64, |sum, balance| sum.saturating_add((*balance).max(0)))
}

/// What a decision reports as remaining: allowance left plus usable grants, less what
/// active holds (reservations) keep for themselves. None = unlimited.
pub fn remaining_with_grants(allowance: Option<i64>, used: i64, grants_left: i64, reserved: i64) -> Option<i64> {
    remaining(allowance, used).map(|left| left.saturating_add(grants_left).saturating_sub(reserved).max(0))
}

/// The usable grants that `remaining_with_grants` counted, found again from the `remaining` it
/// returned: they are what it adds to the allowance's room beside the holds, and none when
/// nothing is left and the holds keep no more than the room. None when that cannot tell:
/// unlimited, nothing left while the holds keep more than the room (the grants may be
/// anything up to the difference), a sum at bigint's limit (it may have saturated), or values
/// that no balance gives (negative holds, a `remaining` written by hand).
pub fn grants_left_of(allowance: Option<i64>, used: i64, reserved: i64, decided_remaining: i64) -> Option<i64> {
    let room = remaining(allowance, used)?;
    if reserved < 0 {
        return None;
    }
    let grants = match decided_remaining {
        0 if reserved > room => return None,
        0 => 0,
        _ => decided_remaining.checked_add(reserved)?.checked_sub(room)?,
    };
    let exact = grants >= 0 && room.checked_add(grants).is_some_and(|sum| sum < i64::MAX);
    (exact && remaining_with_grants(allowance, used, grants, reserved) == Some(decided_remaining)).then_some(grants)
}

/// Active holds take capacity in spending order, as if they were spent: the allowance's
/// room first, then grants. Returns the room left and lowers `balances` in place.
pub fn after_holds(room: Option<i64>, balances: &mut [i64], holds: i64) -> Option<i64> {
    let room = room?;
    let from_room = holds.min(room).max(0);
    set_aside_from_grants(balances, holds - from_room);
    assert!(from_room <= room, "after_holds: holds {holds} set aside wrongly from room {room}");
    Some(room - from_room)
}

/// Holds that only grants can pay take their balances in spending order (those of another
/// window, whose allowance is not this window's: see `held_in_other_windows`). What the
/// grants cannot cover is left uncovered: the balances reach 0.
pub fn set_aside_from_grants(balances: &mut [i64], holds: i64) {
    let mut rest = holds.max(0);
    for balance in balances.iter_mut() {
        let taken = rest.min(*balance).max(0);
        *balance -= taken;
        rest -= taken;
    }
    assert!(rest >= 0, "set_aside_from_grants: set aside more than {holds}");
}

/// Allowance left in the window; never negative (an allowance can be lowered below what
/// was already used). `None` = unlimited.
pub fn remaining(allowance: Option<i64>, used: i64) -> Option<i64> {
    allowance.map(|allowance| allowance.saturating_sub(used).max(0))
}

/// Share of the allowance used, in percent rounded to one decimal; `None` when there is
/// no share to speak of: unlimited, or an allowance of 0 (a credit wallet paid by grants).
pub fn percent_used(allowance: Option<i64>, used: i64) -> Option<f64> {
    let allowance = allowance.filter(|allowance| *allowance > 0)?;
    // i128 holds used * 1000 for any i64; tenths of a percent, rounded half up.
    let tenths = (i128::from(used) * 1000 + i128::from(allowance) / 2) / i128::from(allowance);
    Some(tenths as f64 / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A soft limit lets a consume pass the allowance and the grants, as overage, up to what
    /// is left of its ceiling in the window; a hard one is split() without overage.
    #[test]
    fn soft_limits_bound_the_overage() {
        assert_eq!(Overage::Hard.room(Some(10), 12), Some(0));
        assert_eq!(Overage::Unbounded.room(Some(10), 12), None);
        assert_eq!(Overage::AtMost(5).room(Some(10), 4), Some(5));
        assert_eq!(Overage::AtMost(5).room(Some(10), 12), Some(3));
        assert_eq!(Overage::AtMost(5).room(Some(10), 40), Some(0));
        assert_eq!(Overage::AtMost(5).room(None, 40), None);
        assert_eq!(Overage::AtMost(i64::MAX).room(Some(0), i64::MAX), Some(0));
        let paid = split_within(10, Some(3), &[4], Some(3)).expect("3 + 4 + 3 overage");
        assert_eq!((paid.from_allowance, paid.grants_total(), paid.overage), (3, 4, 3));
        assert_eq!(split_within(10, Some(3), &[4], Some(2)), None);
        assert_eq!(split_within(10, Some(3), &[4], Some(0)), split(10, Some(3), &[4], false));
        assert_eq!(split_within(10, Some(3), &[4, 2], Some(0)), split(10, Some(3), &[4, 2], false));
        let mut rng = Rng::new(0x50F7);
        for case in 0..50_000 {
            let (amount, room, balance) = (rng.range(1, 50), rng.range(0, 30), rng.range(0, 30));
            let overage_room = if rng.chance(20) { None } else { Some(rng.range(0, 30)) };
            let paid = split_within(amount, Some(room), &[balance], overage_room);
            let fits = overage_room.is_none_or(|max| amount <= room + balance + max);
            assert_eq!(paid.is_some(), fits, "case {case}: {amount} in {room} + {balance} + {overage_room:?}");
            if let Some(paid) = paid {
                assert_eq!(paid.from_allowance, amount.min(room), "case {case}: the allowance pays first");
                assert!(overage_room.is_none_or(|max| paid.overage <= max), "case {case}");
            }
        }
    }

    #[test]
    fn ceiling_agrees_with_exact_arithmetic() {
        let mut rng = Rng::new(0x5EED_0001);
        for case in 0..100_000 {
            let allowance = rng.edgy_non_negative();
            let amount = rng.edgy_non_negative().max(1);
            let used = rng.edgy_non_negative();
            let exact = i128::from(used) + i128::from(amount) <= i128::from(allowance);
            assert_eq!(
                ceiling(Some(allowance), amount).admits(used),
                exact,
                "case {case}: allowance={allowance} amount={amount} used={used}"
            );
            assert!(ceiling(None, amount).admits(used));
        }
    }

    #[test]
    fn ceiling_edges() {
        assert_eq!(ceiling(Some(10), 10), Ceiling::AtMost(0));
        assert_eq!(ceiling(Some(10), 11), Ceiling::Never);
        assert_eq!(ceiling(Some(0), 1), Ceiling::Never);
        assert_eq!(ceiling(Some(i64::MAX), i64::MAX), Ceiling::AtMost(0));
        assert_eq!(ceiling(Some(i64::MAX), 1), Ceiling::AtMost(i64::MAX - 1));
        assert!(!Ceiling::Never.admits(0));
    }

    #[test]
    fn override_replaces_plan_and_missing_metric_is_zero() {
        use Limit::{Absent, AtMost, Unlimited};
        assert_eq!(effective_allowance(Absent, Absent), Some(0));
        assert_eq!(effective_allowance(AtMost(10), Absent), Some(10));
        assert_eq!(effective_allowance(Unlimited, Absent), None);
        assert_eq!(effective_allowance(AtMost(10), Unlimited), None);
        assert_eq!(effective_allowance(Unlimited, AtMost(3)), Some(3));
        assert_eq!(effective_allowance(Absent, AtMost(5)), Some(5));
        assert_eq!(Limit::from_row(false, Some(3)), Absent);
        assert_eq!(Limit::from_row(true, None), Unlimited);
        assert_eq!(Limit::from_row(true, Some(3)), AtMost(3));
    }

    #[test]
    fn remaining_never_negative_and_exact() {
        let mut rng = Rng::new(0x5EED_0002);
        for case in 0..100_000 {
            let allowance = rng.edgy_non_negative();
            let used = rng.edgy_non_negative();
            let expected = (i128::from(allowance) - i128::from(used)).max(0);
            assert_eq!(remaining(Some(allowance), used).map(i128::from), Some(expected), "case {case}");
        }
        assert_eq!(remaining(None, 5), None);
    }

    #[test]
    fn percent_used_rounds_and_handles_edges() {
        assert_eq!(percent_used(Some(10), 0), Some(0.0));
        assert_eq!(percent_used(Some(3), 1), Some(33.3));
        assert_eq!(percent_used(Some(3), 2), Some(66.7));
        assert_eq!(percent_used(Some(10), 15), Some(150.0));
        assert_eq!(percent_used(Some(0), 0), None);
        assert_eq!(percent_used(None, 7), None);
        assert_eq!(percent_used(Some(i64::MAX), i64::MAX), Some(100.0));
        assert_eq!(percent_used(Some(1), i64::MAX), Some(i64::MAX as f64 * 100.0));
    }

    /// The split against a reference model: parts add up, nothing is overdrawn, grants are
    /// taken strictly in order, and consume denies exactly when room plus grants fall short.
    #[test]
    fn split_matches_reference_model() {
        let mut rng = Rng::new(0x5EED_0003);
        for case in 0..50_000 {
            let amount = rng.edgy_non_negative().max(1);
            let room = if rng.next_u64() % 5 == 0 { None } else { Some(rng.edgy_non_negative()) };
            let balances: Vec<i64> = (0..rng.next_u64() % 5).map(|_| rng.edgy_non_negative()).collect();
            let overage_allowed = rng.next_u64() % 2 == 0;
            let context = format!("case {case}: amount={amount} room={room:?} balances={balances:?} overage={overage_allowed}");
            let available = room.map(|room| i128::from(room) + balances.iter().map(|b| i128::from(*b)).sum::<i128>());
            let outcome = split(amount, room, &balances, overage_allowed);
            let covered = available.is_none_or(|available| available >= i128::from(amount));
            if !overage_allowed && !covered {
                assert_eq!(outcome, None, "{context}");
                continue;
            }
            let paid = outcome.unwrap_or_else(|| panic!("{context}: denied"));
            let total = i128::from(paid.from_allowance) + i128::from(paid.grants_total()) + i128::from(paid.overage);
            assert_eq!(total, i128::from(amount), "{context}");
            assert!(room.is_none_or(|room| paid.from_allowance <= room), "{context}");
            assert_eq!(paid.overage > 0, !covered, "{context}");
            let mut previous = None;
            for (index, taken) in &paid.from_grants {
                assert!(*taken > 0 && *taken <= balances[*index], "{context}");
                // Every earlier grant with a balance was emptied before this one was touched.
                for (earlier, balance) in balances.iter().enumerate().take(*index) {
                    let used = paid.from_grants.iter().find(|(i, _)| *i == earlier).map_or(0, |(_, t)| *t);
                    assert!(*balance == 0 || used == *balance, "{context}: grant {earlier} skipped");
                }
                assert!(previous < Some(*index), "{context}");
                previous = Some(*index);
            }
        }
    }

    #[test]
    fn split_examples() {
        // Allowance first, then grants in order; all or nothing.
        let paid = split(10, Some(3), &[4, 5, 100], false).expect("covered");
        assert_eq!((paid.from_allowance, paid.from_grants.clone(), paid.overage), (3, vec![(0, 4), (1, 3)], 0));
        assert_eq!(paid.counted(), 3);
        assert_eq!(split(10, Some(3), &[4, 2], false), None);
        // record: the rest is overage, counted in the window.
        let recorded = split(10, Some(3), &[4, 2], true).expect("record never denies");
        assert_eq!((recorded.overage, recorded.counted()), (1, 4));
        assert_eq!(split(5, None, &[1], false), Some(Split::allowance_only(5)));
        assert_eq!(grants_total(&[i64::MAX, 5]), i64::MAX);
        assert_eq!(remaining_with_grants(Some(10), 4, 7, 0), Some(13));
        assert_eq!(remaining_with_grants(Some(10), 4, 7, 20), Some(0));
        assert_eq!(remaining_with_grants(None, 4, 7, 3), None);
    }

    /// Holds reduce what split can use by exactly their amount, allowance first.
    #[test]
    fn holds_take_capacity_in_spending_order() {
        let mut balances = [4, 5];
        assert_eq!(after_holds(Some(3), &mut balances, 6), Some(0));
        assert_eq!(balances, [1, 5]);
        let mut balances = [4];
        assert_eq!(after_holds(Some(10), &mut balances, 6), Some(4));
        assert_eq!(balances, [4]);
        let mut balances = [4];
        assert_eq!(after_holds(None, &mut balances, 6), None);
        let mut balances = [1, 1];
        assert_eq!(after_holds(Some(0), &mut balances, 5), Some(0));
        assert_eq!(balances, [0, 0]);
        let mut rng = Rng::new(0x5EED_0004);
        for case in 0..20_000 {
            let room = rng.edgy_non_negative() % 1_000_000;
            let mut balances: Vec<i64> = (0..rng.next_u64() % 4).map(|_| rng.edgy_non_negative() % 1_000_000).collect();
            let before: i64 = room + balances.iter().sum::<i64>();
            let holds = rng.edgy_non_negative() % 3_000_000;
            let left = after_holds(Some(room), &mut balances, holds).expect("limited");
            let after: i64 = left + balances.iter().sum::<i64>();
            assert_eq!(after, (before - holds).max(0), "case {case}");
            assert_eq!(remaining_with_grants(Some(room), 0, before - room, holds), Some(after), "case {case}");
        }
    }

    /// A decision's grants are found again from its `remaining` whenever it tells them, and
    /// never wrongly.
    #[test]
    fn grants_are_found_again_from_remaining() {
        assert_eq!(grants_left_of(Some(10), 4, 0, 13), Some(7));
        assert_eq!(grants_left_of(Some(10), 10, 0, 0), Some(0));
        assert_eq!(grants_left_of(Some(0), 0, 0, 480), Some(480));
        assert_eq!(grants_left_of(Some(10), 4, 2, 11), Some(7));
        assert_eq!(grants_left_of(Some(10), 12, 0, 3), Some(3)); // past the allowance: no room
        assert_eq!(grants_left_of(Some(10), 4, 20, 0), None); // the holds keep more than is there
        assert_eq!(grants_left_of(Some(10), 4, 6, 0), Some(0)); // the holds keep the room: no grants
        assert_eq!(grants_left_of(Some(10), 0, -5, i64::MAX - 5), None); // no balance has negative holds
        assert_eq!(grants_left_of(None, 4, 0, 3), None);
        assert_eq!(grants_left_of(Some(10), 4, 0, 3), None); // less than the room: not a decision's
        let mut rng = Rng::new(0x5EED_0005);
        for case in 0..20_000 {
            let allowance = (!rng.chance(5)).then(|| rng.edgy_non_negative());
            let (used, grants, held) = (rng.edgy_non_negative(), rng.edgy_non_negative(), rng.edgy_non_negative());
            let Some(left) = remaining_with_grants(allowance, used, grants, held) else {
                assert_eq!(allowance, None, "case {case}");
                continue;
            };
            match grants_left_of(allowance, used, held, left) {
                Some(found) => assert_eq!(found, grants, "case {case}"),
                // Only where another balance gives the same `remaining`.
                None => {
                    let room = remaining(allowance, used).expect("limited");
                    let saturated = room.checked_add(grants).is_none_or(|sum| sum == i64::MAX);
                    assert!(left == 0 && held > room || saturated, "case {case}: {allowance:?} {used} {grants} {held} -> {left}");
                }
            }
        }
    }

    #[test]
    fn reason_round_trips() {
        for reason in [Reason::Ok, Reason::QuotaExceeded, Reason::RateLimited, Reason::NoPlan, Reason::Overage, Reason::Reset] {
            assert_eq!(Reason::parse(reason.as_str()), Ok(reason));
        }
        assert_eq!(Reason::parse("nope"), Err(CorruptValue::new("reason", "nope")));
    }
}
