//! Many metrics, one decision: the `amounts` of `quota.consume_many()` and when a retried
//! key replays its bundle. A bundle is all or nothing; its metrics are decided in one fixed
//! order (bytewise, PostgreSQL's "C" collation), so that concurrent bundles lock their
//! counters in the same order and cannot deadlock.

use std::fmt;

use serde_json::Value;

use crate::decide::Decision;
use crate::plan::validate_metric;
use crate::window::Micros;

/// One metric of a bundle and the units it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub metric: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    NotAnObject,
    Empty,
    Metric(String),
    Amount { metric: String, found: String },
    /// A key retried for a different bundle (23505).
    KeyReused { key: String, original: String, requested: String },
}

impl BundleError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, BundleError::KeyReused { .. })
    }

    pub fn hint(&self) -> &'static str {
        match self {
            BundleError::KeyReused { .. } => "Retry with the original amounts, or use a new key for a new request.",
            _ => r#"Pass a JSON object of metric names and positive whole numbers, such as {"ai_requests": 1, "tokens": 1200}."#,
        }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotAnObject => write!(f, "amounts must be a JSON object of metrics and amounts"),
            BundleError::Empty => write!(f, "amounts must name at least one metric"),
            BundleError::Metric(metric) => write!(f, "amounts: invalid metric name \"{metric}\""),
            BundleError::Amount { metric, found } => {
                write!(f, "amounts: \"{metric}\" must be a positive whole number, got {found}")
            }
            BundleError::KeyReused { key, original, requested } => {
                write!(f, "idempotency key \"{key}\" was already used for {original}, not {requested}")
            }
        }
    }
}

impl std::error::Error for BundleError {}

/// The parts of an `amounts` object, in the bundle's locking order.
pub fn parse_amounts(amounts: &Value) -> Result<Vec<Part>, BundleError> {
    let object = amounts.as_object().ok_or(BundleError::NotAnObject)?;
    if object.is_empty() {
        return Err(BundleError::Empty);
    }
    let mut parts = object
        .iter()
        .map(|(metric, amount)| {
            validate_metric(metric).map_err(|_| BundleError::Metric(metric.clone()))?;
            let amount = amount
                .as_i64()
                .filter(|amount| *amount > 0)
                .ok_or_else(|| BundleError::Amount { metric: metric.clone(), found: amount.to_string() })?;
            Ok(Part { metric: metric.clone(), amount })
        })
        .collect::<Result<Vec<_>, _>>()?;
    parts.sort_by(|a, b| a.metric.as_bytes().cmp(b.metric.as_bytes()));
    Ok(parts)
}

/// `{"ai_requests": 1, "tokens": 1200}`, in locking order, for messages.
fn describe<'a>(parts: impl Iterator<Item = (&'a str, i64)>) -> String {
    let listed: Vec<String> = parts.map(|(metric, amount)| format!("\"{metric}\": {amount}")).collect();
    format!("{{{}}}", listed.join(", "))
}

/// A committed call under a bundle's key, and when its transaction began (`created_at`:
/// every row of one bundle has the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed {
    pub decision: Decision,
    pub written_at: Micros,
}

