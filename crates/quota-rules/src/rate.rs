//! Rate rules: how fast a subject may use a metric, beside or instead of its quota window.
//! Plain Rust, no pgrx types.
//!
//! A rule `{"limit": L, "per": P, "burst": B}` admits up to B units at once, and units come
//! back at L per P: over any interval of length t at most `B + L * t / P` units are admitted
//! (a token bucket). It is kept as GCRA keeps it, one instant per (subject, metric, rule):
//! the theoretical arrival time `tat`, when the bucket is full again. A call of n units at
//! instant `now` is admitted when, after it, the bucket's debt `max(tat, now) + n * P / L -
//! now` is at most `B * P / L`; it moves `tat` there. A denial moves nothing. A `tat` in the
//! past is the same as no row at all, so the state needs no cleanup.
//!
//! Arithmetic is exact in i128 but for one rounding: `tat` is stored in whole microseconds,
//! rounded up. The stored state is never behind the exact one, so the rule never admits what
//! the exact bucket would not; it is stricter by under a microsecond per call.

use std::fmt;

use serde_json::Value;

use crate::window::Micros;
use crate::CorruptValue;

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;
/// The longest `per`: a rate over longer spans is a quota window's job.
const MAX_PER: i64 = 366 * DAY;
/// The largest `limit` and `burst`.
const MAX_UNITS: i64 = 1_000_000_000_000;
/// The longest time a full burst may take to come back: keeps every `tat` a timestamp.
const MAX_REFILL: i64 = 3_653 * DAY;

/// One rate rule, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Units that come back per `per_us`.
    pub limit: i64,
    pub per_us: i64,
    /// Units that may be used at once.
    pub burst: i64,
}

/// What a rule makes of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    /// Admitted; the rule's state becomes `tat_after`.
    Admitted { tat_after: Micros },
    /// Denied; the same call fits at `retry_at` (None: never, the amount is over the burst).
    Limited { retry_at: Option<Micros> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    NotList,
    NotObject { index: usize },
    UnknownKey { index: usize, key: String },
    Units { index: usize, key: &'static str, found: String },
    Per { index: usize, found: String, problem: &'static str },
    RefillTooSlow { index: usize },
    DuplicatePer { per: String },
    /// An argument of quota.set_rate_override().
    Argument { name: &'static str, found: String, problem: &'static str },
}

impl RateError {
    pub fn hint(&self) -> &'static str {
        match self {
            RateError::Per { .. } | RateError::Argument { name: "per", .. } => {
                "\"per\" is a fixed length of time: \"1 second\", \"10 seconds\", \"minute\", \"1 hour\", \"1 day\" or \"1 week\"; a month or a year has no fixed length (use the quota window, \"per\": \"month\", for those)."
            }
            RateError::DuplicatePer { .. } => "Give each rule of a metric its own \"per\", e.g. one per second and one per minute.",
            _ => r#"Rate rules look like "rate": [{"limit": 10, "per": "1 minute", "burst": 20}]; "burst" defaults to "limit"."#,
        }
    }
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateError::NotList => write!(f, "\"rate\" must be a JSON array of rules"),
            RateError::NotObject { index } => write!(f, "\"rate[{index}]\" must be a JSON object"),
            RateError::UnknownKey { index, key } => {
                write!(f, "unknown key {key:?} in \"rate[{index}]\" (expected limit, per, burst)")
            }
            RateError::Units { index, key, found } => write!(
                f,
                "\"rate[{index}].{key}\" must be a whole number from 1 to {MAX_UNITS}, found {found}"
            ),
            RateError::Per { index, found, problem } => write!(f, "\"rate[{index}].per\" {problem}, found {found}"),
            RateError::RefillTooSlow { index } => {
                write!(f, "\"rate[{index}]\": a full burst would take longer than 10 years to come back")
            }
            RateError::DuplicatePer { per } => write!(f, "two rate rules with \"per\" {per:?}"),
            RateError::Argument { name, found, problem } => write!(f, "{name} {problem}, found {found}"),
        }
    }
}

impl std::error::Error for RateError {}

