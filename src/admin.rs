//! Administration: plans and their limits, assignments, overrides, grants, resets, and a
//! subject's own alert rules.
//! SECURITY DEFINER, granted to no one by default (sql/privileges.sql); setup_supabase()
//! grants the subject-level ones to `authenticated`, for users whose claims make them
//! admins (src/callers.rs). Every change is recorded in quota.admin_changes (src/changes.rs).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::alert::parse_rules;
use quota_rules::claims::QuotaRole;
use quota_rules::decide::{remaining, Decision, Reason};
use quota_rules::plan::{parse_limits, validate_metric, validate_plan_name};
use quota_rules::request::{self, EventKind};
use quota_rules::window::Micros;

use crate::alerts;
use crate::callers::authorize;
use crate::changes::{audited, record, Change};
use crate::error::{positive_amount, required, sql_call, QResult, QuotaError};
use crate::jsonb::Jsonb;
use crate::store::admin::{self as statements, NewGrant};
use crate::store::alerts as alert_statements;
use crate::store::changes::{assignment_state, grant_state, override_state, plan_state};
use crate::store::counters::{self, CounterKey};
use crate::store::ledger::{self, EventRow};
use crate::store::rollover;
use crate::store::schema::{self, Part};
use crate::store::{to_micros, transaction_now};
use crate::usage::usage_row;

/// Creates a plan with its limits. An existing plan is an error (42710); change limits
/// with quota.set_limits(). `is_default => true` makes this the one default plan.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_plan(
    plan: Option<&str>,
    limits: default!(Option<Jsonb>, "'{}'"),
    is_default: default!(Option<bool>, false),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        validate_plan_name(plan)?;
        let limits = parse_limits(&required(limits, "limits")?.parse("limits")?)?;
        let is_default = required(is_default, "is_default")?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "create_plan")?;
            let change = Change { action: "create_plan", plan: Some(plan), ..Change::default() };
            audited(client, &caller, change, |client| plan_state(client, plan), |client| {
                if !statements::insert_plan(client, plan, is_default)? {
                    return Err(QuotaError::duplicate_plan(plan));
                }
                statements::upsert_limits(client, plan, &limits)
            })
        })
    })
}

/// Adds or replaces limits of an existing plan; metrics not named keep their limits.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_limits(plan: Option<&str>, limits: Option<Jsonb>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        let limits = parse_limits(&required(limits, "limits")?.parse("limits")?)?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "set_limits")?;
            require_plan(client, plan)?;
            let change = Change { action: "set_limits", plan: Some(plan), ..Change::default() };
            audited(client, &caller, change, |client| plan_state(client, plan), |client| statements::upsert_limits(client, plan, &limits))
        })
    })
}

fn require_plan(client: &SpiClient, plan: &str) -> QResult<()> {
    match statements::plan_exists(client, plan)? {
        true => Ok(()),
        false => Err(QuotaError::unknown_plan(plan)),
    }
}

pub fn require_known_metric(client: &SpiClient, metric: &str) -> QResult<()> {
    validate_metric(metric)?;
    match statements::metric_exists(client, metric)? {
        true => Ok(()),
        false => Err(QuotaError::unknown_metric(metric)),
    }
}

/// Puts a subject on a plan. Subscription windows repeat from `anchor`; without one
/// (NULL, the default) a subject keeps the anchor it has, so that a mid-cycle upgrade or
/// downgrade keeps the cycle and its usage, and a new subject's cycle starts now. An
/// explicit anchor restarts the cycle.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn assign_plan(
    subject: Option<Uuid>,
    plan: Option<&str>,
    anchor: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let plan = required(plan, "plan")?;
        let anchor = anchor.map(|anchor| to_micros(anchor, "anchor")).transpose()?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "assign_plan")?;
            require_plan(client, plan)?;
            let change = Change { action: "assign_plan", subject: Some(subject), plan: Some(plan), ..Change::default() };
            audited(client, &caller, change, |client| assignment_state(client, subject), |client| {
                // Carries of unused allowance were the old plan's: a new plan takes them back.
                if statements::assign_plan(client, subject, plan, anchor)? && schema::has(client, Part::Rollover)? {
                    rollover::revoke(client, subject)?;
                }
                Ok(())
            })?;
            alerts::allowance_changed(client, subject, None, "plan_change")
        })
    })
}

