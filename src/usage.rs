//! Usage reports, and the end-user surface that is safe to grant to Supabase's
//! `authenticated`: none of my_usage, my_check, current_subject, current_quota_role takes a
//! subject, and all are SECURITY INVOKER: they read the tables as the caller, through row
//! level security, so they can only ever see the caller's own rows (or, for a user whose
//! claims make them support or admin, every subject's). usage(subject) is for trusted roles
//! and for signed-in support and admins (src/callers.rs).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::claims::QuotaRole;
use quota_rules::window::{Micros, Window};

use crate::callers::{authorize, claims};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::spending::{what_consume_would_decide, Request};
use crate::store::counters::{self, CounterKey};
use crate::pools::{self, pool_usage, PoolUsage};
use crate::rates::rate_usage;
use crate::store::rollover;
use crate::store::schema::{self, Part};
use crate::store::{admin, statement_now, transaction_now};
use crate::tuples::{decision_tuple, usage_tuple, UsageTuple};

/// One metric of quota.usage(): its current window and what is left of it.
pub struct UsageRow {
    pub metric: String,
    pub used: i64,
    pub reserved: i64,
    pub allowance: Option<i64>,
    /// Grants left, but the carries of unused allowance, which are `rollover_left`.
    pub grants_left: i64,
    pub rollover_left: i64,
    pub window: Window,
    /// Each rate rule in force and its state (src/rates.rs).
    pub rates: serde_json::Value,
    /// The pool the subject draws the metric from, if any (src/pools.rs).
    pub pool: Option<PoolUsage>,
}

#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn usage(
    subject: Option<Uuid>,
) -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.usage_row")>, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        Spi::connect(|client| authorize(client, QuotaRole::Support, "usage").map(drop))?;
        usage_of(subject)
    })
}

fn usage_of(subject: Uuid) -> QResult<SetOfIterator<'static, UsageTuple>> {
    let now = transaction_now()?;
    let rows = Spi::connect(|client| usage_rows(client, subject, now))?;
    let tuples = rows.iter().map(usage_tuple).collect::<QResult<Vec<_>>>()?;
    Ok(SetOfIterator::new(tuples))
}

/// The current window of every metric of the subject's plan, and of its pool's plan.
fn usage_rows(client: &SpiClient, subject: Uuid, now: Micros) -> QResult<Vec<UsageRow>> {
    let mut metrics = admin::plan_metrics(client, subject)?;
    if let Some(pool) = pools::pool_of(client, subject)? {
        metrics.extend(admin::plan_metrics(client, pool)?);
        metrics.sort_unstable();
        metrics.dedup();
    }
    metrics.iter().map(|metric| usage_row(client, subject, metric, now)).collect()
}

/// The current window of one metric of the subject.
pub fn usage_row(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<UsageRow> {
    let governing = counters::resolve(client, subject, metric, now, now)?;
    let window = governing.window_at(now)?;
    let key = CounterKey { subject, metric, window };
    let counter = counters::read_counter(client, key)?;
    let reserved = counters::active_holds(client, key, counter, now)?;
    let allowance = governing.allowance();
    let rates = rate_usage(client, subject, metric, &governing.rates, statement_now()?)?;
    let pool = pool_usage(client, subject, metric, now)?;
    let rollover_left = match schema::has(client, Part::Rollover)? {
        true => rollover::left(client, subject, metric, &governing, now)?,
        false => 0,
    };
    // A carry whose plan no longer rolls over is still a grant until it expires.
    let grants_left = governing.grants_usable().saturating_sub(rollover_left).max(0);
    Ok(UsageRow { metric: metric.to_string(), used: counter.used, reserved, allowance, grants_left, rollover_left, window, rates, pool })
}

/// The caller's subject: `sub` of the JWT claims PostgREST sets; NULL when absent, empty
/// (a pooled connection after a request) or not a uuid.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn current_subject() -> Option<Uuid> {
    claims().subject.map(|subject| Uuid::from_bytes(*subject.as_bytes()))
}

/// The caller's pg_quota role from `app_metadata.quota_role` of the JWT claims: 'admin',
/// 'support', or NULL. Row level security lets support and admins read every subject's rows.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn current_quota_role() -> Option<&'static str> {
    claims().quota_role.map(QuotaRole::as_str)
}

fn signed_in() -> QResult<Uuid> {
    current_subject().ok_or_else(QuotaError::not_signed_in)
}

/// quota.usage() of the caller.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn my_usage() -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.usage_row")>, ErrorReport> {
    sql_call(|| usage_of(signed_in()?))
}

/// quota.check() for the caller: what a consume would decide now. Writes nothing.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn my_check(
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(Some(signed_in()?), metric, amount, None)?;
        let decision = Spi::connect(|client| what_consume_would_decide(client, &request))?;
        decision_tuple(&decision)
    })
}