/// Parses `"1 second"`, `"10 seconds"`, `"minute"`, `"2 hours"`, `"1 day"`, `"1 week"`.
pub fn parse_per(text: &str) -> Result<i64, &'static str> {
    let lower = text.trim().to_ascii_lowercase();
    let mut words = lower.split_whitespace();
    let (count, unit) = match (words.next(), words.next(), words.next()) {
        (Some(unit), None, None) => ("1", unit),
        (Some(count), Some(unit), None) => (count, unit),
        _ => return Err("must be a length of time such as \"1 minute\""),
    };
    let unit = match unit.strip_suffix('s').unwrap_or(unit) {
        "second" | "sec" => SECOND,
        "minute" | "min" => MINUTE,
        "hour" => HOUR,
        "day" => DAY,
        "week" => WEEK,
        "month" | "quarter" | "year" | "lifetime" => return Err("must be a fixed length of time (seconds to days)"),
        _ => return Err("must be a length of time such as \"1 minute\""),
    };
    if !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err("needs a positive whole number of its unit");
    }
    let micros = count.parse::<i64>().ok().and_then(|count| count.checked_mul(unit)).unwrap_or(i64::MAX);
    match micros {
        0 => Err("must be longer than zero"),
        micros if micros > MAX_PER => Err("must be at most 366 days"),
        micros => Ok(micros),
    }
}

/// The canonical text of a `per`: its largest whole unit ("1 minute", "90 seconds").
pub fn per_text(per_us: i64) -> String {
    let (unit, name) = [(WEEK, "week"), (DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")]
        .into_iter()
        .find(|(unit, _)| per_us % unit == 0)
        .unwrap_or((SECOND, "second"));
    let count = per_us / unit;
    format!("{count} {name}{}", if count == 1 { "" } else { "s" })
}

/// Parses the `"rate"` list of a limit. Rules come back ordered by `per`, the order their
/// state rows are locked in.
pub fn parse_rules(rate: &Value) -> Result<Vec<RateRule>, RateError> {
    let Value::Array(rules) = rate else {
        return Err(RateError::NotList);
    };
    let mut parsed = rules.iter().enumerate().map(|(index, rule)| parse_rule(index, rule)).collect::<Result<Vec<_>, _>>()?;
    parsed.sort_by_key(|rule| rule.per_us);
    if let Some(pair) = parsed.windows(2).find(|pair| pair[0].per_us == pair[1].per_us) {
        return Err(RateError::DuplicatePer { per: per_text(pair[0].per_us) });
    }
    Ok(parsed)
}

fn parse_rule(index: usize, rule: &Value) -> Result<RateRule, RateError> {
    let Value::Object(rule) = rule else {
        return Err(RateError::NotObject { index });
    };
    if let Some(key) = rule.keys().find(|key| !["limit", "per", "burst"].contains(&key.as_str())) {
        return Err(RateError::UnknownKey { index, key: key.clone() });
    }
    let units = |key: &'static str| -> Result<Option<i64>, RateError> {
        match rule.get(key) {
            None if key == "burst" => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=MAX_UNITS).contains(&n)) => Ok(n.as_i64()),
            other => {
                let found = other.map_or_else(|| "nothing".to_string(), Value::to_string);
                Err(RateError::Units { index, key, found })
            }
        }
    };
    let limit = units("limit")?.unwrap_or_default();
    let burst = units("burst")?.unwrap_or(limit);
    let per_us = match rule.get("per") {
        Some(Value::String(text)) => parse_per(text).map_err(|problem| RateError::Per { index, found: format!("{text:?}"), problem })?,
        other => {
            let found = other.map_or_else(|| "nothing".to_string(), Value::to_string);
            return Err(RateError::Per { index, found, problem: "must be a string such as \"1 minute\"" });
        }
    };
    RateRule::new(limit, per_us, burst).ok_or(RateError::RefillTooSlow { index })
}

/// A `per` given as a function's argument, in µs.
pub fn per_argument(per: &str) -> Result<i64, RateError> {
    parse_per(per).map_err(|problem| RateError::Argument { name: "per", found: format!("{per:?}"), problem })
}

