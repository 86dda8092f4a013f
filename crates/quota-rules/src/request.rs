//! The rules every SQL entry point applies to its arguments before it touches a table: what
//! a valid amount, idempotency key, instant, hold lifetime and reservation state are, when a
//! retried key replays its first decision, and what each call writes to the ledger.

use std::fmt;

use crate::decide::Decision;
use crate::window::{Micros, Window};
use crate::CorruptValue;

/// Records may arrive from clocks a little ahead of the database's.
pub const FUTURE_TOLERANCE_MICROS: Micros = 5 * 60 * 1_000_000;

const IDEMPOTENCY_KEY_CHARS: std::ops::RangeInclusive<usize> = 1..=255;

/// How a call spends. Consume is all or nothing; record and settle never deny (the work is
/// done) and count what does not fit as overage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Consume,
    Record,
    Reserve,
    Settle,
    Release,
    GiveBack,
    /// A pool gives a member a fixed part of itself (quota.allocate()).
    Allocate,
}

impl Mode {
    const ALL: [Mode; 7] = [Mode::Consume, Mode::Record, Mode::Reserve, Mode::Settle, Mode::Release, Mode::GiveBack, Mode::Allocate];

    pub fn overage_allowed(self) -> bool {
        matches!(self, Mode::Record | Mode::Settle)
    }
}

/// `quota.events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A call that was allowed, named after its mode.
    Allowed(Mode),
    /// Any call that was denied.
    Denial,
    /// The row quota.reset() writes.
    Reset,
}

impl EventKind {
    /// The kind of the ledger row of a decision made in `mode`.
    pub fn of(mode: Mode, decision: &Decision) -> EventKind {
        if decision.allowed {
            EventKind::Allowed(mode)
        } else {
            EventKind::Denial
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Allowed(Mode::Consume) => "consume",
            EventKind::Allowed(Mode::Record) => "record",
            EventKind::Allowed(Mode::Reserve) => "reserve",
            EventKind::Allowed(Mode::Settle) => "settle",
            EventKind::Allowed(Mode::Release) => "release",
            EventKind::Allowed(Mode::GiveBack) => "give_back",
            EventKind::Allowed(Mode::Allocate) => "allocate",
            EventKind::Denial => "denial",
            EventKind::Reset => "reset",
        }
    }

    fn all() -> impl Iterator<Item = EventKind> {
        Mode::ALL.into_iter().map(EventKind::Allowed).chain([EventKind::Denial, EventKind::Reset])
    }

    /// A kind read back from the ledger; anything else is a corrupt row.
    pub fn parse(text: &str) -> Result<EventKind, CorruptValue> {
        Self::all().find(|kind| kind.as_str() == text).ok_or_else(|| CorruptValue::new("event kind", text))
    }
}

/// `quota.reservations.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Held,
    Settled,
    Released,
    Expired,
}

impl ReservationStatus {
    const ALL: [ReservationStatus; 4] =
        [ReservationStatus::Held, ReservationStatus::Settled, ReservationStatus::Released, ReservationStatus::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Settled => "settled",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }

    /// A status read back from the table; anything else is a corrupt row.
    pub fn parse(text: &str) -> Result<ReservationStatus, CorruptValue> {
        Self::ALL.into_iter().find(|status| status.as_str() == text).ok_or_else(|| CorruptValue::new("reservation status", text))
    }
}

/// A request a caller can correct. The SQL layer gives each its SQLSTATE (src/error.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    NotPositive { name: &'static str, value: i64 },
    Negative { name: &'static str, value: i64 },
    IdempotencyKeyLength,
    InTheFuture,
    ExpiryNotInTheFuture,
    HoldTtl { given: String },
    /// A key retried for a different request (23505).
    KeyReused { key: String, original_amount: i64, original_metric: String, amount: i64, metric: String },
    ReservationReleased { reservation: String },
    ReservationSettled { reservation: String },
    ReservationExpired { reservation: String, expired_at: Micros },
    /// A settled reservation settled again with another amount (23505).
    SettledOtherwise { reservation: String, settled: i64, actual: i64 },
    /// A reserve retried with the key of a hold that was released or expired (23505): a
    /// replay would say it holds what it no longer holds.
    KeyHoldEnded { key: String, reservation: String, ended: String },
    /// Usage counted into a window that quota.compact() closed (its counter is folded into
    /// rollups): counting it again from zero would pay it twice.
    WindowCompacted { metric: String, window_start: Micros },
}

