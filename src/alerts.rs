//! Usage alerts (docs/alerts.md). A plan's metric, or one subject's (set_alerts), has alert
//! rules (quota_rules::alert); each fires at most once per (subject, metric, window): the
//! first time it holds after usage counted in the window, in the transaction that counted it,
//! into the outbox quota.alerts. `recovered` answers a depletion once the subject can use
//! the metric again: a grant, a reset, a plan or override change, a give-back or a released
//! hold answer it at once; the end of a window when emit_due_recoveries() runs (the
//! dispatcher calls it). The outbox's consumer API is SQL (sql/alerts.sql); a subject's own
//! rules are set by set_alerts / clear_alerts (src/admin.rs).
//!
//! What fired in a window is kept in its counter row (`alerted`), under the row lock every
//! usage takes, so concurrent calls that cross a threshold write one alert. The fast path
//! decides a window alone only below its `alert_at`, the usage at which its next rule fires
//! (compared with the usage plus the window's holds); the consume that reaches it goes to the
//! slow path, which fires the alert here.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::alert::{holding_after_usage, AlertRule};
use quota_rules::decide::{remaining_with_grants, Decision};
use quota_rules::governing::Governing;
use quota_rules::request::EventKind;
use quota_rules::window::Window;

use crate::error::{required, sql_call, QResult, QuotaError};
use crate::store::alerts::{self as statements, AlertAt, WindowNumbers};
use crate::store::counters::{self, Counter, CounterKey};
use crate::store::schema::{self, Part};
use crate::store::transaction_now;

/// The most subjects one emit_due_recoveries() call looks at.
const MAX_SUBJECTS_PER_SWEEP: i32 = 100_000;

/// Whose alert rules read the usage a ledger row counts: the subject whose window counted it
/// (the caller, or the pool that paid for a member) and its rules.
#[derive(Clone, Copy)]
pub struct Alerting<'a> {
    pub subject: Uuid,
    pub rules: &'a [AlertRule],
    /// The window's numbers when the decision shows others (a member's view of its pool).
    pub numbers: Option<WindowNumbers>,
}

impl<'a> Alerting<'a> {
    /// The subject's own window, whose numbers the decision reports.
    pub fn own(subject: Uuid, governing: &'a Governing) -> Self {
        Alerting { subject, rules: &governing.alerts, numbers: None }
    }

    /// A pool's window, with the pool's numbers (`decided`: the decision on the pool's window
    /// before the member's view of it).
    pub fn pool(pool: Uuid, governing: &'a Governing, decided: &Decision) -> Self {
        Alerting { subject: pool, rules: &governing.alerts, numbers: Some(numbers_of(decided)) }
    }
}

fn numbers_of(decision: &Decision) -> WindowNumbers {
    WindowNumbers { used: decision.used, allowance: decision.allowance, remaining: decision.remaining, reserved: decision.reserved }
}

/// After the ledger row `event_id` of a decision that counted usage in `window`: fires the
/// rules that hold now and have not fired in the window. No statement at all while none holds.
pub fn after_usage(client: &SpiClient, alerting: &Alerting, decision: &Decision, window: Window, event_id: i64, kind: EventKind) -> QResult<()> {
    let counted = decision.from_allowance.saturating_add(decision.from_grants).saturating_add(decision.overage);
    if alerting.rules.is_empty() || counted == 0 {
        return Ok(());
    }
    let numbers = alerting.numbers.unwrap_or_else(|| numbers_of(decision));
    let holding = holding_after_usage(alerting.rules, numbers.used, numbers.allowance, numbers.remaining);
    if holding.is_empty() {
        return Ok(());
    }
    // A call may have resolved its grants before waiting for the window's lock, behind a grant
    // that committed meanwhile: what remains is read again before "depleted" or "N left" fire.
    let numbers = match holding.iter().any(|rule| matches!(rule, AlertRule::Depleted | AlertRule::RemainingAtMost(_))) {
        true => {
            let grants = counters::grants_usable_in(client, alerting.subject, &decision.metric, window, transaction_now()?)?;
            WindowNumbers { remaining: remaining_with_grants(numbers.allowance, numbers.used, grants, numbers.reserved), ..numbers }
        }
        false => numbers,
    };
    let holding = holding_after_usage(alerting.rules, numbers.used, numbers.allowance, numbers.remaining);
    let at = AlertAt { subject: alerting.subject, metric: &decision.metric, window, numbers, event_id: Some(event_id), cause: kind.as_str() };
    statements::fire(client, at, &holding)
}

/// After a change that may make the subject's metric (or, None, every metric) usable again:
/// answers each depletion that is, with `recovered` when its rules have it.
pub fn recover(client: &SpiClient, subject: Uuid, metric: Option<&str>, cause: &str) -> QResult<()> {
    if !schema::has(client, Part::Alerts)? {
        return Ok(());
    }
    match metric {
        Some(metric) => recover_metric(client, subject, metric, cause).map(drop),
        None => statements::awaiting(client, subject)?
            .iter()
            .try_for_each(|metric| recover_metric(client, subject, metric, cause).map(drop)),
    }
}