/// The rule of quota.set_rate_override(subject, metric, per, rate_limit, burst): `burst`
/// defaults to `rate_limit`.
pub fn override_rule(per: &str, limit: i64, burst: Option<i64>) -> Result<RateRule, RateError> {
    let per_us = per_argument(per)?;
    let units = |name: &'static str, value: i64| {
        if (1..=MAX_UNITS).contains(&value) {
            Ok(value)
        } else {
            Err(RateError::Argument { name, found: value.to_string(), problem: "must be a whole number from 1 to 1000000000000" })
        }
    };
    let limit = units("rate_limit", limit)?;
    let burst = units("burst", burst.unwrap_or(limit))?;
    RateRule::new(limit, per_us, burst).ok_or(RateError::Argument {
        name: "burst",
        found: burst.to_string(),
        problem: "would take longer than 10 years to come back",
    })
}

impl RateRule {
    /// A rule from validated parts; None when a full burst takes longer than MAX_REFILL to
    /// come back (every `tat` then stays a valid timestamp).
    pub fn new(limit: i64, per_us: i64, burst: i64) -> Option<RateRule> {
        let rule = RateRule { limit, per_us, burst };
        assert!((1..=MAX_UNITS).contains(&limit) && (1..=MAX_UNITS).contains(&burst), "rate rule out of range: {rule:?}");
        assert!((1..=MAX_PER).contains(&per_us), "rate rule per out of range: {rule:?}");
        (rule.refill_us(burst) <= i128::from(MAX_REFILL)).then_some(rule)
    }

    /// The JSON form kept in quota.limits.rate and shown by usage().
    pub fn to_json(&self) -> Value {
        serde_json::json!({"limit": self.limit, "per": per_text(self.per_us), "burst": self.burst})
    }

    /// Time `units` take to come back, exactly, in µs scaled by `limit` (so no rounding).
    fn scaled(&self, units: i64) -> i128 {
        i128::from(units) * i128::from(self.per_us)
    }

    /// Time `units` take to come back, rounded up to whole µs.
    fn refill_us(&self, units: i64) -> i128 {
        let limit = i128::from(self.limit);
        (self.scaled(units) + limit - 1) / limit
    }

    /// The largest debt (µs, `tat - now`) at which `amount` still fits: floor((B - n) * P / L).
    fn max_debt_us(&self, amount: i64) -> Option<i64> {
        (amount <= self.burst).then(|| {
            let debt = self.scaled(self.burst - amount) / i128::from(self.limit);
            i64::try_from(debt).expect("bounded by MAX_REFILL")
        })
    }

    /// The cost of `amount` in µs, rounded up; None when it can never fit (over the burst).
    fn cost_us(&self, amount: i64) -> Option<i64> {
        (amount <= self.burst).then(|| i64::try_from(self.refill_us(amount)).expect("bounded by MAX_REFILL"))
    }

    /// Decides `amount` (positive) at `now` on the state `tat` (None: no state yet).
    pub fn decide(&self, tat: Option<Micros>, now: Micros, amount: i64) -> RateOutcome {
        assert!(amount > 0, "rate: amount {amount} must be positive");
        let (Some(max_debt), Some(cost)) = (self.max_debt_us(amount), self.cost_us(amount)) else {
            return RateOutcome::Limited { retry_at: None };
        };
        let from = tat.map_or(now, |tat| tat.max(now));
        // `from - now` is at most MAX_REFILL for a state this rule wrote; an override that
        // lowered the rule may leave more.
        let debt = i128::from(from) - i128::from(now);
        if debt <= i128::from(max_debt) {
            let tat_after = from.checked_add(cost).expect("an instant plus at most MAX_REFILL");
            RateOutcome::Admitted { tat_after }
        } else {
            // The debt falls to max_debt at from - max_debt.
            RateOutcome::Limited { retry_at: Some(from - max_debt) }
        }
    }

    /// Units that fit now: the largest n with debt + n * P / L <= B * P / L.
    pub fn remaining(&self, tat: Option<Micros>, now: Micros) -> i64 {
        let debt = tat.map_or(0, |tat| (i128::from(tat) - i128::from(now)).max(0));
        // B - ceil(L * debt / P), never below 0.
        let per = i128::from(self.per_us);
        let spent = (debt * i128::from(self.limit) + per - 1) / per;
        i64::try_from((i128::from(self.burst) - spent).max(0)).expect("at most the burst")
    }

