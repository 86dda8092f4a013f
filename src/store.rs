//! Every statement the consume path runs, and the mapping of their rows to Rust values.
//!
//! Statements are prepared on first use in a backend and kept (SPI_keepplan), so a consume
//! costs no parsing or planning. PostgreSQL's plan cache revalidates kept plans when the
//! tables change (even across DROP/CREATE EXTENSION in one session). They are prepared as
//! "mutating", which makes SPI take a fresh snapshot for every statement: after waiting on
//! a lock, the next statement sees what the lock holder committed (READ COMMITTED).

use std::cell::OnceCell;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::{JsonB, Uuid};

use crate::decide::{Decision, Reason};
use crate::error::{QResult, QuotaError};
use crate::window::{parse_time_zone, Anchor, Micros, Period, Window, WindowSpec};

/// Microseconds between the Unix epoch (the window engine's) and PostgreSQL's 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Converts a finite timestamptz to the window engine's instants.
pub fn to_micros(ts: TimestampWithTimeZone, what: &str) -> QResult<Micros> {
    if !ts.is_finite() {
        return Err(QuotaError::invalid(format!("{what} must be a finite timestamp")));
    }
    ts.into_inner().checked_add(PG_EPOCH_MICROS).ok_or_else(|| QuotaError::overflow(what))
}

/// `None` maps to `-infinity`, the counter key of a lifetime window that was never reset.
pub fn window_key(start: Option<Micros>) -> QResult<TimestampWithTimeZone> {
    start.map_or(Ok(TimestampWithTimeZone::negative_infinity()), timestamp)
}

pub fn timestamp(micros: Micros) -> QResult<TimestampWithTimeZone> {
    micros
        .checked_sub(PG_EPOCH_MICROS)
        .and_then(|pg| TimestampWithTimeZone::try_from(pg).ok())
        .ok_or_else(|| QuotaError::overflow("timestamp"))
}

fn from_window_key(key: TimestampWithTimeZone) -> QResult<Option<Micros>> {
    if key.is_neg_infinity() {
        Ok(None)
    } else {
        to_micros(key, "window_start").map(Some)
    }
}

/// The start of the current transaction, as `pg_catalog.now()` returns it: every call in
/// one transaction decides against the same instant.
pub fn transaction_now() -> QResult<Micros> {
    // SAFETY: always valid inside a transaction, which every SQL function call is.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    now.checked_add(PG_EPOCH_MICROS).ok_or_else(|| QuotaError::overflow("now()"))
}

/// A statement prepared on first use and kept for the backend's lifetime.
struct Kept {
    sql: &'static str,
    arg_types: &'static [PgBuiltInOids],
    plan: OnceCell<OwnedPreparedStatement>,
}

impl Kept {
    const fn new(sql: &'static str, arg_types: &'static [PgBuiltInOids]) -> Self {
        Kept { sql, arg_types, plan: OnceCell::new() }
    }
}