/// The (subject, metric)'s current window, locked (its counter row created): the lock a
/// usage of it takes first. None for a metric no plan has.
fn lock_current(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<Option<(Governing, Window, Counter)>> {
    let now = transaction_now()?;
    let governing = counters::resolve(client, subject, metric, now, now)?;
    if !governing.metric_known {
        return Ok(None);
    }
    let window = governing.counting_window(now)?;
    let counter = counters::lock_counter(client, CounterKey { subject, metric, window })?;
    Ok(Some((governing, window, counter)))
}

/// After a change of the subject's allowance for `metric` (None: every metric; a plan, an
/// override) that is made in this transaction: in each current window, a threshold rule
/// that fired and no longer holds under the new allowance fires again when it holds again
/// (80% of 10 is not 80% of 100), and the rules that hold now and have not fired fire now,
/// with the change as their cause (a downgrade into depletion: no later call counts
/// anything, which is when rules are read otherwise); then depletions are answered as
/// `recover` answers them.
pub fn allowance_changed(client: &SpiClient, subject: Uuid, metric: Option<&str>, cause: &str) -> QResult<()> {
    if !schema::has(client, Part::Alerts)? {
        return Ok(());
    }
    // One pass over the metrics in bytewise order, each window locked once: re-arming and
    // recovering metric by metric as consume_many locks a bundle's counters (two passes, one
    // for each, would lock out of that order, and deadlock with a bundle).
    let awaiting = match metric {
        Some(metric) => vec![metric.to_string()],
        None => statements::awaiting(client, subject)?,
    };
    let mut metrics = statements::current_metrics(client, subject, metric, transaction_now()?)?;
    metrics.extend(awaiting.iter().cloned());
    metrics.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    metrics.dedup();
    for metric in metrics {
        rearm_metric(client, subject, &metric, cause)?;
        if awaiting.contains(&metric) {
            recover_metric(client, subject, &metric, cause)?;
        }
    }
    Ok(())
}

/// allowance_changed for one metric: its current window, if it counted usage or fired a rule
/// (one that did neither has nothing to re-arm, and a plan of 0, a credit wallet's, is not
/// `depleted` at sign-up).
fn rearm_metric(client: &SpiClient, subject: Uuid, metric: &str, cause: &str) -> QResult<()> {
    let Some((governing, window, counter)) = lock_current(client, subject, metric)? else { return Ok(()) };
    if governing.alerts.is_empty() || (counter.used == 0 && !statements::has_fired(client, subject, metric, window)?) {
        return Ok(());
    }
    let now = transaction_now()?;
    let allowance = governing.allowance();
    let reserved = counters::active_holds(client, CounterKey { subject, metric, window }, counter, now)?;
    let remaining = remaining_with_grants(allowance, counter.used, governing.grants_usable(), reserved);
    let holding = holding_after_usage(&governing.alerts, counter.used, allowance, remaining);
    let thresholds = governing.alerts.iter().filter(|rule| matches!(rule, AlertRule::PercentUsed(_) | AlertRule::RemainingAtMost(_)));
    let rearmed: Vec<AlertRule> = thresholds.filter(|rule| !holding.contains(rule)).copied().collect();
    statements::rearm(client, subject, metric, window, &rearmed)?;
    let numbers = WindowNumbers { used: counter.used, allowance, remaining, reserved };
    statements::fire(client, AlertAt { subject, metric, window, numbers, event_id: None, cause }, &holding)
}

/// Locks the member's current window before an allocation locks its pool's counter: the
/// member's rows come first, as in every call of a member (src/pools/mod.rs).
pub fn lock_current_window(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<()> {
    lock_current(client, subject, metric).map(drop)
}

/// What recover_metric found.
enum Current {
    /// Answered (with `recovered` if the rules have it), or nothing awaited an answer.
    Answered,
    /// The window usable now has nothing left either.
    Depleted(Window),
}

/// Answers the (subject, metric)'s depletions when its current window has something left; a
/// metric no plan has any more is answered without an alert. The current window is locked
/// first, so that a usage in flight that depletes it commits its `depleted` before this looks
/// (and a usage that comes later sees the change that made it usable).
fn recover_metric(client: &SpiClient, subject: Uuid, metric: &str, cause: &str) -> QResult<Current> {
    let Some((governing, window, counter)) = lock_current(client, subject, metric)? else {
        statements::answer_silently(client, subject, metric)?;
        return Ok(Current::Answered);
    };
    let now = transaction_now()?;
    let allowance = governing.allowance();
    let reserved = counters::active_holds(client, CounterKey { subject, metric, window }, counter, now)?;
    let remaining = remaining_with_grants(allowance, counter.used, governing.grants_usable(), reserved);
    if remaining == Some(0) {
        return Ok(Current::Depleted(window));
    }
    let numbers = WindowNumbers { used: counter.used, allowance, remaining, reserved };
    let notify = governing.alerts.contains(&AlertRule::Recovered);
    statements::recover(client, AlertAt { subject, metric, window, numbers, event_id: None, cause }, notify)?;
    Ok(Current::Answered)
}

/// Answers the depletions of windows that have ended (a new window is usable again), at most
/// `max_subjects` (subject, metric) per call, oldest first; one whose new window has nothing
/// left either is carried to that window (answered when it is usable, or when it ends).
/// Returns how many (subject, metric) it answered. The dispatcher calls it when it is idle; without one, schedule it
/// (pg_cron, every minute).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn emit_due_recoveries(max_subjects: default!(Option<i32>, 1000)) -> Result<i32, ErrorReport> {
    sql_call(|| {
        let max_subjects = required(max_subjects, "max_subjects")?;
        if !(1..=MAX_SUBJECTS_PER_SWEEP).contains(&max_subjects) {
            return Err(QuotaError::invalid(format!("max_subjects must be between 1 and {MAX_SUBJECTS_PER_SWEEP}, found {max_subjects}")));
        }
        Spi::connect(|client| {
            let mut answered = 0;
            for (subject, metric) in statements::due(client, transaction_now()?, i64::from(max_subjects))? {
                match recover_metric(client, subject, &metric, "window_end")? {
                    Current::Answered => answered += 1,
                    // Nothing left in the new window either: the depletion moves to it, and
                    // the sweep to the next subject.
                    Current::Depleted(window) => statements::carry(client, subject, &metric, window)?,
                }
            }
            Ok(answered)
        })
    })
}
