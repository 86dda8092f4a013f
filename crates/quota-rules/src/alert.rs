//! Usage alerts: the rules a plan's metric (or one subject's) sets, when each holds, and the
//! usage at which the next one fires. An alert fires at most once per (subject, metric,
//! window, rule): the first time its rule holds after usage counted in that window
//! (src/alerts in the extension writes it beside the usage, in the same transaction).
//!
//! A rule is written as text: `"80%"` (used has reached 80% of the allowance; above 100% for
//! usage counted as overage), `"50 left"` (remaining is 50 or less), `"depleted"` (nothing
//! remaining), `"recovered"` (usable again after `depleted`). Rules read the numbers a
//! decision reports: used, allowance and remaining (allowance left plus usable grants, less
//! active holds). A metric without an allowance (unlimited) has no thresholds to cross.

use std::fmt;

use serde_json::Value;

/// The most alert rules one metric may have: each is a column of work on every alerting call.
pub const MAX_RULES: usize = 16;

/// The highest percentage a rule may name (soft limits go past 100%).
pub const MAX_PERCENT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertRule {
    /// used * 100 >= percent * allowance, with an allowance above zero.
    PercentUsed(u32),
    /// remaining <= this many units (at least 1).
    RemainingAtMost(i64),
    /// remaining = 0.
    Depleted,
    /// remaining > 0 again (or unlimited) after `Depleted` fired: answered once per depletion.
    Recovered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertError {
    NotAList,
    NotText(String),
    Unknown(String),
    Percent(String),
    Remaining(String),
    Duplicate(String),
    TooMany(usize),
    RecoveredWithoutDepleted,
}

impl AlertError {
    pub fn hint(&self) -> &'static str {
        match self {
            AlertError::RecoveredWithoutDepleted => "Add \"depleted\": \"recovered\" answers a depletion.",
            AlertError::TooMany(_) => "Keep the thresholds that someone acts on.",
            _ => r#"Alerts look like ["80%", "100%", "50 left", "depleted", "recovered"]."#,
        }
    }
}

impl fmt::Display for AlertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertError::NotAList => write!(f, "alerts must be a list of rules"),
            AlertError::NotText(found) => write!(f, "an alert rule must be a string, found {found}"),
            AlertError::Unknown(rule) => write!(f, "unknown alert rule {rule:?}"),
            AlertError::Percent(rule) => write!(f, "alert rule {rule:?}: a percentage is a whole number from 1 to {MAX_PERCENT}"),
            AlertError::Remaining(rule) => write!(f, "alert rule {rule:?}: \"N left\" needs a whole number N of at least 1"),
            AlertError::Duplicate(rule) => write!(f, "alert rule {rule:?} is listed twice"),
            AlertError::TooMany(count) => write!(f, "{count} alert rules for one metric; at most {MAX_RULES}"),
            AlertError::RecoveredWithoutDepleted => write!(f, "alert rule \"recovered\" needs \"depleted\" beside it"),
        }
    }
}

impl std::error::Error for AlertError {}

impl AlertRule {
    /// Parses one rule; accepts surrounding spaces and "80 %", keeps nothing else loose.
    pub fn parse(text: &str) -> Result<AlertRule, AlertError> {
        let trimmed = text.trim();
        match trimmed {
            "depleted" => return Ok(AlertRule::Depleted),
            "recovered" => return Ok(AlertRule::Recovered),
            _ => {}
        }
        if let Some(number) = trimmed.strip_suffix('%') {
            return match number.trim().parse::<u32>() {
                Ok(percent) if (1..=MAX_PERCENT).contains(&percent) => Ok(AlertRule::PercentUsed(percent)),
                _ => Err(AlertError::Percent(text.to_string())),
            };
        }
        if let Some(number) = trimmed.strip_suffix("left") {
            return match number.trim().parse::<i64>() {
                Ok(units) if units >= 1 => Ok(AlertRule::RemainingAtMost(units)),
                _ => Err(AlertError::Remaining(text.to_string())),
            };
        }
        Err(AlertError::Unknown(text.to_string()))
    }

