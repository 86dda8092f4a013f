//! Every statement the consume path runs, and the mapping of their rows to Rust values.
//!
//! Statements are prepared on first use in a backend and kept (SPI_keepplan), so a consume
//! costs no parsing or planning. PostgreSQL's plan cache revalidates kept plans when the
//! tables change (even across DROP/CREATE EXTENSION in one session). They are prepared as
//! "mutating", which makes SPI take a fresh snapshot for every statement: after waiting on
//! a lock, the next statement sees what the lock holder committed (READ COMMITTED).

use std::cell::{Cell, OnceCell};

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};
use pgrx::Uuid;

use crate::jsonb::Jsonb;

use crate::decide::{Decision, Reason};
use crate::error::{QResult, QuotaError};
use crate::window::{parse_time_zone, Anchor, Micros, Period, Window, WindowSpec};

/// Seeds of the 64-bit hashes that name pg_quota's advisory locks, one per kind of lock, so
/// that the kinds never share a key. sql/finalize.sql uses the same numbers.
macro_rules! lock_seed {
    (idempotency_key) => { "1903126" };
    (fast_path_subject) => { "1903127" };
    (fast_path_plan) => { "1903128" };
}

/// Microseconds between the Unix epoch (the window engine's) and PostgreSQL's 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Converts a finite timestamptz to the window engine's instants.
pub fn to_micros(ts: TimestampWithTimeZone, what: &str) -> QResult<Micros> {
    if !ts.is_finite() {
        return Err(QuotaError::invalid(format!("{what} must be a finite timestamp")));
    }
    ts.into_inner().checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
        QuotaError::invalid(format!("{what} is out of the supported range of dates"))
            .with_hint("Pass an instant between the years 4713 BC and 294000 AD.")
    })
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

/// The columns of an event that make up its decision, read by `decision_from_row`; the
/// domain-typed ones cast to their base types, which is what pgrx reads.
macro_rules! decision_columns {
    () => {
        "metric, amount::bigint, from_allowance::bigint, from_grants::bigint, used, allowance, remaining,
         window_start, window_end, reason, event_id, overage::bigint, reserved, kind::text"
    };
}