/// A per-subject allowance that replaces the plan's; NULL = unlimited.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_override(subject: Option<Uuid>, metric: Option<&str>, allowance: Option<i64>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let allowance = allowance.map(|allowance| request::not_negative("allowance", allowance)).transpose()?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "set_override")?;
            require_known_metric(client, metric)?;
            let change = Change { action: "set_override", subject: Some(subject), metric: Some(metric), ..Change::default() };
            audited(client, &caller, change, |client| override_state(client, subject, metric), |client| {
                statements::set_override(client, subject, metric, allowance)
            })?;
            alerts::allowance_changed(client, subject, Some(metric), "override")
        })
    })
}

/// Removes a subject's override; the plan's limit applies again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_override(subject: Option<Uuid>, metric: Option<&str>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "clear_override")?;
            require_known_metric(client, metric)?;
            let change = Change { action: "clear_override", subject: Some(subject), metric: Some(metric), ..Change::default() };
            audited(client, &caller, change, |client| override_state(client, subject, metric), |client| {
                statements::clear_override(client, subject, metric)
            })?;
            alerts::allowance_changed(client, subject, Some(metric), "override")
        })
    })
}

/// Bonus units for (subject, metric), spent after the window's allowance: lowest priority
/// first, then soonest expiry, then oldest. Returns the grant's id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn grant(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: Option<i64>,
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    priority: default!(Option<i32>, 0),
    reason: default!(Option<&str>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let amount = positive_amount(amount)?;
        let priority = required(priority, "priority")?;
        let expires_at = expires_at
            .map(|expires_at| Ok::<_, QuotaError>(request::future_expiry(to_micros(expires_at, "expires_at")?, transaction_now()?)?))
            .transpose()?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "grant")?;
            require_known_metric(client, metric)?;
            let grant = NewGrant { subject, metric, amount, expires_at, priority, reason };
            let grant_id = statements::insert_grant(client, grant)?.ok_or_else(|| QuotaError::internal("grant insert returned no row"))?;
            // A new grant: nothing before it.
            let change = Change { action: "grant", subject: Some(subject), metric: Some(metric), ..Change::default() };
            let after = grant_state(client, grant_id)?.map(|(_, _, state)| state);
            record(client, &caller, change, None, after)?;
            alerts::recover(client, subject, Some(metric), "grant")?;
            Ok(grant_id)
        })
    })
}

/// Stops a grant from being spent. What it already paid for stays paid.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_grant(grant_id: Option<Uuid>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let grant_id = required(grant_id, "grant_id")?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "revoke_grant")?;
            let (subject, metric, before) = grant_state(client, grant_id)?.ok_or_else(|| QuotaError::unknown_grant(grant_id))?;
            if !statements::revoke_grant(client, grant_id)? {
                return Err(QuotaError::unknown_grant(grant_id));
            }
            let after = grant_state(client, grant_id)?.map(|(_, _, state)| state);
            let change = Change { action: "revoke_grant", subject: Some(subject), metric: Some(&metric), ..Change::default() };
            record(client, &caller, change, Some(before), after)
        })
    })
}

/// Starts the subject's current window over now, for one metric or (NULL) for every metric
/// of its plan and every metric it has used. The old window stays as history.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reset(subject: Option<Uuid>, metric: default!(Option<&str>, "NULL")) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let now = transaction_now()?;
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "reset")?;
            let metrics = match metric {
                Some(metric) => {
                    require_known_metric(client, metric)?;
                    vec![metric.to_string()]
                }
                None => statements::used_or_planned_metrics(client, subject)?,
            };
            let change = Change { action: "reset", subject: Some(subject), metric, ..Change::default() };
            audited(client, &caller, change, |client| windows_state(client, subject, &metrics, now), |client| {
                metrics.iter().try_for_each(|metric| start_window_over(client, subject, metric, now))
            })?;
            metrics.iter().try_for_each(|metric| alerts::recover(client, subject, Some(metric), "reset"))
        })
    })
}

