//! What governs a request, the window counters, the holds on them and the grants: the
//! statements of spending, in the order a consume may run them.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::alert::stored_rules as stored_alert_rules;
use quota_rules::decide::{Limit, Overage};
use quota_rules::governing::Governing;
use quota_rules::plan::LedgerMode;
use quota_rules::rate::{rules_change_at, rules_in_force, stored_overrides, stored_rules};
use quota_rules::request::{may_be_compacted, RequestError};
use quota_rules::rollover::Rollover;
use quota_rules::window::{parse_time_zone, Anchor, Micros, Period, Window, WindowSpec};

use super::reservations;
use super::rollover;
use super::schema::{self, Part};
use super::{clock_now, transaction_snapshot_is_fixed, Row, column, instant, not_null, query, the_row, query_row, timestamp, window_end, window_key, Kept};
use crate::error::{QResult, QuotaError};

/// A grant `g` of the (subject, metric) usable at `$now`: `not_spent` on a schema that has
/// `spent` (0.19.0), which grants_spending_order leaves out and serves only a statement that
/// says so; `any` before (the index then holds spent grants too).
macro_rules! usable_grant {
    (not_spent) => {
        concat!(usable_grant!(any), " AND NOT g.spent")
    };
    (any) => {
        "g.subject = $subject AND g.metric = $metric AND g.remaining > 0 AND g.revoked_at IS NULL
             AND (g.expires_at IS NULL OR g.expires_at > $now)"
    };
}

/// The balance of the (subject, metric)'s grants usable at `$now`.
macro_rules! usable_grants {
    ($grants:ident) => {
        concat!("(SELECT least(coalesce(sum(g.remaining), 0), 9223372036854775807)::int8 FROM quota.grants AS g
           WHERE ", usable_grant!($grants), ")")
    };
}

