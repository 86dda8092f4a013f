//! Limit arithmetic: which allowance applies, whether an amount fits, what remains.
//! Plain Rust, no pgrx types. Every operation is checked or provably in range: the crate
//! builds with overflow-checks, and an overflow must become a clear SQL error, not a panic.

use crate::window::Micros;

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    QuotaExceeded,
    NoPlan,
    /// Only in the ledger: the row quota.reset() writes.
    Reset,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::NoPlan => "no_plan",
            Reason::Reset => "reset",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        [Reason::Ok, Reason::QuotaExceeded, Reason::NoPlan, Reason::Reset]
            .into_iter()
            .find(|reason| reason.as_str() == text)
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
    /// Usage of the window after this call.
    pub used: i64,
    /// None = unlimited.
    pub allowance: Option<i64>,
    /// None = unlimited.
    pub remaining: Option<i64>,
    /// None = a lifetime window that was never reset.
    pub window_start: Option<Micros>,
    /// None = the window never ends (lifetime).
    pub resets_at: Option<Micros>,
    pub replayed: bool,
    pub reason: Reason,
    pub event_id: Option<i64>,
}

/// The allowance in force: an override replaces the plan's limit, and a metric missing
/// from the plan has allowance 0. `None` means unlimited.
///
/// `plan_limit` is `None` when the plan has no limit for the metric, `Some(None)` when the
/// plan's limit is unlimited; likewise `override_limit`.
pub fn effective_allowance(plan_limit: Option<Option<i64>>, override_limit: Option<Option<i64>>) -> Option<i64> {
    match override_limit {
        Some(allowance) => allowance,
        None => plan_limit.unwrap_or(Some(0)),
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

/// Allowance left in the window; never negative (an allowance can be lowered below what
/// was already used). `None` = unlimited.
pub fn remaining(allowance: Option<i64>, used: i64) -> Option<i64> {
    allowance.map(|allowance| allowance.saturating_sub(used).max(0))
}

/// Share of the allowance used, in percent rounded to one decimal; `None` = unlimited.
/// An allowance of 0 counts as fully used.
pub fn percent_used(allowance: Option<i64>, used: i64) -> Option<f64> {
    let allowance = allowance?;
    if allowance == 0 {
        return Some(100.0);
    }
    // i128 holds used * 1000 for any i64; tenths of a percent, rounded half up.
    let tenths = (i128::from(used) * 1000 + i128::from(allowance) / 2) / i128::from(allowance);
    Some(tenths as f64 / 10.0)
}

/// Usage after adding an amount to an unlimited window; `None` on bigint overflow.
pub fn add_usage(used: i64, amount: i64) -> Option<i64> {
    used.checked_add(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a tiny deterministic generator, so every failure names a reproducible seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Values biased towards the edges where arithmetic breaks.
        fn edgy_non_negative(&mut self) -> i64 {
            const EDGES: [i64; 7] = [0, 1, 2, 9, 10, i64::MAX - 1, i64::MAX];
            match self.next() % 3 {
                0 => EDGES[(self.next() % EDGES.len() as u64) as usize],
                1 => (self.next() % 1_000) as i64,
                _ => (self.next() >> 1) as i64,
            }
        }
    }

    #[test]
    fn ceiling_agrees_with_exact_arithmetic() {
        let mut rng = Rng(0x5EED_0001);
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
        assert_eq!(effective_allowance(None, None), Some(0));
        assert_eq!(effective_allowance(Some(Some(10)), None), Some(10));
        assert_eq!(effective_allowance(Some(None), None), None);
        assert_eq!(effective_allowance(Some(Some(10)), Some(None)), None);
        assert_eq!(effective_allowance(Some(None), Some(Some(3))), Some(3));
        assert_eq!(effective_allowance(None, Some(Some(5))), Some(5));
    }

    #[test]
    fn remaining_never_negative_and_exact() {
        let mut rng = Rng(0x5EED_0002);
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
        assert_eq!(percent_used(Some(0), 0), Some(100.0));
        assert_eq!(percent_used(None, 7), None);
        assert_eq!(percent_used(Some(i64::MAX), i64::MAX), Some(100.0));
        assert_eq!(percent_used(Some(1), i64::MAX), Some(i64::MAX as f64 * 100.0));
    }

    #[test]
    fn add_usage_reports_overflow() {
        assert_eq!(add_usage(1, 2), Some(3));
        assert_eq!(add_usage(i64::MAX, 1), None);
    }

    #[test]
    fn reason_round_trips() {
        for reason in [Reason::Ok, Reason::QuotaExceeded, Reason::NoPlan, Reason::Reset] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("nope"), None);
    }
}
