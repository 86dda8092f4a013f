//! Usage alerts: what fired in each window (quota.counters' `alerted`, and `alert_at` for the
//! fast path), the outbox quota.alerts, and a subject's own alert rules
//! (quota.alert_overrides). The consumer API over the outbox is SQL (sql/alerts.sql).

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::alert::{watch, AlertRule};
use quota_rules::window::{Micros, Window};

use super::{not_null, query, query_row, timestamp, window_end, window_key, Args, Kept};
use crate::error::QResult;

/// A window's counter that is waiting for its depletion to be answered by `recovered`.
macro_rules! awaiting_recovery {
    () => {
        "'depleted' = ANY (alerted) AND NOT ('recovered' = ANY (alerted))"
    };
}

/// Notes `recovered` in the (subject, metric)'s windows that await it (but `$keep`'s, NULL
/// for none), returning one row each. Windows another transaction holds are skipped: a
/// recovery already holds the current window, and a release, give-back or settle of a hold
/// in an older one holds that one and comes for the current one next, so waiting here would
/// deadlock; that transaction, or the sweep, answers them.
macro_rules! answer_awaiting {
    () => {
        concat!("UPDATE quota.counters AS c SET alerted = c.alerted || '{recovered}'::text[]
                   FROM (SELECT k.window_start FROM quota.counters AS k
                          WHERE k.subject = $subject AND k.metric = $metric
                            AND k.window_start IS DISTINCT FROM $keep::timestamptz AND ", awaiting_recovery!(), "
                          ORDER BY k.window_start
                            FOR UPDATE SKIP LOCKED) AS open
                  WHERE c.subject = $subject AND c.metric = $metric AND c.window_start = open.window_start
                 RETURNING 1")
    };
}

thread_local! {
    // Under the window's counter lock, after usage counted in it: writes an alert for each
    // rule that holds ($rules) and has not fired in the window yet and notes them fired.
    // Writes nothing when all have fired. A window marked for the fast path is unmarked: the
    // next consume marks it again with what it watches then (alert_at), from the
    // configuration in force then, never from the one this call resolved before its lock.
    static FIRE: Kept = const { Kept::new(
        concat!("WITH fresh AS (
             SELECT r.rule FROM quota.counters AS c, pg_catalog.unnest($rules::text[]) WITH ORDINALITY AS r(rule, place)
              WHERE c.subject = $subject AND c.metric = $metric AND c.window_start = $window_start
                AND NOT (r.rule = ANY (c.alerted))
              ORDER BY r.place),
         sent AS (
             INSERT INTO quota.alerts (subject, metric, rule, window_start, resets_at, used, allowance, remaining, event_id, cause)
             SELECT $subject, $metric, rule, $window_start, $window_end, $used, $allowance, $remaining, $event_id, $cause
               FROM fresh
             RETURNING rule)
         UPDATE quota.counters AS c SET alerted = c.alerted || ARRAY(SELECT rule FROM sent), fast = false
          WHERE c.subject = $subject AND c.metric = $metric AND c.window_start = $window_start
            AND EXISTS (SELECT FROM sent)"),
    ) };
    // The metrics of the subject (or the one named) with a counter that counted usage or
    // fired a rule in a window containing $now (perhaps not the current one: a reset ends no
    // lifetime window), in the bytewise order consume_many locks a bundle's counters in.
    static CURRENT_METRICS: Kept = const { Kept::new(
        "SELECT metric FROM quota.counters
          WHERE subject = $subject AND ($metric::text IS NULL OR metric = $metric::text)
            AND window_start <= $now AND (window_end IS NULL OR window_end > $now)
            AND (used > 0 OR alerted <> '{}')
          GROUP BY metric ORDER BY metric COLLATE \"C\"",
    ) };
    static HAS_FIRED: Kept = const { Kept::new(
        "SELECT alerted <> '{}' AS fired FROM quota.counters WHERE subject = $subject AND metric = $metric AND window_start = $window_start",
    ) };
    // Under the window's counter lock: the rules named fire again when they hold again.
    static REARM: Kept = const { Kept::new(
        "UPDATE quota.counters AS c SET alerted = ARRAY(SELECT a FROM pg_catalog.unnest(c.alerted) AS a WHERE NOT (a = ANY ($rules::text[]))),
                fast = false
          WHERE c.subject = $subject AND c.metric = $metric AND c.window_start = $window_start AND c.alerted && $rules::text[]",
    ) };
    // The metrics of the subject with a depletion not answered yet, in the bytewise order
    // consume_many locks a bundle's counters in.
    static AWAITING: Kept = const { Kept::new(
        concat!("SELECT metric FROM quota.counters WHERE subject = $subject AND ", awaiting_recovery!(), "
                  GROUP BY metric ORDER BY metric COLLATE \"C\""),
    ) };
    // Depletions in windows that have ended, oldest first: the subjects the sweep looks at.
    static DUE: Kept = const { Kept::new(
        concat!("SELECT subject, metric FROM quota.counters
                  WHERE window_end <= $now AND ", awaiting_recovery!(), "
                  GROUP BY subject, metric
                  ORDER BY pg_catalog.min(window_end)
                  LIMIT $limit"),
    ) };
    // The subject is usable again: answers the depletions of the (subject, metric) and, when
    // its rules have `recovered`, writes one alert with the window usable now. Each depletion
    // is answered once, whoever races to answer it (rows locked, then re-checked).
    static RECOVER: Kept = const { Kept::new(
        concat!("WITH answered AS (", answer_awaiting!(), ")
         INSERT INTO quota.alerts (subject, metric, rule, window_start, resets_at, used, allowance, remaining, event_id, cause)
         SELECT $subject, $metric, 'recovered', $window_start, $window_end, $used, $allowance, $remaining, NULL, $cause
          WHERE $notify AND EXISTS (SELECT FROM answered)
         RETURNING alert_id"),
    ) };
    // A depletion that nothing can answer now: the metric is in no plan any more (answered
    // without an alert), or the window usable now has nothing left either (carried to it:
    // the ended windows are answered, the current one awaits, and the sweep moves on).
    static ANSWER_SILENTLY: Kept = const { Kept::new(answer_awaiting!()) };
    static CARRY: Kept = const { Kept::new(
        concat!("WITH answered AS (", answer_awaiting!(), ")
         UPDATE quota.counters
            SET alerted = pg_catalog.array_remove(alerted, 'recovered')
                          || CASE WHEN 'depleted' = ANY (alerted) THEN '{}'::text[] ELSE '{depleted}'::text[] END
          WHERE subject = $subject AND metric = $metric AND window_start = $keep AND EXISTS (SELECT FROM answered)"),
    ) };
    static SET_RULES: Kept = const { Kept::new(
        "INSERT INTO quota.alert_overrides (subject, metric, alerts) VALUES ($subject, $metric, $alerts)
         ON CONFLICT (subject, metric) DO UPDATE SET alerts = excluded.alerts, updated_at = pg_catalog.now()",
    ) };
    static CLEAR_RULES: Kept = const { Kept::new(
        "DELETE FROM quota.alert_overrides WHERE subject = $subject AND metric = $metric RETURNING subject",
    ) };
    static RULES_STATE: Kept = const { Kept::new(
        "SELECT pg_catalog.jsonb_build_object('alerts', alerts)::text AS state FROM quota.alert_overrides
          WHERE subject = $subject AND metric = $metric",
    ) };
}

/// A window's numbers as a decision reports them, which alert rules read.
#[derive(Debug, Clone, Copy)]
pub struct WindowNumbers {
    pub used: i64,
    pub allowance: Option<i64>,
    pub remaining: Option<i64>,
    /// What active holds keep (part of remaining).
    pub reserved: i64,
}

/// One (subject, metric, window) that an alert is about, and why it is written now.
#[derive(Clone, Copy)]
pub struct AlertAt<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub window: Window,
    pub numbers: WindowNumbers,
    /// The ledger row of the usage that made it fire.
    pub event_id: Option<i64>,
    /// What made it fire: the event's kind, or the administrative change.
    pub cause: &'a str,
}

impl<'a> AlertAt<'a> {
    fn args(&self) -> QResult<Args<'a, 8>> {
        Ok([
            ("subject", self.subject.into()),
            ("metric", self.metric.into()),
            ("window_start", window_key(self.window.start)?.into()),
            ("window_end", window_end(self.window.end)?.into()),
            ("used", self.numbers.used.into()),
            ("allowance", self.numbers.allowance.into()),
            ("remaining", self.numbers.remaining.into()),
            ("cause", self.cause.into()),
        ])
    }
}

/// The rules a window watches, as MARK_FAST binds them: names and usage thresholds.
pub fn watched(rules: &[AlertRule], allowance: Option<i64>) -> (Vec<String>, Vec<i64>) {
    watch(rules, allowance).into_iter().map(|(rule, at)| (rule.to_string(), at)).unzip()
}

/// Fires the rules that hold (`holding`) and have not fired in the window; the window's
/// counter is locked by the caller.
pub fn fire(client: &SpiClient, at: AlertAt, holding: &[AlertRule]) -> QResult<()> {
    let [subject, metric, window_start, window_end, used, allowance, remaining, cause] = at.args()?;
    let holding: Vec<String> = holding.iter().map(ToString::to_string).collect();
    let args = [
        ("rules", holding.into()),
        subject,
        metric,
        window_start,
        window_end,
        used,
        allowance,
        remaining,
        ("event_id", at.event_id.into()),
        cause,
    ];
    query(client, &FIRE, args, |_| Ok(())).map(drop)
}

/// The metrics of the subject whose depletion awaits an answer.
pub fn awaiting(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    query(client, &AWAITING, [("subject", subject.into())], |row| not_null(row, "metric"))
}

/// The subject's metrics (or `metric` alone) whose window that contains `now` counted usage
/// or fired a rule (a window that did neither has nothing to re-arm, and a plan of 0, a
/// credit wallet's, is not `depleted` at sign-up).
pub fn current_metrics(client: &SpiClient, subject: Uuid, metric: Option<&str>, now: Micros) -> QResult<Vec<String>> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    query(client, &CURRENT_METRICS, args, |row| not_null(row, "metric"))
}

/// Whether a rule fired in the window.
pub fn has_fired(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<bool> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("window_start", window_key(window.start)?.into())];
    Ok(query_row(client, &HAS_FIRED, args, |row| not_null(row, "fired"))?.unwrap_or(false))
}