/// What governs (subject, metric): the plan, its limit, the override, the last reset, the
/// usable grants (RESOLVE's columns but the rate rules).
macro_rules! governing_columns {
    ($grants:ident) => {
        concat!("p.plan, a.subject IS NOT NULL AS assigned, a.anchor AS subscription_anchor, a.assigned_at,
         l.metric IS NOT NULL AS in_plan, l.allowance AS plan_allowance, l.period, l.anchor, l.time_zone,
         o.subject IS NOT NULL AS overridden, o.allowance AS override_allowance,
         (SELECT max(r.reset_at) FROM quota.resets AS r
           WHERE r.subject = $subject AND r.metric = $metric AND r.reset_at <= $at) AS reset_at,
         l.metric IS NOT NULL OR EXISTS (SELECT FROM quota.limits AS k WHERE k.metric = $metric) AS metric_known,
         ", usable_grants!($grants), " AS grants_left,
         EXISTS (SELECT FROM quota.resets AS r
                  WHERE r.subject = $subject AND r.metric = $metric AND r.reset_at > $at) AS reset_since")
    };
}

/// The (subject, metric)'s grants usable at `$now`, locked in spending order (LOCK_GRANTS).
macro_rules! lock_grants {
    ($grants:ident) => {
        concat!("SELECT g.grant_id, g.remaining FROM quota.grants AS g
          WHERE ", usable_grant!($grants), "
          ORDER BY g.priority, g.expires_at, g.created_at, g.grant_id
            FOR UPDATE")
    };
}

macro_rules! governing_sources {
    () => {
        "
           FROM (SELECT) AS one
           LEFT JOIN quota.assignments AS a ON a.subject = $subject
           LEFT JOIN quota.plans AS p
                  ON p.plan = coalesce(a.plan, (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
           LEFT JOIN quota.limits AS l ON l.plan = p.plan AND l.metric = $metric
           LEFT JOIN quota.overrides AS o ON o.subject = $subject AND o.metric = $metric"
    };
}

/// The rate rules of the plan and the subject's rate overrides (RESOLVE's).
macro_rules! rate_columns {
    () => {
        ",
                coalesce(l.rate, '[]')::text AS plan_rates,
                (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                            'limit', o.rate_limit, 'per', o.per, 'burst', o.burst,
                            'expires_at_us', (extract(epoch FROM o.expires_at) * 1000000)::int8)), '[]')::text
                   FROM quota.rate_overrides AS o WHERE o.subject = $subject AND o.metric = $metric) AS rate_overrides"
    };
}

/// The alert rules in force and the soft limit (RESOLVE's, from 0.10.0).
macro_rules! alert_columns {
    () => {
        ",
                coalesce((SELECT r.alerts FROM quota.alert_overrides AS r WHERE r.subject = $subject AND r.metric = $metric),
                         l.alerts, '{}') AS alerts,
                l.soft, l.overage_max"
    };
}

/// LOCK_COUNTER, returning `$bound` as the bound on its holds' expiry.
macro_rules! lock_counter {
    ($bound:literal) => {
        concat!("INSERT INTO quota.counters AS c (subject, metric, window_start, window_end, used)
         VALUES ($subject, $metric, $window_start, $window_end, 0)
         ON CONFLICT (subject, metric, window_start) DO UPDATE SET used = c.used
         RETURNING c.used::int8 AS used, c.held::int8 AS held, ", $bound, " AS holds_expire_at")
    };
}

/// READ_COUNTER, returning `$bound` as the bound on its holds' expiry.
macro_rules! read_counter {
    ($bound:literal) => {
        concat!("SELECT used::int8 AS used, held::int8 AS held, ", $bound, " AS holds_expire_at FROM quota.counters
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start")
    };
}

/// HOLDS, with `$also` (further CTEs) run beside it. An expired hold that a settle or release
/// holds (it locks its reservation before the counter) is skipped, not waited for: that call
/// frees it.
macro_rules! holds {
    ($also:literal) => {
        concat!("WITH expired AS (
             UPDATE quota.reservations SET status = 'expired'
              WHERE subject = $subject AND status = 'held'
                AND reservation_id IN (SELECT reservation_id FROM quota.reservations
                                        WHERE subject = $subject AND metric = $metric AND window_start = $window_start
                                          AND status = 'held' AND expires_at <= $now
                                          FOR UPDATE SKIP LOCKED)
             RETURNING reservation_id, amount)", $also, "
         SELECT (SELECT coalesce(sum(amount), 0) FROM expired)::int8 AS expired,
                (SELECT coalesce(sum(amount), 0) FROM quota.reservations
                  WHERE subject = $subject AND metric = $metric AND window_start = $window_start AND status = 'held'
                    AND expires_at > $now AND reservation_id IS DISTINCT FROM $settling)::int8 AS reserved")
    };
}

thread_local! {
    static RESOLVE: Kept = const { Kept::new(concat!(
        "SELECT ", governing_columns!(not_spent), rate_columns!(), alert_columns!(), ", l.rollover_max, l.rollover_windows, l.ledger",
        governing_sources!(),
    )) };
    // RESOLVE on a schema before 0.19.0, whose grants have no `spent`.
    static RESOLVE_WITHOUT_SPENT_GRANTS: Kept = const { Kept::new(concat!(
        "SELECT ", governing_columns!(any), rate_columns!(), alert_columns!(), ", l.rollover_max, l.rollover_windows, l.ledger",
        governing_sources!(),
    )) };
    // RESOLVE on a schema before 0.12.0, which keeps every call in the ledger.
    static RESOLVE_WITHOUT_LEDGER_MODES: Kept = const { Kept::new(concat!(
        "SELECT ", governing_columns!(any), rate_columns!(), alert_columns!(), ", l.rollover_max, l.rollover_windows",
        governing_sources!(),
    )) };
    // RESOLVE on a schema before 0.11.0, which has no rollover.
    static RESOLVE_WITHOUT_ROLLOVER: Kept = const { Kept::new(concat!("SELECT ", governing_columns!(any), rate_columns!(), alert_columns!(), governing_sources!())) };
    // RESOLVE on a schema before 0.10.0, which has no alert rules nor soft limits.
    static RESOLVE_WITHOUT_ALERTS: Kept = const { Kept::new(concat!("SELECT ", governing_columns!(any), rate_columns!(), governing_sources!())) };
    // RESOLVE on a schema before 0.7.0, which has no rate rules.
    static RESOLVE_WITHOUT_RATES: Kept = const { Kept::new(concat!("SELECT ", governing_columns!(any), governing_sources!())) };
    static ASSIGN_DEFAULT: Kept = const { Kept::new(
        "INSERT INTO quota.assignments (subject, plan, anchor) VALUES ($subject, $plan, $anchor)
         ON CONFLICT (subject) DO NOTHING
         RETURNING subject",
    ) };
    // The whole check-and-increment is this one statement: the row lock of ON CONFLICT
    // serializes concurrent consumers, and the WHERE is re-checked on the newest row.
    // A window with holds takes the slow path, which counts only the unexpired ones.
    static BUMP: Kept = const { Kept::new(
        "INSERT INTO quota.counters AS c (subject, metric, window_start, window_end, used)
         VALUES ($subject, $metric, $window_start, $window_end, $amount)
         ON CONFLICT (subject, metric, window_start)
         DO UPDATE SET used = c.used + excluded.used
               WHERE c.held = 0 AND ($max_used::int8 IS NULL OR c.used <= $max_used::int8)
         RETURNING c.used::int8 AS used",
    ) };
    // The slow path, when the allowance alone cannot pay: lock the window's counter (creating
    // it if needed) and return its usage, then lock the usable grants. Always in this order,
    // so that concurrent consumers cannot deadlock.
    static LOCK_COUNTER: Kept = const { Kept::new(lock_counter!("c.holds_expire_at")) };
    // LOCK_COUNTER on a schema before 0.15.0, which keeps no bound on its holds' expiry.
    static LOCK_COUNTER_WITHOUT_HOLDS_BOUND: Kept = const { Kept::new(lock_counter!("NULL::timestamptz")) };
    // Whether quota.compact() closed the window: it folded the counter into closed rollups
    // (counted_in is the window's subject, a pool for its members' pooled calls) and deleted it.
    static WINDOW_CLOSED: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.ledger_rollups
                         WHERE counted_in = $subject AND metric = $metric AND window_start = $window_start AND window_closed) AS closed",
    ) };
    // The counter's versions this transaction sees: two when its snapshot still shows a row
    // that a compaction committed since deleted, beside the one this call created.
    static COUNTER_VERSIONS: Kept = const { Kept::new(
        "SELECT count(*) AS versions FROM quota.counters
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start",
    ) };
    // Locks the window's counter if it exists, without creating it.
    static LOCK_EXISTING_COUNTER: Kept = const { Kept::new(
        "SELECT used::int8 AS used, held::int8 AS held, NULL::timestamptz AS holds_expire_at FROM quota.counters
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start
            FOR UPDATE",
    ) };
    static ADJUST_COUNTER: Kept = const { Kept::new(
        "UPDATE quota.counters SET used = used + $used_change, held = held + $held_change
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start
         RETURNING used::int8 AS used",
    ) };
    static READ_COUNTER: Kept = const { Kept::new(read_counter!("holds_expire_at")) };
    // READ_COUNTER on a schema before 0.15.0.
    static READ_COUNTER_WITHOUT_HOLDS_BOUND: Kept = const { Kept::new(read_counter!("NULL::timestamptz")) };
    // Under the counter lock: marks the window's expired holds, and sums those still active
    // (but for the reservation being settled); sets the counter's bound on their expiry to
    // the earliest of the holds it still counts (a skipped expired one included).
    static HOLDS: Kept = const { Kept::new(holds!(",
         bound AS (
             UPDATE quota.counters SET holds_expire_at =
                    (SELECT min(expires_at) FROM quota.reservations
                      WHERE subject = $subject AND metric = $metric AND window_start = $window_start AND status = 'held'
                        AND reservation_id NOT IN (SELECT reservation_id FROM expired))
              WHERE subject = $subject AND metric = $metric AND window_start = $window_start)")) };
    // HOLDS on a schema before 0.15.0.
    static HOLDS_WITHOUT_BOUND: Kept = const { Kept::new(holds!("")) };
    // Counts a new hold in the counter, and the holds that expired (no longer counted), and
    // lowers the bound on the holds' expiry to the new hold's: to exactly it when no other
    // hold is counted, else to the earlier of the two (a bound not known stays so).
    static ADD_HOLD: Kept = const { Kept::new(
        "UPDATE quota.counters
            SET held = held + $amount - $expired,
                holds_expire_at = CASE WHEN held = $expired THEN $expires_at
                                       WHEN holds_expire_at IS NULL THEN NULL
                                       ELSE least(holds_expire_at, $expires_at) END
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start",
    ) };
    static ACTIVE_HOLDS: Kept = const { Kept::new(
        "SELECT coalesce(sum(amount), 0)::int8 AS reserved FROM quota.reservations
          WHERE subject = $subject AND metric = $metric AND window_start = $window_start AND status = 'held'
            AND expires_at > $now",
    ) };
    static LOCK_GRANTS: Kept = const { Kept::new(lock_grants!(not_spent)) };
    // LOCK_GRANTS on a schema before 0.19.0.
    static LOCK_GRANTS_WITHOUT_SPENT_GRANTS: Kept = const { Kept::new(lock_grants!(any)) };
    static GRANTS_LEFT: Kept = const { Kept::new(concat!("SELECT ", usable_grants!(not_spent), " AS grants_left")) };
    // GRANTS_LEFT on a schema before 0.19.0.
    static GRANTS_LEFT_WITHOUT_SPENT_GRANTS: Kept = const { Kept::new(concat!("SELECT ", usable_grants!(any), " AS grants_left")) };
    static SPEND_GRANT: Kept = const { Kept::new(
        "UPDATE quota.grants SET remaining = remaining - $amount WHERE subject = $subject AND grant_id = $grant_id",
    ) };
    static INSERT_EVENT_GRANT: Kept = const { Kept::new(
        "INSERT INTO quota.event_grants (subject, event_id, grant_id, amount) VALUES ($subject, $event_id, $grant_id, $amount)",
    ) };
}

/// One window of one (subject, metric): the key of its counter row.
#[derive(Clone, Copy)]
pub struct CounterKey<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub window: Window,
}

/// What governs (subject, metric) for usage at `at`, with grants usable at `now` (the carries
/// of unused allowance alive then among them, store::rollover).
/// The rate rules in force at `now` (none without a plan, or on a schema without rates).
pub fn resolve(client: &SpiClient, subject: Uuid, metric: &str, at: Micros, now: Micros) -> QResult<Governing> {
    let mut governing = resolve_configured(client, subject, metric, at, now)?;
    if governing.rollover.is_some() {
        governing.carries = rollover::pending(client, subject, metric, &governing, now)?;
        let pending = governing.carries.iter().try_fold(0_i64, |sum, carry| sum.checked_add(carry.amount));
        governing.grants_left = pending.and_then(|pending| governing.grants_left.checked_add(pending)).unwrap_or(i64::MAX);
    }
    if governing.grants_left > 0 {
        let window = governing.counting_window(at)?;
        governing.grants_held_elsewhere = reservations::held_in_other_windows(client, subject, metric, window, now)?;
    }
    Ok(governing)
}

fn resolve_configured(client: &SpiClient, subject: Uuid, metric: &str, at: Micros, now: Micros) -> QResult<Governing> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("at", timestamp(at)?.into()), ("now", timestamp(now)?.into())];
    let with_rates = schema::has(client, Part::RateLimits)?;
    let with_alerts = schema::has(client, Part::Alerts)?;
    let with_rollover = schema::has(client, Part::Rollover)?;
    let with_ledger_modes = schema::has(client, Part::LedgerModes)?;
    let statement = match (with_rates, with_alerts, with_rollover) {
        (_, _, true) if with_ledger_modes && schema::has(client, Part::SpentGrants)? => &RESOLVE,
        (_, _, true) if with_ledger_modes => &RESOLVE_WITHOUT_SPENT_GRANTS,
        (_, _, true) => &RESOLVE_WITHOUT_LEDGER_MODES,
        (_, true, false) => &RESOLVE_WITHOUT_ROLLOVER,
        (true, false, _) => &RESOLVE_WITHOUT_ALERTS,
        (false, false, _) => &RESOLVE_WITHOUT_RATES,
    };
    the_row(query_row(client, statement, args, |row| {
        let plan: Option<String> = column(row, "plan")?;
        let (rates, rates_until) = match (&plan, with_rates) {
            (Some(_), true) => {
                let plan_rates = stored_rules(&not_null::<String>(row, "plan_rates")?)?;
                let overrides = stored_overrides(&not_null::<String>(row, "rate_overrides")?)?;
                (rules_in_force(&plan_rates, &overrides, now), rules_change_at(&overrides, now))
            }
            _ => (Vec::new(), None),
        };
        let (alerts, overage) = match with_alerts {
            true => (stored_alert_rules(&not_null::<Vec<String>>(row, "alerts")?)?, overage(column(row, "soft")?, column(row, "overage_max")?)),
            false => (Vec::new(), Overage::Hard),
        };
        let rollover = match with_rollover {
            true => rollover_policy(column(row, "rollover_max")?, column(row, "rollover_windows")?)?,
            false => None,
        };
        // Without the metric in the plan (NULL) every call is kept.
        let ledger = match with_ledger_modes.then(|| column::<String>(row, "ledger")).transpose()?.flatten() {
            Some(mode) => LedgerMode::parse(&mode).ok_or_else(|| QuotaError::internal(format!("quota.limits.ledger is {mode:?}")))?,
            None => LedgerMode::Full,
        };
        Ok(Governing {
            ledger,
            rates,
            rates_until,
            rollover,
            assigned_at: instant(row, "assigned_at")?,
            carries: Vec::new(),
            plan,
            assigned: not_null(row, "assigned")?,
            subscription_anchor: instant(row, "subscription_anchor")?,
            plan_limit: Limit::from_row(not_null(row, "in_plan")?, column(row, "plan_allowance")?),
            window_spec: window_spec(column(row, "period")?, column(row, "anchor")?, column(row, "time_zone")?)?,
            override_limit: Limit::from_row(not_null(row, "overridden")?, column(row, "override_allowance")?),
            reset_at: instant(row, "reset_at")?,
            metric_known: not_null(row, "metric_known")?,
            grants_left: not_null(row, "grants_left")?,
            grants_held_elsewhere: 0,
            reset_since: not_null(row, "reset_since")?,
            alerts,
            overage,
        })
    })?)
}