thread_local! {
    static LOCK_KEY: Kept = const { Kept::new(
        // Two-int form: its lock space is apart from applications' bigint advisory locks.
        "SELECT pg_catalog.pg_advisory_xact_lock(1903126, pg_catalog.hashtext($1::text || '/' || $2))",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    static FIND_REPLAY: Kept = const { Kept::new(
        "SELECT metric, amount, from_allowance, from_grants, used, allowance, remaining,
                window_start, window_end, reason, event_id, overage
           FROM quota.events
          WHERE subject = $1 AND idempotency_key = $2 AND kind <> 'denial'",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    static RESOLVE: Kept = const { Kept::new(
        "SELECT p.plan, a.subject IS NOT NULL, a.anchor,
                l.metric IS NOT NULL, l.allowance, l.period, l.anchor, l.time_zone,
                o.subject IS NOT NULL, o.allowance,
                (SELECT max(r.reset_at) FROM quota.resets AS r
                  WHERE r.subject = $1 AND r.metric = $2 AND r.reset_at <= $3),
                l.metric IS NOT NULL OR EXISTS (SELECT FROM quota.limits AS k WHERE k.metric = $2),
                (SELECT coalesce(sum(g.remaining), 0)::int8 FROM quota.grants AS g
                  WHERE g.subject = $1 AND g.metric = $2 AND g.remaining > 0 AND g.revoked_at IS NULL
                    AND (g.expires_at IS NULL OR g.expires_at > $4))
           FROM (SELECT) AS one
           LEFT JOIN quota.assignments AS a ON a.subject = $1
           LEFT JOIN quota.plans AS p
                  ON p.plan = coalesce(a.plan, (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
           LEFT JOIN quota.limits AS l ON l.plan = p.plan AND l.metric = $2
           LEFT JOIN quota.overrides AS o ON o.subject = $1 AND o.metric = $2",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static ASSIGN_DEFAULT: Kept = const { Kept::new(
        "INSERT INTO quota.assignments (subject, plan, anchor) VALUES ($1, $2, $3)
         ON CONFLICT (subject) DO NOTHING
         RETURNING subject",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    // The whole check-and-increment is this one statement: the row lock of ON CONFLICT
    // serializes concurrent consumers, and the WHERE is re-checked on the newest row.
    static BUMP: Kept = const { Kept::new(
        "INSERT INTO quota.counters AS c (subject, metric, window_start, window_end, used)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (subject, metric, window_start)
         DO UPDATE SET used = c.used + excluded.used
               WHERE $6::int8 IS NULL OR c.used <= $6::int8
         RETURNING c.used",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID,
          PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID],
    ) };
    // The slow path, when the allowance alone cannot pay: lock the window's counter (creating
    // it if needed) and return its usage, then lock the usable grants. Always in this order,
    // so that concurrent consumers cannot deadlock.
    static LOCK_COUNTER: Kept = const { Kept::new(
        "INSERT INTO quota.counters AS c (subject, metric, window_start, window_end, used)
         VALUES ($1, $2, $3, $4, 0)
         ON CONFLICT (subject, metric, window_start) DO UPDATE SET used = c.used
         RETURNING c.used",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static ADD_USED: Kept = const { Kept::new(
        "UPDATE quota.counters SET used = used + $4
          WHERE subject = $1 AND metric = $2 AND window_start = $3
         RETURNING used",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID],
    ) };
    static LOCK_GRANTS: Kept = const { Kept::new(
        "SELECT grant_id, remaining FROM quota.grants
          WHERE subject = $1 AND metric = $2 AND remaining > 0 AND revoked_at IS NULL
            AND (expires_at IS NULL OR expires_at > $3)
          ORDER BY priority, expires_at, created_at, grant_id
            FOR UPDATE",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static SPEND_GRANT: Kept = const { Kept::new(
        "UPDATE quota.grants SET remaining = remaining - $3 WHERE subject = $1 AND grant_id = $2",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::UUIDOID, PgBuiltInOids::INT8OID],
    ) };
    static INSERT_EVENT_GRANT: Kept = const { Kept::new(
        "INSERT INTO quota.event_grants (subject, event_id, grant_id, amount) VALUES ($1, $2, $3, $4)",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::INT8OID, PgBuiltInOids::UUIDOID, PgBuiltInOids::INT8OID],
    ) };
    static READ_USED: Kept = const { Kept::new(
        "SELECT used FROM quota.counters WHERE subject = $1 AND metric = $2 AND window_start = $3",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static INSERT_EVENT: Kept = const { Kept::new(
        "INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, from_grants, overage,
                                   window_start, window_end, used, allowance, remaining, reason,
                                   idempotency_key, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $15, $7, $8, $9, $10, $11, $12, $13, $14)
         RETURNING event_id",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TEXTOID,
          PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID, PgBuiltInOids::TEXTOID,
          PgBuiltInOids::TEXTOID, PgBuiltInOids::JSONBOID, PgBuiltInOids::INT8OID],
    ) };
}

type Statement = std::thread::LocalKey<Kept>;

/// Runs a kept statement and returns its first row, if any.
fn query_row<'conn, T>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: &[DatumWithOid],
    read: impl Fn(&SpiHeapTupleData<'conn>) -> QResult<T>,
) -> QResult<Option<T>> {
    Ok(query(client, statement, args, Some(1), read)?.into_iter().next())
}

/// Runs a kept statement and maps its rows (at most `limit`).
fn query<'conn, T>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: &[DatumWithOid],
    limit: Option<i64>,
    read: impl Fn(&SpiHeapTupleData<'conn>) -> QResult<T>,
) -> QResult<Vec<T>> {
    statement.with(|kept| {
        if kept.plan.get().is_none() {
            let types: Vec<PgOid> = kept.arg_types.iter().map(|oid| PgOid::BuiltIn(*oid)).collect();
            let plan = client.prepare_mut(kept.sql, &types)?.keep();
            // A backend is single-threaded and nothing else sets the cell between these lines.
            let _ = kept.plan.set(plan);
        }
        let Some(plan) = kept.plan.get() else {
            return Err(QuotaError::internal("statement was not prepared"));
        };
        client.select(plan, limit, args)?.map(|row| read(&row)).collect()
    })
}

/// Column `ordinal` (1-based) that the statement guarantees is not NULL.
fn not_null<T: FromDatum + IntoDatum>(row: &SpiHeapTupleData, ordinal: usize) -> QResult<T> {
    row.get::<T>(ordinal)?.ok_or_else(|| QuotaError::internal(format!("column {ordinal} is NULL")))
}

/// Serializes calls that use the same idempotency key for the same subject until the
/// holder commits or rolls back.
pub fn lock_idempotency_key(client: &SpiClient, subject: Uuid, key: &str) -> QResult<()> {
    query_row(client, &LOCK_KEY, &[subject.into(), key.into()], |_| Ok(())).map(drop)
}

/// The decision an earlier committed call made under this key, and the metric and amount
/// it was made for.
pub fn find_replay(client: &SpiClient, subject: Uuid, key: &str) -> QResult<Option<Decision>> {
    query_row(client, &FIND_REPLAY, &[subject.into(), key.into()], |row| {
        let reason: String = not_null(row, 10)?;
        Ok(Decision {
            allowed: true,
            metric: not_null(row, 1)?,
            amount: not_null(row, 2)?,
            from_allowance: not_null(row, 3)?,
            from_grants: not_null(row, 4)?,
            used: not_null(row, 5)?,
            allowance: row.get(6)?,
            remaining: row.get(7)?,
            window_start: from_window_key(not_null(row, 8)?)?,
            resets_at: row.get::<TimestampWithTimeZone>(9)?.map(|t| to_micros(t, "window_end")).transpose()?,
            replayed: true,
            reason: Reason::parse(&reason).unwrap_or(Reason::Ok),
            event_id: row.get(11)?,
            overage: not_null(row, 12)?,
        })
    })
}

/// What governs one (subject, metric) at an instant: the plan, the limit, the override,
/// the last reset.
#[derive(Debug, Clone)]
pub struct Governing {
    pub plan: Option<String>,
    pub assigned: bool,
    /// The assignment's anchor; None when the subject has no assignment yet.
    pub subscription_anchor: Option<Micros>,
    /// The plan's limit: None = the plan has no limit for the metric, Some(None) = unlimited.
    pub plan_limit: Option<Option<i64>>,
    pub period: Option<String>,
    pub anchor: Option<String>,
    pub time_zone: Option<String>,
    /// None = no override, Some(None) = overridden to unlimited.
    pub override_limit: Option<Option<i64>>,
    pub reset_at: Option<Micros>,
    pub metric_known: bool,
    /// Sum of the grants usable now (informational: the slow path locks and re-reads them).
    pub grants_left: i64,
}

impl Governing {
    /// The window rule: the plan's, or one lifetime window for a metric the plan lacks.
    pub fn window_spec(&self) -> QResult<WindowSpec> {
        let (Some(period), Some(anchor), Some(time_zone)) = (&self.period, &self.anchor, &self.time_zone) else {
            return Ok(WindowSpec { period: Period::Lifetime, anchor: Anchor::Calendar, time_zone: chrono_tz::UTC });
        };
        Ok(WindowSpec {
            period: Period::parse(period)?,
            anchor: Anchor::parse(anchor)?,
            time_zone: parse_time_zone(time_zone)?,
        })
    }

    /// The window that contains `at`, started over by the last reset.
    pub fn window_at(&self, at: Micros) -> QResult<Window> {
        let natural = self.window_spec()?.window_at(self.subscription_anchor.unwrap_or(at), at)?;
        Ok(natural.restarted_by(self.reset_at))
    }
}

/// What governs (subject, metric) for usage at `at`, with grants usable at `now`.
pub fn resolve(client: &SpiClient, subject: Uuid, metric: &str, at: Micros, now: Micros) -> QResult<Governing> {
    let args = [subject.into(), metric.into(), timestamp(at)?.into(), timestamp(now)?.into()];
    let row = query_row(client, &RESOLVE, &args, |row| {
        let in_plan: bool = not_null(row, 4)?;
        let overridden: bool = not_null(row, 9)?;
        Ok(Governing {
            plan: row.get(1)?,
            assigned: not_null(row, 2)?,
            subscription_anchor: row.get::<TimestampWithTimeZone>(3)?.map(|t| to_micros(t, "anchor")).transpose()?,
            plan_limit: in_plan.then(|| row.get(5)).transpose()?,
            period: row.get(6)?,
            anchor: row.get(7)?,
            time_zone: row.get(8)?,
            override_limit: overridden.then(|| row.get(10)).transpose()?,
            reset_at: row.get::<TimestampWithTimeZone>(11)?.map(|t| to_micros(t, "reset_at")).transpose()?,
            metric_known: not_null(row, 12)?,
            grants_left: not_null(row, 13)?,
        })
    })?;
    row.ok_or_else(|| QuotaError::internal("resolve returned no row"))
}

/// Gives an unassigned subject the default plan, anchored now. Returns false when a
/// concurrent call assigned one first (its anchor is the one that counts).
pub fn assign_default(client: &SpiClient, subject: Uuid, plan: &str, anchor: Micros) -> QResult<bool> {
    let inserted = query_row(client, &ASSIGN_DEFAULT, &[subject.into(), plan.into(), timestamp(anchor)?.into()], |_| Ok(()))?;
    Ok(inserted.is_some())
}

/// Adds `amount` to the window's counter if its usage is at most `ceiling` (None =
/// unlimited). Returns the new usage, or None when the amount does not fit.
pub fn bump(client: &SpiClient, subject: Uuid, metric: &str, window: Window, amount: i64, ceiling: Option<i64>) -> QResult<Option<i64>> {
    let end = window.end.map(timestamp).transpose()?;
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), end.into(), amount.into(), ceiling.into()];
    query_row(client, &BUMP, &args, |row| not_null(row, 1))
}

/// Locks the window's counter row (creating it) and returns its usage.
pub fn lock_counter(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<i64> {
    let end = window.end.map(timestamp).transpose()?;
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), end.into()];
    query_row(client, &LOCK_COUNTER, &args, |row| not_null(row, 1))?.ok_or_else(|| QuotaError::internal("counter lock returned no row"))
}