    /// Whether the rule holds for a window's numbers. `Recovered` holds whenever something is
    /// usable; the store fires it only after a depletion.
    pub fn holds(self, used: i64, allowance: Option<i64>, remaining: Option<i64>) -> bool {
        match self {
            AlertRule::PercentUsed(percent) => allowance.is_some_and(|allowance| {
                allowance > 0 && i128::from(used) * 100 >= i128::from(percent) * i128::from(allowance)
            }),
            AlertRule::RemainingAtMost(units) => remaining.is_some_and(|remaining| remaining <= units),
            AlertRule::Depleted => remaining == Some(0),
            AlertRule::Recovered => remaining != Some(0),
        }
    }

    /// The usage at which the rule starts to hold on a window with this allowance and neither
    /// grants nor holds: None when usage alone never makes it hold (unlimited, `recovered`, a
    /// percentage of nothing). The fast path compares it with the usage plus the window's
    /// holds, which is where a rule on what remains starts to hold beside them (and is early,
    /// never late, for a percentage, which reads usage alone).
    pub fn usage_threshold(self, allowance: Option<i64>) -> Option<i64> {
        let allowance = allowance?;
        match self {
            AlertRule::PercentUsed(_) if allowance == 0 => None,
            AlertRule::PercentUsed(percent) => {
                // The least used with used * 100 >= percent * allowance.
                let product = i128::from(percent) * i128::from(allowance);
                i64::try_from((product + 99) / 100).ok()
            }
            AlertRule::RemainingAtMost(units) => Some(allowance.saturating_sub(units).max(0)),
            AlertRule::Depleted => Some(allowance),
            AlertRule::Recovered => None,
        }
    }
}

impl fmt::Display for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertRule::PercentUsed(percent) => write!(f, "{percent}%"),
            AlertRule::RemainingAtMost(units) => write!(f, "{units} left"),
            AlertRule::Depleted => write!(f, "depleted"),
            AlertRule::Recovered => write!(f, "recovered"),
        }
    }
}

/// Parses a list of rules (a plan's `"alerts"`, or set_alerts' array) into its stored form:
/// canonical, in a fixed order (percentages, then "N left", each ascending; depleted;
/// recovered).
pub fn parse_rules(texts: &[&str]) -> Result<Vec<AlertRule>, AlertError> {
    if texts.len() > MAX_RULES {
        return Err(AlertError::TooMany(texts.len()));
    }
    let mut rules = texts.iter().map(|text| AlertRule::parse(text)).collect::<Result<Vec<_>, _>>()?;
    rules.sort();
    if let Some(pair) = rules.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(AlertError::Duplicate(pair[0].to_string()));
    }
    if rules.contains(&AlertRule::Recovered) && !rules.contains(&AlertRule::Depleted) {
        return Err(AlertError::RecoveredWithoutDepleted);
    }
    Ok(rules)
}

