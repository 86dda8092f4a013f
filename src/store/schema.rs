//! Which parts of pg_quota's schema the database has. A new library can meet a database
//! still on an older version's SQL until ALTER EXTENSION UPDATE runs: it then records no
//! administrative change and knows no rate rule (before 0.7.0), knows no pool (before
//! 0.9.0), writes no alert (before 0.10.0), carries no unused allowance (before 0.11.0),
//! and decides every consume on the slow path and keeps every call in the ledger (before
//! 0.12.0).
//! Each answer is read once and forgotten on every relcache invalidation, which ALTER
//! TABLE, CREATE TABLE (the upgrade) and DROP EXTENSION cause.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::{not_null, query_row, the_row, Kept};
use crate::error::QResult;

/// A part of the schema that some release added.
#[derive(Clone, Copy)]
pub enum Part {
    /// quota.admin_changes (0.7.0).
    AdminChanges,
    /// Rate rules: quota.limits' `rate`, quota.rate_overrides, quota.rate_state (0.7.0).
    RateLimits,
    /// Pools: quota.pool_members and the rest of sql/pools.sql, quota.events' `pool` (0.9.0).
    Pools,
    /// Usage alerts: quota.alert_overrides, quota.alerts, quota.limits' `alerts`, quota.counters'
    /// `alerted` and `alert_at` (0.10.0). The fast path needs them too.
    Alerts,
    /// Rollover: quota.limits' `rollover_max` and `rollover_windows`, quota.grants' `rollover_of`
    /// (0.11.0).
    Rollover,
    /// Ledger modes: quota.limits' `ledger`, quota.counters' `ledger_rows` and
    /// `counted_without_ledger` (0.12.0). The fast path needs them.
    LedgerModes,
    /// Compaction: quota.ledger_rollups, whose closed rollups are the windows it closed (0.13.0).
    Compaction,
    /// quota.counters' `holds_expire_at` (0.15.0). The fast path (consume's and reservations')
    /// needs this schema.
    HoldsBound,
    /// quota.grants' `spent`, which grants_spending_order leaves out (0.19.0).
    SpentGrants,
}

thread_local! {
    static HAS_ADMIN_CHANGES: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_RATE_LIMITS: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_POOLS: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_ALERTS: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_ROLLOVER: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_LEDGER_MODES: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_COMPACTION: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_HOLDS_BOUND: Cell<Option<bool>> = const { Cell::new(None) };
    static HAS_SPENT_GRANTS: Cell<Option<bool>> = const { Cell::new(None) };
    static RELCACHE_CALLBACK: Cell<bool> = const { Cell::new(false) };
    static ADMIN_CHANGES_TABLE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.admin_changes') IS NOT NULL AS present",
    ) };
    static POOL_MEMBERS_TABLE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.pool_members') IS NOT NULL AS present",
    ) };
    static ALERT_OVERRIDES_TABLE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.alert_overrides') IS NOT NULL AS present",
    ) };
    static ROLLOVER_COLUMN: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass('quota.grants') AND attname = 'rollover_of' AND NOT attisdropped) AS present",
    ) };
    static LEDGER_COLUMN: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass('quota.counters') AND attname = 'counted_without_ledger' AND NOT attisdropped) AS present",
    ) };
    static HOLDS_BOUND_COLUMN: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass('quota.counters') AND attname = 'holds_expire_at' AND NOT attisdropped) AS present",
    ) };
    static SPENT_COLUMN: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
                         WHERE attrelid = pg_catalog.to_regclass('quota.grants') AND attname = 'spent' AND NOT attisdropped) AS present",
    ) };
    static LEDGER_ROLLUPS_TABLE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.ledger_rollups') IS NOT NULL AS present",
    ) };
    static RATE_STATE_TABLE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.rate_state') IS NOT NULL AS present",
    ) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_schema(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    HAS_ADMIN_CHANGES.with(|has| has.set(None));
    HAS_RATE_LIMITS.with(|has| has.set(None));
    HAS_POOLS.with(|has| has.set(None));
    HAS_ALERTS.with(|has| has.set(None));
    HAS_ROLLOVER.with(|has| has.set(None));
    HAS_LEDGER_MODES.with(|has| has.set(None));
    HAS_COMPACTION.with(|has| has.set(None));
    HAS_HOLDS_BOUND.with(|has| has.set(None));
    HAS_SPENT_GRANTS.with(|has| has.set(None));
}

/// Whether the database's pg_quota schema has `part`.
pub fn has(client: &SpiClient, part: Part) -> QResult<bool> {
    if !RELCACHE_CALLBACK.with(Cell::get) {
        // SAFETY: registering a relcache callback is allowed at any time in a backend.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_schema), pg_sys::Datum::from(0)) };
        RELCACHE_CALLBACK.with(|registered| registered.set(true));
    }
    let (cached, statement) = match part {
        Part::AdminChanges => (&HAS_ADMIN_CHANGES, &ADMIN_CHANGES_TABLE),
        Part::RateLimits => (&HAS_RATE_LIMITS, &RATE_STATE_TABLE),
        Part::Pools => (&HAS_POOLS, &POOL_MEMBERS_TABLE),
        Part::Alerts => (&HAS_ALERTS, &ALERT_OVERRIDES_TABLE),
        Part::Rollover => (&HAS_ROLLOVER, &ROLLOVER_COLUMN),
        Part::LedgerModes => (&HAS_LEDGER_MODES, &LEDGER_COLUMN),
        Part::Compaction => (&HAS_COMPACTION, &LEDGER_ROLLUPS_TABLE),
        Part::HoldsBound => (&HAS_HOLDS_BOUND, &HOLDS_BOUND_COLUMN),
        Part::SpentGrants => (&HAS_SPENT_GRANTS, &SPENT_COLUMN),
    };
    if let Some(present) = cached.with(Cell::get) {
        return Ok(present);
    }
    let present = the_row(query_row(client, statement, [], |row| not_null(row, "present"))?)?;
    cached.with(|cell| cell.set(Some(present)));
    Ok(present)
}