/// A retried bundle replays what the key's first bundle consumed, if it asks for exactly
/// the same metrics and amounts. Keys are scoped to (subject, metric): what the key paid for
/// metrics the bundle does not name, in other transactions (a single consume or record of
/// the request's other metrics), is no part of it. So the original bundle is the rows the
/// transaction of the bundle's own metrics' rows wrote; none of them means the key is new
/// for these metrics. `keyed` are the committed calls under the key, in any order.
pub fn replay_bundle(keyed: Vec<Keyed>, parts: &[Part], key: &str) -> Result<Option<Vec<Decision>>, BundleError> {
    let named = |call: &Keyed| parts.iter().any(|part| part.metric == call.decision.metric);
    let Some(first) = keyed.iter().find(|call| named(call)).map(|call| call.written_at) else {
        return Ok(None);
    };
    let one_transaction = keyed.iter().filter(|call| named(call)).all(|call| call.written_at == first);
    let mut originals: Vec<Decision> = match one_transaction {
        true => keyed.into_iter().filter(|call| call.written_at == first).map(|call| call.decision).collect(),
        false => keyed.into_iter().filter(named).map(|call| call.decision).collect(),
    };
    originals.sort_by(|a, b| a.metric.as_bytes().cmp(b.metric.as_bytes()));
    let same = one_transaction
        && originals.len() == parts.len()
        && originals.iter().zip(parts).all(|(original, part)| original.metric == part.metric && original.amount == part.amount);
    if same {
        Ok(Some(originals))
    } else {
        Err(BundleError::KeyReused {
            key: key.to_string(),
            original: describe(originals.iter().map(|original| (original.metric.as_str(), original.amount))),
            requested: describe(parts.iter().map(|part| (part.metric.as_str(), part.amount))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Split, Standing};
    use crate::window::Window;

    fn parts(json: &str) -> Result<Vec<Part>, BundleError> {
        parse_amounts(&serde_json::from_str(json).unwrap())
    }

    fn consumed(metric: &str, amount: i64) -> Decision {
        let standing = Standing { used: amount, reserved: 0, grants_left: 0 };
        Decision::new(metric, amount, Some(&Split::allowance_only(amount)), standing, Some(10_000), Window::LIFETIME)
    }

    #[test]
    fn parts_come_in_bytewise_order() {
        let parsed = parts(r#"{"tokens": 1200, "ai_requests": 1, "Z": 1}"#);
        assert_eq!(parsed, Err(BundleError::Metric("Z".into())));
        let parsed = parts(r#"{"tokens": 1200, "ai_requests": 1, "ai.x": 2}"#).unwrap();
        let metrics: Vec<&str> = parsed.iter().map(|part| part.metric.as_str()).collect();
        assert_eq!(metrics, ["ai.x", "ai_requests", "tokens"]);
    }

    #[test]
    fn amounts_are_positive_whole_numbers() {
        for bad in ["0", "-1", "1.5", "\"3\"", "null", "9223372036854775808"] {
            let error = parts(&format!(r#"{{"tokens": {bad}}}"#)).unwrap_err();
            assert!(matches!(error, BundleError::Amount { .. }), "{bad}: {error:?}");
        }
        assert_eq!(parts("{}"), Err(BundleError::Empty));
        assert_eq!(parts("[1]"), Err(BundleError::NotAnObject));
    }

    fn keyed(calls: &[(&str, i64, Micros)]) -> Vec<Keyed> {
        calls.iter().map(|(metric, amount, at)| Keyed { decision: consumed(metric, *amount), written_at: *at }).collect()
    }

    #[test]
    fn a_retry_replays_only_the_same_bundle() {
        let bundle = parts(r#"{"tokens": 1200, "ai_requests": 1}"#).unwrap();
        assert_eq!(replay_bundle(Vec::new(), &bundle, "k"), Ok(None));
        let first = keyed(&[("tokens", 1200, 7), ("ai_requests", 1, 7)]);
        let replayed = replay_bundle(first.clone(), &bundle, "k").unwrap().unwrap();
        assert_eq!(replayed.iter().map(|d| d.metric.as_str()).collect::<Vec<_>>(), ["ai_requests", "tokens"]);
        for other in [r#"{"tokens": 1200}"#, r#"{"tokens": 1201, "ai_requests": 1}"#, r#"{"tokens": 1200, "ai_requests": 1, "x": 1}"#] {
            let error = replay_bundle(first.clone(), &parts(other).unwrap(), "k").unwrap_err();
            assert!(error.is_conflict(), "{other}");
        }
        let error = replay_bundle(first, &parts(r#"{"tokens": 5}"#).unwrap(), "k").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"idempotency key "k" was already used for {"ai_requests": 1, "tokens": 1200}, not {"tokens": 5}"#
        );
    }

    #[test]
    fn what_the_key_paid_in_other_transactions_is_another_call() {
        let bundle = parts(r#"{"ai_requests": 1}"#).unwrap();
        // The bundle, then a single record of the request's tokens under the same key.
        let calls = keyed(&[("ai_requests", 1, 7), ("tokens", 30, 9)]);
        let replayed = replay_bundle(calls.clone(), &bundle, "k").unwrap().unwrap();
        assert_eq!(replayed, vec![consumed("ai_requests", 1)]);
        // A first bundle of metrics the key has not paid is new; one that names a metric it
        // paid in another transaction beside one it did not is a conflict.
        assert_eq!(replay_bundle(keyed(&[("tokens", 30, 9)]), &bundle, "k"), Ok(None));
        let both = parts(r#"{"ai_requests": 1, "tokens": 30}"#).unwrap();
        assert!(replay_bundle(calls, &both, "k").unwrap_err().is_conflict());
        // Part of a bundle is another bundle.
        let part = replay_bundle(keyed(&[("ai_requests", 1, 7), ("tokens", 30, 7)]), &bundle, "k");
        assert!(part.unwrap_err().is_conflict());
    }
}
