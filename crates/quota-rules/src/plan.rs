//! Names and plan definitions: what `quota.create_plan(plan, limits)` accepts.
//! Plain Rust, no pgrx types; the SQL layer maps `PlanError` to SQLSTATEs.

use std::fmt;

use serde_json::Value;

use crate::alert::{self, AlertError, AlertRule};
use crate::decide::Overage;
use crate::rate::{parse_rules, RateError, RateRule};
use crate::rollover::{self, Rollover};
use crate::window::{parse_time_zone, Anchor, Period, WindowError};

/// One limit of a plan, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitDef {
    pub metric: String,
    /// None = unlimited.
    pub allowance: Option<i64>,
    pub period: Period,
    pub anchor: Anchor,
    pub time_zone: chrono_tz::Tz,
    /// Rate rules, ordered by `per`; a metric with rules and no `limit` has no quota.
    pub rates: Vec<RateRule>,
    /// Usage alert rules, in their stored order (quota_rules::alert).
    pub alerts: Vec<AlertRule>,
    /// Whether consume may pass the allowance as overage (a soft limit), and how far.
    pub overage: Overage,
    /// Whether unused allowance carries into the next windows (quota_rules::rollover).
    pub rollover: Option<Rollover>,
    /// Which calls write a ledger row.
    pub ledger: LedgerMode,
}

/// Which calls of a metric write a row into the ledger (quota.events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerMode {
    /// Every call (the default): the ledger replays and audits each one.
    #[default]
    Full,
    /// `"ledger": "counters"`: an allowed consume without an idempotency key that the fast
    /// path decides writes no row; the window's counter keeps how much it counted that way
    /// (quota.counters' `counted_without_ledger`), so counters stay exact and audit() still
    /// checks them. Denials, keyed calls and every other call are still recorded.
    Counters,
}

impl LedgerMode {
    pub fn parse(text: &str) -> Option<LedgerMode> {
        match text {
            "full" => Some(LedgerMode::Full),
            "counters" => Some(LedgerMode::Counters),
            _ => None,
        }
    }