/// The (subject $1, metric $2)'s counter row marked for consume's fast path, if it is the
/// window that contains `now` and has no holds. At most one row of a (subject, metric) is
/// marked, so this reads one row of the partial index counters_fast, however long the
/// subject's history of windows.
macro_rules! fast_window {
    ($now:literal) => {
        concat!("subject = $1 AND metric = $2 AND fast AND held = 0
                AND window_start <= ", $now, " AND (window_end IS NULL OR window_end > ", $now, ")")
    };
}

thread_local! {
    static LOCK_KEY: Kept = const { Kept::new(
        concat!("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1::text || '/' || $2, ",
                lock_seed!(idempotency_key), "))"),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    static FIND_REPLAY: Kept = const { Kept::new(
        concat!("SELECT ", decision_columns!(), " FROM quota.events
          WHERE subject = $1 AND idempotency_key = $2 AND kind IN ('consume', 'record')"),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    static FIND_RESERVATION_EVENT: Kept = const { Kept::new(
        concat!("SELECT ", decision_columns!(), " FROM quota.events WHERE reservation_id = $1 AND kind = $2"),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    // consume's fast path, on the subject's current window if it is marked fast (see
    // quota.counters): take the amount from the cached allowance and write the ledger row, in
    // one statement, the same work as a hand-written conditional update. Returns no row when
    // the window is not marked, has holds, or the amount does not fit.
    static FAST_CONSUME: Kept = const { Kept::new(
        concat!("WITH taken AS (
             UPDATE quota.counters SET used = used + $3
              WHERE ", fast_window!("$4"), " AND (allowance IS NULL OR used <= allowance - $3)
             RETURNING window_start, window_end, used, allowance)
         INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end,
                                   used, allowance, remaining, reason, idempotency_key, metadata)
         SELECT $1, 'consume', $2, $3, $3, window_start, window_end, used, allowance, allowance - used, 'ok', $5, $6
           FROM taken
         RETURNING ", decision_columns!()),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::INT8OID, PgBuiltInOids::TIMESTAMPTZOID,
          PgBuiltInOids::TEXTOID, PgBuiltInOids::JSONBOID],
    ) };
    // After FAST_CONSUME found nothing to take: the marked window, read with a fresh
    // snapshot (a consumer that FAST_CONSUME waited for has committed).
    static MARKED_WINDOW: Kept = const { Kept::new(
        concat!("SELECT window_start, window_end, used::int8, allowance FROM quota.counters WHERE ", fast_window!("$3")),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    // Taken before a consume resolves what governs it, so that it may mark its window for
    // the fast path: quota.forget_fast_path() takes the subject's key and the plan's key
    // exclusively. The subject's key is exclusive here too, so that two consumes of the
    // subject never mark at once (each would unmark what the other cannot see yet). Only
    // tried, never waited for: a consume that cannot have them at once decides on the slow
    // path without marking, so it never waits for another consume or for a change in flight
    // (and cannot deadlock with one that holds its counter row).
    static TRY_LOCK_FAST_PATH: Kept = const { Kept::new(
        concat!("SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended($1::text, ", lock_seed!(fast_path_subject), "))
                AND pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtextextended($2, ", lock_seed!(fast_path_plan), "))"),
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    // Under the subject's fast-path key: unmarks the (subject, metric)'s other windows, then
    // (MARK_FAST) marks the current window with its effective allowance. Separate
    // statements, so that the mark's snapshot sees the unmarking (counters_fast is unique: at
    // most one marked row per (subject, metric)).
    static UNMARK_OTHERS: Kept = const { Kept::new(
        "UPDATE quota.counters SET fast = false WHERE subject = $1 AND metric = $2 AND fast AND window_start <> $3",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static MARK_FAST: Kept = const { Kept::new(
        "UPDATE quota.counters SET fast = true, allowance = $4
          WHERE subject = $1 AND metric = $2 AND window_start = $3
            AND NOT (fast AND allowance IS NOT DISTINCT FROM $4)",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID],
    ) };
    static RESOLVE: Kept = const { Kept::new(
        "SELECT p.plan, a.subject IS NOT NULL, a.anchor,
                l.metric IS NOT NULL, l.allowance, l.period, l.anchor, l.time_zone,
                o.subject IS NOT NULL, o.allowance,
                (SELECT max(r.reset_at) FROM quota.resets AS r
                  WHERE r.subject = $1 AND r.metric = $2 AND r.reset_at <= $3),
                l.metric IS NOT NULL OR EXISTS (SELECT FROM quota.limits AS k WHERE k.metric = $2),
                (SELECT least(coalesce(sum(g.remaining), 0), 9223372036854775807)::int8 FROM quota.grants AS g
                  WHERE g.subject = $1 AND g.metric = $2 AND g.remaining > 0 AND g.revoked_at IS NULL
                    AND (g.expires_at IS NULL OR g.expires_at > $4)),
                EXISTS (SELECT FROM quota.resets AS r WHERE r.subject = $1 AND r.metric = $2 AND r.reset_at > $3)
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
    // A window with holds takes the slow path, which counts only the unexpired ones.
    static BUMP: Kept = const { Kept::new(
        "INSERT INTO quota.counters AS c (subject, metric, window_start, window_end, used)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (subject, metric, window_start)
         DO UPDATE SET used = c.used + excluded.used
               WHERE c.held = 0 AND ($6::int8 IS NULL OR c.used <= $6::int8)
         RETURNING c.used::int8",
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
         RETURNING c.used::int8, c.held::int8",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static ADJUST_COUNTER: Kept = const { Kept::new(
        "UPDATE quota.counters SET used = used + $4, held = held + $5
          WHERE subject = $1 AND metric = $2 AND window_start = $3
         RETURNING used::int8",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::INT8OID],
    ) };
    // Under the counter lock: marks the window's expired holds, and sums those still active
    // (but for $5, the reservation being settled).
    static HOLDS: Kept = const { Kept::new(
        "WITH expired AS (
             UPDATE quota.reservations SET status = 'expired'
              WHERE subject = $1 AND metric = $2 AND window_start = $3 AND status = 'held' AND expires_at <= $4
             RETURNING amount)
         SELECT (SELECT coalesce(sum(amount), 0) FROM expired)::int8,
                (SELECT coalesce(sum(amount), 0) FROM quota.reservations
                  WHERE subject = $1 AND metric = $2 AND window_start = $3 AND status = 'held'
                    AND expires_at > $4 AND reservation_id IS DISTINCT FROM $5)::int8",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID,
          PgBuiltInOids::UUIDOID],
    ) };
    static ACTIVE_HOLDS: Kept = const { Kept::new(
        "SELECT coalesce(sum(amount), 0)::int8 FROM quota.reservations
          WHERE subject = $1 AND metric = $2 AND window_start = $3 AND status = 'held' AND expires_at > $4",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static INSERT_RESERVATION: Kept = const { Kept::new(
        "INSERT INTO quota.reservations (subject, metric, amount, window_start, window_end, expires_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING reservation_id",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::INT8OID, PgBuiltInOids::TIMESTAMPTZOID,
          PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TEXTOID],
    ) };
    static FIND_RESERVATION: Kept = const { Kept::new(
        "SELECT reservation_id, subject, metric, amount, window_start, window_end, expires_at, status
           FROM quota.reservations
          WHERE reservation_id = $1 OR (subject = $2 AND idempotency_key = $3)
            FOR UPDATE",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
    ) };
    static SET_RESERVATION_STATUS: Kept = const { Kept::new(
        "UPDATE quota.reservations SET status = $3 WHERE subject = $1 AND reservation_id = $2",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID],
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
    static READ_COUNTER: Kept = const { Kept::new(
        "SELECT used::int8, held::int8 FROM quota.counters WHERE subject = $1 AND metric = $2 AND window_start = $3",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TIMESTAMPTZOID],
    ) };
    static INSERT_EVENT: Kept = const { Kept::new(
        "INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, from_grants, overage,
                                   window_start, window_end, used, allowance, remaining, reason,
                                   idempotency_key, metadata, reserved, reservation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $15, $7, $8, $9, $10, $11, $12, $13, $14, $16, $17)
         ON CONFLICT (subject, idempotency_key) WHERE idempotency_key IS NOT NULL AND kind IN ('consume', 'record')
         DO NOTHING
         RETURNING event_id",
        &[PgBuiltInOids::UUIDOID, PgBuiltInOids::TEXTOID, PgBuiltInOids::TEXTOID,
          PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::TIMESTAMPTZOID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID, PgBuiltInOids::TEXTOID,
          PgBuiltInOids::TEXTOID, PgBuiltInOids::JSONBOID, PgBuiltInOids::INT8OID, PgBuiltInOids::INT8OID,
          PgBuiltInOids::UUIDOID],
    ) };
}

type Statement = std::thread::LocalKey<Kept>;

/// Runs a kept statement that returns at most one row, and returns it. More rows are an
/// internal error, never truncated: a row limit would stop a statement whose writes (in a
/// data-modifying WITH) go on to completion, so its result would not match its writes.
fn query_row<'conn, T>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: &[DatumWithOid],
    read: impl Fn(&SpiHeapTupleData<'conn>) -> QResult<T>,
) -> QResult<Option<T>> {
    let mut rows = query(client, statement, args, read)?;
    if rows.len() > 1 {
        return Err(QuotaError::internal(format!("a statement meant to return one row returned {}", rows.len())));
    }
    Ok(rows.pop())
}

/// Runs a kept statement and maps all its rows. The rows are read into Rust values and the
/// SPI result is freed at once: a long record_batch must not keep every statement's result.
fn query<'conn, T>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: &[DatumWithOid],
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
        let rows = client.select(plan, None, args)?.map(|row| read(&row)).collect();
        // SAFETY: SPI_tuptable is the result of the select above, whose rows were all read
        // into owned Rust values; nothing refers to it any more.
        unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
        rows
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

/// The decision an earlier committed consume or record made under this key.
pub fn find_replay(client: &SpiClient, subject: Uuid, key: &str) -> QResult<Option<Decision>> {
    query_row(client, &FIND_REPLAY, &[subject.into(), key.into()], decision_from_row)
}

/// The decision that a reservation's reserve or settle event recorded.
pub fn find_reservation_event(client: &SpiClient, reservation_id: Uuid, kind: &str) -> QResult<Option<Decision>> {
    query_row(client, &FIND_RESERVATION_EVENT, &[reservation_id.into(), kind.into()], decision_from_row)
}

/// Reads the columns of `decision_columns!()` back into the decision they recorded, as
/// a replay of it.
fn decision_from_row(row: &SpiHeapTupleData) -> QResult<Decision> {
    let reason: String = not_null(row, 10)?;
    let kind: String = not_null(row, 14)?;
    Ok(Decision {
        allowed: kind != "denial",
        metric: not_null(row, 1)?,
        amount: not_null(row, 2)?,
        from_allowance: not_null(row, 3)?,
        from_grants: not_null(row, 4)?,
        overage: not_null(row, 12)?,
        used: not_null(row, 5)?,
        reserved: not_null(row, 13)?,
        allowance: row.get(6)?,
        remaining: row.get(7)?,
        window_start: from_window_key(not_null(row, 8)?)?,
        resets_at: row.get::<TimestampWithTimeZone>(9)?.map(|t| to_micros(t, "window_end")).transpose()?,
        replayed: true,
        reason: Reason::parse(&reason).unwrap_or(Reason::Ok),
        event_id: row.get(11)?,
    })
}

thread_local! {
    // Whether the database's pg_quota schema has the fast path (0.2.0 and later). A new
    // library can meet a database still on an older version's SQL until ALTER EXTENSION
    // UPDATE runs; it then decides every consume on the slow path. Forgotten on every
    // relcache invalidation, which ALTER TABLE (the upgrade) and DROP EXTENSION cause.
    static FAST_PATH_INSTALLED: Cell<Option<bool>> = const { Cell::new(None) };
    static RELCACHE_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_schema_version(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    FAST_PATH_INSTALLED.with(|installed| installed.set(None));
}

/// Whether counters have the fast path's columns (see FAST_PATH_INSTALLED).
pub fn fast_path_installed(client: &SpiClient) -> QResult<bool> {
    if !RELCACHE_CALLBACK.with(Cell::get) {
        // SAFETY: registering a relcache callback is allowed at any time in a backend.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_schema_version), pg_sys::Datum::from(0)) };
        RELCACHE_CALLBACK.with(|registered| registered.set(true));
    }
    if let Some(installed) = FAST_PATH_INSTALLED.with(Cell::get) {
        return Ok(installed);
    }
    let installed = client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                             WHERE attrelid = 'quota.counters'::pg_catalog.regclass AND attname = 'fast' AND NOT attisdropped)",
            None,
            &[],
        )?
        .first()
        .get_one::<bool>()?
        .unwrap_or(false);
    FAST_PATH_INSTALLED.with(|cached| cached.set(Some(installed)));
    Ok(installed)
}

/// consume's fast path: the decision when the marked window pays, else None.
pub fn fast_consume(
    client: &SpiClient,
    subject: Uuid,
    metric: &str,
    amount: i64,
    now: Micros,
    key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Option<Decision>> {
    let args = [subject.into(), metric.into(), amount.into(), timestamp(now)?.into(), key.into(), metadata.into()];
    let decided = query_row(client, &FAST_CONSUME, &args, decision_from_row)?;
    Ok(decided.map(|decision| Decision { replayed: false, ..decision }))
}

/// A window marked for the fast path: its usage and the effective allowance cached in it.
pub struct MarkedWindow {
    pub window: Window,
    pub used: i64,
    pub allowance: Option<i64>,
}

/// The (subject, metric)'s window marked for the fast path at `now`, if any (see MARKED_WINDOW).
pub fn marked_window(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<Option<MarkedWindow>> {
    query_row(client, &MARKED_WINDOW, &[subject.into(), metric.into(), timestamp(now)?.into()], |row| {
        let end = row.get::<TimestampWithTimeZone>(2)?.map(|t| to_micros(t, "window_end")).transpose()?;
        Ok(MarkedWindow {
            window: Window { start: from_window_key(not_null(row, 1)?)?, end },
            used: not_null(row, 3)?,
            allowance: row.get(4)?,
        })
    })
}

/// Takes the keys a consume needs to mark its window (see TRY_LOCK_FAST_PATH) if they are
/// free now; false when another consume or a configuration change holds them.
pub fn try_lock_fast_path(client: &SpiClient, subject: Uuid, plan: &str) -> QResult<bool> {
    let locked = query_row(client, &TRY_LOCK_FAST_PATH, &[subject.into(), plan.into()], |row| not_null(row, 1))?;
    locked.ok_or_else(|| QuotaError::internal("the fast path's lock returned no row"))
}

/// Marks `window` as the (subject, metric)'s only fast-path window, with its effective
/// allowance. Runs under the subject's fast-path key (try_lock_fast_path).
pub fn mark_fast(client: &SpiClient, subject: Uuid, metric: &str, window: Window, allowance: Option<i64>) -> QResult<()> {
    let start = window_key(window.start)?;
    query(client, &UNMARK_OTHERS, &[subject.into(), metric.into(), start.into()], |_| Ok(()))?;
    // The row exists first (a first denial creates it), unmarked; then it is marked by a
    // plain UPDATE, never by an INSERT that proposes a marked row.
    lock_counter(client, subject, metric, window)?;
    query(client, &MARK_FAST, &[subject.into(), metric.into(), start.into(), allowance.into()], |_| Ok(())).map(drop)
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
    /// Sum of the grants usable now, at most i64::MAX (informational: the slow path locks
    /// and re-reads them).
    pub grants_left: i64,
    /// A reset after `at` exists: the window at `at` is not the one later calls count in.
    pub reset_since: bool,
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
            reset_since: not_null(row, 14)?,
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

/// A window's counter: usage, and the sum of its reservations still marked held.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    pub used: i64,
    pub held: i64,
}

/// Locks the window's counter row (creating it) and returns it.
pub fn lock_counter(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<Counter> {
    let end = window.end.map(timestamp).transpose()?;
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), end.into()];
    let counter = query_row(client, &LOCK_COUNTER, &args, |row| Ok(Counter { used: not_null(row, 1)?, held: not_null(row, 2)? }))?;
    counter.ok_or_else(|| QuotaError::internal("counter lock returned no row"))
}

/// Changes a locked counter; returns its new usage.
pub fn adjust_counter(client: &SpiClient, subject: Uuid, metric: &str, window: Window, used: i64, held: i64) -> QResult<i64> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), used.into(), held.into()];
    query_row(client, &ADJUST_COUNTER, &args, |row| not_null(row, 1))?.ok_or_else(|| QuotaError::internal("counter vanished"))
}

/// Under the counter lock: marks expired holds of the window and returns (what they held,
/// what the unexpired ones other than `except` hold).
pub fn expire_and_sum_holds(
    client: &SpiClient,
    subject: Uuid,
    metric: &str,
    window: Window,
    now: Micros,
    except: Option<Uuid>,
) -> QResult<(i64, i64)> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), timestamp(now)?.into(), except.into()];
    let sums = query_row(client, &HOLDS, &args, |row| Ok((not_null(row, 1)?, not_null(row, 2)?)))?;
    sums.ok_or_else(|| QuotaError::internal("holds returned no row"))
}

/// What the window's unexpired holds keep (read only).
pub fn active_holds(client: &SpiClient, subject: Uuid, metric: &str, window: Window, now: Micros) -> QResult<i64> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into(), timestamp(now)?.into()];
    Ok(query_row(client, &ACTIVE_HOLDS, &args, |row| not_null(row, 1))?.unwrap_or(0))
}

