//! What governs one (subject, metric) at an instant, as the store reads it: the plan, its
//! limit and window rule, the subject's override, the last reset, the usable grants. And the
//! rules that follow from it: which window counts, which allowance applies, and whether the
//! fast path may decide later consumes.

use crate::alert::AlertRule;
use crate::decide::{effective_allowance, Limit, Overage};
use crate::plan::LedgerMode;
use crate::rate::RateRule;
use crate::rollover::{Carry, Rollover};
use crate::window::{Micros, Window, WindowError, WindowSpec};

#[derive(Debug, Clone)]
pub struct Governing {
    pub plan: Option<String>,
    /// The subject has an assignment (otherwise `plan` is the default plan, if any).
    pub assigned: bool,
    /// The assignment's anchor; None when the subject has no assignment yet.
    pub subscription_anchor: Option<Micros>,
    pub plan_limit: Limit,
    /// The plan's window rule for the metric; lifetime when the plan lacks the metric.
    pub window_spec: WindowSpec,
    pub override_limit: Limit,
    /// The last reset at or before the usage's instant.
    pub reset_at: Option<Micros>,
    /// Some plan has a limit for the metric.
    pub metric_known: bool,
    /// Sum of the grants usable now, at most i64::MAX (informational: the slow path locks
    /// and re-reads them).
    pub grants_left: i64,
    /// What active holds of the subject's other windows keep of those grants (a window that
    /// ended, or was reset, while they were held; 0 when there are no grants): not usable in
    /// this window, and no mark for the fast path while there are any (store::reservations::
    /// held_in_other_windows says why).
    pub grants_held_elsewhere: i64,
    /// A reset after the usage's instant exists: the window at that instant is not the one
    /// later calls count in.
    pub reset_since: bool,
    /// The rate rules in force: the plan's with the subject's unexpired overrides, ordered by
    /// `per`; none without a plan.
    pub rates: Vec<RateRule>,
    /// When an override among them expires next (the rules in force change then).
    pub rates_until: Option<Micros>,
    /// The usage alert rules: the subject's own for the metric, else its plan's.
    pub alerts: Vec<AlertRule>,
    /// The plan's soft limit: how far consume may pass the allowance (Hard without a plan).
    pub overage: Overage,
    /// The plan's rollover policy for the metric, and when the plan was assigned.
    pub rollover: Option<Rollover>,
    pub assigned_at: Option<Micros>,
    /// Carries alive now that are not grants yet (the store materialises them on the next
    /// write); counted in `grants_left`.
    pub carries: Vec<Carry>,
    /// Which of the metric's calls write a ledger row (the plan's; Full without a plan).
    pub ledger: LedgerMode,
}

impl Governing {
    /// The window that contains `at` by the plan's rule, started over by the last reset.
    pub fn window_at(&self, at: Micros) -> Result<Window, WindowError> {
        let natural = self.window_spec.window_at(self.subscription_anchor.unwrap_or(at), at)?;
        Ok(natural.restarted_by(self.reset_at))
    }

    /// Where usage at `at` counts: its window, or without a plan the lifetime window.
    pub fn counting_window(&self, at: Micros) -> Result<Window, WindowError> {
        match self.plan {
            Some(_) => self.window_at(at),
            None => Ok(Window::LIFETIME),
        }
    }

    /// The allowance in force (None = unlimited); 0 without a plan.
    pub fn allowance(&self) -> Option<i64> {
        match self.plan {
            Some(_) => effective_allowance(self.plan_limit, self.override_limit),
            None => Some(0),
        }
    }

    /// Whether the fast path may decide the (subject, metric)'s next consumes from its
    /// window's cached allowance alone: an assigned plan, no usable grants, no reset after
    /// this instant (the reset's window is the current one then). Rate rules are cached
    /// beside it, each in its state row, valid until `rates_until`.
    /// A soft limit is decided on the slow path, which splits what passes the allowance.
    pub fn fast_path_can_decide(&self) -> bool {
        self.grants_left == 0 && self.fast_path_can_decide_but_for_grants()
    }

