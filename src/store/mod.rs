//! Every statement pg_quota's Rust code runs, and the mapping of their rows to Rust values:
//! `counters` (what governs a request, counters, holds, grants), `ledger` (quota.events),
//! `reservations`, `fast_path` (consume's one-statement path and its marks), `admin` (plans,
//! limits, assignments, overrides, grants, resets), `changes` (the caller, and the audit trail
//! of administration), `enforce` (the enforce trigger's account of charges), `pools` (membership, caps, draws, allocations), `alerts` (alert
//! rules, the outbox, what fired in each window), `rollover` (carries of unused allowance).
//!
//! Statements name their parameters (`$subject`) and every call binds them by name; rows
//! are read by column name, through the names of the statement's result columns read once. Each is prepared on first use in a backend and kept
//! (SPI_keepplan), so a consume costs no parsing or planning. PostgreSQL's plan cache
//! revalidates kept plans when the tables change (even across DROP/CREATE EXTENSION in one
//! session). They are prepared as "mutating", which makes SPI take a fresh snapshot for every
//! statement: after waiting on a lock, the next statement sees what the lock holder
//! committed (READ COMMITTED).

use std::cell::OnceCell;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData};

use quota_rules::window::Micros;

use crate::error::{QResult, QuotaError};

/// The columns of an event that make up its decision, read by `ledger::decision_from_row`;
/// the domain-typed ones cast to their base types, which is what pgrx reads.
macro_rules! decision_columns {
    () => {
        "metric, amount::bigint AS amount, from_allowance::bigint AS from_allowance,
         from_grants::bigint AS from_grants, overage::bigint AS overage, used, reserved, allowance, remaining,
         window_start, window_end, reason, event_id, kind::text AS kind"
    };
}

/// The usage at which a marked window's next alert fires: the least threshold of the watched
/// rules ($watch_rules, $watch_at: quota_rules::alert::watch) that have not fired in the
/// counter row `c`; NULL for none.
macro_rules! next_alert_at {
    () => {
        "(SELECT pg_catalog.min(w.at) FROM ROWS FROM (pg_catalog.unnest($watch_rules::text[]), pg_catalog.unnest($watch_at::int8[])) AS w(rule, at)
           WHERE NOT (w.rule = ANY (c.alerted)))"
    };
}

pub mod admin;
pub mod alerts;
pub mod changes;
pub mod enforce;
#[macro_use]
pub mod counters;
#[macro_use]
pub mod fast_path;
pub mod fast_holds;
pub mod journal;
pub mod ledger;
pub mod pools;
pub mod rates;
pub mod reservations;
pub mod rollover;
pub mod schema;

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

pub fn timestamp(micros: Micros) -> QResult<TimestampWithTimeZone> {
    micros
        .checked_sub(PG_EPOCH_MICROS)
        .and_then(|pg| TimestampWithTimeZone::try_from(pg).ok())
        .ok_or_else(|| QuotaError::overflow("timestamp"))
}

/// `None` maps to `-infinity`, the counter key of a lifetime window that was never reset.
fn window_key(start: Option<Micros>) -> QResult<TimestampWithTimeZone> {
    start.map_or(Ok(TimestampWithTimeZone::negative_infinity()), timestamp)
}

