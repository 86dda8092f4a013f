//! The statements of administration: plans and their limits, assignments, overrides,
//! grants and resets, and the metrics a subject has.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::Overage;
use quota_rules::plan::{LedgerMode, LimitDef};
use quota_rules::rate::RateRule;
use quota_rules::window::Micros;

use super::schema::{self, Part};
use super::{not_null, query, query_row, timestamp, Kept};
use crate::error::{QResult, QuotaError};

thread_local! {
    static CLEAR_DEFAULT_PLAN: Kept = const { Kept::new(
        "UPDATE quota.plans SET is_default = false WHERE is_default",
    ) };
    static INSERT_PLAN: Kept = const { Kept::new(
        "INSERT INTO quota.plans (plan, is_default) VALUES ($plan, $is_default) ON CONFLICT (plan) DO NOTHING
         RETURNING plan",
    ) };
    static UPSERT_LIMIT: Kept = const { Kept::new(
        "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone, rate, alerts, soft, overage_max,
                                   rollover_max, rollover_windows, ledger)
         VALUES ($plan, $metric, $allowance, $period, $anchor, $time_zone, $rate::jsonb, $alerts, $soft, $overage_max,
                 $rollover_max, $rollover_windows, $ledger)
         ON CONFLICT (plan, metric) DO UPDATE
            SET allowance = excluded.allowance, period = excluded.period, anchor = excluded.anchor,
                time_zone = excluded.time_zone, rate = excluded.rate, alerts = excluded.alerts,
                soft = excluded.soft, overage_max = excluded.overage_max,
                rollover_max = excluded.rollover_max, rollover_windows = excluded.rollover_windows,
                ledger = excluded.ledger",
    ) };
    // UPSERT_LIMIT on a schema before 0.12.0, whose limits keep every call in the ledger.
    static UPSERT_LIMIT_WITHOUT_LEDGER_MODES: Kept = const { Kept::new(
        "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone, rate, alerts, soft, overage_max,
                                   rollover_max, rollover_windows)
         VALUES ($plan, $metric, $allowance, $period, $anchor, $time_zone, $rate::jsonb, $alerts, $soft, $overage_max,
                 $rollover_max, $rollover_windows)
         ON CONFLICT (plan, metric) DO UPDATE
            SET allowance = excluded.allowance, period = excluded.period, anchor = excluded.anchor,
                time_zone = excluded.time_zone, rate = excluded.rate, alerts = excluded.alerts,
                soft = excluded.soft, overage_max = excluded.overage_max,
                rollover_max = excluded.rollover_max, rollover_windows = excluded.rollover_windows",
    ) };
    // UPSERT_LIMIT on a schema before 0.11.0, whose limits have no rollover.
    static UPSERT_LIMIT_WITHOUT_ROLLOVER: Kept = const { Kept::new(
        "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone, rate, alerts, soft, overage_max)
         VALUES ($plan, $metric, $allowance, $period, $anchor, $time_zone, $rate::jsonb, $alerts, $soft, $overage_max)
         ON CONFLICT (plan, metric) DO UPDATE
            SET allowance = excluded.allowance, period = excluded.period, anchor = excluded.anchor,
                time_zone = excluded.time_zone, rate = excluded.rate, alerts = excluded.alerts,
                soft = excluded.soft, overage_max = excluded.overage_max",
    ) };
    // UPSERT_LIMIT on a schema before 0.10.0, whose limits have no alert rules.
    static UPSERT_LIMIT_WITHOUT_ALERTS: Kept = const { Kept::new(
        "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone, rate)
         VALUES ($plan, $metric, $allowance, $period, $anchor, $time_zone, $rate::jsonb)
         ON CONFLICT (plan, metric) DO UPDATE
            SET allowance = excluded.allowance, period = excluded.period,
                anchor = excluded.anchor, time_zone = excluded.time_zone, rate = excluded.rate",
    ) };
    // UPSERT_LIMIT on a schema before 0.7.0, whose limits have no rate rules.
    static UPSERT_LIMIT_WITHOUT_RATES: Kept = const { Kept::new(
        "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone)
         VALUES ($plan, $metric, $allowance, $period, $anchor, $time_zone)
         ON CONFLICT (plan, metric) DO UPDATE
            SET allowance = excluded.allowance, period = excluded.period,
                anchor = excluded.anchor, time_zone = excluded.time_zone",
    ) };
    static PLAN_EXISTS: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.plans WHERE plan = $plan) AS found",
    ) };
    static METRIC_EXISTS: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.limits WHERE metric = $metric) AS found",
    ) };
    // assigned_at is when the plan and its cycle last changed: assigning the plan a subject
    // has, on the same anchor, changes neither (so its windows still carry, store::rollover).
    static ASSIGN_PLAN: Kept = const { Kept::new(
        "INSERT INTO quota.assignments AS a (subject, plan, anchor)
         VALUES ($subject, $plan, coalesce($anchor, pg_catalog.now()))
         ON CONFLICT (subject) DO UPDATE
            SET plan = excluded.plan, anchor = coalesce($anchor, a.anchor),
                assigned_at = CASE WHEN a.plan = excluded.plan AND $anchor IS NULL THEN a.assigned_at ELSE pg_catalog.now() END",
    ) };
    static LOCK_ASSIGNMENT: Kept = const { Kept::new(
        "SELECT plan FROM quota.assignments WHERE subject = $subject FOR UPDATE",
    ) };
    static SET_OVERRIDE: Kept = const { Kept::new(
        "INSERT INTO quota.overrides (subject, metric, allowance) VALUES ($subject, $metric, $allowance)
         ON CONFLICT (subject, metric) DO UPDATE
            SET allowance = excluded.allowance, updated_at = pg_catalog.now()",
    ) };
    static CLEAR_OVERRIDE: Kept = const { Kept::new(
        "DELETE FROM quota.overrides WHERE subject = $subject AND metric = $metric",
    ) };
    static INSERT_GRANT: Kept = const { Kept::new(
        "INSERT INTO quota.grants (subject, metric, amount, remaining, expires_at, priority, reason)
         VALUES ($subject, $metric, $amount, $amount, $expires_at, $priority, $reason)
         RETURNING grant_id",
    ) };
    static REVOKE_GRANT: Kept = const { Kept::new(
        "UPDATE quota.grants SET revoked_at = coalesce(revoked_at, pg_catalog.now())
          WHERE grant_id = $grant_id RETURNING grant_id",
    ) };
    static INSERT_RESET: Kept = const { Kept::new(
        "INSERT INTO quota.resets (subject, metric, reset_at) VALUES ($subject, $metric, $reset_at) ON CONFLICT DO NOTHING",
    ) };
    // The metrics of the subject's plan (the default plan when it has no assignment yet).
    static PLAN_METRICS: Kept = const { Kept::new(
        "SELECT l.metric FROM quota.limits AS l
          WHERE l.plan = coalesce((SELECT a.plan FROM quota.assignments AS a WHERE a.subject = $subject),
                                  (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
          ORDER BY l.metric",
    ) };
    static USED_OR_PLANNED_METRICS: Kept = const { Kept::new(
        "SELECT m.metric FROM (
             SELECT l.metric FROM quota.limits AS l
              WHERE l.plan = coalesce((SELECT a.plan FROM quota.assignments AS a WHERE a.subject = $subject),
                                      (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
             UNION
             SELECT c.metric FROM quota.counters AS c WHERE c.subject = $subject) AS m
          ORDER BY m.metric COLLATE \"C\"",
    ) };
}

/// Creates a plan; false when it exists. A new default plan takes over from the old one.
pub fn insert_plan(client: &SpiClient, plan: &str, is_default: bool) -> QResult<bool> {
    if is_default {
        query(client, &CLEAR_DEFAULT_PLAN, [], |_| Ok(()))?;
    }
    let created = query_row(client, &INSERT_PLAN, [("plan", plan.into()), ("is_default", is_default.into())], |_| Ok(()))?;
    Ok(created.is_some())
}

/// Adds or replaces each limit of a plan.
pub fn upsert_limits(client: &SpiClient, plan: &str, limits: &[LimitDef]) -> QResult<()> {
    let with_rates = schema::has(client, Part::RateLimits)?;
    if !with_rates && limits.iter().any(|limit| !limit.rates.is_empty()) {
        return Err(QuotaError::schema_too_old("rate rules", "0.7.0"));
    }
    let with_alerts = schema::has(client, Part::Alerts)?;
    if !with_alerts && limits.iter().any(|limit| !limit.alerts.is_empty() || limit.overage != Overage::Hard) {
        return Err(QuotaError::schema_too_old("alert rules and soft limits", "0.10.0"));
    }
    let with_rollover = schema::has(client, Part::Rollover)?;
    if !with_rollover && limits.iter().any(|limit| limit.rollover.is_some()) {
        return Err(QuotaError::schema_too_old("rollover", "0.11.0"));
    }
    let with_ledger_modes = schema::has(client, Part::LedgerModes)?;
    if !with_ledger_modes && limits.iter().any(|limit| limit.ledger != LedgerMode::Full) {
        return Err(QuotaError::schema_too_old("ledger modes", "0.12.0"));
    }
    for limit in limits {
        let args = || {
            [
                ("plan", plan.into()),
                ("metric", limit.metric.as_str().into()),
                ("allowance", limit.allowance.into()),
                ("period", limit.period.canonical().into()),
                ("anchor", limit.anchor.as_str().into()),
                ("time_zone", limit.time_zone.name().into()),
            ]
        };
        let rate = || serde_json::Value::Array(limit.rates.iter().map(RateRule::to_json).collect()).to_string();
        if with_alerts {
            let alerts: Vec<String> = limit.alerts.iter().map(ToString::to_string).collect();
            let [plan, metric, allowance, period, anchor, time_zone] = args();
            let (soft, overage_max) = match limit.overage {
                Overage::Hard => (false, None),
                Overage::AtMost(max) => (true, Some(max)),
                Overage::Unbounded => (true, None),
            };
            let args = [
                plan,
                metric,
                allowance,
                period,
                anchor,
                time_zone,
                ("rate", rate().into()),
                ("alerts", alerts.into()),
                ("soft", soft.into()),
                ("overage_max", overage_max.into()),
            ];
            if with_rollover {
                let [plan, metric, allowance, period, anchor, time_zone, rate, alerts, soft, overage_max] = args;
                let rollover_max = limit.rollover.and_then(|rollover| rollover.max);
                let rollover_windows = limit.rollover.map(|rollover| i32::try_from(rollover.expires_after)).transpose().map_err(QuotaError::internal)?;
                let args = [
                    plan,
                    metric,
                    allowance,
                    period,
                    anchor,
                    time_zone,
                    rate,
                    alerts,
                    soft,
                    overage_max,
                    ("rollover_max", rollover_max.into()),
                    ("rollover_windows", rollover_windows.into()),
                ];
                if with_ledger_modes {
                    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = args;
                    let args = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, ("ledger", limit.ledger.as_str().into())];
                    query(client, &UPSERT_LIMIT, args, |_| Ok(()))?;
                } else {
                    query(client, &UPSERT_LIMIT_WITHOUT_LEDGER_MODES, args, |_| Ok(()))?;
                }
            } else {
                query(client, &UPSERT_LIMIT_WITHOUT_ROLLOVER, args, |_| Ok(()))?;
            }
        } else if with_rates {
            let [plan, metric, allowance, period, anchor, time_zone] = args();
            let args = [plan, metric, allowance, period, anchor, time_zone, ("rate", rate().into())];
            query(client, &UPSERT_LIMIT_WITHOUT_ALERTS, args, |_| Ok(()))?;
        } else {
            query(client, &UPSERT_LIMIT_WITHOUT_RATES, args(), |_| Ok(()))?;
        }
    }
    Ok(())
}

pub fn plan_exists(client: &SpiClient, plan: &str) -> QResult<bool> {
    Ok(query_row(client, &PLAN_EXISTS, [("plan", plan.into())], |row| not_null(row, "found"))?.unwrap_or(false))
}

/// Whether some plan has a limit for the metric.
pub fn metric_exists(client: &SpiClient, metric: &str) -> QResult<bool> {
    Ok(query_row(client, &METRIC_EXISTS, [("metric", metric.into())], |row| not_null(row, "found"))?.unwrap_or(false))
}

/// Puts the subject on the plan; `anchor` None keeps the subject's anchor (now() for a new one).
/// Assigns the plan; returns whether the subject had another plan (or none) before.
pub fn assign_plan(client: &SpiClient, subject: Uuid, plan: &str, anchor: Option<Micros>) -> QResult<bool> {
    let previous: Option<String> = query_row(client, &LOCK_ASSIGNMENT, [("subject", subject.into())], |row| not_null(row, "plan"))?;
    let args = [("subject", subject.into()), ("plan", plan.into()), ("anchor", anchor.map(timestamp).transpose()?.into())];
    query(client, &ASSIGN_PLAN, args, |_| Ok(()))?;
    Ok(previous.as_deref() != Some(plan))
}

/// A per-subject allowance (None = unlimited) that replaces the plan's.
pub fn set_override(client: &SpiClient, subject: Uuid, metric: &str, allowance: Option<i64>) -> QResult<()> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("allowance", allowance.into())];
    query(client, &SET_OVERRIDE, args, |_| Ok(())).map(drop)
}