    /// When one more unit than `remaining` fits (None: the bucket is full).
    pub fn next_unit_at(&self, tat: Option<Micros>, now: Micros) -> Option<Micros> {
        let remaining = self.remaining(tat, now);
        if remaining >= self.burst {
            return None;
        }
        match self.decide(tat, now, remaining + 1) {
            RateOutcome::Limited { retry_at } => retry_at,
            RateOutcome::Admitted { .. } => unreachable!("remaining is the largest amount that fits"),
        }
    }
}

/// A rule as a subject's override states it: it replaces the plan's rule with the same
/// `per`, or adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOverride {
    pub rule: RateRule,
    /// None: until cleared.
    pub expires_at: Option<Micros>,
}

/// The rules in force at `now`: the plan's, each replaced by the subject's unexpired
/// override with the same `per`, and the overrides with a `per` of their own. Ordered by
/// `per` (the lock order of their state rows).
pub fn rules_in_force(plan: &[RateRule], overrides: &[RateOverride], now: Micros) -> Vec<RateRule> {
    let active: Vec<RateRule> = overrides
        .iter()
        .filter(|o| o.expires_at.is_none_or(|expires_at| expires_at > now))
        .map(|o| o.rule)
        .collect();
    let mut rules: Vec<RateRule> =
        plan.iter().filter(|rule| !active.iter().any(|o| o.per_us == rule.per_us)).copied().chain(active.iter().copied()).collect();
    rules.sort_by_key(|rule| rule.per_us);
    rules
}

/// When the rules in force at `now` change by themselves next: the earliest expiry of an
/// unexpired override (None: only when someone changes them).
pub fn rules_change_at(overrides: &[RateOverride], now: Micros) -> Option<Micros> {
    overrides.iter().filter_map(|o| o.expires_at).filter(|expires_at| *expires_at > now).min()
}

/// A rule as a marked window's state row caches it (quota.rate_state's rule_limit,
/// rule_per_us, rule_burst), checked as any rule is.
pub fn cached_rule(limit: i64, per_us: i64, burst: i64) -> Result<RateRule, CorruptValue> {
    let in_range = (1..=MAX_UNITS).contains(&limit) && (1..=MAX_UNITS).contains(&burst) && (1..=MAX_PER).contains(&per_us);
    in_range
        .then(|| RateRule::new(limit, per_us, burst))
        .flatten()
        .ok_or_else(|| CorruptValue::new("cached rate rule", &format!("{limit} per {per_us} us, burst {burst}")))
}

/// The rules of quota.limits.rate, as create_plan wrote them.
pub fn stored_rules(text: &str) -> Result<Vec<RateRule>, CorruptValue> {
    let corrupt = || CorruptValue::new("rate rules", text);
    parse_rules(&serde_json::from_str(text).map_err(|_| corrupt())?).map_err(|_| corrupt())
}

/// The rows of quota.rate_overrides of one (subject, metric), as RESOLVE aggregates them:
/// `[{"limit": 20, "per": "1 minute", "burst": 40, "expires_at_us": 1764892800000000}]`.
pub fn stored_overrides(text: &str) -> Result<Vec<RateOverride>, CorruptValue> {
    let corrupt = || CorruptValue::new("rate overrides", text);
    let Value::Array(rows) = serde_json::from_str(text).map_err(|_| corrupt())? else {
        return Err(corrupt());
    };
    rows.iter()
        .map(|row| {
            let expires_at = match row.get("expires_at_us") {
                Some(Value::Null) | None => None,
                Some(value) => Some(value.as_i64().ok_or_else(corrupt)?),
            };
            let rule = serde_json::json!([{"limit": row.get("limit"), "per": row.get("per"), "burst": row.get("burst")}]);
            let rule = *parse_rules(&rule).map_err(|_| corrupt())?.first().ok_or_else(corrupt)?;
            Ok(RateOverride { rule, expires_at })
        })
        .collect()
}

