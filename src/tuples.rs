//! The composite results of the SQL functions (sql/schema.sql's quota.decision,
//! quota.reservation, quota.usage_row, quota.allocation), built from the Rust values in
//! column order.

use std::cell::Cell;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgTupleDesc, Uuid};

use quota_rules::decide::{percent_used, remaining_with_grants, Decision};
use quota_rules::window::Micros;

use crate::error::{QResult, QuotaError};
use crate::store::timestamp;
use crate::pools::Allocated;
use crate::usage::UsageRow;

pub type DecisionTuple = pgrx::composite_type!('static, "quota.decision");
pub type UsageTuple = pgrx::composite_type!('static, "quota.usage_row");
type ReservationTuple = pgrx::composite_type!('static, "quota.reservation");
type AllocationTuple = pgrx::composite_type!('static, "quota.allocation");

/// A reservation that holds units: its id and when it expires.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub reservation_id: Uuid,
    pub expires_at: Micros,
}

thread_local! {
    // OIDs of our composite types, looked up once per backend and forgotten whenever
    // pg_type changes (e.g. DROP EXTENSION and CREATE EXTENSION in the same session).
    static DECISION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static USAGE_ROW_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static RESERVATION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static ALLOCATION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static INVALIDATION_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_type_oids(_arg: pg_sys::Datum, _cache_id: std::ffi::c_int, _hash: u32) {
    DECISION_OID.with(|oid| oid.set(Oid::INVALID));
    USAGE_ROW_OID.with(|oid| oid.set(Oid::INVALID));
    RESERVATION_OID.with(|oid| oid.set(Oid::INVALID));
    ALLOCATION_OID.with(|oid| oid.set(Oid::INVALID));
}

fn composite_desc(cache: &'static std::thread::LocalKey<Cell<Oid>>, name: &str) -> QResult<PgTupleDesc<'static>> {
    if !INVALIDATION_REGISTERED.with(Cell::get) {
        // SAFETY: registering a syscache callback is allowed at any time in a backend.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::TYPEOID as std::ffi::c_int,
                Some(forget_type_oids),
                pg_sys::Datum::from(0),
            );
        }
        INVALIDATION_REGISTERED.with(|registered| registered.set(true));
    }
    let mut oid = cache.with(Cell::get);
    if oid == Oid::INVALID {
        oid = pgrx::regtypein(name);
        cache.with(|cached| cached.set(oid));
    }
    if oid == Oid::INVALID {
        return Err(QuotaError::internal(format!("type {name} is missing")));
    }
    // The type cache's descriptor, reference-counted until the tuple made with it is dropped:
    // not a copy per tuple (record_batch keeps one tuple per event until it returns).
    // SAFETY: lookup_rowtype_tupdesc returns a pinned descriptor of an existing composite type
    // (or raises), which PgTupleDesc::from_pg releases on drop.
    Ok(unsafe { PgTupleDesc::from_pg(pg_sys::lookup_rowtype_tupdesc(oid, -1)) })
}

fn composite(
    cache: &'static std::thread::LocalKey<Cell<Oid>>,
    name: &str,
    values: Vec<Option<pg_sys::Datum>>,
) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    let desc = composite_desc(cache, name)?;
    // Releases add columns at the end: a database still on an older release's schema (until
    // ALTER EXTENSION UPDATE) gets the columns its type has.
    let mut values = values;
    values.truncate(desc.len());
    // SAFETY: each datum below is built from the Rust type of its column in sql/schema.sql.
    unsafe { PgHeapTuple::from_datums(desc, values) }.map_err(QuotaError::internal)
}

pub fn optional_timestamp(micros: Option<Micros>) -> QResult<Option<TimestampWithTimeZone>> {
    micros.map(timestamp).transpose()
}

pub fn decision_tuple(d: &Decision) -> QResult<DecisionTuple> {
    composite(
        &DECISION_OID,
        "quota.decision",
        vec![
            d.allowed.into_datum(),
            d.metric.as_str().into_datum(),
            d.amount.into_datum(),
            d.from_allowance.into_datum(),
            d.from_grants.into_datum(),
            d.overage.into_datum(),
            d.used.into_datum(),
            d.reserved.into_datum(),
            d.allowance.into_datum(),
            d.remaining.into_datum(),
            optional_timestamp(d.window_start)?.into_datum(),
            optional_timestamp(d.resets_at)?.into_datum(),
            d.replayed.into_datum(),
            d.reason.as_str().into_datum(),
            d.event_id.into_datum(),
            optional_timestamp(d.retry_after)?.into_datum(),
        ],
    )
}

pub fn reservation_tuple(hold: Option<Hold>, d: &Decision) -> QResult<ReservationTuple> {
    composite(
        &RESERVATION_OID,
        "quota.reservation",
        vec![
            hold.map(|hold| hold.reservation_id).into_datum(),
            d.allowed.into_datum(),
            d.metric.as_str().into_datum(),
            d.amount.into_datum(),
            optional_timestamp(hold.map(|hold| hold.expires_at))?.into_datum(),
            d.used.into_datum(),
            d.reserved.into_datum(),
            d.allowance.into_datum(),
            d.remaining.into_datum(),
            optional_timestamp(d.window_start)?.into_datum(),
            optional_timestamp(d.resets_at)?.into_datum(),
            d.replayed.into_datum(),
            d.reason.as_str().into_datum(),
            optional_timestamp(d.retry_after)?.into_datum(),
        ],
    )
}

pub fn usage_tuple(row: &UsageRow) -> QResult<UsageTuple> {
    let percent = percent_used(row.allowance, row.used)
        .map(AnyNumeric::try_from)
        .transpose()
        .map_err(QuotaError::internal)?;
    composite(
        &USAGE_ROW_OID,
        "quota.usage_row",
        vec![
            row.metric.as_str().into_datum(),
            row.used.into_datum(),
            row.reserved.into_datum(),
            row.allowance.into_datum(),
            remaining_with_grants(row.allowance, row.used, row.grants_left.saturating_add(row.rollover_left), row.reserved).into_datum(),
            row.grants_left.into_datum(),
            optional_timestamp(row.window.start)?.into_datum(),
            optional_timestamp(row.window.end)?.into_datum(),
            percent.into_datum(),
            pgrx::JsonB(row.rates.clone()).into_datum(),
            row.pool.as_ref().map(|pool| pool.pool).into_datum(),
            row.pool.as_ref().map(|pool| pool.drawn).into_datum(),
            row.pool.as_ref().and_then(|pool| pool.cap).into_datum(),
            row.pool.as_ref().and_then(|pool| pool.remaining).into_datum(),
            row.rollover_left.into_datum(),
        ],
    )
}

pub fn allocation_tuple(a: &Allocated) -> QResult<AllocationTuple> {
    composite(
        &ALLOCATION_OID,
        "quota.allocation",
        vec![
            a.allocation_id.into_datum(),
            a.allocation_id.is_some().into_datum(),
            a.pool.into_datum(),
            a.member.into_datum(),
            a.metric.as_str().into_datum(),
            a.amount.into_datum(),
            a.grant_id.into_datum(),
            a.pool_remaining.into_datum(),
            a.replayed.into_datum(),
            a.reason.as_str().into_datum(),
        ],
    )
}