pub fn clear_override(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<()> {
    query(client, &CLEAR_OVERRIDE, [("subject", subject.into()), ("metric", metric.into())], |_| Ok(())).map(drop)
}

/// A grant as quota.grant() makes it.
pub struct NewGrant<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub amount: i64,
    pub expires_at: Option<Micros>,
    pub priority: i32,
    pub reason: Option<&'a str>,
}

pub fn insert_grant(client: &SpiClient, grant: NewGrant) -> QResult<Option<Uuid>> {
    let args = [
        ("subject", grant.subject.into()),
        ("metric", grant.metric.into()),
        ("amount", grant.amount.into()),
        ("expires_at", grant.expires_at.map(timestamp).transpose()?.into()),
        ("priority", grant.priority.into()),
        ("reason", grant.reason.into()),
    ];
    query_row(client, &INSERT_GRANT, args, |row| not_null(row, "grant_id"))
}

/// Stops a grant from being spent; false when there is no such grant.
pub fn revoke_grant(client: &SpiClient, grant_id: Uuid) -> QResult<bool> {
    Ok(query_row(client, &REVOKE_GRANT, [("grant_id", grant_id.into())], |_| Ok(()))?.is_some())
}

pub fn insert_reset(client: &SpiClient, subject: Uuid, metric: &str, reset_at: Micros) -> QResult<()> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("reset_at", timestamp(reset_at)?.into())];
    query(client, &INSERT_RESET, args, |_| Ok(())).map(drop)
}

/// The metrics of the subject's plan (the default plan when it has no assignment yet).
pub fn plan_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    query(client, &PLAN_METRICS, [("subject", subject.into())], |row| not_null(row, "metric"))
}

/// The metrics of the subject's plan and every metric it has counted usage of.
pub fn used_or_planned_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    query(client, &USED_OR_PLANNED_METRICS, [("subject", subject.into())], |row| not_null(row, "metric"))
}
