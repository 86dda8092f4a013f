//! The denial journal: a denial that raises (require, require_many, require_reservation,
//! the enforce trigger, limit_request; all through quota.raise_denied()) rolls back its
//! transaction and, with it, any row it wrote. quota.raise_denied() first hands the denial
//! to quota.journal_denial(), which queues it in shared memory (quota_rules::journal); a
//! background worker writes the queue to quota.events (kind `denial`) in its own
//! transactions, together with its progress row, so that a worker killed between writing
//! and freeing a batch writes nothing twice when it restarts.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;

use quota_rules::journal::{progress_after, unwritten, Denial, InlineText};
use quota_rules::plan::validate_metric;
use quota_rules::request::format_instant;

use super::{journal_database, preloaded, Journal, JOURNAL_DENIALS};
use crate::callers::{claims, db_role};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::store::{journal as statements, statement_now, to_micros};

/// Records a worker writes in one transaction at most.
const BATCH: usize = 500;
const WORKER_NAME: &str = "pg_quota denial journal";

/// Queues a denial about to be raised; false when it is not journaled (the library is not
/// preloaded, pg_quota.journal_denials is off, the journal is full, or it serves another
/// database). Never raises for a full
/// journal: the caller's own error is what must reach the client.
#[allow(clippy::too_many_arguments)] // the columns of a raised denial, as raise_denied has them
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn journal_denial(
    subject: Option<Uuid>,
    metric: Option<&str>,
    reason: Option<&str>,
    requested: Option<i64>,
    used: Option<i64>,
    reserved: Option<i64>,
    allowance: Option<i64>,
    remaining: Option<i64>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    retry_after: Option<TimestampWithTimeZone>,
    raised_by: Option<&str>,
    source_table: Option<&str>,
) -> Result<bool, ErrorReport> {
    sql_call(|| {
        if !preloaded() || !JOURNAL_DENIALS.get() {
            return Ok(false);
        }
        let metric = required(metric, "metric")?;
        validate_metric(metric)?;
        let instant = |value: Option<TimestampWithTimeZone>, name: &str| -> QResult<Option<i64>> {
            value.filter(|ts| ts.is_finite()).map(|ts| to_micros(ts, name)).transpose()
        };
        let denial = Denial {
            seq: 0,
            // SAFETY: set for the life of a backend connected to a database.
            database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
            at: statement_now()?,
            subject: *required(subject, "subject")?.as_bytes(),
            metric: InlineText::new(metric),
            reason: InlineText::new(required(reason, "reason")?),
            requested: required(requested, "requested")?,
            used: used.unwrap_or(0),
            reserved: reserved.unwrap_or(0),
            allowance,
            remaining,
            window_start: instant(window_start, "window_start")?,
            window_end: instant(window_end, "window_end")?,
            retry_after: instant(retry_after, "retry_after")?,
            raised_by: InlineText::new(required(raised_by, "raised_by")?),
            source_table: InlineText::new(source_table.unwrap_or("")),
            role: InlineText::new(&db_role()),
            jwt_subject: claims().subject.map(|sub| *sub.as_bytes()),
        };
        Ok(Journal::attach("quota.journal_denial()")?.push(denial))
    })
}

/// The journal's state: whether this server preloaded pg_quota, the database it serves,
/// its capacity, denials queued, written to the ledger, dropped (the journal was full) and
/// raised in other databases since the server started, and the worker's process (NULL
/// while none runs). Without the preload: false, zeros and NULLs.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn denial_journal_state() -> Result<
    TableIterator<
        'static,
        (
            name!(preloaded, bool),
            name!(database, Option<String>),
            name!(capacity, i64),
            name!(queued, i64),
            name!(written, i64),
            name!(dropped, i64),
            name!(other_database, i64),
            name!(worker_pid, Option<i32>),
        ),
    >,
    ErrorReport,
