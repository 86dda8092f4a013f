//! The `events` argument of `quota.record_batch()`: a JSON array of objects with the
//! field names of `quota.record()`. Plain Rust; it checks shape and types, and every error
//! names the index of the event it is about.

use std::collections::BTreeMap;
use std::fmt;

use chrono::DateTime;
use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::window::Micros;

#[derive(Debug, Clone)]
pub struct RecordEvent {
    pub subject: uuid::Uuid,
    pub metric: String,
    pub amount: i64,
    pub idempotency_key: Option<String>,
    pub occurred_at: Option<Micros>,
    /// The metadata's JSON text exactly as sent (no number is re-read as a float).
    pub metadata: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// None when the batch itself is malformed.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "events[{index}]: {}", self.message),
            None => write!(f, "events: {}", self.message),
        }
    }
}

impl std::error::Error for BatchError {}

const FIELDS: [&str; 6] = ["subject", "metric", "amount", "idempotency_key", "occurred_at", "metadata"];

/// Parses the batch from its JSON text one event at a time: only one event's JSON tree is
/// held at once, so a batch costs its events, not a parsed copy of the whole array.
pub fn parse_batch(text: &str) -> Result<Vec<RecordEvent>, BatchError> {
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = deserializer.deserialize_any(BatchVisitor { failure: &mut failure });
    let unreadable = |error: serde_json::Error| BatchError { index: None, message: format!("cannot be read: {error}") };
    match (parsed, failure) {
        (_, Some(failure)) => Err(failure),
        (Err(error), None) if error.is_data() => Err(BatchError { index: None, message: "must be a JSON array of event objects".into() }),
        (Err(error), None) => Err(unreadable(error)),
        (Ok(events), None) => deserializer.end().map(|()| events).map_err(unreadable),
    }
}

/// Reads the array's elements one by one; the first bad event is kept in `failure`.
struct BatchVisitor<'a> {
    failure: &'a mut Option<BatchError>,
}

impl<'de> Visitor<'de> for BatchVisitor<'_> {
    type Value = Vec<RecordEvent>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(event) = seq.next_element::<Box<RawValue>>()? {
            match parse_event(&event) {
                Ok(parsed) => events.push(parsed),
                Err(message) => {
                    *self.failure = Some(BatchError { index: Some(events.len()), message });
                    return Err(A::Error::custom("bad event"));
                }
            }
        }
        Ok(events)
    }
}

type Fields = BTreeMap<String, Box<RawValue>>;

fn parse_event(event: &RawValue) -> Result<RecordEvent, String> {
    let fields: Fields = serde_json::from_str(event.get()).map_err(|_| "must be a JSON object".to_string())?;
    if let Some(key) = fields.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(format!("unknown field {key:?} (expected {})", FIELDS.join(", ")));
    }
    let subject = required_text(&fields, "subject")?;
    let subject = uuid::Uuid::parse_str(&subject).map_err(|_| format!("subject {subject:?} is not a uuid"))?;
    let amount = match field(&fields, "amount")? {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("amount {n} is not a bigint"))?,
        Some(other) => return Err(format!("amount must be a whole number, found {other}")),
        None => return Err("amount is required".into()),
    };
    let occurred_at = optional_text(&fields, "occurred_at")?.as_deref().map(parse_instant).transpose()?;
    Ok(RecordEvent {
        subject,
        metric: required_text(&fields, "metric")?,
        amount,
        idempotency_key: optional_text(&fields, "idempotency_key")?,
        occurred_at,
        metadata: fields.get("metadata").filter(|raw| raw.get() != "null").cloned(),
    })
}

/// A field's value; None when absent or null.
fn field(fields: &Fields, name: &str) -> Result<Option<Value>, String> {
    let Some(raw) = fields.get(name) else { return Ok(None) };
    let value: Value = serde_json::from_str(raw.get()).map_err(|error| format!("{name} cannot be read: {error}"))?;
    Ok(Some(value).filter(|value| !value.is_null()))
}

