//! The statements of the denial journal's worker (src/shared/journal.rs): its progress row,
//! quota.journal_progress, and the denials it writes to quota.events.

use pgrx::spi::SpiClient;

use super::{column, not_null, query, query_row, the_row, Kept};
use crate::error::QResult;

thread_local! {
    static INSTALLED: Kept = const { Kept::new(
        "SELECT pg_catalog.to_regclass('quota.journal_progress') IS NOT NULL AS present",
    ) };
    // What this server start's journal has written, locked for the batch's transaction.
    static LOCK_PROGRESS: Kept = const { Kept::new(
        "SELECT CASE WHEN epoch = $epoch THEN written_through ELSE 0 END AS written_through
           FROM quota.journal_progress FOR UPDATE",
    ) };
    static SET_PROGRESS: Kept = const { Kept::new(
        "UPDATE quota.journal_progress SET epoch = $epoch, written_through = $written_through",
    ) };
    static INSERT_DENIALS: Kept = const { Kept::new(
        "INSERT INTO quota.events (subject, created_at, kind, metric, amount, window_start, window_end, used, reserved,
                                   allowance, remaining, reason, metadata)
         SELECT subject, created_at, kind, metric, amount, window_start, window_end, used, reserved,
                allowance, remaining, reason, metadata
           FROM pg_catalog.jsonb_populate_recordset(NULL::quota.events, $rows::jsonb)",
    ) };
    static WORKER_PID: Kept = const { Kept::new(
        "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = $worker_name",
    ) };
}

/// Whether this database has pg_quota (with the journal's progress row).
pub fn installed(client: &SpiClient) -> QResult<bool> {
    the_row(query_row(client, &INSTALLED, [], |row| not_null(row, "present"))?)
}

/// The last `seq` of server start `epoch` already in the ledger (0: none), locked.
pub fn lock_progress(client: &SpiClient, epoch: i64) -> QResult<u64> {
    let written_through: i64 = the_row(query_row(client, &LOCK_PROGRESS, [("epoch", epoch.into())], |row| not_null(row, "written_through"))?)?;
    Ok(u64::try_from(written_through).unwrap_or(0))
}

pub fn set_progress(client: &SpiClient, epoch: i64, written_through: u64) -> QResult<()> {
    let written_through = i64::try_from(written_through).unwrap_or(i64::MAX);
    query(client, &SET_PROGRESS, [("epoch", epoch.into()), ("written_through", written_through.into())], |_| Ok(())).map(drop)
}

/// Writes denial rows given as quota.events' columns in JSON.
pub fn insert_denials(client: &SpiClient, rows: &[serde_json::Value]) -> QResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = serde_json::Value::Array(rows.to_vec()).to_string();
    query(client, &INSERT_DENIALS, [("rows", rows.into())], |_| Ok(())).map(drop)
}

/// The process of the background worker named `worker_name`, if one runs.
pub fn worker_pid(client: &SpiClient, worker_name: &str) -> QResult<Option<i32>> {
    Ok(query_row(client, &WORKER_PID, [("worker_name", worker_name.into())], |row| column(row, "pid"))?.flatten())
}