/// The state of every rule after a call of `amount` at `now`, all or nothing: the new
/// `tat` of each rule when all admit it, else when all would (None: never).
pub fn decide_all(rules: &[(RateRule, Option<Micros>)], now: Micros, amount: i64) -> Result<Vec<Micros>, Option<Micros>> {
    let mut admitted = Vec::with_capacity(rules.len());
    let mut retry_at: Option<Option<Micros>> = None;
    for (rule, tat) in rules {
        match rule.decide(*tat, now, amount) {
            RateOutcome::Admitted { tat_after } => admitted.push(tat_after),
            // All rules fit at the latest of their own instants: each only gets better with time.
            RateOutcome::Limited { retry_at: at } => {
                retry_at = Some(match (retry_at, at) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (None, Some(b)) => Some(b),
                })
            }
        }
    }
    match retry_at {
        None => Ok(admitted),
        Some(at) => Err(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use serde_json::json;

    fn rule(limit: i64, per_us: i64, burst: i64) -> RateRule {
        RateRule::new(limit, per_us, burst).expect("valid rule")
    }

    #[test]
    fn parses_rules_and_pers() {
        let rules = parse_rules(&json!([{"limit": 100, "per": "1 minute"}, {"limit": 5, "per": "second", "burst": 10}])).unwrap();
        assert_eq!(rules, vec![rule(5, SECOND, 10), rule(100, MINUTE, 100)]);
        for (text, micros) in [("1 second", SECOND), ("10 seconds", 10 * SECOND), ("minute", MINUTE), ("2 HOURS", 2 * HOUR), ("1 day", DAY), ("1 week", WEEK), ("90 seconds", 90 * SECOND)] {
            assert_eq!(parse_per(text), Ok(micros), "{text}");
        }
        assert_eq!(per_text(90 * SECOND), "90 seconds");
        assert_eq!(per_text(MINUTE), "1 minute");
        assert_eq!(per_text(2 * DAY), "2 days");
        for bad in ["1 month", "month", "year", "0 seconds", "-1 second", "1.5 seconds", "367 days", "fortnight", "", "1 2 seconds"] {
            assert!(parse_per(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_malformed_rules_naming_the_key() {
        let cases = [
            (json!({}), "array"),
            (json!([5]), "rate[0]"),
            (json!([{"limit": 0, "per": "1 second"}]), "rate[0].limit"),
            (json!([{"limit": -1, "per": "1 second"}]), "rate[0].limit"),
            (json!([{"per": "1 second"}]), "rate[0].limit"),
            (json!([{"limit": 1.5, "per": "1 second"}]), "rate[0].limit"),
            (json!([{"limit": 1, "per": "1 second", "burst": 0}]), "rate[0].burst"),
            (json!([{"limit": 1, "per": "1 month"}]), "rate[0].per"),
            (json!([{"limit": 1}]), "rate[0].per"),
            (json!([{"limit": 1, "per": 60}]), "rate[0].per"),
            (json!([{"limit": 1, "per": "1 second", "window": 1}]), "\"window\""),
            (json!([{"limit": 1, "per": "1 second"}, {"limit": 2, "per": "1 second"}]), "two rate rules"),
            (json!([{"limit": 1, "per": "366 days", "burst": 1_000_000}]), "10 years"),
        ];
        for (case, named) in cases {
            let error = parse_rules(&case).expect_err(&case.to_string());
            assert!(error.to_string().contains(named), "{case}: {error}");
            assert!(!error.hint().is_empty());
        }
    }

    #[test]
    fn override_arguments() {
        assert_eq!(override_rule("1 minute", 20, None), Ok(rule(20, MINUTE, 20)));
        assert_eq!(override_rule("second", 2, Some(5)), Ok(rule(2, SECOND, 5)));
        for (per, limit, burst, named) in [("1 month", 1, None, "per"), ("1 minute", 0, None, "rate_limit"), ("1 minute", 1, Some(0), "burst"), ("366 days", 1, Some(1_000_000), "burst")] {
            let error = override_rule(per, limit, burst).expect_err(per);
            assert!(error.to_string().starts_with(named), "{error}");
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let r = rule(10, SECOND, 20);
        let mut tat = None;
        for _ in 0..20 {
            match r.decide(tat, 0, 1) {
                RateOutcome::Admitted { tat_after } => tat = Some(tat_after),
                denied => panic!("burst denied: {denied:?}"),
            }
        }
        assert_eq!(r.remaining(tat, 0), 0);
        assert_eq!(r.decide(tat, 0, 1), RateOutcome::Limited { retry_at: Some(100_000) });
        assert_eq!(r.next_unit_at(tat, 0), Some(100_000));
        assert!(matches!(r.decide(tat, 100_000, 1), RateOutcome::Admitted { .. }));
        assert_eq!(r.remaining(tat, SECOND), 10);
        assert_eq!(r.remaining(tat, 2 * SECOND), 20);
        assert_eq!(r.next_unit_at(tat, 2 * SECOND), None);
        assert_eq!(r.decide(None, 0, 21), RateOutcome::Limited { retry_at: None });
    }

    #[test]
    fn overrides_replace_or_add_until_they_expire() {
        let plan = [rule(10, MINUTE, 10), rule(1, SECOND, 1)];
        let doubled = RateOverride { rule: rule(20, MINUTE, 20), expires_at: Some(100) };
        let extra = RateOverride { rule: rule(1000, DAY, 1000), expires_at: None };
        assert_eq!(rules_in_force(&plan, &[doubled, extra], 99), vec![rule(1, SECOND, 1), rule(20, MINUTE, 20), rule(1000, DAY, 1000)]);
        assert_eq!(rules_in_force(&plan, &[doubled], 100), vec![rule(1, SECOND, 1), rule(10, MINUTE, 10)]);
        let later = RateOverride { expires_at: Some(200), ..doubled };
        assert_eq!(rules_change_at(&[later, doubled, extra], 99), Some(100));
        assert_eq!(rules_change_at(&[later, doubled, extra], 100), Some(200));
        assert_eq!(rules_change_at(&[extra], 99), None);
    }

    /// The exact token bucket: level = tokens * P (integer), refilled at L per µs, capped at
    /// B * P. Fed only the calls the implementation admitted.
    struct Bucket {
        rule: RateRule,
        level: i128,
        at: Micros,
    }

    impl Bucket {
        fn level_at(&self, now: Micros) -> i128 {
            let full = i128::from(self.rule.burst) * i128::from(self.rule.per_us);
            (self.level + i128::from(now - self.at) * i128::from(self.rule.limit)).min(full)
        }
        fn admits(&self, now: Micros, amount: i64) -> bool {
            self.level_at(now) >= i128::from(amount) * i128::from(self.rule.per_us)
        }
        /// The first instant the bucket holds `amount` (None: over the burst).
        fn first_admitting(&self, amount: i64) -> Option<Micros> {
            let needed = i128::from(amount) * i128::from(self.rule.per_us);
            if amount > self.rule.burst {
                return None;
            }
            let missing = (needed - self.level).max(0);
            let limit = i128::from(self.rule.limit);
            Some(self.at + i64::try_from((missing + limit - 1) / limit).expect("bounded"))
        }
        fn take(&mut self, now: Micros, amount: i64) {
            self.level = self.level_at(now) - i128::from(amount) * i128::from(self.rule.per_us);
            self.at = now;
        }
    }

    /// GCRA with rounded state against the exact bucket: it never admits what the bucket
    /// would not; it admits whatever the bucket would with a margin of one µs of refill per
    /// call since the bucket was last full; denials change nothing and say exactly when the
    /// call fits; remaining and next_unit_at agree with decide; and over every interval of
    /// the admitted calls at most B + L * t / P units were admitted.
    #[test]
    fn gcra_matches_the_exact_token_bucket() {
        let mut rng = Rng::new(0x5EED_0019);
        for case in 0..3_000 {
            let per_us = [SECOND, 3 * SECOND, MINUTE, 7 * SECOND + 1, HOUR][(rng.next_u64() % 5) as usize];
            let limit = 1 + (rng.next_u64() % 50) as i64;
            let burst = 1 + (rng.next_u64() % 60) as i64;
            let r = rule(limit, per_us, burst);
            let mut bucket = Bucket { rule: r, level: i128::from(burst) * i128::from(per_us), at: 0 };
            let (mut tat, mut now, mut since_full) = (None, 0i64, 0i128);
            let mut admitted: Vec<(Micros, i64)> = Vec::new();
            for step in 0..200 {
                let amount = 1 + (rng.next_u64() % (burst as u64 + 2)) as i64;
                now += (rng.next_u64() % (2 * per_us as u64 / limit as u64 + 2)) as i64;
                if rng.next_u64() % 3 == 0 {
                    // Just before the exact bucket has the amount: the edge rounding must respect.
                    if let Some(edge) = bucket.first_admitting(amount) {
                        now = now.max(edge - 1);
                    }
                }
                let context = format!("case {case} step {step}: {r:?} tat={tat:?} now={now} amount={amount}");
                let remaining = r.remaining(tat, now);
                if remaining == burst {
                    since_full = 0;
                }
                match r.decide(tat, now, amount) {
                    RateOutcome::Admitted { tat_after } => {
                        assert!(bucket.admits(now, amount), "{context}: admitted beyond the exact bucket");
                        assert!(amount <= remaining, "{context}: remaining {remaining}");
                        bucket.take(now, amount);
                        tat = Some(tat_after);
                        since_full += 1;
                        admitted.push((now, amount));
                    }
                    RateOutcome::Limited { retry_at } => {
                        let margin = since_full * i128::from(limit);
                        let generous = bucket.level_at(now) >= i128::from(amount) * i128::from(per_us) + margin;
                        assert!(!generous, "{context}: denied what the exact bucket admits");
                        assert!(amount > remaining, "{context}: remaining {remaining}");
                        match retry_at {
                            None => assert!(amount > burst, "{context}"),
                            Some(at) => {
                                assert!(at > now, "{context}: retry at {at}");
                                assert!(matches!(r.decide(tat, at, amount), RateOutcome::Admitted { .. }), "{context}: not admitted at {at}");
                                assert!(matches!(r.decide(tat, at - 1, amount), RateOutcome::Limited { .. }), "{context}: admitted before {at}");
                            }
                        }
                    }
                }
                if let Some(next) = r.next_unit_at(tat, now) {
                    assert_eq!(r.remaining(tat, next), r.remaining(tat, now) + 1, "{context}: next unit at {next}");
                    assert_eq!(r.remaining(tat, next - 1), r.remaining(tat, now), "{context}: next unit before {next}");
                }
            }
            // Every interval [a, b] of admitted instants: units <= B + L * (b - a) / P.
            for (first, (start, _)) in admitted.iter().enumerate() {
                let mut units = 0i128;
                for (end, amount) in &admitted[first..] {
                    units += i128::from(*amount);
                    let bound = i128::from(burst) * i128::from(per_us) + i128::from(end - start) * i128::from(limit);
                    assert!(units * i128::from(per_us) <= bound, "case {case}: {units} units in [{start}, {end}] under {r:?}");
                }
            }
        }
    }

    #[test]
    fn stored_rules_and_overrides_read_back() {
        let rules = [rule(5, SECOND, 10), rule(100, MINUTE, 100)];
        let text = serde_json::Value::Array(rules.iter().map(RateRule::to_json).collect()).to_string();
        assert_eq!(stored_rules(&text), Ok(rules.to_vec()));
        let overrides = r#"[{"limit": 20, "per": "1 minute", "burst": 40, "expires_at_us": 7}, {"limit": 1, "per": "1 day", "burst": 1, "expires_at_us": null}]"#;
        assert_eq!(
            stored_overrides(overrides),
            Ok(vec![RateOverride { rule: rule(20, MINUTE, 40), expires_at: Some(7) }, RateOverride { rule: rule(1, DAY, 1), expires_at: None }])
        );
        for corrupt in ["", "{}", r#"[{"limit": 0, "per": "1 day", "burst": 1}]"#, r#"[{"limit": 1, "per": "1 day", "burst": 1, "expires_at_us": "x"}]"#] {
            assert!(stored_overrides(corrupt).is_err(), "{corrupt}");
        }
        assert!(stored_rules("[{}]").is_err());
    }

    #[test]
    fn all_rules_or_none() {
        let second = rule(2, SECOND, 2);
        let minute = rule(3, MINUTE, 3);
        assert_eq!(decide_all(&[(second, None), (minute, None)], 0, 2), Ok(vec![SECOND, 40 * SECOND]));
        // The minute rule has room for 1, the second rule for 2: 2 is denied until the later
        // of both instants.
        let minute_tat = Some(40 * SECOND);
        match decide_all(&[(second, None), (minute, minute_tat)], 0, 2) {
            Err(Some(at)) => assert_eq!(at, 20 * SECOND),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide_all(&[(second, None), (minute, None)], 0, 3), Err(None));
        assert_eq!(decide_all(&[], 0, 3), Ok(vec![]));
    }
}