/// A reservation, locked.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub subject: Uuid,
    pub metric: String,
    pub amount: i64,
    pub window: Window,
    pub expires_at: Micros,
    pub status: String,
}

pub fn insert_reservation(
    client: &SpiClient,
    subject: Uuid,
    metric: &str,
    amount: i64,
    window: Window,
    expires_at: Micros,
    key: Option<&str>,
) -> QResult<Uuid> {
    let end = window.end.map(timestamp).transpose()?;
    let args = [
        subject.into(),
        metric.into(),
        amount.into(),
        window_key(window.start)?.into(),
        end.into(),
        timestamp(expires_at)?.into(),
        key.into(),
    ];
    query_row(client, &INSERT_RESERVATION, &args, |row| not_null(row, 1))?.ok_or_else(|| QuotaError::internal("reservation insert returned no row"))
}

/// Finds and locks a reservation by id, or by a subject's idempotency key.
pub fn find_reservation(client: &SpiClient, id: Option<Uuid>, key: Option<(Uuid, &str)>) -> QResult<Option<Reservation>> {
    let args = [id.into(), key.map(|(subject, _)| subject).into(), key.map(|(_, key)| key).into()];
    query_row(client, &FIND_RESERVATION, &args, |row| {
        let end = row.get::<TimestampWithTimeZone>(6)?.map(|t| to_micros(t, "window_end")).transpose()?;
        Ok(Reservation {
            id: not_null(row, 1)?,
            subject: not_null(row, 2)?,
            metric: not_null(row, 3)?,
            amount: not_null(row, 4)?,
            window: Window { start: from_window_key(not_null(row, 5)?)?, end },
            expires_at: to_micros(not_null(row, 7)?, "expires_at")?,
            status: not_null(row, 8)?,
        })
    })
}