/// Adds to a locked counter; returns its new usage.
pub fn add_used(client: &SpiClient, subject: Uuid, metric: &str, window: Window, amount: i64) -> QResult<i64> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), amount.into()];
    query_row(client, &ADD_USED, &args, |row| not_null(row, 1))?.ok_or_else(|| QuotaError::internal("counter vanished"))
}

/// Locks the grants usable at `now`, in spending order: (grant_id, remaining).
pub fn lock_grants(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<Vec<(Uuid, i64)>> {
    let args = [subject.into(), metric.into(), timestamp(now)?.into()];
    query(client, &LOCK_GRANTS, &args, None, |row| Ok((not_null(row, 1)?, not_null(row, 2)?)))
}

/// Takes `amount` from a locked grant and records which event it paid for.
pub fn spend_grant(client: &SpiClient, subject: Uuid, event_id: i64, grant_id: Uuid, amount: i64) -> QResult<()> {
    query(client, &SPEND_GRANT, &[subject.into(), grant_id.into(), amount.into()], None, |_| Ok(()))?;
    let args = [subject.into(), event_id.into(), grant_id.into(), amount.into()];
    query(client, &INSERT_EVENT_GRANT, &args, None, |_| Ok(()))?;
    Ok(())
}

/// Usage of a window; 0 when nothing was counted in it yet.
pub fn read_used(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<i64> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into()];
    Ok(query_row(client, &READ_USED, &args, |row| not_null(row, 1))?.unwrap_or(0))
}

/// The ledger row of one decision.
pub struct EventRow<'a> {
    pub subject: Uuid,
    pub kind: &'static str,
    pub decision: &'a Decision,
    pub window: Window,
    pub idempotency_key: Option<&'a str>,
    pub metadata: Option<JsonB>,
}

pub fn insert_event(client: &SpiClient, event: EventRow) -> QResult<i64> {
    let d = event.decision;
    let end = event.window.end.map(timestamp).transpose()?;
    let args = [
        event.subject.into(),
        event.kind.into(),
        d.metric.as_str().into(),
        d.amount.into(),
        d.from_allowance.into(),
        d.from_grants.into(),
        window_key(event.window.start)?.into(),
        end.into(),
        d.used.into(),
        d.allowance.into(),
        d.remaining.into(),
        d.reason.as_str().into(),
        event.idempotency_key.into(),
        event.metadata.into(),
        d.overage.into(),
    ];
    let id = query_row(client, &INSERT_EVENT, &args, |row| not_null(row, 1))?;
    id.ok_or_else(|| QuotaError::internal("event insert returned no row"))
}