/// The plan's soft limit (0.10.0): none without the metric in the plan.
fn overage(soft: Option<bool>, max: Option<i64>) -> Overage {
    match (soft, max) {
        (Some(true), Some(max)) => Overage::AtMost(max),
        (Some(true), None) => Overage::Unbounded,
        _ => Overage::Hard,
    }
}

/// The plan's rollover policy (0.11.0): none without the metric in the plan.
fn rollover_policy(max: Option<i64>, windows: Option<i32>) -> QResult<Option<Rollover>> {
    let Some(windows) = windows else { return Ok(None) };
    let expires_after = u32::try_from(windows).map_err(QuotaError::internal)?;
    Ok(Some(Rollover { max, expires_after }))
}

/// The plan's window rule, parsed once here; one lifetime window for a metric the plan lacks.
fn window_spec(period: Option<String>, anchor: Option<String>, time_zone: Option<String>) -> QResult<WindowSpec> {
    let (Some(period), Some(anchor), Some(time_zone)) = (period, anchor, time_zone) else {
        return Ok(WindowSpec { period: Period::Lifetime, anchor: Anchor::Calendar, time_zone: chrono_tz::UTC });
    };
    Ok(WindowSpec { period: Period::parse(&period)?, anchor: Anchor::parse(&anchor)?, time_zone: parse_time_zone(&time_zone)? })
}