pub fn set_reservation_status(client: &SpiClient, reservation: &Reservation, status: &str) -> QResult<()> {
    let args = [reservation.subject.into(), reservation.id.into(), status.into()];
    query(client, &SET_RESERVATION_STATUS, &args, |_| Ok(())).map(drop)
}

/// Locks the grants usable at `now`, in spending order: (grant_id, remaining).
pub fn lock_grants(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<Vec<(Uuid, i64)>> {
    let args = [subject.into(), metric.into(), timestamp(now)?.into()];
    query(client, &LOCK_GRANTS, &args, |row| Ok((not_null(row, 1)?, not_null(row, 2)?)))
}

/// Takes `amount` from a locked grant and records which event it paid for.
pub fn spend_grant(client: &SpiClient, subject: Uuid, event_id: i64, grant_id: Uuid, amount: i64) -> QResult<()> {
    query(client, &SPEND_GRANT, &[subject.into(), grant_id.into(), amount.into()], |_| Ok(()))?;
    let args = [subject.into(), event_id.into(), grant_id.into(), amount.into()];
    query(client, &INSERT_EVENT_GRANT, &args, |_| Ok(()))?;
    Ok(())
}

/// A window's counter; zero when nothing was counted in it yet.
pub fn read_counter(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<Counter> {
    let args = [subject.into(), metric.into(), window_key(window.start)?.into()];
    let counter = query_row(client, &READ_COUNTER, &args, |row| Ok(Counter { used: not_null(row, 1)?, held: not_null(row, 2)? }))?;
    Ok(counter.unwrap_or_default())
}

/// The ledger row of one decision.
pub struct EventRow<'a> {
    pub subject: Uuid,
    pub kind: &'static str,
    pub decision: &'a Decision,
    pub window: Window,
    pub idempotency_key: Option<&'a str>,
    pub metadata: Option<Jsonb>,
    pub reservation_id: Option<Uuid>,
}

/// Writes the ledger row; None when another call's consume or record holds its idempotency
/// key (this one waited for that call to commit).
pub fn insert_event(client: &SpiClient, event: EventRow) -> QResult<Option<i64>> {
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
        d.reserved.into(),
        event.reservation_id.into(),
    ];
    query_row(client, &INSERT_EVENT, &args, |row| not_null(row, 1))
}