/// parse_rules of a JSON list (a plan's limit's `"alerts"`).
pub fn parse_json(value: &Value) -> Result<Vec<AlertRule>, AlertError> {
    let Value::Array(items) = value else {
        return Err(AlertError::NotAList);
    };
    let texts = items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| AlertError::NotText(item.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    parse_rules(&texts)
}

/// Rules as stored (text), read back; a value pg_quota could not have written is corrupt.
pub fn stored_rules(texts: &[String]) -> Result<Vec<AlertRule>, crate::CorruptValue> {
    texts.iter().map(|text| AlertRule::parse(text).map_err(|_| crate::CorruptValue::new("alert rule", text))).collect()
}

/// The rules that hold for a window's numbers after usage counted in it: the ones a call
/// that counted may fire (`recovered` answers depletions elsewhere: never here).
pub fn holding_after_usage(rules: &[AlertRule], used: i64, allowance: Option<i64>, remaining: Option<i64>) -> Vec<AlertRule> {
    rules.iter().copied().filter(|rule| *rule != AlertRule::Recovered && rule.holds(used, allowance, remaining)).collect()
}

/// What the fast path watches on a window it decides alone: each rule that usage can make
/// hold, with the usage at which it does. The window's `alert_at` is the least of these among
/// the rules not fired yet in it: a consume that would reach it, counting the window's holds
/// as usage, is decided on the slow path, which fires the alert.
pub fn watch(rules: &[AlertRule], allowance: Option<i64>) -> Vec<(AlertRule, i64)> {
    rules.iter().filter_map(|rule| rule.usage_threshold(allowance).map(|at| (*rule, at))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use serde_json::json;

    #[test]
    fn parses_and_prints_canonically() {
        let rules = parse_json(&json!(["recovered", " 80 %", "100%", "50 left", "depleted", "150%"])).expect("valid");
        let texts: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["80%", "100%", "150%", "50 left", "depleted", "recovered"]);
        for text in &texts {
            assert_eq!(AlertRule::parse(text).map(|rule| rule.to_string()).as_deref(), Ok(text.as_str()));
        }
        assert_eq!(parse_json(&json!([])), Ok(vec![]));
    }

    #[test]
    fn rejects_what_it_cannot_mean() {
        let cases = [
            json!("80%"),
            json!([80]),
            json!(["80"]),
            json!(["0%"]),
            json!(["1001%"]),
            json!(["-5%"]),
            json!(["80.5%"]),
            json!(["0 left"]),
            json!(["x left"]),
            json!(["80%", "80 %"]),
            json!(["recovered"]),
            json!(["almost"]),
            json!((1..=17).map(|p| format!("{p}%")).collect::<Vec<_>>()),
        ];
        for case in cases {
            let error = parse_json(&case).expect_err(&case.to_string());
            assert!(!error.to_string().is_empty() && !error.hint().is_empty(), "{case}");
        }
    }

    #[test]
    fn rules_hold_as_documented() {
        let p80 = AlertRule::PercentUsed(80);
        assert!(!p80.holds(7, Some(10), Some(3)));
        assert!(p80.holds(8, Some(10), Some(2)));
        assert!(!p80.holds(1_000, None, None), "unlimited has no percentage");
        assert!(!p80.holds(5, Some(0), Some(0)), "a percentage of nothing never holds");
        assert!(AlertRule::PercentUsed(150).holds(15, Some(10), Some(0)));
        assert!(AlertRule::RemainingAtMost(5).holds(0, Some(10), Some(5)));
        assert!(!AlertRule::RemainingAtMost(5).holds(0, Some(10), Some(6)));
        assert!(AlertRule::Depleted.holds(10, Some(10), Some(0)));
        assert!(!AlertRule::Depleted.holds(10, Some(10), Some(4)), "grants still usable");
        assert!(AlertRule::Recovered.holds(0, None, None));
        assert!(holding_after_usage(&[p80, AlertRule::Depleted, AlertRule::Recovered], 10, Some(10), Some(0)).len() == 2);
        assert!(p80.holds(i64::MAX, Some(i64::MAX), Some(0)));
    }

    /// On a window without grants or holds (remaining = allowance - used, floored at 0), a rule
    /// holds exactly from its usage threshold on: the fast path's alert_at is exact.
    #[test]
    fn thresholds_match_the_rules() {
        let mut rng = Rng::new(22);
        for case in 0..20_000 {
            let allowance = match rng.below(4) {
                0 => rng.below(5) as i64,
                1 => rng.below(1_000) as i64,
                2 => i64::MAX - rng.below(1_000) as i64,
                _ => rng.below(1_000_000_000) as i64,
            };
            let rule = match rng.below(3) {
                0 => AlertRule::PercentUsed(1 + rng.below(u64::from(MAX_PERCENT)) as u32),
                1 => AlertRule::RemainingAtMost(1 + rng.below(2_000) as i64),
                _ => AlertRule::Depleted,
            };
            let threshold = rule.usage_threshold(Some(allowance));
            let probes = [0, 1, allowance / 2, allowance.saturating_sub(1), allowance, allowance.saturating_add(1)];
            let probes = probes.into_iter().chain(threshold.into_iter().flat_map(|t| [t.saturating_sub(1), t, t.saturating_add(1)]));
            for used in probes.filter(|used| *used >= 0) {
                let remaining = Some(allowance.saturating_sub(used).max(0));
                let by_threshold = threshold.is_some_and(|t| used >= t);
                assert_eq!(rule.holds(used, Some(allowance), remaining), by_threshold, "case {case}: {rule} of {allowance} at {used}");
            }
        }
        assert_eq!(AlertRule::Recovered.usage_threshold(Some(10)), None);
        assert_eq!(AlertRule::Depleted.usage_threshold(None), None);
        assert_eq!(watch(&[AlertRule::PercentUsed(80), AlertRule::Depleted, AlertRule::Recovered], Some(10)), vec![
            (AlertRule::PercentUsed(80), 8),
            (AlertRule::Depleted, 10)
        ]);
    }
}