/// The window's fired `rules` may fire again (the window's counter is locked by the caller).
pub fn rearm(client: &SpiClient, subject: Uuid, metric: &str, window: Window, rules: &[AlertRule]) -> QResult<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
    let args = [
        ("rules", rules.into()),
        ("subject", subject.into()),
        ("metric", metric.into()),
        ("window_start", window_key(window.start)?.into()),
    ];
    query(client, &REARM, args, |_| Ok(())).map(drop)
}

/// Up to `limit` (subject, metric) whose depletion is in a window that ended by `now`.
pub fn due(client: &SpiClient, now: Micros, limit: i64) -> QResult<Vec<(Uuid, String)>> {
    let args = [("now", timestamp(now)?.into()), ("limit", limit.into())];
    query(client, &DUE, args, |row| Ok((not_null(row, "subject")?, not_null(row, "metric")?)))
}

/// Answers the (subject, metric)'s depletions with the window usable now (`at`); writes the
/// `recovered` alert when `notify`. Whether it wrote one.
pub fn recover(client: &SpiClient, at: AlertAt, notify: bool) -> QResult<bool> {
    let [subject, metric, window_start, window_end, used, allowance, remaining, cause] = at.args()?;
    let no_window: Option<pgrx::datum::TimestampWithTimeZone> = None;
    let args = [subject, metric, ("keep", no_window.into()), window_start, window_end, used, allowance, remaining, cause, ("notify", notify.into())];
    Ok(query_row(client, &RECOVER, args, |row| not_null::<i64>(row, "alert_id"))?.is_some())
}