> {
    sql_call(|| {
        if !preloaded() {
            return Ok(TableIterator::once((false, None, 0, 0, 0, 0, 0, None)));
        }
        let journal = Journal::attach("quota.denial_journal_state()")?;
        let ring = journal.ring();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let worker_pid = Spi::connect(|client| statements::worker_pid(client, WORKER_NAME))?;
        Ok(TableIterator::once((
            true,
            Some(journal_database()),
            count(journal.capacity() as u64),
            count(ring.queued()),
            count(ring.written),
            count(ring.dropped),
            count(journal.other_database()),
            worker_pid,
        )))
    })
}

/// Registers the worker, from _PG_init of a preloading postmaster. It starts once the server
/// accepts writes (not on a standby) and again a second after it exits or dies.
pub fn register_worker() {
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_NAME)
        .set_library("pg_quota")
        .set_function("pg_quota_journal_worker")
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_quota_journal_worker(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = journal_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let journal = match Journal::attach(WORKER_NAME) {
        Ok(journal) => journal,
        Err(error) => {
            pgrx::warning!("{WORKER_NAME}: {error}");
            return;
        }
    };
    // SAFETY: this process's database and latch, set for its life.
    journal.serve(unsafe { pg_sys::MyDatabaseId }.to_u32(), unsafe { pg_sys::MyLatch });
    // Writes what was queued before it started, then wakes when a denial is queued; the
    // timeout retries a database without pg_quota yet.
    loop {
        while write_batch(&journal) {}
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
    journal.serve(unsafe { pg_sys::MyDatabaseId }.to_u32(), std::ptr::null_mut());
    // Exit code 1: the postmaster starts the worker again (after pg_terminate_backend), unless
    // the server is shutting down.
    // SAFETY: ends this process, as a background worker ends.
    unsafe { pg_sys::proc_exit(1) };
}

/// Writes the oldest queued denials and frees them; false when there was nothing to write
/// or the database has no pg_quota (the queue waits).
fn write_batch(journal: &Journal) -> bool {
    let batch = journal.peek(BATCH);
    let Some(last) = batch.last().map(|denial| denial.seq) else {
        return false;
    };
    let epoch = journal.epoch();
    let written = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            if !statements::installed(client)? {
                return Ok(false);
            }
            let written_through = statements::lock_progress(client, epoch)?;
            let rows: Vec<serde_json::Value> = unwritten(&batch, written_through).map(ledger_row).collect();
            statements::insert_denials(client, &rows)?;
            statements::set_progress(client, epoch, progress_after(written_through, last))?;
            Ok::<_, QuotaError>(true)
        })
    });
    match written {
        Ok(true) => {
            journal.release(last);
            true
        }
        Ok(false) => false,
        Err(error) => {
            // Logged, and tried again at the next wake-up: the records stay queued.
            pgrx::warning!("{WORKER_NAME}: {error}");
            false
        }
    }
}

/// A queued denial as quota.events gets it (jsonb_populate_recordset's input).
fn ledger_row(denial: &Denial) -> serde_json::Value {
    let instant = |micros: Option<i64>| micros.map(format_instant);
    serde_json::json!({
        "subject": Uuid::from_bytes(denial.subject).to_string(),
        "created_at": format_instant(denial.at),
        "kind": "denial",
        "metric": denial.metric.as_str(),
        "amount": denial.requested,
        "window_start": instant(denial.window_start).unwrap_or_else(|| "-infinity".to_string()),
        "window_end": instant(denial.window_end),
        "used": denial.used,
        "reserved": denial.reserved,
        "allowance": denial.allowance,
        "remaining": denial.remaining,
        "reason": denial.reason.as_str(),
        "metadata": {
            "journal": {
                "seq": denial.seq,
                "raised_by": denial.raised_by.as_str(),
                "table": Some(denial.source_table.as_str()).filter(|table| !table.is_empty()),
                "role": Some(denial.role.as_str()).filter(|role| !role.is_empty()),
                "jwt_subject": denial.jwt_subject.map(|sub| Uuid::from_bytes(sub).to_string()),
                "retry_after": instant(denial.retry_after),
            }
        },
    })
}