    /// Whether the fast path may decide on the window as a wallet's: as above but with usable
    /// grants, which its wallet statement pays from once the allowance is spent, reading and
    /// locking them as the slow path does (what the allowance pays, and any split, stay on
    /// the slow path, whose decision reports the grants left). Not with rate rules, nor when
    /// an alert rule watches the metric: how much a grant pays can cross one, which only the
    /// slow path fires.
    /// An unlimited allowance never needs the grants: such a window stays unmarked.
    pub fn fast_path_can_decide_as_wallet(&self) -> bool {
        self.grants_left > 0 && self.allowance().is_some() && self.rates.is_empty() && self.alerts.is_empty()
            && self.fast_path_can_decide_but_for_grants()
    }

    /// What both kinds of marks need, whatever the grants: an assigned plan, no reset after
    /// this instant, a hard limit, no grants kept by holds of other windows (a wallet's
    /// statement would spend them; without it, a window marked as no wallet's would deny
    /// when they are usable again, which a hold's release or expiry does not unmark).
    fn fast_path_can_decide_but_for_grants(&self) -> bool {
        self.assigned && self.plan.is_some() && !self.reset_since && self.overage == Overage::Hard && self.grants_held_elsewhere == 0
    }

    /// The grants this window can use: those usable now less what holds of other windows
    /// keep of them.
    pub fn grants_usable(&self) -> i64 {
        self.grants_left.saturating_sub(self.grants_held_elsewhere).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{parse_time_zone, Anchor, Period};

    const DAY: Micros = 86_400_000_000;

    fn governing(plan: Option<&str>) -> Governing {
        Governing {
            plan: plan.map(str::to_string),
            assigned: true,
            subscription_anchor: Some(DAY / 2),
            plan_limit: Limit::AtMost(10),
            window_spec: WindowSpec { period: Period::Day, anchor: Anchor::Subscription, time_zone: parse_time_zone("UTC").expect("utc") },
            override_limit: Limit::Absent,
            reset_at: None,
            metric_known: true,
            grants_left: 0,
            grants_held_elsewhere: 0,
            reset_since: false,
            rates: Vec::new(),
            rates_until: None,
            alerts: Vec::new(),
            overage: Overage::Hard,
            rollover: None,
            assigned_at: Some(0),
            carries: Vec::new(),
            ledger: LedgerMode::Full,
        }
    }

    #[test]
    fn windows_follow_the_anchor_and_resets() {
        let g = governing(Some("free"));
        assert_eq!(g.window_at(DAY), Ok(Window { start: Some(DAY / 2), end: Some(DAY + DAY / 2) }));
        let reset = Governing { reset_at: Some(DAY - 1), ..g.clone() };
        assert_eq!(reset.window_at(DAY), Ok(Window { start: Some(DAY - 1), end: Some(DAY + DAY / 2) }));
        // A reset in an earlier window does not move this one.
        let earlier = Governing { reset_at: Some(1), ..g.clone() };
        assert_eq!(earlier.window_at(DAY), g.window_at(DAY));
        assert_eq!(governing(None).counting_window(DAY), Ok(Window::LIFETIME));
    }

    #[test]
    fn allowance_and_fast_path() {
        let g = governing(Some("free"));
        assert_eq!(g.allowance(), Some(10));
        assert_eq!(Governing { override_limit: Limit::Unlimited, ..g.clone() }.allowance(), None);
        assert_eq!(governing(None).allowance(), Some(0));
        assert!(g.fast_path_can_decide());
        assert!(!Governing { grants_left: 1, ..g.clone() }.fast_path_can_decide());
        assert!(Governing { grants_left: 1, ..g.clone() }.fast_path_can_decide_as_wallet());
        assert!(!g.fast_path_can_decide_as_wallet());
        assert!(!Governing { grants_left: 1, plan_limit: Limit::Unlimited, ..g.clone() }.fast_path_can_decide_as_wallet());
        let alerting = Governing { grants_left: 1, alerts: crate::alert::parse_json(&serde_json::json!(["80%"])).expect("rule"), ..g.clone() };
        assert!(!alerting.fast_path_can_decide_as_wallet());
        assert!(!Governing { reset_since: true, ..g.clone() }.fast_path_can_decide());
        assert!(!Governing { overage: Overage::AtMost(5), ..g.clone() }.fast_path_can_decide());
        let rule = crate::rate::RateRule::new(1, 1_000_000, 1).expect("valid");
        assert!(Governing { rates: vec![rule], rates_until: Some(DAY), ..g.clone() }.fast_path_can_decide());
        assert!(!Governing { assigned: false, ..g.clone() }.fast_path_can_decide());
        assert!(!governing(None).fast_path_can_decide());
    }
}