/// Answers the (subject, metric)'s depletions without an alert (its metric is in no plan).
pub fn answer_silently(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<()> {
    let no_window: Option<pgrx::datum::TimestampWithTimeZone> = None;
    query(client, &ANSWER_SILENTLY, [("subject", subject.into()), ("metric", metric.into()), ("keep", no_window.into())], |_| Ok(())).map(drop)
}

/// Carries the (subject, metric)'s unanswered depletions of ended windows to its current
/// window, `window` (locked, so its counter row exists), which has nothing left either.
pub fn carry(client: &SpiClient, subject: Uuid, metric: &str, window: Window) -> QResult<()> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("keep", window_key(window.start)?.into())];
    query(client, &CARRY, args, |_| Ok(())).map(drop)
}

/// Sets the subject's own alert rules for the metric (they replace its plan's).
pub fn set_rules(client: &SpiClient, subject: Uuid, metric: &str, rules: &[AlertRule]) -> QResult<()> {
    let texts: Vec<String> = rules.iter().map(ToString::to_string).collect();
    let args = [("subject", subject.into()), ("metric", metric.into()), ("alerts", texts.into())];
    query(client, &SET_RULES, args, |_| Ok(())).map(drop)
}

/// Removes the subject's own alert rules; whether it had any.
pub fn clear_rules(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<bool> {
    let args = [("subject", subject.into()), ("metric", metric.into())];
    Ok(query_row(client, &CLEAR_RULES, args, |_| Ok(()))?.is_some())
}

/// The subject's own alert rules as the audit trail keeps them; None without any.
pub fn rules_state(client: &SpiClient, subject: Uuid, metric: &str) -> QResult<Option<String>> {
    let args = [("subject", subject.into()), ("metric", metric.into())];
    query_row(client, &RULES_STATE, args, |row| not_null(row, "state"))
}