    /// The text quota.limits' `ledger` keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerMode::Full => "full",
            LedgerMode::Counters => "counters",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    MetricName(String),
    PlanName(String),
    LimitsNotObject,
    LimitNotObject { metric: String },
    UnknownKey { metric: String, key: String },
    Allowance { metric: String, found: String },
    MissingPeriod { metric: String },
    NotText { metric: String, key: &'static str },
    Window { metric: String, error: WindowError },
    Rate { metric: String, error: RateError },
    Alerts { metric: String, error: AlertError },
    Overage { metric: String, found: String },
    Rollover { metric: String, found: String },
    Ledger { metric: String, found: String },
}

impl PlanError {
    /// A short hint that tells the caller how to write it right.
    pub fn hint(&self) -> &'static str {
        match self {
            PlanError::MetricName(_) => "Metric names match ^[a-z][a-z0-9_.:-]{0,62}$, e.g. ai_requests or tokens.",
            PlanError::PlanName(_) => "Plan names match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$, e.g. free or Pro.",
            PlanError::Rate { error, .. } => error.hint(),
            PlanError::Alerts { error, .. } => error.hint(),
            PlanError::Rollover { .. } => r#"Rollover: {"tokens": {"limit": 10000, "per": "month", "rollover": {"max": 5000, "expires_after": 2}}} carries up to 5,000 unused tokens into the next month, spendable for 2 months."#,
            PlanError::Ledger { .. } => r#"High-volume metrics whose per-call history is not wanted: {"api_calls": {"limit": 100000, "per": "day", "ledger": "counters"}}; "full" (the default) keeps a ledger row per call."#,
            PlanError::Overage { .. } => r#"A soft limit: {"tokens": {"limit": 10000, "per": "month", "overage": {"max": 2000}}} lets consume go 2,000 past the limit, as overage."#,
            _ => r#"Limits look like {"ai_requests": {"limit": 10, "per": "day"}, "tokens": {"limit": 10000, "per": "month", "anchor": "subscription", "time_zone": "Europe/Berlin"}, "exports": {"limit": null}}."#,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::MetricName(name) => write!(f, "invalid metric name {name:?}"),
            PlanError::PlanName(name) => write!(f, "invalid plan name {name:?}"),
            PlanError::LimitsNotObject => write!(f, "limits must be a JSON object keyed by metric name"),
            PlanError::LimitNotObject { metric } => write!(f, "limit for metric {metric:?} must be a JSON object"),
            PlanError::UnknownKey { metric, key } => write!(
                f,
                "unknown key {key:?} in the limit for metric {metric:?} (expected limit, per, anchor, time_zone, rate, alerts, overage, rollover, ledger)"
            ),
            PlanError::Allowance { metric, found } => write!(
                f,
                "\"limit\" for metric {metric:?} must be a non-negative whole number or null (unlimited), found {found}"
            ),
            PlanError::MissingPeriod { metric } => write!(
                f,
                "limit for metric {metric:?} has no \"per\": say which window it counts in (e.g. \"day\", \"month\", \"lifetime\")"
            ),
            PlanError::NotText { metric, key } => write!(f, "{key:?} for metric {metric:?} must be a string"),
            PlanError::Window { metric, error } => write!(f, "limit for metric {metric:?}: {error}"),
            PlanError::Rate { metric, error } => write!(f, "limit for metric {metric:?}: {error}"),
            PlanError::Alerts { metric, error } => write!(f, "limit for metric {metric:?}: {error}"),
            PlanError::Overage { metric, found } => write!(
                f,
                "\"overage\" for metric {metric:?} must be {{\"max\": N}} (N a non-negative whole number, or null: no ceiling) beside a whole-number \"limit\", found {found}"
            ),
            PlanError::Rollover { metric, found } => write!(
                f,
                "\"rollover\" for metric {metric:?} must be {{\"max\": N, \"expires_after\": K}} (N a positive whole number or null: no cap; K from 1 to {}, 1 if left out) beside a whole-number \"limit\" that repeats (not lifetime), found {found}",
                rollover::MAX_EXPIRES_AFTER
            ),
            PlanError::Ledger { metric, found } => {
                write!(f, "\"ledger\" for metric {metric:?} must be \"full\" or \"counters\", found {found}")
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// `^[a-z][a-z0-9_.:-]{0,62}$`, the metric names of the product contract.
pub fn validate_metric(name: &str) -> Result<(), PlanError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(PlanError::MetricName(name.to_string()))
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$`: identifiers such as `free`, `Pro`, `team-2026`.
pub fn validate_plan_name(name: &str) -> Result<(), PlanError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(PlanError::PlanName(name.to_string()))
    }
}

/// Parses the `limits` argument of `quota.create_plan`. Keys of each limit: `limit`
/// (required unless `rate` is given; null or absent = unlimited), `per` (required unless
/// unlimited, then it defaults to `lifetime`), `anchor` (`calendar` by default), `time_zone`
/// (`UTC` by default), `rate` (rate rules, quota_rules::rate), `alerts` (usage alert rules,
/// quota_rules::alert), `overage` (a soft limit: `{"max": N}` or `{"max": null}`), `rollover`
/// (unused allowance carried forward, quota_rules::rollover).
pub fn parse_limits(limits: &Value) -> Result<Vec<LimitDef>, PlanError> {
    let Value::Object(entries) = limits else {
        return Err(PlanError::LimitsNotObject);
    };
    entries.iter().map(|(metric, spec)| parse_limit(metric, spec)).collect()
}

fn parse_limit(metric: &str, spec: &Value) -> Result<LimitDef, PlanError> {
    validate_metric(metric)?;
    let Value::Object(spec) = spec else {
        return Err(PlanError::LimitNotObject { metric: metric.to_string() });
    };
    if let Some(key) = spec.keys().find(|key| !["limit", "per", "anchor", "time_zone", "rate", "alerts", "overage", "rollover", "ledger"].contains(&key.as_str())) {
        return Err(PlanError::UnknownKey { metric: metric.to_string(), key: key.clone() });
    }
    let rates = match spec.get("rate") {
        None => Vec::new(),
        Some(rate) => parse_rules(rate).map_err(|error| PlanError::Rate { metric: metric.to_string(), error })?,
    };
    let alerts = match spec.get("alerts") {
        None => Vec::new(),
        Some(alerts) => alert::parse_json(alerts).map_err(|error| PlanError::Alerts { metric: metric.to_string(), error })?,
    };
    let allowance = match spec.get("limit") {
        Some(Value::Null) => None,
        None if !rates.is_empty() => None,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => n.as_i64(),
        other => {
            let found = other.map_or_else(|| "nothing".to_string(), Value::to_string);
            return Err(PlanError::Allowance { metric: metric.to_string(), found });
        }
    };
    let overage = match spec.get("overage") {
        None => Overage::Hard,
        Some(value) => parse_overage(value, allowance).ok_or_else(|| PlanError::Overage { metric: metric.to_string(), found: value.to_string() })?,
    };
    let text = |key: &'static str| -> Result<Option<&str>, PlanError> {
        match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(PlanError::NotText { metric: metric.to_string(), key }),
        }
    };
    let window_error = |error| PlanError::Window { metric: metric.to_string(), error };
    let period = match (text("per")?, allowance) {
        (Some(per), _) => Period::parse(per).map_err(window_error)?,
        (None, None) => Period::Lifetime,
        (None, Some(_)) => return Err(PlanError::MissingPeriod { metric: metric.to_string() }),
    };
    let anchor = text("anchor")?.map_or(Ok(Anchor::Calendar), Anchor::parse).map_err(window_error)?;
    let time_zone = parse_time_zone(text("time_zone")?.unwrap_or("UTC")).map_err(window_error)?;
    let rollover = match spec.get("rollover") {
        None => None,
        Some(value) => Some(
            rollover::parse(value, allowance, period != Period::Lifetime)
                .ok_or_else(|| PlanError::Rollover { metric: metric.to_string(), found: value.to_string() })?,
        ),
    };
    let ledger = match spec.get("ledger") {
        None => LedgerMode::Full,
        Some(value) => value
            .as_str()
            .and_then(LedgerMode::parse)
            .ok_or_else(|| PlanError::Ledger { metric: metric.to_string(), found: value.to_string() })?,
    };
    Ok(LimitDef { metric: metric.to_string(), allowance, period, anchor, time_zone, rates, alerts, overage, rollover, ledger })
}

/// `{"max": N}` or `{"max": null}`, beside a limited allowance (an unlimited one has nothing
/// to pass); None for anything else.
fn parse_overage(value: &Value, allowance: Option<i64>) -> Option<Overage> {
    let Value::Object(fields) = value else { return None };
    if allowance.is_none() || fields.len() != 1 {
        return None;
    }
    match fields.get("max")? {
        Value::Null => Some(Overage::Unbounded),
        Value::Number(max) => max.as_i64().filter(|max| *max >= 0).map(Overage::AtMost),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metric_names() {
        for ok in ["a", "ai_requests", "tokens", "api.calls:v2-b", &format!("a{}", "b".repeat(62))] {
            assert_eq!(validate_metric(ok), Ok(()), "{ok}");
        }
        for bad in ["", "A", "1abc", "_x", "ai requests", "ai/requests", "é", &format!("a{}", "b".repeat(63))] {
            assert!(validate_metric(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plan_names() {
        for ok in ["free", "Pro", "team-2026", "9", "enterprise.v2"] {
            assert_eq!(validate_plan_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-free", "pro plan", "pro\n", &"p".repeat(64)] {
            assert!(validate_plan_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let limits = parse_limits(&json!({
            "ai_requests": {"limit": 10, "per": "day"},
            "tokens": {"limit": 10000, "per": "month", "anchor": "subscription"},
            "projects": {"limit": 3, "per": "lifetime"},
            "exports": {"limit": null},
            "sync": {"limit": 5, "per": "30 days", "time_zone": "Europe/Berlin"}
        }))
        .expect("valid limits");
        let by_metric = |m: &str| limits.iter().find(|l| l.metric == m).cloned().expect(m);
        assert_eq!(by_metric("ai_requests").allowance, Some(10));
        assert_eq!(by_metric("ai_requests").period, Period::Day);
        assert_eq!(by_metric("ai_requests").anchor, Anchor::Calendar);
        assert_eq!(by_metric("tokens").anchor, Anchor::Subscription);
        assert_eq!(by_metric("projects").period, Period::Lifetime);
        assert_eq!(by_metric("exports").allowance, None);
        assert_eq!(by_metric("exports").period, Period::Lifetime);
        assert_eq!(by_metric("sync").time_zone, chrono_tz::Europe::Berlin);
        assert_eq!(by_metric("sync").period, Period::parse("30 days").expect("fixed"));
        assert_eq!(parse_limits(&json!({})), Ok(vec![]));
        let rated = parse_limits(&json!({
            "ai_requests": {"limit": 100, "per": "day", "rate": [{"limit": 10, "per": "1 minute", "burst": 20}]},
            "api_calls": {"rate": [{"limit": 100, "per": "1 minute"}, {"limit": 5, "per": "1 second"}]}
        }))
        .expect("valid rates");
        let by_metric = |m: &str| rated.iter().find(|l| l.metric == m).cloned().expect(m);
        assert_eq!(by_metric("ai_requests").allowance, Some(100));
        assert_eq!(by_metric("ai_requests").rates.len(), 1);
        assert_eq!((by_metric("api_calls").allowance, by_metric("api_calls").period), (None, Period::Lifetime));
        assert_eq!(by_metric("api_calls").rates.iter().map(|r| r.limit).collect::<Vec<_>>(), vec![5, 100]);
        let alerting = parse_limits(&json!({"calls": {"limit": 10, "per": "day", "alerts": ["100%", "80%"]}})).expect("valid alerts");
        assert_eq!(alerting[0].alerts, vec![AlertRule::PercentUsed(80), AlertRule::PercentUsed(100)]);
        assert_eq!(alerting[0].overage, Overage::Hard);
        let soft = parse_limits(&json!({"a": {"limit": 10, "per": "day", "overage": {"max": 5}}, "b": {"limit": 0, "per": "day", "overage": {"max": null}}}))
            .expect("valid soft limits");
        let by_metric = |m: &str| soft.iter().find(|l| l.metric == m).cloned().expect(m);
        assert_eq!((by_metric("a").overage, by_metric("b").overage), (Overage::AtMost(5), Overage::Unbounded));
        let rolling = parse_limits(&json!({"a": {"limit": 10, "per": "month", "rollover": {"max": 5, "expires_after": 3}}})).expect("valid rollover");
        assert_eq!(rolling[0].rollover, Some(Rollover { max: Some(5), expires_after: 3 }));
        assert_eq!(by_metric("a").rollover, None);
        let counted = parse_limits(&json!({"a": {"limit": 10, "per": "day", "ledger": "counters"}, "b": {"limit": null, "ledger": "full"}})).expect("valid ledger modes");
        assert_eq!(counted.iter().map(|limit| limit.ledger).collect::<Vec<_>>(), [LedgerMode::Counters, LedgerMode::Full]);
        assert_eq!(by_metric("a").ledger, LedgerMode::Full);
    }

    #[test]
    fn rejects_malformed_limits() {
        let cases = [
            json!([]),
            json!("x"),
            json!({"Bad": {"limit": 1, "per": "day"}}),
            json!({"a": 5}),
            json!({"a": {"limit": -1, "per": "day"}}),
            json!({"a": {"limit": 1.5, "per": "day"}}),
            json!({"a": {"limit": "10", "per": "day"}}),
            json!({"a": {"limit": 18446744073709551615u64, "per": "day"}}),
            json!({"a": {"per": "day"}}),
            json!({"a": {"limit": 1}}),
            json!({"a": {"limit": 1, "per": "fortnight"}}),
            json!({"a": {"limit": 1, "per": 7}}),
            json!({"a": {"limit": 1, "per": "day", "anchor": "moon"}}),
            json!({"a": {"limit": 1, "per": "day", "time_zone": "Mars/Olympus"}}),
            json!({"a": {"limit": 1, "per": "day", "window": "day"}}),
            json!({"a": {"rate": []}}),
            json!({"a": {"rate": [{"limit": 1, "per": "1 month"}]}}),
            json!({"a": {"limit": 1, "per": "day", "rate": {"limit": 1}}}),
            json!({"a": {"limit": 1, "per": "day", "alerts": ["recovered"]}}),
            json!({"a": {"limit": 1, "per": "day", "alerts": "80%"}}),
            json!({"a": {"limit": 1, "per": "day", "overage": true}}),
            json!({"a": {"limit": 1, "per": "day", "overage": {"max": -1}}}),
            json!({"a": {"limit": 1, "per": "day", "overage": {"maximum": 5}}}),
            json!({"a": {"limit": 1, "per": "day", "overage": {"max": 5, "grace": 1}}}),
            json!({"a": {"limit": null, "overage": {"max": 5}}}),
            json!({"a": {"limit": 1, "per": "lifetime", "rollover": {"max": 5}}}),
            json!({"a": {"limit": null, "per": "day", "rollover": {"max": 5}}}),
            json!({"a": {"limit": 1, "per": "day", "rollover": {"max": 0}}}),
            json!({"a": {"limit": 1, "per": "day", "rollover": true}}),
            json!({"a": {"limit": 1, "per": "day", "ledger": "none"}}),
            json!({"a": {"limit": 1, "per": "day", "ledger": true}}),
        ];
        for case in cases {
            let error = parse_limits(&case).expect_err(&case.to_string());
            assert!(!error.to_string().is_empty() && !error.hint().is_empty());
        }
    }
}
