//! What a denial tells a person: the message of every raising function (quota.require,
//! quota.require_many, quota.require_reservation, and the enforce trigger through
//! require). It says what was asked and what is available, in the parts that apply: the
//! allowance left, grants, what reservations hold, and when the window resets if it does.

use crate::decide::{remaining, remaining_with_grants};
use crate::request::format_instant;
use crate::window::Micros;

/// A denied request and the window it was denied in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall<'a> {
    pub metric: &'a str,
    pub requested: i64,
    /// None = unlimited (a denial then comes from holds alone, which cannot happen today,
    /// but the message must still be true).
    pub allowance: Option<i64>,
    pub used: i64,
    /// What active holds keep in the window.
    pub reserved: i64,
    /// Usable grants of (subject, metric).
    pub grants_left: i64,
    /// None = the window never resets (lifetime).
    pub resets_at: Option<Micros>,
}

impl Shortfall<'_> {
    /// What could be spent now: allowance left plus grants, less holds (None = unlimited).
    pub fn available(&self) -> Option<i64> {
        remaining_with_grants(self.allowance, self.used, self.grants_left, self.reserved)
    }

    /// `quota exceeded for "credits": requested 500, 480 available (480 in grants; no allowance)`
    pub fn message(&self) -> String {
        let available = self.available().map_or_else(|| "unlimited".to_string(), |units| units.to_string());
        let mut parts = Vec::new();
        match (self.allowance, remaining(self.allowance, self.used)) {
            (Some(0), _) => parts.push("no allowance".to_string()),
            (Some(allowance), Some(left)) => parts.push(format!("{left} of {allowance} left in the allowance")),
            _ => parts.push("unlimited allowance".to_string()),
        }
        if self.grants_left > 0 {
            parts.push(format!("{} in grants", self.grants_left));
        }
        if self.reserved > 0 {
            parts.push(format!("{} held by reservations", self.reserved));
        }
        // A reset matters only where there is an allowance to come back.
        if let (Some(resets_at), Some(allowance)) = (self.resets_at, self.allowance) {
            if allowance > 0 {
                parts.push(format!("resets at {}", format_instant(resets_at)));
            }
        }
        // Grants first when they are all there is, as a wallet's owner thinks of it.
        if self.allowance == Some(0) {
            parts.rotate_left(1);
        }
        format!("quota exceeded for \"{}\": requested {}, {available} available ({})", self.metric, self.requested, parts.join("; "))
    }

    /// The numbers, for programs: the DETAIL of the raised error, a JSON object.
    pub fn detail(&self) -> String {
        serde_json::json!({
            "metric": self.metric,
            "reason": "quota_exceeded",
            "requested": self.requested,
            "available": self.available(),
            "allowance": self.allowance,
            "used": self.used,
            "reserved": self.reserved,
            "grants_remaining": self.grants_left,
            "resets_at": self.resets_at.map(format_instant),
        })
        .to_string()
    }

    /// What the caller can do about it.
    pub fn hint(&self) -> &'static str {
        match (self.resets_at, self.allowance) {
            (Some(_), Some(allowance)) if allowance > 0 => "Retry after the window resets, or raise the allowance or grant more units.",
            _ => "This limit does not come back by itself: raise the allowance or grant more units.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortfall(allowance: Option<i64>, used: i64, grants_left: i64, reserved: i64, resets_at: Option<Micros>) -> Shortfall<'static> {
        Shortfall { metric: "credits", requested: 500, allowance, used, reserved, grants_left, resets_at }
    }

    #[test]
    fn a_wallet_names_its_grants_and_no_allowance() {
        let wallet = shortfall(Some(0), 0, 480, 0, None);
        assert_eq!(wallet.message(), "quota exceeded for \"credits\": requested 500, 480 available (480 in grants; no allowance)");
        assert_eq!(wallet.hint(), "This limit does not come back by itself: raise the allowance or grant more units.");
        assert_eq!(
            wallet.detail(),
            r#"{"allowance":0,"available":480,"grants_remaining":480,"metric":"credits","reason":"quota_exceeded","requested":500,"reserved":0,"resets_at":null,"used":0}"#
        );
    }

    #[test]
    fn a_window_names_what_is_left_and_when_it_resets() {
        // 2026-11-23T00:00:00Z
        let daily = Shortfall { metric: "ai_requests", requested: 5, ..shortfall(Some(10), 9, 0, 0, Some(1_795_392_000_000_000)) };
        assert_eq!(
            daily.message(),
            "quota exceeded for \"ai_requests\": requested 5, 1 available (1 of 10 left in the allowance; resets at 2026-11-23T00:00:00+00:00)"
        );
        assert_eq!(daily.hint(), "Retry after the window resets, or raise the allowance or grant more units.");
    }

    #[test]
    fn holds_and_grants_are_named_and_subtracted() {
        let held = shortfall(Some(10), 4, 3, 7, None);
        assert_eq!(held.available(), Some(2));
        assert_eq!(
            held.message(),
            "quota exceeded for \"credits\": requested 500, 2 available (6 of 10 left in the allowance; 3 in grants; 7 held by reservations)"
        );
    }

    #[test]
    fn an_allowance_lowered_below_use_leaves_nothing() {
        let lowered = shortfall(Some(5), 8, 0, 0, None);
        assert_eq!(lowered.available(), Some(0));
        assert!(lowered.message().contains("requested 500, 0 available (0 of 5 left in the allowance)"), "{}", lowered.message());
    }
}