/// Gives an unassigned subject the default plan, anchored now. Returns false when a
/// concurrent call assigned one first (its anchor is the one that counts).
pub fn assign_default(client: &SpiClient, subject: Uuid, plan: &str, anchor: Micros) -> QResult<bool> {
    let args = [("subject", subject.into()), ("plan", plan.into()), ("anchor", timestamp(anchor)?.into())];
    Ok(query_row(client, &ASSIGN_DEFAULT, args, |_| Ok(()))?.is_some())
}

/// Adds `amount` to the window's counter if its usage is at most `max_used` (None =
/// unlimited). Returns the new usage, or None when the amount does not fit.
pub fn bump(client: &SpiClient, key: CounterKey, amount: i64, max_used: Option<i64>) -> QResult<Option<i64>> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
        ("window_end", window_end(key.window.end)?.into()),
        ("amount", amount.into()),
        ("max_used", max_used.into()),
    ];
    let used = query_row(client, &BUMP, args, |row| not_null(row, "used"))?;
    refuse_closed_window(client, key)?;
    Ok(used)
}

/// A window's counter: usage, and the sum of its reservations still marked held.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    pub used: i64,
    pub held: i64,
    /// No hold counted in `held` expires before this instant (None: not known).
    pub holds_expire_at: Option<Micros>,
}