fn window_end(end: Option<Micros>) -> QResult<Option<TimestampWithTimeZone>> {
    end.map(timestamp).transpose()
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

/// The start of the current statement (`pg_catalog.statement_timestamp()`): the instant rate
/// rules decide at, so that a long transaction does not freeze their clock.
pub fn statement_now() -> QResult<Micros> {
    // SAFETY: always valid inside a statement, which every SQL function call is.
    let now = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    now.checked_add(PG_EPOCH_MICROS).ok_or_else(|| QuotaError::overflow("statement_timestamp()"))
}

/// REPEATABLE READ and SERIALIZABLE transactions read one snapshot throughout.
pub fn transaction_snapshot_is_fixed() -> bool {
    // SAFETY: a backend global, set for the running transaction.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// The wall clock (`pg_catalog.clock_timestamp()`): what quota.compact() may have done by now
/// is bounded by it, not by the caller's transaction start.
pub fn clock_now() -> QResult<Micros> {
    // SAFETY: reads the system clock; no state of the backend is involved.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    now.checked_add(PG_EPOCH_MICROS).ok_or_else(|| QuotaError::overflow("clock_timestamp()"))
}

/// A statement prepared on first use and kept for the backend's lifetime. Its SQL names its
/// parameters `$name`; the first call's arguments fix their order and types.
pub struct Kept {
    sql: &'static str,
    prepared: OnceCell<Prepared>,
}

struct Prepared {
    plan: OwnedPreparedStatement,
    /// The parameter names, in the order of their `$n`.
    names: Vec<&'static str>,
    /// The result's column names, in column order, read from its first result.
    columns: OnceCell<Vec<String>>,
}

/// A result row, read by column name: the statement's one mapping of names to ordinals.
pub struct Row<'a, 'conn> {
    data: &'a SpiHeapTupleData<'conn>,
    columns: &'a [String],
}

impl Row<'_, '_> {
    fn get<T: FromDatum + IntoDatum>(&self, name: &str) -> QResult<Option<T>> {
        let ordinal = self
            .columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| QuotaError::internal(format!("a statement has no column {name}")))?;
        Ok(self.data.get::<T>(ordinal + 1)?)
    }
}

impl Kept {
    pub const fn new(sql: &'static str) -> Self {
        Kept { sql, prepared: OnceCell::new() }
    }
}

/// Arguments by parameter name.
pub type Args<'a, const N: usize> = [(&'static str, DatumWithOid<'a>); N];

type Statement = std::thread::LocalKey<Kept>;

/// `sql` with each `$name` replaced by `$n`, n the name's place in `names` (1-based). Every
/// name must be bound and every bound name used: a typo is an internal error at once.
fn positional(sql: &str, names: &[&'static str]) -> QResult<String> {
    let mut out = String::with_capacity(sql.len());
    let mut used = vec![false; names.len()];
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let length = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
        let name = &after[..length];
        let index = names
            .iter()
            .position(|bound| *bound == name)
            .ok_or_else(|| QuotaError::internal(format!("statement parameter ${name} is not bound")))?;
        used[index] = true;
        out.push_str(&format!("${}", index + 1));
        rest = &after[length..];
    }
    out.push_str(rest);
    match used.iter().position(|used| !used) {
        Some(unused) => Err(QuotaError::internal(format!("argument {} is not a parameter of its statement", names[unused]))),
        None => Ok(out),
    }
}

/// Runs a kept statement that returns at most one row, and returns it. More rows are an
/// internal error, never truncated: a row limit would stop a statement whose writes (in a
/// data-modifying WITH) go on to completion, so its result would not match its writes.
fn query_row<'conn, T, const N: usize>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: Args<'_, N>,
    read: impl Fn(&Row) -> QResult<T>,
) -> QResult<Option<T>> {
    let mut rows = query(client, statement, args, read)?;
    if rows.len() > 1 {
        return Err(QuotaError::internal(format!("a statement meant to return one row returned {}", rows.len())));
    }
    Ok(rows.pop())
}

/// The row of a statement that always returns one.
fn the_row<T>(row: Option<T>) -> QResult<T> {
    row.ok_or_else(|| QuotaError::internal("a statement returned no row"))
}

/// Runs a kept statement and maps all its rows. The rows are read into Rust values and the
/// SPI result is freed at once: a long record_batch must not keep every statement's result.
fn query<'conn, T, const N: usize>(
    client: &SpiClient<'conn>,
    statement: &'static Statement,
    args: Args<'_, N>,
    read: impl Fn(&Row) -> QResult<T>,
) -> QResult<Vec<T>> {
    statement.with(|kept| {
        if kept.prepared.get().is_none() {
            let names: Vec<&'static str> = args.iter().map(|(name, _)| *name).collect();
            let types: Vec<PgOid> = args.iter().map(|(_, value)| PgOid::from(value.oid())).collect();
            let plan = client.prepare_mut(positional(kept.sql, &names)?.as_str(), &types)?.keep();
            // A backend is single-threaded and nothing else sets the cell between these lines.
            let _ = kept.prepared.set(Prepared { plan, names, columns: OnceCell::new() });
        }
        let Some(prepared) = kept.prepared.get() else {
            return Err(QuotaError::internal("statement was not prepared"));
        };
        if !args.iter().map(|(name, _)| *name).eq(prepared.names.iter().copied()) {
            return Err(QuotaError::internal(format!("a statement was bound in another order than {:?}", prepared.names)));
        }
        let values = args.map(|(_, value)| value);
        let table = client.select(&prepared.plan, None, &values)?;
        // A statement without RETURNING has no result columns (and no tuple table).
        if let (None, Ok(count)) = (prepared.columns.get(), table.columns()) {
            let columns = (1..=count).map(|ordinal| table.column_name(ordinal)).collect::<Result<_, _>>()?;
            let _ = prepared.columns.set(columns);
        }
        let columns = prepared.columns.get().map_or(&[][..], Vec::as_slice);
        let rows = table.map(|data| read(&Row { data: &data, columns })).collect();
        // SAFETY: SPI_tuptable is the result of the select above, whose rows were all read
        // into owned Rust values; nothing refers to it any more.
        unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
        rows
    })
}

/// Column `name` of a row, which may be NULL.
fn column<T: FromDatum + IntoDatum>(row: &Row, name: &str) -> QResult<Option<T>> {
    row.get(name)
}

/// Column `name`, which the statement guarantees is not NULL.
fn not_null<T: FromDatum + IntoDatum>(row: &Row, name: &str) -> QResult<T> {
    column(row, name)?.ok_or_else(|| QuotaError::internal(format!("column {name} is NULL")))
}

/// Column `name` holding an instant, or NULL.
fn instant(row: &Row, name: &str) -> QResult<Option<Micros>> {
    column::<TimestampWithTimeZone>(row, name)?.map(|t| to_micros(t, name)).transpose()
}
