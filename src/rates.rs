//! Rate rules beside the quota: consume, reserve, consume_many (and require and the enforce
//! trigger through them) decide every rule of the metric with the quota, all or nothing;
//! check reads them without changing them; usage shows each rule's state. The arithmetic is
//! quota_rules::rate; the state rows are store::rates. And the per-subject overrides.
//!
//! A call locks its rules' state rows (before the metric's counter), decides every rule at
//! the statement's instant, and writes the new state only once the quota has paid too: a
//! denial by a rule or by the quota changes no state.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::claims::QuotaRole;
use quota_rules::rate::{decide_all, override_rule, per_argument, per_text, RateRule};
use quota_rules::request::{self, format_instant};
use quota_rules::window::Micros;

use crate::admin::require_known_metric;
use crate::callers::authorize;
use crate::changes::{audited, Change};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::spending::Request;
use crate::store::rates::{self as statements, NewOverride, States};
use crate::store::schema::{self, Part};
use crate::store::{to_micros, transaction_now};

/// The rules of one call, decided: the new state of each when all admit it, else when the
/// call would fit (None: never, the amount is over a burst).
pub struct RateCheck {
    pers: Vec<String>,
    pub outcome: Result<Vec<Micros>, Option<Micros>>,
}

impl RateCheck {
    /// No rules: nothing to decide or write.
    fn none() -> RateCheck {
        RateCheck { pers: Vec::new(), outcome: Ok(Vec::new()) }
    }

    pub fn admitted(&self) -> bool {
        self.outcome.is_ok()
    }

    /// When the call fits (None: admitted, or never).
    pub fn retry_at(&self) -> Option<Micros> {
        self.outcome.as_ref().err().copied().flatten()
    }

    /// Writes the state of an admitted call, once the quota has paid too.
    pub fn commit(&self, client: &SpiClient, request: &Request) -> QResult<()> {
        match &self.outcome {
            Ok(tats) if !tats.is_empty() => statements::write_states(client, request.subject, request.metric, &self.pers, tats),
            Ok(_) => Ok(()),
            Err(_) => Err(QuotaError::internal("a rate-limited call was committed")),
        }
    }
}

fn pers(rules: &[RateRule]) -> Vec<String> {
    rules.iter().map(|rule| per_text(rule.per_us)).collect()
}

/// Each rule with its state.
fn with_states(rules: &[RateRule], pers: &[String], states: &States) -> Vec<(RateRule, Option<Micros>)> {
    rules
        .iter()
        .zip(pers)
        .map(|(rule, per)| (*rule, states.iter().find(|(stored, _)| stored == per).map(|(_, tat)| *tat)))
        .collect()
}

/// How a call reads its rules' state rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StateRows {
    /// Locked (created if missing) until the transaction ends: consume, reserve, consume_many.
    Lock,
    /// Read as they are, without locks or writes: check.
    Read,
}

/// Decides the request's rules at its statement's instant.
pub fn decide(client: &SpiClient, request: &Request, rules: &[RateRule], rows: StateRows) -> QResult<RateCheck> {
    if rules.is_empty() {
        return Ok(RateCheck::none());
    }
    let pers = pers(rules);
    let states = match rows {
        StateRows::Lock => statements::lock_states(client, request.subject, request.metric, &pers)?,
        StateRows::Read => statements::read_states(client, request.subject, request.metric, &pers)?,
    };
    let outcome = decide_all(&with_states(rules, &pers, &states), request.instant, request.amount);
    Ok(RateCheck { pers, outcome })
}

/// Each rule's state at `now`, as usage() shows it: `[{"limit": 10, "per": "1 minute",
/// "burst": 20, "remaining": 17, "next_unit_at": "2026-12-02T18:00:06+00:00"}]`
/// (next_unit_at null: the bucket is full).
pub fn rate_usage(client: &SpiClient, subject: Uuid, metric: &str, rules: &[RateRule], now: Micros) -> QResult<serde_json::Value> {
    if rules.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    let pers = pers(rules);
    let states = statements::read_states(client, subject, metric, &pers)?;
    let shown = with_states(rules, &pers, &states)
        .into_iter()
        .map(|(rule, tat)| {
            let mut shown = rule.to_json();
            shown["remaining"] = rule.remaining(tat, now).into();
            shown["next_unit_at"] = rule.next_unit_at(tat, now).map(format_instant).into();
            shown
        })
        .collect();
    Ok(serde_json::Value::Array(shown))
}

/// A subject's own rate rule for a metric: it replaces the plan's rule with the same `per`
/// (or adds one) until `expires_at` (NULL: until cleared). "Double the rate for this user
/// until Friday": `set_rate_override(user, 'ai_requests', '1 minute', 20, 40, 'friday')`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_rate_override(
    subject: Option<Uuid>,
    metric: Option<&str>,
    per: Option<&str>,
    rate_limit: Option<i64>,
    burst: default!(Option<i64>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let rule = override_rule(required(per, "per")?, required(rate_limit, "rate_limit")?, burst)?;
        let expires_at = expires_at
            .map(|expires_at| Ok::<_, QuotaError>(request::future_expiry(to_micros(expires_at, "expires_at")?, transaction_now()?)?))
            .transpose()?;
        let per = per_text(rule.per_us);
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "set_rate_override")?;
            if !schema::has(client, Part::RateLimits)? {
                return Err(QuotaError::schema_too_old("rate overrides", "0.7.0"));
            }
            require_known_metric(client, metric)?;
            let change = Change { action: "set_rate_override", subject: Some(subject), metric: Some(metric), ..Change::default() };
            let new = NewOverride { subject, metric, per: &per, limit: rule.limit, burst: rule.burst, expires_at };
            audited(client, &caller, change, |client| statements::override_state(client, subject, metric, &per), |client| {
                statements::set_override(client, new)
            })
        })
    })
}

/// Removes a subject's rate override; the plan's rule with that `per` (if any) applies again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_rate_override(subject: Option<Uuid>, metric: Option<&str>, per: Option<&str>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let per = required(per, "per")?;
        let per = per_text(per_argument(per)?);
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "clear_rate_override")?;
            if !schema::has(client, Part::RateLimits)? {
                return Err(QuotaError::schema_too_old("rate overrides", "0.7.0"));
            }
            require_known_metric(client, metric)?;
            let change = Change { action: "clear_rate_override", subject: Some(subject), metric: Some(metric), ..Change::default() };
            audited(client, &caller, change, |client| statements::override_state(client, subject, metric, &per), |client| {
                statements::clear_override(client, subject, metric, &per).map(drop)
            })
        })
    })
}