impl Counter {
    /// Whether none of the holds the counter counts can have expired at `now`: its bound on
    /// their expiry lies ahead.
    fn no_hold_expired(&self, now: Micros) -> bool {
        self.holds_expire_at.is_some_and(|bound| now < bound)
    }
}

fn counter_from_row(row: &Row) -> QResult<Counter> {
    Ok(Counter { used: not_null(row, "used")?, held: not_null(row, "held")?, holds_expire_at: instant(row, "holds_expire_at")? })
}

/// Locks the window's counter row (creating it) and returns it.
pub fn lock_counter(client: &SpiClient, key: CounterKey) -> QResult<Counter> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
        ("window_end", window_end(key.window.end)?.into()),
    ];
    let statement = if schema::has(client, Part::HoldsBound)? { &LOCK_COUNTER } else { &LOCK_COUNTER_WITHOUT_HOLDS_BOUND };
    let counter = the_row(query_row(client, statement, args, counter_from_row)?)?;
    refuse_closed_window(client, key)?;
    Ok(counter)
}

/// Refuses to count into a window that quota.compact() closed: its counter, created again from
/// zero, would pay the usage a second time. Runs after the statement that locked (or created)
/// the counter, so that at READ COMMITTED its snapshot has every compaction that closed the
/// window before that lock; a later compaction skips the locked counter. A transaction that
/// reads one snapshot throughout cannot see a compaction committed after it: it sees the
/// deleted counter beside the one it created, and is refused with 40001 (its retry sees the
/// window closed). Only on a window that has ended by the wall clock: compaction closes no
/// other. The error rolls back the counter's change.
fn refuse_closed_window(client: &SpiClient, key: CounterKey) -> QResult<()> {
    if !may_be_compacted(key.window, clock_now()?) || !schema::has(client, Part::Compaction)? {
        return Ok(());
    }
    let start = window_key(key.window.start)?;
    let args = || [("subject", key.subject.into()), ("metric", key.metric.into()), ("window_start", start.into())];
    if transaction_snapshot_is_fixed() && the_row(query_row(client, &COUNTER_VERSIONS, args(), |row| not_null::<i64>(row, "versions"))?)? > 1 {
        return Err(QuotaError::window_compacted_concurrently(key.metric));
    }
    if the_row(query_row(client, &WINDOW_CLOSED, args(), |row| not_null(row, "closed"))?)? {
        let window_start = key.window.start.ok_or_else(|| QuotaError::internal("a lifetime window without a start was compacted"))?;
        return Err(RequestError::WindowCompacted { metric: key.metric.to_string(), window_start }.into());
    }
    Ok(())
}