/// The current window of each metric, as quota.admin_changes keeps a reset's before and
/// after: `{"<metric>": {"used": 4, "window_start": ..., "resets_at": ...}}`.
fn windows_state(client: &SpiClient, subject: Uuid, metrics: &[String], now: Micros) -> QResult<Option<String>> {
    let windows = metrics
        .iter()
        .map(|metric| {
            let row = usage_row(client, subject, metric, now)?;
            let instant = |micros: Option<Micros>| micros.map(request::format_instant);
            let window = serde_json::json!({"used": row.used, "window_start": instant(row.window.start), "resets_at": instant(row.window.end)});
            Ok((metric.clone(), window))
        })
        .collect::<QResult<serde_json::Map<_, _>>>()?;
    Ok(Some(serde_json::Value::Object(windows).to_string()))
}

/// Records the reset, and its ledger row with what the window had used before.
fn start_window_over(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<()> {
    statements::insert_reset(client, subject, metric, now)?;
    let governing = counters::resolve(client, subject, metric, now, now)?;
    let allowance = governing.allowance();
    let window = governing.window_at(now)?;
    let decision = Decision {
        allowed: true,
        metric: metric.to_string(),
        amount: 0,
        from_allowance: 0,
        from_grants: 0,
        overage: 0,
        used: counters::read_counter(client, CounterKey { subject, metric, window })?.used,
        reserved: 0,
        allowance,
        remaining: remaining(allowance, 0),
        window_start: window.start,
        resets_at: window.end,
        replayed: false,
        reason: Reason::Reset,
        event_id: None,
        retry_after: None,
    };
    let event = EventRow { subject, kind: EventKind::Reset, decision: &decision, window, idempotency_key: None, metadata: None, reservation_id: None, pool: None };
    ledger::insert_event(client, event).map(drop)
}

/// The subject's own alert rules for the metric, replacing its plan's (an empty list: no
/// alerts for it). Returns them as stored.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_alerts(subject: Option<Uuid>, metric: Option<&str>, alerts: Option<Vec<Option<String>>>) -> Result<Vec<String>, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let texts = required(alerts, "alerts")?
            .into_iter()
            .map(|text| required(text, "alerts[]"))
            .collect::<QResult<Vec<String>>>()?;
        let rules = parse_rules(&texts.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(|error| QuotaError::invalid(error.to_string()).with_hint(error.hint()))?;
        change_own_alerts("set_alerts", subject, metric, |client| alert_statements::set_rules(client, subject, metric, &rules))?;
        Ok(rules.iter().map(ToString::to_string).collect())
    })
}

/// Removes the subject's own alert rules: its plan's apply again. Whether it had any.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_alerts(subject: Option<Uuid>, metric: Option<&str>) -> Result<bool, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        change_own_alerts("clear_alerts", subject, metric, |client| alert_statements::clear_rules(client, subject, metric))
    })
}

/// An admin's change of a subject's own alert rules (they need the schema of 0.10.0),
/// recorded with the rules before and after.
fn change_own_alerts<T>(action: &'static str, subject: Uuid, metric: &str, apply: impl FnOnce(&SpiClient) -> QResult<T>) -> QResult<T> {
    Spi::connect(|client| {
        let caller = authorize(client, QuotaRole::Admin, action)?;
        require_known_metric(client, metric)?;
        if !schema::has(client, Part::Alerts)? {
            return Err(QuotaError::schema_too_old("alert rules", "0.10.0"));
        }
        let change = Change { action, subject: Some(subject), metric: Some(metric), ..Change::default() };
        audited(client, &caller, change, |client| alert_statements::rules_state(client, subject, metric), apply)
    })
}
