//! Reservations' fast path: reserve and settle on a window marked for consume's fast path
//! (store::fast_path), each in one statement, when nothing but the marked allowance and the
//! window's holds decide them. Anything else (a key, a rate rule, a wallet's grants, a hold
//! that may have expired, an alert to fire, an amount that does not fit) goes to the slow
//! path in src/reservations.rs, which decides every case; these statements decide only cases
//! where its decision is known, and write exactly the rows it writes.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::{Decision, Reason, Split};
use quota_rules::window::Micros;

use super::fast_path::window_returned;
use super::{not_null, query_row, timestamp, Kept};
use crate::error::QResult;

thread_local! {
    // A hold on the subject's marked window without rate rules (a hold takes their room),
    // not a wallet's (grants would take part of it), whose holds are all active (so that
    // `held` is what they keep, and what the decision reports as reserved), whose allowance
    // has room for the amount beside them (sum_within!, as consume's statements test it): the
    // counter's `held` and its bound on the holds' expiry (as ADD_HOLD sets it), the
    // reservation and its reserve row, as the slow path writes them.
    static FAST_RESERVE: Kept = const { Kept::new(
        concat!("WITH held AS (
             UPDATE quota.counters AS c
                SET held = c.held + $amount,
                    holds_expire_at = CASE WHEN c.held = 0 THEN $expires_at ELSE least(c.holds_expire_at, $expires_at) END
              WHERE ", marked_window_at_now!(), " AND NOT rated AND NOT wallet
                AND (allowance IS NULL OR ", sum_within!("used", "held", "<=", "allowance - $amount"), ")
             RETURNING window_start, window_end, used::int8 AS used, held::int8 AS reserved, allowance),
         hold AS (
             INSERT INTO quota.reservations (subject, metric, amount, window_start, window_end, expires_at)
             SELECT $subject, $metric, $amount, window_start, window_end, $expires_at FROM held
             RETURNING reservation_id)
         INSERT INTO quota.events (subject, kind, metric, amount, window_start, window_end, used, reserved, allowance,
                                   remaining, reason, reservation_id)
         SELECT $subject, 'reserve', $metric, $amount, window_start, window_end, used, reserved, allowance,
                allowance - used - reserved, 'ok', hold.reservation_id
           FROM held, hold
         RETURNING event_id, reservation_id, window_start, window_end, used, reserved, allowance"),
    ) };
    // Settles a hold on its subject's marked window (not a wallet's) whose holds are all
    // active, when the window's allowance pays the actual amount (default: the held amount)
    // beside the other holds, and no alert fires at the usage it reaches (counting the
    // other holds as usage: a rule on what remains reads them): the reservation is locked
    // first, then the counter, as the slow path locks them. Settled as the slow path
    // settles it: usage counted, the hold freed, the reservation settled, its settle row.
    // The bound on the holds' expiry stays: freeing a hold cannot bring the earliest expiry
    // of the others forward.
    static FAST_SETTLE: Kept = const { Kept::new(
        concat!("WITH hold AS MATERIALIZED (
             SELECT subject, metric, amount, coalesce($actual, amount) AS actual, window_start FROM quota.reservations
              WHERE reservation_id = $reservation_id AND status = 'held' AND expires_at > $now AND member IS NULL
                FOR UPDATE),
         paid AS (
             UPDATE quota.counters AS c SET used = c.used + h.actual, held = c.held - h.amount
               FROM hold AS h
              WHERE c.subject = h.subject AND c.metric = h.metric AND c.window_start = h.window_start
                AND c.fast AND NOT c.wallet AND c.held >= h.amount AND ", holds_all_active!(), "
                AND c.window_start <= $now AND (c.window_end IS NULL OR c.window_end > $now)
                AND (c.allowance IS NULL OR ", sum_within!("c.used", "(c.held - h.amount)", "<=", "c.allowance - h.actual"), ")
                AND (c.alert_at IS NULL OR ", sum_within!("c.used", "(c.held - h.amount)", "<", "c.alert_at - h.actual"), ")
             RETURNING c.subject, c.metric, h.actual, c.window_start, c.window_end, c.used::int8 AS used,
                       c.held::int8 AS reserved, c.allowance),
         settled AS (
             UPDATE quota.reservations AS r SET status = 'settled'
               FROM paid
              WHERE r.subject = paid.subject AND r.reservation_id = $reservation_id)
         INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end, used, reserved,
                                   allowance, remaining, reason, reservation_id)
         SELECT subject, 'settle', metric, actual, actual, window_start, window_end, used, reserved,
                allowance, allowance - used - reserved, 'ok', $reservation_id
           FROM paid
         RETURNING event_id, metric, amount::int8 AS amount, window_start, window_end, used, reserved, allowance"),
    ) };
}

/// The (subject, metric)'s marked window at `now`, and a hold of `amount` until `expires_at`.
#[derive(Clone, Copy)]
pub struct NewFastHold<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub amount: i64,
    pub now: Micros,
    pub expires_at: Micros,
}

/// reserve on the fast path: the reservation made and its decision, or None when the slow
/// path must decide (FAST_RESERVE).
pub fn reserve(client: &SpiClient, hold: NewFastHold) -> QResult<Option<(Uuid, Decision)>> {
    let args = [
        ("subject", hold.subject.into()),
        ("metric", hold.metric.into()),
        ("now", timestamp(hold.now)?.into()),
        ("amount", hold.amount.into()),
        ("expires_at", timestamp(hold.expires_at)?.into()),
    ];
    query_row(client, &FAST_RESERVE, args, |row| {
        let read = window_returned(row)?;
        let held = Decision::new(hold.metric, hold.amount, None, read.standing(), read.allowance, read.window);
        // A hold pays nothing yet: the decision shows what it keeps (as the slow path's).
        let held = Decision { allowed: true, reason: Reason::Ok, retry_after: None, event_id: Some(not_null(row, "event_id")?), ..held };
        Ok((not_null(row, "reservation_id")?, held))
    })
}

/// settle on the fast path: its decision, or None when the slow path must decide
/// (FAST_SETTLE). `actual` None settles the held amount.
pub fn settle(client: &SpiClient, reservation_id: Uuid, actual: Option<i64>, now: Micros) -> QResult<Option<Decision>> {
    let args = [("reservation_id", reservation_id.into()), ("actual", actual.into()), ("now", timestamp(now)?.into())];
    query_row(client, &FAST_SETTLE, args, |row| {
        let (metric, actual): (String, i64) = (not_null(row, "metric")?, not_null(row, "amount")?);
        let read = window_returned(row)?;
        let settled = Decision::new(&metric, actual, Some(&Split::allowance_only(actual)), read.standing(), read.allowance, read.window);
        Ok(Decision { event_id: Some(not_null(row, "event_id")?), ..settled })
    })
}