/// Locks the window's counter if it exists (a window compaction closed has none); never
/// creates it.
pub fn lock_existing_counter(client: &SpiClient, key: CounterKey) -> QResult<Option<Counter>> {
    let args = [("subject", key.subject.into()), ("metric", key.metric.into()), ("window_start", window_key(key.window.start)?.into())];
    query_row(client, &LOCK_EXISTING_COUNTER, args, counter_from_row)
}

/// Changes a locked counter; returns its new usage.
pub fn adjust_counter(client: &SpiClient, key: CounterKey, used_change: i64, held_change: i64) -> QResult<i64> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
        ("used_change", used_change.into()),
        ("held_change", held_change.into()),
    ];
    the_row(query_row(client, &ADJUST_COUNTER, args, |row| not_null(row, "used"))?)
}

/// A window's counter; zero when nothing was counted in it yet.
pub fn read_counter(client: &SpiClient, key: CounterKey) -> QResult<Counter> {
    let args = [("subject", key.subject.into()), ("metric", key.metric.into()), ("window_start", window_key(key.window.start)?.into())];
    let statement = if schema::has(client, Part::HoldsBound)? { &READ_COUNTER } else { &READ_COUNTER_WITHOUT_HOLDS_BOUND };
    Ok(query_row(client, statement, args, counter_from_row)?.unwrap_or_default())
}

/// What the holds of a window come to, under its counter lock.
pub struct Holds {
    /// Holds that had expired and were just marked so: the counter's `held` must drop by this.
    pub expired: i64,
    /// What the unexpired holds keep (but the one being settled).
    pub reserved: i64,
}

/// A hold being settled or released: it is not counted among the others.
#[derive(Clone, Copy)]
pub struct Settling {
    pub reservation_id: Uuid,
    pub amount: i64,
}