fn required_text(fields: &Fields, name: &str) -> Result<String, String> {
    optional_text(fields, name)?.ok_or_else(|| format!("{name} is required"))
}

fn optional_text(fields: &Fields, name: &str) -> Result<Option<String>, String> {
    match field(fields, name)? {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("{name} must be a string, found {other}")),
    }
}

/// ISO 8601 / RFC 3339 with an offset, as JSON clients write it. PostgreSQL's own output
/// is accepted too: a space for the "T" and offsets such as "+01" or "-0800".
fn parse_instant(text: &str) -> Result<Micros, String> {
    let with_t: String = text.char_indices().map(|(i, c)| if i == 10 && c == ' ' { 'T' } else { c }).collect();
    DateTime::parse_from_rfc3339(&with_t)
        .or_else(|_| DateTime::parse_from_str(&with_t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|instant| instant.timestamp_micros())
        .map_err(|_| format!("occurred_at {text:?} is not a timestamp with an offset, e.g. 2026-11-22T10:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_events() {
        let events = parse_batch(&json!([
            {"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": 5},
            {"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": 7,
             "idempotency_key": "k1", "occurred_at": "2026-11-21T10:00:00Z", "metadata": {"model": "m"}},
            {"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": 1,
             "occurred_at": "2026-11-21 10:00:00.5+01", "idempotency_key": null}
        ]).to_string())
        .expect("valid batch");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].occurred_at, None);
        assert_eq!(events[1].idempotency_key.as_deref(), Some("k1"));
        assert_eq!(events[1].occurred_at, Some(1_795_255_200_000_000));
        assert_eq!(events[2].occurred_at, Some(1_795_251_600_500_000));
        for same in ["2026-11-21T10:00:00+00:00", "2026-11-21 10:00:00+00", "2026-11-21T02:00:00-08", "2026-11-21T11:00:00+0100"] {
            let batch = json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "t", "amount": 1, "occurred_at": same}]);
            assert_eq!(parse_batch(&batch.to_string()).expect(same)[0].occurred_at, Some(1_795_255_200_000_000), "{same}");
        }
        assert_eq!(events[1].metadata.as_ref().map(|raw| raw.get()), Some(r#"{"model":"m"}"#));
        let exact = parse_batch(r#"[{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "t", "amount": 1,
                                     "metadata": {"big": 123456789012345678901234567890, "tiny": 1e-400}}]"#)
            .expect("valid batch");
        assert_eq!(exact[0].metadata.as_ref().map(|raw| raw.get()), Some(r#"{"big": 123456789012345678901234567890, "tiny": 1e-400}"#));
        assert!(parse_batch("[]").expect("empty").is_empty());
        assert!(parse_batch(" [ ] ").expect("empty").is_empty());
    }

    #[test]
    fn errors_name_the_event() {
        let good = json!({"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": 1});
        let cases = [
            (json!({}), None),
            (json!([good, 5]), Some(1)),
            (json!([good, {"metric": "tokens", "amount": 1}]), Some(1)),
            (json!([{"subject": "nope", "metric": "tokens", "amount": 1}]), Some(0)),
            (json!([good, good, {"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens"}]), Some(2)),
            (json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": 1.5}]), Some(0)),
            (json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "tokens", "amount": "5"}]), Some(0)),
            (json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": 7, "amount": 5}]), Some(0)),
            (json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "t", "amount": 5, "occurred_at": "yesterday"}]), Some(0)),
            (json!([{"subject": "a11ce000-0000-4000-8000-000000000001", "metric": "t", "amount": 5, "extra": 1}]), Some(0)),
        ];
        for (batch, index) in cases {
            let error = parse_batch(&batch.to_string()).expect_err(&batch.to_string());
            assert_eq!(error.index, index, "{batch}: {error}");
        }
    }
}
