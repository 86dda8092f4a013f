//! consume's fast path: one statement that takes the amount from a window marked with its
//! effective allowance and writes the ledger row, and the marks themselves (quota.counters'
//! `fast`, `allowance`; the triggers in sql/fast_path.sql unmark on every change).

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::Decision;
use quota_rules::locks::{FAST_PATH_PLAN_LOCK_SEED, FAST_PATH_SUBJECT_LOCK_SEED};
use quota_rules::window::{Micros, Window};

use super::counters::{lock_counter, CounterKey};
use super::ledger::decision_from_row;
use super::{column, from_window_key, instant, not_null, query, the_row, query_row, timestamp, window_key, Kept};
use crate::error::QResult;
use crate::jsonb::Jsonb;

/// The (subject, metric)'s counter row marked for consume's fast path, if it is the window
/// that contains `$now` and has no holds. At most one row of a (subject, metric) is marked,
/// so this reads one row of the partial index counters_fast, however long the subject's
/// history of windows.
macro_rules! marked_window_at_now {
    () => {
        "subject = $subject AND metric = $metric AND fast AND held = 0
         AND window_start <= $now AND (window_end IS NULL OR window_end > $now)"
    };
}

thread_local! {
    // On the subject's current window if it is marked fast (see quota.counters): take the
    // amount from the cached allowance and write the ledger row, in one statement, the same
    // work as a hand-written conditional update. Returns no row when the window is not
    // marked, has holds, or the amount does not fit.
    static FAST_CONSUME: Kept = const { Kept::new(
        concat!("WITH taken AS (
             UPDATE quota.counters SET used = used + $amount
              WHERE ", marked_window_at_now!(), " AND (allowance IS NULL OR used <= allowance - $amount)
             RETURNING window_start, window_end, used, allowance)
         INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end,
                                   used, allowance, remaining, reason, idempotency_key, metadata)
         SELECT $subject, 'consume', $metric, $amount, $amount, window_start, window_end, used, allowance,
                allowance - used, 'ok', $idempotency_key, $metadata
           FROM taken
         RETURNING ", decision_columns!()),
    ) };
    // After FAST_CONSUME found nothing to take: the marked window, read with a fresh
    // snapshot (a consumer that FAST_CONSUME waited for has committed).
    static MARKED_WINDOW: Kept = const { Kept::new(
        concat!("SELECT window_start, window_end, used::int8 AS used, allowance FROM quota.counters WHERE ", marked_window_at_now!()),
    ) };
    // Taken before a consume resolves what governs it, so that it may mark its window for
    // the fast path: quota.forget_fast_path() takes the subject's key and the plan's key
    // exclusively. The subject's key is exclusive here too, so that two consumes of the
    // subject never mark at once (each would unmark what the other cannot see yet). Only
    // tried, never waited for: a consume that cannot have them at once decides on the slow
    // path without marking, so it never waits for another consume or for a change in flight
    // (and cannot deadlock with one that holds its counter row).
    static TRY_LOCK_FAST_PATH: Kept = const { Kept::new(
        "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended($subject::text, $subject_seed))
            AND pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtextextended($plan, $plan_seed)) AS locked",
    ) };
    // Under the subject's fast-path key: unmarks the (subject, metric)'s other windows, then
    // (MARK_FAST) marks the current window with its effective allowance. Separate
    // statements, so that the mark's snapshot sees the unmarking (counters_fast is unique: at
    // most one marked row per (subject, metric)).
    static UNMARK_OTHERS: Kept = const { Kept::new(
        "UPDATE quota.counters SET fast = false
          WHERE subject = $subject AND metric = $metric AND fast AND window_start <> $window_start",
    ) };
    static MARK_FAST: Kept = const { Kept::new(
        "UPDATE quota.counters SET fast = true, allowance = $allowance
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start
            AND NOT (fast AND allowance IS NOT DISTINCT FROM $allowance)",
    ) };
}

/// The fast path's decision when the marked window pays, else None.
pub fn consume(
    client: &SpiClient,
    key: CounterKeyAt,
    amount: i64,
    idempotency_key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Option<Decision>> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("now", timestamp(key.now)?.into()),
        ("amount", amount.into()),
        ("idempotency_key", idempotency_key.into()),
        ("metadata", metadata.into()),
    ];
    let decided = query_row(client, &FAST_CONSUME, args, decision_from_row)?;
    Ok(decided.map(|decision| Decision { replayed: false, ..decision }))
}

/// A (subject, metric) at the transaction's instant.
#[derive(Clone, Copy)]
pub struct CounterKeyAt<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub now: Micros,
}

/// A window marked for the fast path: its usage and the effective allowance cached in it.
pub struct MarkedWindow {
    pub window: Window,
    pub used: i64,
    pub allowance: Option<i64>,
}

/// The (subject, metric)'s window marked for the fast path at `now`, if any (see MARKED_WINDOW).
pub fn marked_window(client: &SpiClient, key: CounterKeyAt) -> QResult<Option<MarkedWindow>> {
    let args = [("subject", key.subject.into()), ("metric", key.metric.into()), ("now", timestamp(key.now)?.into())];
    query_row(client, &MARKED_WINDOW, args, |row| {
        Ok(MarkedWindow {
            window: Window { start: from_window_key(not_null(row, "window_start")?)?, end: instant(row, "window_end")? },
            used: not_null(row, "used")?,
            allowance: column(row, "allowance")?,
        })
    })
}

/// Takes the keys a consume needs to mark its window (see TRY_LOCK_FAST_PATH) if they are
/// free now; false when another consume or a configuration change holds them.
pub fn try_lock(client: &SpiClient, subject: Uuid, plan: &str) -> QResult<bool> {
    let args = [
        ("subject", subject.into()),
        ("subject_seed", FAST_PATH_SUBJECT_LOCK_SEED.into()),
        ("plan", plan.into()),
        ("plan_seed", FAST_PATH_PLAN_LOCK_SEED.into()),
    ];
    the_row(query_row(client, &TRY_LOCK_FAST_PATH, args, |row| not_null(row, "locked"))?)
}

/// Marks the window as the (subject, metric)'s only fast-path window, with its effective
/// allowance. Runs under the subject's fast-path key (try_lock).
pub fn mark(client: &SpiClient, key: CounterKey, allowance: Option<i64>) -> QResult<()> {
    let start = window_key(key.window.start)?;
    let args = [("subject", key.subject.into()), ("metric", key.metric.into()), ("window_start", start.into())];
    query(client, &UNMARK_OTHERS, args, |_| Ok(()))?;
    // The row exists first (a first denial creates it), unmarked; then it is marked by a
    // plain UPDATE, never by an INSERT that proposes a marked row.
    lock_counter(client, key)?;
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", start.into()),
        ("allowance", allowance.into()),
    ];
    query(client, &MARK_FAST, args, |_| Ok(())).map(drop)
}