/// Under the counter lock: the window's holds other than `settling`. When the counter's bound
/// says none has expired, every hold it counts is active, and nothing is read; else the
/// expired ones are marked so and the active ones summed (HOLDS, which sets the bound again).
pub fn holds_under_lock(client: &SpiClient, key: CounterKey, counter: Counter, now: Micros, settling: Option<Settling>) -> QResult<Holds> {
    if counter.held == 0 {
        return Ok(Holds { expired: 0, reserved: 0 });
    }
    if counter.no_hold_expired(now) {
        let others = counter.held - settling.map_or(0, |held| held.amount);
        if others < 0 {
            return Err(QuotaError::internal("a counter holds less than the hold being settled"));
        }
        return Ok(Holds { expired: 0, reserved: others });
    }
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
        ("now", timestamp(now)?.into()),
        ("settling", settling.map(|held| held.reservation_id).into()),
    ];
    let statement = if schema::has(client, Part::HoldsBound)? { &HOLDS } else { &HOLDS_WITHOUT_BOUND };
    the_row(query_row(client, statement, args, |row| Ok(Holds { expired: not_null(row, "expired")?, reserved: not_null(row, "reserved")? }))?)
}

/// Counts a new hold of `amount`, until `expires_at`, in the locked counter, which no longer
/// counts the `expired` holds that holds_under_lock marked.
pub fn add_hold(client: &SpiClient, key: CounterKey, amount: i64, expired: i64, expires_at: Micros) -> QResult<()> {
    if !schema::has(client, Part::HoldsBound)? {
        let change = amount.checked_sub(expired).ok_or_else(|| QuotaError::overflow("held"))?;
        return adjust_counter(client, key, 0, change).map(drop);
    }
    let args = [
        ("amount", amount.into()),
        ("expired", expired.into()),
        ("expires_at", timestamp(expires_at)?.into()),
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
    ];
    query(client, &ADD_HOLD, args, |_| Ok(())).map(drop)
}

/// What the window's unexpired holds keep, as `counter` (read or locked) counts them: all it
/// counts when none can have expired, else summed from the reservations (read only).
pub fn active_holds(client: &SpiClient, key: CounterKey, counter: Counter, now: Micros) -> QResult<i64> {
    if counter.held == 0 || counter.no_hold_expired(now) {
        return Ok(counter.held);
    }
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", window_key(key.window.start)?.into()),
        ("now", timestamp(now)?.into()),
    ];
    the_row(query_row(client, &ACTIVE_HOLDS, args, |row| not_null(row, "reserved"))?)
}

/// The balance of the grants `window` can use at `now`, read now (grants_left as RESOLVE read
/// it may be older than a lock the caller waited for): less what holds of other windows keep.
pub fn grants_usable_in(client: &SpiClient, subject: Uuid, metric: &str, window: Window, now: Micros) -> QResult<i64> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    let statement = if schema::has(client, Part::SpentGrants)? { &GRANTS_LEFT } else { &GRANTS_LEFT_WITHOUT_SPENT_GRANTS };
    let grants: i64 = the_row(query_row(client, statement, args, |row| not_null(row, "grants_left"))?)?;
    if grants <= 0 {
        return Ok(grants);
    }
    let held_elsewhere = reservations::held_in_other_windows(client, subject, metric, window, now)?;
    Ok(grants.saturating_sub(held_elsewhere).max(0))
}

/// A grant's id and what is left of it.
#[derive(Debug, Clone, Copy)]
pub struct GrantBalance {
    pub grant_id: Uuid,
    pub remaining: i64,
}

/// Locks the grants usable at `now`, in spending order.
pub fn lock_grants(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<Vec<GrantBalance>> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    let statement = if schema::has(client, Part::SpentGrants)? { &LOCK_GRANTS } else { &LOCK_GRANTS_WITHOUT_SPENT_GRANTS };
    query(client, statement, args, |row| Ok(GrantBalance { grant_id: not_null(row, "grant_id")?, remaining: not_null(row, "remaining")? }))
}

/// Takes `amount` from a locked grant of `owner` and records which event (of `subject`: a
/// pooled member's event is paid by its pool's grants) it paid for.
pub fn spend_grant(client: &SpiClient, owner: Uuid, subject: Uuid, event_id: i64, grant_id: Uuid, amount: i64) -> QResult<()> {
    let args = [("subject", owner.into()), ("grant_id", grant_id.into()), ("amount", amount.into())];
    query(client, &SPEND_GRANT, args, |_| Ok(()))?;
    let args = [("subject", subject.into()), ("event_id", event_id.into()), ("grant_id", grant_id.into()), ("amount", amount.into())];
    query(client, &INSERT_EVENT_GRANT, args, |_| Ok(())).map(drop)
}
