//! What a raised denial says: quota.explain_denial() gives the raising functions of
//! sql/require.sql (require, require_many, require_reservation, and through
//! quota.raise_denied the enforce trigger) their message, DETAIL and HINT. They raise in
//! PL/pgSQL because pgrx turns a custom SQLSTATE (PT429) that Rust raises, or that passes
//! through pgrx, into one it knows; the words are made here, in one place
//! (quota_rules::denial).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Uuid;

use quota_rules::decide::grants_left_of;
use quota_rules::denial::Shortfall;
use quota_rules::plan::validate_metric;

use crate::error::{required, sql_call, QResult};
use crate::store::counters;
use crate::store::{to_micros, transaction_now};

/// The message, DETAIL (JSON) and HINT of a denial of `requested` units in a window that
/// has `used`, `reserved`, `allowance` (NULL = unlimited) and `resets_at` (NULL = never);
/// the subject's usable grants are read now, in the caller's transaction.
#[allow(clippy::too_many_arguments)] // the columns of a denied decision, as SQL passes them
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn explain_denial(
    subject: Option<Uuid>,
    metric: Option<&str>,
    requested: Option<i64>,
    used: Option<i64>,
    reserved: Option<i64>,
    allowance: Option<i64>,
    resets_at: Option<TimestampWithTimeZone>,
) -> Result<TableIterator<'static, (name!(message, String), name!(detail, String), name!(hint, String))>, ErrorReport> {
    sql_call(|| explain(subject, metric, requested, used, reserved, allowance, resets_at, None))
}

/// explain_denial for a decision, with its `remaining` (allowance left plus usable grants,
/// less holds): the grants are the ones that decision counted, found from it without a read
/// (quota_rules::decide::grants_left_of), so the words explain the decision itself. Read now
/// only where `remaining` cannot tell them (NULL; nothing left while the holds keep more than
/// the allowance left; a sum at bigint's limit; values no balance gives). The raising
/// functions call this one: a read of what governs the subject cost a raised denial about
/// half of its throughput (docs/benchmarks.md, 0.21.0).
#[allow(clippy::too_many_arguments)] // the columns of a denied decision, as SQL passes them
#[pg_extern(stable, security_definer, name = "explain_denial")]
#[search_path(pg_catalog, pg_temp)]
fn explain_decided_denial(
    subject: Option<Uuid>,
    metric: Option<&str>,
    requested: Option<i64>,
    used: Option<i64>,
    reserved: Option<i64>,
    allowance: Option<i64>,
    resets_at: Option<TimestampWithTimeZone>,
    remaining: Option<i64>,
) -> Result<TableIterator<'static, (name!(message, String), name!(detail, String), name!(hint, String))>, ErrorReport> {
    sql_call(|| explain(subject, metric, requested, used, reserved, allowance, resets_at, remaining))
}

#[allow(clippy::too_many_arguments)] // explain_decided_denial's arguments
fn explain(
    subject: Option<Uuid>,
    metric: Option<&str>,
    requested: Option<i64>,
    used: Option<i64>,
    reserved: Option<i64>,
    allowance: Option<i64>,
    resets_at: Option<TimestampWithTimeZone>,
    remaining: Option<i64>,
) -> QResult<TableIterator<'static, (String, String, String)>> {
    let subject = required(subject, "subject")?;
    let metric = required(metric, "metric")?;
    validate_metric(metric)?;
    let resets_at = resets_at.map(|instant| to_micros(instant, "resets_at")).transpose()?;
    let requested = required(requested, "requested")?;
    let (used, reserved) = (required(used, "used")?, required(reserved, "reserved")?);
    let grants_left = match remaining.and_then(|remaining| grants_left_of(allowance, used, reserved, remaining)) {
        Some(grants_left) => grants_left,
        None => {
            let now = transaction_now()?;
            Spi::connect(|client| counters::resolve(client, subject, metric, now, now))?.grants_left
        }
    };
    let shortfall = Shortfall { metric, requested, allowance, used, reserved, grants_left, resets_at };
    Ok(TableIterator::once((shortfall.message(), shortfall.detail(), shortfall.hint().to_string())))
}