impl RequestError {
    /// Whether the request collides with one already made (23505, HTTP 409) rather than
    /// being invalid on its own (22023, HTTP 400).
    pub fn is_conflict(&self) -> bool {
        matches!(self, RequestError::KeyReused { .. } | RequestError::SettledOtherwise { .. } | RequestError::KeyHoldEnded { .. })
    }

    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            RequestError::NotPositive { .. } => "Pass a whole number of units greater than zero.",
            RequestError::Negative { name: "actual", .. } => "Pass what the work really used; 0 frees the whole hold.",
            RequestError::Negative { .. } => "Pass 0 to block the metric, or NULL for unlimited.",
            RequestError::IdempotencyKeyLength => "Use a request id or a UUID; pass NULL for no idempotency.",
            RequestError::InTheFuture => "Record usage that already happened; clocks may be ahead by at most 5 minutes.",
            RequestError::ExpiryNotInTheFuture => "Pass a future expiry, or NULL for one that never expires.",
            RequestError::HoldTtl { .. } => "For example '15 minutes' or '2 hours'.",
            RequestError::KeyReused { .. } => "Retry with the original metric and amount, or use a new key for a new request.",
            RequestError::ReservationReleased { .. } => "A released hold is gone; reserve again for new work.",
            RequestError::KeyHoldEnded { .. } => "That hold holds nothing any more: reserve with a new key for new work.",
            RequestError::ReservationExpired { .. } => {
                "An expired hold holds nothing. Record usage that happened anyway with quota.record()."
            }
            RequestError::WindowCompacted { .. } => {
                "quota.compact() folds windows that ended more than its older_than ago: record usage before then, or compact with a longer older_than."
            }
            RequestError::ReservationSettled { .. } | RequestError::SettledOtherwise { .. } => return None,
        })
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotPositive { name, value } => write!(f, "{name} must be positive, got {value}"),
            RequestError::Negative { name, value } => write!(f, "{name} must not be negative, got {value}"),
            RequestError::IdempotencyKeyLength => write!(f, "idempotency_key must be 1 to 255 characters"),
            RequestError::InTheFuture => write!(f, "occurred_at is in the future"),
            RequestError::ExpiryNotInTheFuture => write!(f, "expires_at is not in the future"),
            RequestError::HoldTtl { given } => {
                write!(f, "ttl must be a positive interval of days, hours, minutes or seconds, got {given}")
            }
            RequestError::KeyReused { key, original_amount, original_metric, amount, metric } => write!(
                f,
                "idempotency key \"{key}\" was already used for {original_amount} of \"{original_metric}\", not {amount} of \"{metric}\""
            ),
            RequestError::ReservationReleased { reservation } => write!(f, "reservation {reservation} was released"),
            RequestError::KeyHoldEnded { key, reservation, ended } => {
                write!(f, "idempotency key \"{key}\" reserved {reservation}, which {ended}")
            }
            RequestError::ReservationSettled { reservation } => write!(f, "reservation {reservation} was settled already"),
            RequestError::ReservationExpired { reservation, expired_at } => {
                write!(f, "reservation {reservation} expired at {}", format_instant(*expired_at))
            }
            RequestError::SettledOtherwise { reservation, settled, actual } => {
                write!(f, "reservation {reservation} was already settled with {settled}, not {actual}")
            }
            RequestError::WindowCompacted { metric, window_start } => write!(
                f,
                "the window of \"{metric}\" that started at {} was closed by quota.compact(): usage can no longer be counted into it",
                format_instant(*window_start)
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// Amounts are positive: zero would record nothing, negative would refund.
pub fn positive_amount(amount: i64) -> Result<i64, RequestError> {
    if amount > 0 {
        Ok(amount)
    } else {
        Err(RequestError::NotPositive { name: "amount", value: amount })
    }
}

/// A count that may be zero but not negative (an override's allowance, a settled amount).
pub fn not_negative(name: &'static str, value: i64) -> Result<i64, RequestError> {
    if value >= 0 {
        Ok(value)
    } else {
        Err(RequestError::Negative { name, value })
    }
}

pub fn validate_idempotency_key(key: &str) -> Result<&str, RequestError> {
    if IDEMPOTENCY_KEY_CHARS.contains(&key.chars().count()) {
        Ok(key)
    } else {
        Err(RequestError::IdempotencyKeyLength)
    }
}

/// The instant usage counts at: `now`, or for a record of the past its `occurred_at`, which
/// may be ahead of the database's clock by at most FUTURE_TOLERANCE_MICROS.
pub fn usage_instant(occurred_at: Option<Micros>, now: Micros) -> Result<Micros, RequestError> {
    let at = occurred_at.unwrap_or(now);
    if at > now.saturating_add(FUTURE_TOLERANCE_MICROS) {
        Err(RequestError::InTheFuture)
    } else {
        Ok(at)
    }
}

/// Whether quota.compact() may have closed `window` by `clock` (the wall clock): it closes
/// only windows that have ended (by at least its older_than).
pub fn may_be_compacted(window: Window, clock: Micros) -> bool {
    window.end.is_some_and(|end| end <= clock)
}

/// A grant's expiry must lie ahead of the transaction's instant.
pub fn future_expiry(expires_at: Micros, now: Micros) -> Result<Micros, RequestError> {
    if expires_at > now {
        Ok(expires_at)
    } else {
        Err(RequestError::ExpiryNotInTheFuture)
    }
}

/// The original decision for a retried key, when the retry asks for the same metric and
/// amount; a different request under the same key is a conflict.
pub fn replay(original: Decision, metric: &str, amount: i64, key: &str) -> Result<Decision, RequestError> {
    if original.metric == metric && original.amount == amount {
        return Ok(original);
    }
    Err(RequestError::KeyReused {
        key: key.to_string(),
        original_amount: original.amount,
        original_metric: original.metric,
        amount,
        metric: metric.to_string(),
    })
}

/// A hold's lifetime from an interval's parts: days, hours, minutes and seconds, positive
/// (months have no fixed length). `given` is the interval as the caller wrote it.
pub fn hold_ttl_micros(months: i32, days: i32, micros: i64, given: impl FnOnce() -> String) -> Result<Micros, RequestError> {
    let total = (months == 0)
        .then(|| i64::from(days).checked_mul(86_400_000_000)?.checked_add(micros))
        .flatten()
        .filter(|total| *total > 0);
    total.ok_or_else(|| RequestError::HoldTtl { given: given() })
}

/// A reservation that can still be settled or released, or the error that says why not.
pub fn still_held(reservation: impl fmt::Display, status: ReservationStatus, expires_at: Micros, now: Micros) -> Result<(), RequestError> {
    match status {
        ReservationStatus::Released => Err(RequestError::ReservationReleased { reservation: reservation.to_string() }),
        ReservationStatus::Settled => Err(RequestError::ReservationSettled { reservation: reservation.to_string() }),
        ReservationStatus::Expired => Err(RequestError::ReservationExpired { reservation: reservation.to_string(), expired_at: expires_at }),
        ReservationStatus::Held if expires_at <= now => {
            Err(RequestError::ReservationExpired { reservation: reservation.to_string(), expired_at: expires_at })
        }
        ReservationStatus::Held => Ok(()),
    }
}

/// Whether a reserve retried with the key of an earlier hold replays it: while it holds, and
/// once settled (the retried flow's settle replays too); not once released or expired.
pub fn replayable_hold(key: &str, reservation: impl fmt::Display, status: ReservationStatus, expires_at: Micros, now: Micros) -> Result<(), RequestError> {
    let ended = |ended: String| Err(RequestError::KeyHoldEnded { key: key.to_string(), reservation: reservation.to_string(), ended });
    match status {
        ReservationStatus::Settled => Ok(()),
        ReservationStatus::Released => ended("was released".to_string()),
        ReservationStatus::Expired => ended(format!("expired at {}", format_instant(expires_at))),
        ReservationStatus::Held if expires_at <= now => ended(format!("expired at {}", format_instant(expires_at))),
        ReservationStatus::Held => Ok(()),
    }
}

/// Settling a settled reservation again replays its decision if the amount is the same.
pub fn replay_settle(reservation: impl fmt::Display, original: Decision, actual: i64) -> Result<Decision, RequestError> {
    if original.amount == actual {
        Ok(original)
    } else {
        Err(RequestError::SettledOtherwise { reservation: reservation.to_string(), settled: original.amount, actual })
    }
}

/// An instant as RFC 3339 (UTC), or its microseconds when the calendar cannot place it.
pub fn format_instant(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(|| micros.to_string(), |instant| instant.to_rfc3339())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reserve_retried_replays_a_hold_that_holds_or_was_settled() {
        use super::{replayable_hold, RequestError, ReservationStatus};
        let (expires_at, now) = (2_000_000, 1_000_000);
        assert_eq!(replayable_hold("k", "r", ReservationStatus::Held, expires_at, now), Ok(()));
        assert_eq!(replayable_hold("k", "r", ReservationStatus::Settled, expires_at, expires_at + 1), Ok(()));
        let ended = |status, now| match replayable_hold("k", "r", status, expires_at, now) {
            Err(error @ RequestError::KeyHoldEnded { .. }) => error.is_conflict(),
            _ => false,
        };
        assert!(ended(ReservationStatus::Released, now));
        assert!(ended(ReservationStatus::Expired, now));
        assert!(ended(ReservationStatus::Held, expires_at));
    }

    use super::*;
    use crate::decide::{Reason, Split, Standing};
    use crate::rng::Rng;
    use crate::window::Window;

    fn decided(metric: &str, amount: i64) -> Decision {
        let standing = Standing { used: amount, reserved: 0, grants_left: 0 };
        Decision::new(metric, amount, Some(&Split::allowance_only(amount)), standing, Some(10), Window { start: None, end: None })
    }

    #[test]
    fn idempotency_keys_are_1_to_255_characters() {
        assert_eq!(validate_idempotency_key(""), Err(RequestError::IdempotencyKeyLength));
        assert_eq!(validate_idempotency_key("k"), Ok("k"));
        let longest = "é".repeat(255);
        assert_eq!(validate_idempotency_key(&longest), Ok(longest.as_str()));
        assert_eq!(validate_idempotency_key(&"é".repeat(256)), Err(RequestError::IdempotencyKeyLength));
    }

    #[test]
    fn amounts_and_counts() {
        assert_eq!(positive_amount(1), Ok(1));
        assert_eq!(positive_amount(0).map_err(|e| e.to_string()), Err("amount must be positive, got 0".to_string()));
        assert!(positive_amount(i64::MIN).is_err());
        assert_eq!(not_negative("actual", 0), Ok(0));
        let negative = not_negative("actual", -1).expect_err("negative");
        assert_eq!(negative.hint(), Some("Pass what the work really used; 0 frees the whole hold."));
        assert_eq!(not_negative("allowance", -1).expect_err("negative").hint(), Some("Pass 0 to block the metric, or NULL for unlimited."));
    }

    #[test]
    fn records_may_be_at_most_five_minutes_ahead() {
        let now = 1_000_000_000_000;
        assert_eq!(usage_instant(None, now), Ok(now));
        assert_eq!(usage_instant(Some(now + FUTURE_TOLERANCE_MICROS), now), Ok(now + FUTURE_TOLERANCE_MICROS));
        assert_eq!(usage_instant(Some(now + FUTURE_TOLERANCE_MICROS + 1), now), Err(RequestError::InTheFuture));
        assert_eq!(usage_instant(Some(i64::MIN), now), Ok(i64::MIN));
        assert_eq!(usage_instant(Some(i64::MAX), i64::MAX), Ok(i64::MAX));
        assert_eq!(future_expiry(now, now), Err(RequestError::ExpiryNotInTheFuture));
        assert_eq!(future_expiry(now + 1, now), Ok(now + 1));
    }

    #[test]
    fn only_ended_windows_may_be_compacted() {
        let day = Window { start: Some(0), end: Some(86_400_000_000) };
        assert!(!may_be_compacted(day, 86_399_999_999));
        assert!(may_be_compacted(day, 86_400_000_000));
        assert!(!may_be_compacted(Window::LIFETIME, i64::MAX));
        let closed = RequestError::WindowCompacted { metric: "calls".into(), window_start: 0 };
        assert!(!closed.is_conflict());
        assert_eq!(
            closed.to_string(),
            "the window of \"calls\" that started at 1970-01-01T00:00:00+00:00 was closed by quota.compact(): usage can no longer be counted into it"
        );
        assert!(closed.hint().is_some_and(|hint| hint.contains("older_than")));
    }

    #[test]
    fn a_key_replays_only_the_same_request() {
        let original = decided("calls", 3);
        assert_eq!(replay(original.clone(), "calls", 3, "k"), Ok(original.clone()));
        let reused = replay(original.clone(), "calls", 4, "k").expect_err("other amount");
        assert!(reused.is_conflict());
        assert_eq!(reused.to_string(), "idempotency key \"k\" was already used for 3 of \"calls\", not 4 of \"calls\"");
        assert!(replay(original, "tokens", 3, "k").is_err());
    }

    #[test]
    fn hold_ttl_is_a_positive_fixed_length() {
        let shown = || "x".to_string();
        assert_eq!(hold_ttl_micros(0, 0, 1, shown), Ok(1));
        assert_eq!(hold_ttl_micros(0, 1, -1, shown), Ok(86_399_999_999));
        assert_eq!(hold_ttl_micros(0, 0, 0, shown), Err(RequestError::HoldTtl { given: "x".into() }));
        assert_eq!(hold_ttl_micros(0, -1, 86_400_000_000, shown), Err(RequestError::HoldTtl { given: "x".into() }));
        assert_eq!(hold_ttl_micros(1, 0, 1, shown), Err(RequestError::HoldTtl { given: "x".into() }));
        assert_eq!(hold_ttl_micros(0, i32::MAX, i64::MAX, shown), Err(RequestError::HoldTtl { given: "x".into() }));
        // Against exact arithmetic, for any parts.
        let mut rng = Rng::new(0x5EED_0101);
        for case in 0..50_000 {
            let months = if rng.chance(10) { rng.range(-2, 2) as i32 } else { 0 };
            let days = rng.range(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            let micros = if rng.chance(50) { rng.range(-1_000_000_000_000, 1_000_000_000_000) } else { rng.next_u64() as i64 };
            // The days alone must fit in microseconds too, as PostgreSQL's interval does.
            let day_micros = i128::from(days) * 86_400_000_000;
            let exact = day_micros + i128::from(micros);
            let fits = |value: i128| i128::from(i64::MIN) <= value && value <= i128::from(i64::MAX);
            let expected = (months == 0 && fits(day_micros) && exact > 0 && fits(exact)).then_some(exact as i64);
            assert_eq!(hold_ttl_micros(months, days, micros, shown).ok(), expected, "case {case}: {months} {days} {micros}");
        }
    }

    #[test]
    fn only_an_unexpired_hold_can_change() {
        use ReservationStatus::*;
        assert_eq!(still_held("r", Held, 11, 10), Ok(()));
        assert_eq!(still_held("r", Held, 10, 10), Err(RequestError::ReservationExpired { reservation: "r".into(), expired_at: 10 }));
        assert_eq!(still_held("r", Expired, 11, 10), Err(RequestError::ReservationExpired { reservation: "r".into(), expired_at: 11 }));
        assert_eq!(still_held("r", Released, 11, 10).map_err(|e| e.to_string()), Err("reservation r was released".to_string()));
        assert_eq!(still_held("r", Settled, 5, 10).map_err(|e| e.to_string()), Err("reservation r was settled already".to_string()));
        let expired = still_held("r", Held, 0, 10).expect_err("expired").to_string();
        assert_eq!(expired, "reservation r expired at 1970-01-01T00:00:00+00:00");
        assert_eq!(replay_settle("r", decided("calls", 2), 2).map(|d| d.amount), Ok(2));
        assert!(replay_settle("r", decided("calls", 2), 3).expect_err("other amount").is_conflict());
    }

    #[test]
    fn kinds_and_statuses_round_trip_and_refuse_anything_else() {
        assert_eq!(EventKind::all().count(), 9);
        for kind in EventKind::all() {
            assert_eq!(EventKind::parse(kind.as_str()), Ok(kind));
        }
        for status in ReservationStatus::ALL {
            assert_eq!(ReservationStatus::parse(status.as_str()), Ok(status));
        }
        assert!(EventKind::parse("refund").is_err());
        assert!(ReservationStatus::parse("").is_err());
        let denied = Decision::new("calls", 1, None, Standing { used: 0, reserved: 0, grants_left: 0 }, Some(0), Window { start: None, end: None });
        assert_eq!(EventKind::of(Mode::Consume, &denied), EventKind::Denial);
        assert_eq!(EventKind::of(Mode::GiveBack, &decided("calls", 1)).as_str(), "give_back");
        assert_eq!(denied.reason, Reason::QuotaExceeded);
        assert!(Mode::Record.overage_allowed() && Mode::Settle.overage_allowed() && !Mode::Consume.overage_allowed());
    }
}
