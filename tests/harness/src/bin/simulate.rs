//! Seeded randomized simulation of pg_quota against a reference model.
//!
//!     simulate [--seed N] [--ops N] [--connections N] [--db NAME]
//!
//! Each connection (one thread) owns a disjoint set of subjects and applies a random
//! sequence of operations to them, generated from the seed: consume, check, record,
//! grant, revoke, reserve, settle, release, reset, plan changes, overrides, a rate rule
//! (plan sim_a's "tokens", whose units do not come back during a run), retries with
//! the same idempotency key, transactions and savepoints rolled back, bad input, and on a
//! server that preloads pg_quota the memory-only limiter (its own state of the same rule,
//! kept when a transaction rolls back), a pool of its own with two members (pools.rs
//! beside this file), rows of its subjects in a table under quota.enforce (enforce.rs:
//! inserts, resizes, moves and deletes, some denied, some rolled back), and the usage alerts of sim_a's "calls" (each rule once per window,
//! "recovered" after a depletion; compared alert by alert at the end), and the rollover of
//! sim_a's "daily" (some subjects start on the plan for days, with usage recorded into the
//! days before today: what those days left carries into today), and compaction's closed
//! windows (usage of "archived" recorded into days before today, then compacted: a late
//! record into a closed day is refused, one into another past day counts). The model
//! below (written from the product contract, not from the extension's code) predicts every
//! decision on owned subjects exactly, whatever the interleaving. All connections also
//! hammer a few shared subjects, where only invariants can be checked. At the end every
//! invariant is checked through SQL and the database is compared with the model.
//! A failure prints the seed and the command that replays the same operations.

use std::collections::HashMap;
use std::thread;

use pg_quota_harness::{arg, connect, fresh_database, seed_from, sqlstate, Rng};

#[path = "simulate/enforce.rs"]
mod enforce;
#[path = "simulate/pools.rs"]
mod pools;
use enforce::{EnforceModel, CHANGES, CHANGES_LIMITS, SEATS, SEATS_LIMITS};
use pools::{PoolModel, POOL_PLAN};
use postgres::{Client, Row};
use uuid::Uuid;

const METRICS: [&str; 4] = ["calls", "tokens", "free", "daily"];
/// Plan limits per metric: None = the plan lacks the metric (allowance 0), Some(None) =
/// unlimited. "calls" and "free" are lifetime windows, "tokens" yearly, "daily" daily in a
/// time zone whose midnight is hours away when the run starts (day_zone): no window passes
/// during a run.
const PLANS: [(&str, [Option<Option<i64>>; 4]); 2] = [
    ("sim_a", [Some(Some(20)), Some(Some(1000)), Some(None), Some(Some(10))]),
    ("sim_b", [Some(Some(50)), Some(Some(200)), None, Some(Some(15))]),
];
/// Plan sim_a's "daily" rolls over (sim_b's does not): what a day leaves of its allowance, at
/// most ROLLOVER_MAX, can be spent for ROLLOVER_DAYS days, the next day first.
const DAILY: usize = 3;
const ROLLOVER_MAX: i64 = 6;
const ROLLOVER_DAYS: i64 = 2;
/// How many days before today the setup records usage into: the oldest one's carry has expired.
const HISTORY_DAYS: i64 = ROLLOVER_DAYS + 1;
/// Plan sim_a also rate-limits "tokens": a burst of RATE_BURST units, coming back at 1 per
/// 7 days, so that no unit comes back during a run and the model needs no clock.
const RATE_BURST: i64 = 60;
/// Plan sim_b's "tokens" is a soft limit: consume may pass its allowance (and the grants) by
/// up to this much overage per window; holds may not.
const SOFT_OVERAGE_MAX: i64 = 30;
/// Usage alert rules of sim_a's "calls" (docs/alerts.md), in their stored order: each fires
/// once per window when it first holds after usage counted there; "recovered" answers a
/// depletion once something is usable again after a grant, a reset, a plan change, an
/// override or a released hold.
const ALERT_RULES: [&str; 5] = ["50%", "100%", "5 left", "depleted", "recovered"];
/// A daily metric of both plans (in day_zone; allowance per plan) that only the setup and
/// late_record touch: the setup records into some of the HISTORY_DAYS days before today and
/// has quota.compact close those windows; late_record records into any of those days.
const ARCHIVED: &str = "archived";
const ARCHIVED_LIMITS: [i64; 2] = [8, 12];
const EXPIRIES: [Option<&str>; 3] = [None, Some("2100-01-01 00:00:00+00"), Some("2101-01-01 00:00:00+00")];
const SHARED_SUBJECTS: usize = 2;

type Fail = String;

fn fail<T>(what: impl Into<String>) -> Result<T, Fail> {
    Err(what.into())
}

fn db(e: postgres::Error) -> Fail {
    format!("unexpected error: {e} (SQLSTATE {:?})", sqlstate(&e))
}

#[derive(Debug, Clone)]
struct Grant {
    id: Uuid,
    metric: usize,
    remaining: i64,
    priority: i32,
    expiry: usize,
    seq: u64,
    revoked: bool,
    /// Set for a carry of unused allowance. Its id is nil (the model does not know which call
    /// made it a grant) and its expiry is the carry's own (expiry_rank).
    carry: Option<Carry>,
}

/// A carry of "daily"'s unused allowance into today.
#[derive(Debug, Clone, Copy)]
struct Carry {
    /// The day it came out of, in days before today.
    days_ago: i64,
    amount: i64,
}

impl Grant {
    /// Where the grant comes in spending order among those of its priority: the soonest to
    /// expire first (a carry expires at the end of today or a later day, before any dated
    /// grant), never-expiring last.
    fn expiry_rank(&self) -> i64 {
        match (self.carry, EXPIRIES[self.expiry]) {
            (Some(carry), _) => ROLLOVER_DAYS - carry.days_ago,
            (None, Some(_)) => ROLLOVER_DAYS + self.expiry as i64,
            (None, None) => i64::MAX,
        }
    }
}

#[derive(Debug, Clone)]
struct Hold {
    id: Uuid,
    metric: usize,
    amount: i64,
    epoch: usize,
    open: bool,
}

/// What the model says a call decides.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    allowed: bool,
    from_allowance: i64,
    from_grants: i64,
    overage: i64,
    used: i64,
}

impl Expected {
    /// What the call counted (what moves its window toward an alert).
    fn counted(&self) -> i64 {
        self.from_allowance + self.from_grants + self.overage
    }
}

#[derive(Debug, Clone)]
struct Subject {
    id: Uuid,
    plan: usize,
    /// Usage per window of each metric; a reset starts a new one.
    used: [Vec<i64>; 4],
    overrides: [Option<Option<i64>>; 4],
    grants: Vec<Grant>,
    holds: Vec<Hold>,
    /// Committed keys, scoped to (key, metric): (amount, decision).
    keys: HashMap<(String, usize), (i64, Expected)>,
    /// Committed bundle keys of consume_many: each metric's (metric, amount, decision).
    bundles: HashMap<String, Vec<(usize, i64, Expected)>>,
    /// Units sim_a's "tokens" rule admitted (consume, consume_many, reserve; its state stays
    /// across plan changes, as quota.rate_state does).
    rate_taken: i64,
    /// Units the same rule admitted in shared memory (quota.limit_in_memory: a state of its
    /// own, kept whatever the caller's transaction does).
    memory_taken: i64,
    /// The alert rules that fired in each (metric, window).
    fired: HashMap<(usize, usize), Vec<&'static str>>,
    /// Every alert written, in order: (metric, rule, used, remaining).
    alerts: Vec<(usize, &'static str, i64, Option<i64>)>,
    /// A depletion of the metric that no "recovered" has answered yet.
    awaiting: [bool; 4],
    /// "archived"'s windows of the days before today, by days ago (index 0, today, unused):
    /// the usage of a window still open, None for one compaction closed.
    archived: Vec<Option<i64>>,
    /// Keyed records of the setup into "archived": (key, days ago, amount).
    archived_keys: Vec<(String, i64, i64)>,
}

/// How a payment is made: allowance, then grants in spending order, then overage.
struct Payment {
    expected: Expected,
    taken: Vec<(usize, i64)>,
}

impl Subject {
    fn new(id: Uuid) -> Self {
        Subject {
            id,
            plan: 0,
            used: [vec![0], vec![0], vec![0], vec![0]],
            overrides: [None; 4],
            grants: Vec::new(),
            holds: Vec::new(),
            keys: HashMap::new(),
            bundles: HashMap::new(),
            rate_taken: 0,
            memory_taken: 0,
            fired: HashMap::new(),
            alerts: Vec::new(),
            awaiting: [false; 4],
            archived: vec![Some(0); HISTORY_DAYS as usize + 1],
            archived_keys: Vec::new(),
        }
    }

    /// The metric's alert rules under the subject's current plan.
    fn alert_rules(&self, metric: usize) -> &'static [&'static str] {
        if self.plan == 0 && METRICS[metric] == "calls" { &ALERT_RULES } else { &[] }
    }

    /// What a decision reports as remaining in window `epoch`: allowance left plus the grants
    /// usable there, less active holds (None: unlimited).
    fn remaining(&self, metric: usize, epoch: usize) -> Option<i64> {
        let used = self.used[metric][epoch];
        self.allowance(metric).map(|a| ((a - used).max(0) + self.grants_usable(metric, epoch) - self.held(metric, epoch, None)).max(0))
    }

    /// After a committed call counted `counted` units in window `epoch`: the rules that hold
    /// now and have not fired in the window fire.
    fn after_usage(&mut self, metric: usize, epoch: usize, counted: i64) {
        if counted == 0 {
            return;
        }
        self.fire_holding(metric, epoch);
    }

    /// Whether an alert rule holds in window `epoch` as it stands.
    fn rule_holds(&self, rule: &str, metric: usize, epoch: usize) -> bool {
        let (used, allowance, remaining) = (self.used[metric][epoch], self.allowance(metric), self.remaining(metric, epoch));
        match rule {
            "recovered" => false,
            "depleted" => remaining == Some(0),
            left if left.ends_with(" left") => remaining.is_some_and(|r| r <= left.trim_end_matches(" left").parse::<i64>().unwrap_or(0)),
            percent => allowance.is_some_and(|a| a > 0 && used * 100 >= percent.trim_end_matches('%').parse::<i64>().unwrap_or(0) * a),
        }
    }

    /// After a change of the allowance (a plan, an override): in the current window, if it
    /// counted usage or fired a rule, the thresholds (a percentage, "N left") that fired and
    /// no longer hold may fire again, and what holds and has not fired fires now.
    fn allowance_changed(&mut self, metric: usize) {
        let epoch = self.epoch(metric);
        let fired_any = self.fired.get(&(metric, epoch)).is_some_and(|fired| !fired.is_empty());
        if self.alert_rules(metric).is_empty() || (self.used[metric][epoch] == 0 && !fired_any) {
            return;
        }
        let rearmed: Vec<&str> = self
            .alert_rules(metric)
            .iter()
            .copied()
            .filter(|rule| (rule.ends_with('%') || rule.ends_with(" left")) && !self.rule_holds(rule, metric, epoch))
            .collect();
        self.fired.entry((metric, epoch)).or_default().retain(|rule| !rearmed.contains(rule));
        self.fire_holding(metric, epoch);
    }

    /// The rules that hold in window `epoch` and have not fired there fire.
    fn fire_holding(&mut self, metric: usize, epoch: usize) {
        let (used, remaining) = (self.used[metric][epoch], self.remaining(metric, epoch));
        for &rule in self.alert_rules(metric) {
            let holds = self.rule_holds(rule, metric, epoch);
            let fired = self.fired.entry((metric, epoch)).or_default();
            if holds && !fired.contains(&rule) {
                fired.push(rule);
                self.alerts.push((metric, rule, used, remaining));
                if rule == "depleted" {
                    self.awaiting[metric] = true;
                }
            }
        }
    }

    /// After a change that may make the metric usable again: answers its depletion when
    /// something is left in its current window ("recovered" when the plan's rules have it).
    fn recover(&mut self, metric: usize) {
        let epoch = self.epoch(metric);
        let remaining = self.remaining(metric, epoch);
        if !self.awaiting[metric] || remaining == Some(0) {
            return;
        }
        self.awaiting[metric] = false;
        if self.alert_rules(metric).contains(&"recovered") {
            self.alerts.push((metric, "recovered", self.used[metric][epoch], remaining));
        }
    }

    /// Whether the metric's rate rule (if its plan has one) admits the amount now.
    fn rate_admits(&self, metric: usize, amount: i64) -> bool {
        !self.rate_limited_metric(metric) || self.rate_taken + amount <= RATE_BURST
    }

    fn rate_limited_metric(&self, metric: usize) -> bool {
        self.plan == 0 && METRICS[metric] == "tokens"
    }

    /// What consume, consume_many and reserve pay: the rate rule first, then the quota.
    fn consume_payment(&self, metric: usize, amount: i64) -> Option<Payment> {
        let epoch = self.epoch(metric);
        self.rate_admits(metric, amount).then(|| self.pay(metric, epoch, amount, self.overage_room(metric, epoch), None)).flatten()
    }

    /// What reserve holds: as consume, but never past the allowance and the grants.
    fn hold_payment(&self, metric: usize, amount: i64) -> Option<Payment> {
        self.rate_admits(metric, amount).then(|| self.pay(metric, self.epoch(metric), amount, Some(0), None)).flatten()
    }

    /// How much overage a consume may still take in window `epoch` (None = no bound): what
    /// the soft limit leaves after the overage the window has (its usage past the allowance).
    fn overage_room(&self, metric: usize, epoch: usize) -> Option<i64> {
        if self.plan != 1 || METRICS[metric] != "tokens" {
            return Some(0);
        }
        self.allowance(metric).map(|allowance| (SOFT_OVERAGE_MAX - (self.used[metric][epoch] - allowance).max(0)).max(0))
    }

    /// Applies a payment of consume, consume_many or reserve, and takes its rate room.
    fn take_rate(&mut self, metric: usize, amount: i64) {
        if self.rate_limited_metric(metric) {
            self.rate_taken += amount;
        }
    }

    fn allowance(&self, metric: usize) -> Option<i64> {
        match self.overrides[metric] {
            Some(allowance) => allowance,
            None => PLANS[self.plan].1[metric].unwrap_or(Some(0)),
        }
    }

    fn epoch(&self, metric: usize) -> usize {
        self.used[metric].len() - 1
    }

    /// Usable grants of a metric in spending order (indexes into self.grants).
    fn spending_order(&self, metric: usize) -> Vec<usize> {
        let mut usable: Vec<usize> = (0..self.grants.len())
            .filter(|&i| self.grants[i].metric == metric && !self.grants[i].revoked && self.grants[i].remaining > 0)
            .collect();
        // Lower priority first (a carry has the lowest there is: it continues the allowance),
        // then soonest expiry, then oldest.
        usable.sort_by_key(|&i| (self.grants[i].priority, self.grants[i].expiry_rank(), self.grants[i].seq));
        usable
    }

    fn held(&self, metric: usize, epoch: usize, except: Option<Uuid>) -> i64 {
        self.holds.iter().filter(|h| h.open && h.metric == metric && h.epoch == epoch && Some(h.id) != except).map(|h| h.amount).sum()
    }

    fn grants_left(&self, metric: usize) -> i64 {
        self.spending_order(metric).iter().map(|&i| self.grants[i].remaining).sum()
    }

    /// Open holds of the metric in windows other than `epoch` (a window reset while they were
    /// held): grants belong to no window, so they keep theirs set aside, all of it (README,
    /// "Reservations").
    fn held_elsewhere(&self, metric: usize, epoch: usize) -> i64 {
        self.holds.iter().filter(|h| h.open && h.metric == metric && h.epoch != epoch).map(|h| h.amount).sum()
    }

    /// The grants window `epoch` can use: those left, less what holds of other windows keep.
    fn grants_usable(&self, metric: usize, epoch: usize) -> i64 {
        (self.grants_left(metric) - self.held_elsewhere(metric, epoch)).max(0)
    }

    /// What is left of the metric's carries (usage()'s rollover_remaining).
    fn carries_left(&self, metric: usize) -> i64 {
        self.spending_order(metric).iter().filter(|&&i| self.grants[i].carry.is_some()).map(|&i| self.grants[i].remaining).sum()
    }

    /// Pays `amount` in window `epoch` after the holds there take their share (allowance room
    /// first, then grants, then overage of at most `overage_room`, None = no bound). None when
    /// it cannot be paid so.
    fn pay(&self, metric: usize, epoch: usize, amount: i64, overage_room: Option<i64>, except: Option<Uuid>) -> Option<Payment> {
        let order = self.spending_order(metric);
        let mut balances: Vec<i64> = order.iter().map(|&i| self.grants[i].remaining).collect();
        let mut elsewhere = self.held_elsewhere(metric, epoch);
        for balance in balances.iter_mut() {
            let taken = elsewhere.min(*balance);
            *balance -= taken;
            elsewhere -= taken;
        }
        let used = self.used[metric][epoch];
        let mut rest_holds = self.held(metric, epoch, except);
        let room = self.allowance(metric).map(|allowance| {
            let room = (allowance - used).max(0);
            let from_room = rest_holds.min(room);
            rest_holds -= from_room;
            for balance in balances.iter_mut() {
                let taken = rest_holds.min(*balance);
                *balance -= taken;
                rest_holds -= taken;
            }
            room - from_room
        });
        let from_allowance = room.map_or(amount, |room| amount.min(room));
        let mut rest = amount - from_allowance;
        let mut taken = Vec::new();
        for (position, balance) in balances.iter().enumerate() {
            let take = rest.min(*balance);
            if take > 0 {
                taken.push((order[position], take));
                rest -= take;
            }
        }
        if overage_room.is_some_and(|max| rest > max) {
            return None;
        }
        let from_grants = amount - from_allowance - rest;
        let expected = Expected { allowed: true, from_allowance, from_grants, overage: rest, used: used + from_allowance + rest };
        Some(Payment { expected, taken })
    }

    fn apply(&mut self, metric: usize, epoch: usize, payment: &Payment) {
        self.used[metric][epoch] = payment.expected.used;
        for (grant, take) in &payment.taken {
            self.grants[*grant].remaining -= take;
        }
    }

    /// What check reports: whether and how the amount would be paid, with usage as it is.
    fn check(&self, metric: usize, amount: i64) -> Expected {
        let epoch = self.epoch(metric);
        match self.consume_payment(metric, amount) {
            Some(payment) => Expected { used: self.used[metric][epoch], ..payment.expected },
            None => self.denial(metric),
        }
    }

    fn denial(&self, metric: usize) -> Expected {
        let used = self.used[metric][self.epoch(metric)];
        Expected { allowed: false, from_allowance: 0, from_grants: 0, overage: 0, used }
    }
}

fn decision(row: &Row) -> Expected {
    Expected {
        allowed: row.get("allowed"),
        from_allowance: row.get("from_allowance"),
        from_grants: row.get("from_grants"),
        overage: row.get("overage"),
        used: row.get("used"),
    }
}

const DECISION: &str = "allowed, from_allowance, from_grants, overage, used, remaining, reserved, replayed";

fn compare(op: &str, expected: &Expected, got: &Expected) -> Result<(), Fail> {
    if expected == got {
        Ok(())
    } else {
        fail(format!("{op}: model expected {expected:?}, pg_quota returned {got:?}"))
    }
}

/// One connection's share of the run.
struct Worker {
    index: usize,
    rng: Rng,
    client: Client,
    subjects: Vec<Subject>,
    shared: Vec<Uuid>,
    grant_seq: u64,
    key_seq: u64,
    counts: HashMap<&'static str, u64>,
    /// Shared-subject calls acknowledged: (event_id, from_allowance, from_grants, overage, kind).
    acknowledged: Vec<(i64, i64, i64, i64, &'static str)>,
    /// Shared-subject consumes acknowledged without a ledger row (sim_b's "calls" keeps none
    /// for the fast path's): the units they took from the allowance.
    counted_without_ledger: i64,
    granted_shared: i64,
    /// The operations applied, printed when one fails.
    trace: Vec<String>,
    /// The server preloads pg_quota (quota.limit_in_memory works).
    preloaded: bool,
    /// The connection's pool and its members (src/bin/simulate/pools.rs).
    pool: PoolModel,
    /// The connection's rows of the table under quota.enforce (src/bin/simulate/enforce.rs).
    enforced: EnforceModel,
    /// The time zone of "daily"'s days (day_zone).
    day_zone: String,
}

impl Worker {
    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
        self.trace.push(kind.to_string());
    }

    fn new_key(&mut self) -> String {
        self.key_seq += 1;
        // Keys with odd characters too: they are opaque text.
        format!("w{}-k{}-ключ-🔑", self.index, self.key_seq)
    }

    /// Puts some subjects on sim_a for a while, records their usage of "daily" into the days
    /// before today, and gives the model the carries it works out from what it recorded: out
    /// of each of the ROLLOVER_DAYS days before today that began once the subject was on the
    /// plan, what the day left of its allowance, at most ROLLOVER_MAX. The other subjects get
    /// the default plan at their first call, later than any window before it.
    fn setup_rollover(&mut self) -> Result<(), Fail> {
        let allowance = PLANS[0].1[DAILY].flatten().ok_or("sim_a's daily must be limited")?;
        for s in 0..self.subjects.len() {
            // On the plan since so many hours before today began: long ago (most often); since
            // yesterday began (yesterday carries, the day before does not); since an hour later
            // (no day carries); or not yet.
            let Some(since_hours) = *self.rng.pick(&[Some(240), Some(240), Some(24), Some(23), None]) else { continue };
            let id = self.subjects[s].id;
            self.client.execute("SELECT quota.assign_plan($1, 'sim_a')", &[&id]).map_err(db)?;
            self.count("assign_plan");
            self.client
                .execute(
                    "UPDATE quota.assignments SET assigned_at = date_trunc('day', now(), $2) - make_interval(hours => $3) WHERE subject = $1",
                    &[&id, &self.day_zone, &since_hours],
                )
                .map_err(db)?;
            for days_ago in 1..=HISTORY_DAYS {
                // Some time in the day, and sometimes its last microsecond too: the model's days
                // must end where the server's do.
                let hour = self.rng.range(0, 23);
                let mut records = vec![(self.rng.range(0, allowance + 2), hour * 3_600_000_000)];
                if self.rng.chance(30) {
                    records.push((self.rng.range(1, 3), 86_400_000_000 - 1));
                }
                let mut used = 0;
                for (amount, micros) in records.into_iter().filter(|(amount, _)| *amount > 0) {
                    self.client
                        .execute(
                            "SELECT quota.record($1, 'daily', $2, occurred_at => date_trunc('day', now(), $3)
                                    - make_interval(hours => 24 * $4) + $5::int8 * interval '1 microsecond')",
                            &[&id, &amount, &self.day_zone, &(days_ago as i32), &micros],
                        )
                        .map_err(db)?;
                    used += amount;
                }
                let carried = (allowance - used).clamp(0, ROLLOVER_MAX);
                if days_ago <= ROLLOVER_DAYS && 24 * days_ago <= i64::from(since_hours) && carried > 0 {
                    self.count("carry");
                    self.grant_seq += 1;
                    self.subjects[s].grants.push(Grant {
                        id: Uuid::nil(),
                        metric: DAILY,
                        remaining: carried,
                        priority: i32::MIN,
                        expiry: 0,
                        seq: self.grant_seq,
                        revoked: false,
                        carry: Some(Carry { days_ago, amount: carried }),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records each subject's "archived" usage into some of the days before today, as if it
    /// had been written then, and has quota.compact close those windows (compaction runs one
    /// at a time: another connection's may hold it, so it is called until this connection's
    /// windows are closed). The model keeps the days closed, the others open and unused.
    fn setup_archive(&mut self) -> Result<(), Fail> {
        let ids: Vec<Uuid> = self.subjects.iter().map(|subject| subject.id).collect();
        for s in 0..self.subjects.len() {
            for days_ago in 1..=HISTORY_DAYS {
                if !self.rng.chance(50) {
                    continue;
                }
                let (amount, hour) = (self.rng.range(1, 10), self.rng.range(0, 23));
                let key = if self.rng.chance(50) { Some(self.new_key()) } else { None };
                self.client
                    .execute(
                        &format!(
                            "SELECT quota.record($1, '{ARCHIVED}', $2, $3, occurred_at => date_trunc('day', now(), $4)
                                    - make_interval(hours => 24 * $5 - $6))"
                        ),
                        &[&self.subjects[s].id, &amount, &key, &self.day_zone, &(days_ago as i32), &(hour as i32)],
                    )
                    .map_err(db)?;
                self.count("archived record");
                self.subjects[s].archived[days_ago as usize] = None;
                if let Some(key) = key {
                    self.subjects[s].archived_keys.push((key, days_ago, amount));
                }
            }
        }
        self.client
            .execute(
                &format!("UPDATE quota.events SET created_at = window_end - interval '1 second' WHERE subject = ANY($1) AND metric = '{ARCHIVED}'"),
                &[&ids],
            )
            .map_err(db)?;
        for _ in 0..1000 {
            let open: i64 = self
                .client
                .query_one(&format!("SELECT count(*) FROM quota.counters WHERE subject = ANY($1) AND metric = '{ARCHIVED}'"), &[&ids])
                .map_err(db)?
                .get(0);
            if open == 0 {
                return Ok(());
            }
            self.client.execute("SELECT quota.compact('1 hour', 1000)", &[]).map_err(db)?;
            thread::sleep(std::time::Duration::from_millis(10));
        }
        fail("quota.compact did not close the setup's \"archived\" windows")
    }

    fn step(&mut self) -> Result<(), Fail> {
        if self.rng.chance(15) {
            return self.shared_step();
        }
        if self.rng.chance(12) {
            return self.pool_step();
        }
        if self.rng.chance(8) {
            return self.enforce_step();
        }
        let s = self.rng.below(self.subjects.len() as u64) as usize;
        let metric = self.rng.below(METRICS.len() as u64) as usize;
        self.trace.push(format!("subject {s} {}:", METRICS[metric]));
        match self.rng.below(100) {
            0..=29 => self.consume(s, metric),
            30..=33 => self.check(s, metric),
            34..=37 => self.consume_many(s),
            38..=44 => self.record(s, metric),
            45 => self.late_record(s),
            46..=53 => self.grant(s, metric),
            54..=56 => self.revoke(s),
            57..=64 => self.reserve(s, metric),
            65..=70 => self.settle(s),
            71..=74 => self.release(s),
            75..=77 => self.reset(s, metric),
            78..=80 => self.assign(s),
            81..=85 => self.set_override(s, metric),
            86..=91 => self.rolled_back(s, metric),
            92..=95 => self.savepoint(s, metric),
            96 => self.memory(s, metric),
            97 => self.compact(),
            _ => self.bad_input(s),
        }
    }

    fn consume(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("consume");
        let amount = self.rng.range(1, 8);
        // A retry of an earlier key (same or different request), an earlier key on a metric
        // it has not paid for yet (keys are per metric: a new request), a new key, or none.
        let earlier: Vec<(String, usize)> = self.subjects[s].keys.keys().cloned().collect();
        if !earlier.is_empty() && self.rng.chance(15) {
            let (key, k_metric) = self.rng.pick(&earlier).clone();
            let (k_amount, original) = self.subjects[s].keys[&(key.clone(), k_metric)].clone();
            let same = self.rng.chance(70);
            let (metric, amount) = if same { (k_metric, k_amount) } else { (k_metric, k_amount + 1) };
            let sql = format!("SELECT {DECISION} FROM quota.consume($1, $2, $3, $4)");
            let result = self.client.query_one(&sql, &[&self.subjects[s].id, &METRICS[metric], &amount, &key]);
            return match (same, result) {
                (true, Ok(row)) if row.get::<_, bool>("replayed") => compare("consume retry", &original, &decision(&row)),
                (true, Ok(_)) => fail(format!("consume retry with key {key}: not replayed")),
                (false, Err(e)) if sqlstate(&e).as_deref() == Some("23505") => {
                    self.count("key reused: 23505");
                    Ok(())
                }
                (false, other) => fail(format!("key {key} reused for another amount: expected 23505, got {other:?}")),
                (true, Err(e)) => Err(db(e)),
            };
        }
        let other_metrics_key = earlier.iter().find(|(key, m)| *m != metric && !self.subjects[s].keys.contains_key(&(key.clone(), metric)));
        let key = match other_metrics_key {
            Some((key, _)) if self.rng.chance(30) => {
                self.count("key of another metric");
                Some(key.clone())
            }
            _ if self.rng.chance(40) => Some(self.new_key()),
            _ => None,
        };
        let sql = format!("SELECT {DECISION}, reason FROM quota.consume($1, $2, $3, $4)");
        let row = self.client.query_one(&sql, &[&self.subjects[s].id, &METRICS[metric], &amount, &key]).map_err(db)?;
        let subject = &mut self.subjects[s];
        let epoch = subject.epoch(metric);
        let rate_limited = !subject.rate_admits(metric, amount);
        if rate_limited != (row.get::<_, String>("reason") == "rate_limited") {
            return fail(format!("consume {amount} {}: model rate_limited={rate_limited}, pg_quota {:?}", METRICS[metric], row.get::<_, String>("reason")));
        }
        let expected = match subject.consume_payment(metric, amount) {
            Some(payment) => {
                subject.apply(metric, epoch, &payment);
                subject.after_usage(metric, epoch, payment.expected.counted());
                subject.take_rate(metric, amount);
                payment.expected
            }
            None => subject.denial(metric),
        };
        let got = decision(&row);
        compare(&format!("consume {} {} {amount}", subject.id, METRICS[metric]), &expected, &got)?;
        let (remaining, reserved) = (subject.remaining(metric, epoch), subject.held(metric, epoch, None));
        if row.get::<_, Option<i64>>("remaining") != remaining || row.get::<_, i64>("reserved") != reserved {
            return fail(format!("consume: remaining/reserved {:?}/{} expected {remaining:?}/{reserved}", row.get::<_, Option<i64>>("remaining"), row.get::<_, i64>("reserved")));
        }
        if let (Some(key), true) = (key, expected.allowed) {
            subject.keys.insert((key, metric), (amount, expected));
        }
        Ok(())
    }

    fn check(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("check");
        let amount = self.rng.range(1, 10);
        let sql = format!("SELECT {DECISION} FROM quota.check($1, $2, $3)");
        let row = self.client.query_one(&sql, &[&self.subjects[s].id, &METRICS[metric], &amount]).map_err(db)?;
        let subject = &self.subjects[s];
        compare("check", &subject.check(metric, amount), &decision(&row))?;
        let epoch = subject.epoch(metric);
        let (remaining, reserved) = (subject.remaining(metric, epoch), subject.held(metric, epoch, None));
        if row.get::<_, Option<i64>>("remaining") != remaining || row.get::<_, i64>("reserved") != reserved {
            return fail(format!("check: remaining/reserved {:?}/{} expected {remaining:?}/{reserved}", row.get::<_, Option<i64>>("remaining"), row.get::<_, i64>("reserved")));
        }
        // The other reader: usage() sees carries not made grants yet as well.
        compare_usage(&mut self.client, &self.subjects[s], metric)
    }

    /// consume_many of three or all four metrics: all or nothing, in bytewise metric order; a
    /// retried bundle key replays, the same key with other amounts is 23505.
    fn consume_many(&mut self, s: usize) -> Result<(), Fail> {
        self.count("consume_many");
        let earlier: Vec<String> = self.subjects[s].bundles.keys().cloned().collect();
        let retry = !earlier.is_empty() && self.rng.chance(20);
        let (key, parts) = if retry {
            let key = self.rng.pick(&earlier).clone();
            let mut parts: Vec<(usize, i64)> = self.subjects[s].bundles[&key].iter().map(|(m, a, _)| (*m, *a)).collect();
            if self.rng.chance(30) {
                parts[0].1 += 1;
            }
            (Some(key), parts)
        } else {
            let mut metrics: Vec<usize> = (0..METRICS.len()).collect();
            if !self.rng.chance(40) {
                metrics.remove(self.rng.below(METRICS.len() as u64) as usize);
            }
            let parts = metrics.into_iter().map(|m| (m, self.rng.range(1, 8))).collect();
            (if self.rng.chance(40) { Some(self.new_key()) } else { None }, parts)
        };
        let amounts = serde_json::Value::Object(parts.iter().map(|(m, a)| (METRICS[*m].to_string(), (*a).into())).collect());
        let sql = format!("SELECT metric, {DECISION} FROM quota.consume_many($1, $2::text::jsonb, $3)");
        let result = self.client.query(&sql, &[&self.subjects[s].id, &amounts.to_string(), &key]);
        // Bytewise order of the metric names.
        let mut order: Vec<(usize, i64)> = parts.clone();
        order.sort_by_key(|(m, _)| METRICS[*m]);
        let subject = &mut self.subjects[s];
        if let (true, Some(key)) = (retry, &key) {
            let original = subject.bundles[key].clone();
            let same = original.iter().map(|(m, a, _)| (*m, *a)).collect::<Vec<_>>() == order;
            return match (same, result) {
                (true, Ok(rows)) => {
                    let got: Vec<(String, bool, Expected)> = rows.iter().map(|r| (r.get("metric"), r.get("replayed"), decision(r))).collect();
                    let expected: Vec<(String, bool, Expected)> = original.into_iter().map(|(m, _, e)| (METRICS[m].to_string(), true, e)).collect();
                    if got == expected {
                        Ok(())
                    } else {
                        fail(format!("consume_many retry with key {key}: expected {expected:?}, got {got:?}"))
                    }
                }
                (false, Err(e)) if sqlstate(&e).as_deref() == Some("23505") => Ok(()),
                (same, other) => fail(format!("consume_many retry with key {key} (same bundle: {same}): got {other:?}")),
            };
        }
        let rows = result.map_err(db)?;
        let payments: Vec<Option<Payment>> = order.iter().map(|(m, a)| subject.consume_payment(*m, *a)).collect();
        let all_fit = payments.iter().all(Option::is_some);
        let mut expected = Vec::new();
        for ((metric, amount), payment) in order.iter().zip(payments) {
            let epoch = subject.epoch(*metric);
            let decided = match payment {
                Some(payment) if all_fit => {
                    subject.apply(*metric, epoch, &payment);
                    subject.after_usage(*metric, epoch, payment.expected.counted());
                    subject.take_rate(*metric, *amount);
                    payment.expected
                }
                _ => subject.denial(*metric),
            };
            expected.push((*metric, *amount, decided));
        }
        let got: Vec<(String, Expected)> = rows.iter().map(|r| (r.get("metric"), decision(r))).collect();
        let want: Vec<(String, Expected)> = expected.iter().map(|(m, _, e)| (METRICS[*m].to_string(), e.clone())).collect();
        if got != want {
            return fail(format!("consume_many {amounts}: model expected {want:?}, pg_quota returned {got:?}"));
        }
        if let (Some(key), true) = (key, all_fit) {
            subject.bundles.insert(key, expected);
        }
        Ok(())
    }

    fn record(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("record");
        let amount = self.rng.range(1, 10);
        let key = if self.rng.chance(30) { Some(self.new_key()) } else { None };
        let sql = format!("SELECT {DECISION} FROM quota.record($1, $2, $3, $4)");
        let row = self.client.query_one(&sql, &[&self.subjects[s].id, &METRICS[metric], &amount, &key]).map_err(db)?;
        let subject = &mut self.subjects[s];
        let epoch = subject.epoch(metric);
        let payment = subject.pay(metric, epoch, amount, None, None).ok_or("record must never be denied")?;
        subject.apply(metric, epoch, &payment);
        subject.after_usage(metric, epoch, payment.expected.counted());
        compare("record", &payment.expected, &decision(&row))?;
        if let Some(key) = key {
            subject.keys.insert((key, metric), (amount, payment.expected));
        }
        Ok(())
    }

    /// A record of "archived" into one of the days before today (sometimes a retry of a keyed
    /// record of the setup): refused (22023) into a window compaction closed, whose usage is
    /// folded; counted into any other past day, from its allowance then as overage.
    fn late_record(&mut self, s: usize) -> Result<(), Fail> {
        self.count("late record");
        let (days_ago, amount, key) = match self.subjects[s].archived_keys.clone() {
            keys if !keys.is_empty() && self.rng.chance(25) => {
                let (key, days_ago, amount) = self.rng.pick(&keys).clone();
                (days_ago, amount, Some(key))
            }
            _ => (self.rng.range(1, HISTORY_DAYS), self.rng.range(1, 6), None),
        };
        let hour = self.rng.range(0, 23);
        let sql = format!(
            "SELECT {DECISION} FROM quota.record($1, '{ARCHIVED}', $2, $3, occurred_at => date_trunc('day', now(), $4)
                    - make_interval(hours => 24 * $5 - $6))"
        );
        let args: [&(dyn postgres::types::ToSql + Sync); 6] =
            [&self.subjects[s].id, &amount, &key, &self.day_zone, &(days_ago as i32), &(hour as i32)];
        let result = self.client.query_one(&sql, &args);
        let subject = &mut self.subjects[s];
        match (subject.archived[days_ago as usize], result) {
            (None, Err(e)) if sqlstate(&e).as_deref() == Some("22023") => {
                self.count("late record refused");
                Ok(())
            }
            (None, Ok(row)) => fail(format!("late record into a closed window ({days_ago} days ago) counted: {:?}", decision(&row))),
            (Some(used), Ok(row)) => {
                let limit = ARCHIVED_LIMITS[subject.plan];
                let from_allowance = amount.min((limit - used).max(0));
                let expected = Expected { allowed: true, from_allowance, from_grants: 0, overage: amount - from_allowance, used: used + amount };
                subject.archived[days_ago as usize] = Some(used + amount);
                compare("late record", &expected, &decision(&row))
            }
            (_, Err(e)) => Err(db(e)),
        }
    }

    fn grant(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("grant");
        // Some priorities below the default: carries are still spent first.
        let (amount, priority, expiry) = (self.rng.range(1, 20), self.rng.range(-2, 2) as i32, self.rng.below(3) as usize);
        let id: Uuid = self
            .client
            .query_one(
                "SELECT quota.grant($1, $2, $3, $4::text::timestamptz, $5)",
                &[&self.subjects[s].id, &METRICS[metric], &amount, &EXPIRIES[expiry], &priority],
            )
            .map_err(db)?
            .get(0);
        self.grant_seq += 1;
        let seq = self.grant_seq;
        self.subjects[s].grants.push(Grant { id, metric, remaining: amount, priority, expiry, seq, revoked: false, carry: None });
        self.subjects[s].recover(metric);
        Ok(())
    }

    fn revoke(&mut self, s: usize) -> Result<(), Fail> {
        let grants = &self.subjects[s].grants;
        let open: Vec<usize> = (0..grants.len()).filter(|&i| !grants[i].revoked && grants[i].carry.is_none()).collect();
        if open.is_empty() {
            return Ok(());
        }
        self.count("revoke_grant");
        let g = *self.rng.pick(&open);
        self.client.execute("SELECT quota.revoke_grant($1)", &[&self.subjects[s].grants[g].id]).map_err(db)?;
        self.subjects[s].grants[g].revoked = true;
        Ok(())
    }

    fn reserve(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("reserve");
        let amount = self.rng.range(1, 8);
        let row = self
            .client
            .query_one(
                "SELECT reservation_id, allowed, reserved FROM quota.reserve($1, $2, $3, interval '1 hour')",
                &[&self.subjects[s].id, &METRICS[metric], &amount],
            )
            .map_err(db)?;
        let subject = &mut self.subjects[s];
        let epoch = subject.epoch(metric);
        let allowed = subject.hold_payment(metric, amount).is_some();
        if row.get::<_, bool>("allowed") != allowed {
            return fail(format!("reserve {amount} {}: model says allowed={allowed}, pg_quota {}", METRICS[metric], !allowed));
        }
        if allowed {
            let id: Uuid = row.get("reservation_id");
            subject.holds.push(Hold { id, metric, amount, epoch, open: true });
            subject.take_rate(metric, amount);
            if row.get::<_, i64>("reserved") != subject.held(metric, epoch, None) {
                return fail("reserve: reserved differs from the model's holds");
            }
        }
        Ok(())
    }

    fn pick_hold(&mut self, s: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.subjects[s].holds.len()).filter(|&i| self.subjects[s].holds[i].open).collect();
        (!open.is_empty()).then(|| *self.rng.pick(&open))
    }

    fn settle(&mut self, s: usize) -> Result<(), Fail> {
        let Some(h) = self.pick_hold(s) else { return Ok(()) };
        self.count("settle");
        let hold = self.subjects[s].holds[h].clone();
        let actual = if self.rng.chance(30) { None } else { Some(self.rng.range(1, 12)) };
        let sql = format!("SELECT {DECISION} FROM quota.settle($1, $2)");
        let row = self.client.query_one(&sql, &[&hold.id, &actual]).map_err(db)?;
        let subject = &mut self.subjects[s];
        let amount = actual.unwrap_or(hold.amount);
        let payment = subject.pay(hold.metric, hold.epoch, amount, None, Some(hold.id)).ok_or("settle must never be refused")?;
        subject.apply(hold.metric, hold.epoch, &payment);
        subject.holds[h].open = false;
        subject.after_usage(hold.metric, hold.epoch, payment.expected.counted());
        compare("settle", &payment.expected, &decision(&row))?;
        // Settling again with the same amount replays; with another one is a conflict.
        let again = self.client.query_one(&sql, &[&hold.id, &Some(amount)]).map_err(db)?;
        compare("settle replay", &payment.expected, &decision(&again))
    }

    fn release(&mut self, s: usize) -> Result<(), Fail> {
        let Some(h) = self.pick_hold(s) else { return Ok(()) };
        self.count("release");
        let id = self.subjects[s].holds[h].id;
        self.client.execute("SELECT quota.release($1)", &[&id]).map_err(db)?;
        self.subjects[s].holds[h].open = false;
        let metric = self.subjects[s].holds[h].metric;
        self.subjects[s].recover(metric);
        match self.client.execute("SELECT quota.release($1)", &[&id]) {
            Err(e) if sqlstate(&e).as_deref() == Some("22023") => Ok(()),
            other => fail(format!("release twice: expected 22023, got {other:?}")),
        }
    }

    fn reset(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("reset");
        self.client.execute("SELECT quota.reset($1, $2)", &[&self.subjects[s].id, &METRICS[metric]]).map_err(db)?;
        self.subjects[s].used[metric].push(0);
        self.subjects[s].recover(metric);
        Ok(())
    }

    /// Mostly a plan change: it takes back what is left of the carries, and no window before
    /// it carries any more (so none does during the run). Sometimes the plan the subject has,
    /// which changes nothing.
    fn assign(&mut self, s: usize) -> Result<(), Fail> {
        self.count("assign_plan");
        let same = self.rng.chance(20);
        let plan = if same { self.subjects[s].plan } else { 1 - self.subjects[s].plan };
        self.client.execute("SELECT quota.assign_plan($1, $2)", &[&self.subjects[s].id, &PLANS[plan].0]).map_err(db)?;
        let subject = &mut self.subjects[s];
        if !same {
            subject.grants.iter_mut().filter(|g| g.carry.is_some() && g.remaining > 0).for_each(|carry| carry.revoked = true);
        }
        subject.plan = plan;
        (0..METRICS.len()).for_each(|metric| subject.allowance_changed(metric));
        (0..METRICS.len()).for_each(|metric| subject.recover(metric));
        Ok(())
    }

    fn set_override(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        // A carry not made a grant yet is worked out from the allowance in force, and the model
        // does not follow which call makes it: "daily" keeps its plan's allowance.
        let metric = if metric == DAILY { self.rng.below(DAILY as u64) as usize } else { metric };
        let id = self.subjects[s].id;
        if self.subjects[s].overrides[metric].is_some() && self.rng.chance(40) {
            self.count("clear_override");
            self.client.execute("SELECT quota.clear_override($1, $2)", &[&id, &METRICS[metric]]).map_err(db)?;
            self.subjects[s].overrides[metric] = None;
            self.subjects[s].allowance_changed(metric);
            self.subjects[s].recover(metric);
            return Ok(());
        }
        self.count("set_override");
        let allowance = if self.rng.chance(15) { None } else { Some(self.rng.range(0, 30)) };
        self.client.execute("SELECT quota.set_override($1, $2, $3)", &[&id, &METRICS[metric], &allowance]).map_err(db)?;
        self.subjects[s].overrides[metric] = Some(allowance);
        self.subjects[s].allowance_changed(metric);
        self.subjects[s].recover(metric);
        Ok(())
    }

    /// A transaction that consumes, grants and resets, then rolls back: nothing may stay.
    fn rolled_back(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("rolled back");
        let before = self.subjects[s].clone();
        let (key, amount) = (self.new_key(), self.rng.range(1, 8));
        let id = before.id;
        self.client.batch_execute("BEGIN").map_err(db)?;
        let sql = format!("SELECT {DECISION} FROM quota.consume($1, $2, $3, $4)");
        let row = self.client.query_one(&sql, &[&id, &METRICS[metric], &amount, &key]).map_err(db)?;
        let expected = before.consume_payment(metric, amount).map_or_else(|| before.denial(metric), |p| p.expected);
        compare("consume in a rolled-back transaction", &expected, &decision(&row))?;
        self.client.execute("SELECT quota.grant($1, $2, 100)", &[&id, &METRICS[metric]]).map_err(db)?;
        self.client.execute("SELECT quota.reset($1, $2)", &[&id, &METRICS[metric]]).map_err(db)?;
        self.client.batch_execute("ROLLBACK").map_err(db)?;
        // The key was never committed: the same key is decided afresh, on the old state.
        let check = format!("SELECT {DECISION} FROM quota.check($1, $2, $3)");
        let row = self.client.query_one(&check, &[&id, &METRICS[metric], &amount]).map_err(db)?;
        compare("check after rollback", &before.check(metric, amount), &decision(&row))
    }

    /// A savepoint rolled back inside a committed transaction: only what follows it counts.
    fn savepoint(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("savepoint");
        let id = self.subjects[s].id;
        let (lost, kept) = (self.rng.range(1, 8), self.rng.range(1, 8));
        let sql = format!("SELECT {DECISION} FROM quota.consume($1, $2, $3)");
        self.client.batch_execute("BEGIN; SAVEPOINT s").map_err(db)?;
        self.client.query_one(&sql, &[&id, &METRICS[metric], &lost]).map_err(db)?;
        self.client.batch_execute("ROLLBACK TO SAVEPOINT s").map_err(db)?;
        let row = self.client.query_one(&sql, &[&id, &METRICS[metric], &kept]).map_err(db)?;
        self.client.batch_execute("COMMIT").map_err(db)?;
        let subject = &mut self.subjects[s];
        let epoch = subject.epoch(metric);
        let expected = match subject.consume_payment(metric, kept) {
            Some(payment) => {
                subject.apply(metric, epoch, &payment);
                subject.after_usage(metric, epoch, payment.expected.counted());
                subject.take_rate(metric, kept);
                payment.expected
            }
            None => subject.denial(metric),
        };
        compare("consume after a rolled-back savepoint", &expected, &decision(&row))
    }

    /// The memory-only limiter: sim_a's "tokens" rule decided in shared memory, sometimes in
    /// a transaction that rolls back (what it admitted stays admitted); the rules follow the
    /// subject's plan changes. Without the preload it is SQLSTATE 55000.
    fn memory(&mut self, s: usize, metric: usize) -> Result<(), Fail> {
        self.count("limit_in_memory");
        let (amount, rolled_back) = (self.rng.range(1, 8), self.rng.chance(30));
        let id = self.subjects[s].id;
        if rolled_back {
            self.client.batch_execute("BEGIN").map_err(db)?;
        }
        let result =
            self.client.query_one("SELECT allowed, remaining FROM quota.limit_in_memory($1, $2, $3)", &[&id, &METRICS[metric], &amount]);
        if rolled_back {
            self.client.batch_execute("ROLLBACK").map_err(db)?;
        }
        if !self.preloaded {
            return match result {
                Err(e) if sqlstate(&e).as_deref() == Some("55000") => Ok(()),
                other => fail(format!("limit_in_memory without the preload: expected 55000, got {other:?}")),
            };
        }
        let row = result.map_err(db)?;
        let subject = &mut self.subjects[s];
        let expected = if subject.rate_limited_metric(metric) {
            let admitted = subject.memory_taken + amount <= RATE_BURST;
            if admitted {
                subject.memory_taken += amount;
            }
            (admitted, Some(if admitted { RATE_BURST - subject.memory_taken } else { 0 }))
        } else {
            (true, None)
        };
        let got = (row.get::<_, bool>("allowed"), row.get::<_, Option<i64>>("remaining"));
        if got == expected {
            Ok(())
        } else {
            fail(format!("limit_in_memory {amount} {}: model expected {expected:?}, pg_quota returned {got:?}", METRICS[metric]))
        }
    }

    /// Compaction within its retention: everything the simulation wrote is younger than an
    /// hour, so quota.compact folds no row and closes no window; the model is unchanged, and
    /// every later decision (keyed replays included) must still match it.
    fn compact(&mut self) -> Result<(), Fail> {
        self.count("compact");
        let row = self
            .client
            .query_one("SELECT events_folded, windows_closed FROM quota.compact('1 hour', 100)", &[])
            .map_err(db)?;
        let (folded, closed): (i64, i64) = (row.get(0), row.get(1));
        if folded != 0 || closed != 0 {
            return fail(format!("compact within the retention folded {folded} rows and closed {closed} windows"));
        }
        Ok(())
    }

    fn bad_input(&mut self, s: usize) -> Result<(), Fail> {
        self.count("bad input");
        let id = self.subjects[s].id;
        let cases: [(&str, i64, &str); 4] =
            [("calls", 0, "22023"), ("calls", -5, "22023"), ("no_such_metric", 1, "42704"), ("Bad Name", 1, "22023")];
        let (metric, amount, state) = *self.rng.pick(&cases);
        match self.client.query_one("SELECT allowed FROM quota.consume($1, $2, $3)", &[&id, &metric, &amount]) {
            Err(e) if sqlstate(&e).as_deref() == Some(state) => Ok(()),
            other => fail(format!("consume({metric}, {amount}): expected SQLSTATE {state}, got {other:?}")),
        }
    }

    /// Shared subjects: every connection at once; only what is acknowledged is remembered.
    fn shared_step(&mut self) -> Result<(), Fail> {
        let subject = *self.rng.pick(&self.shared);
        let amount = self.rng.range(1, 5);
        // Configuration changes race with every connection's consumes of the same subject
        // (in 0.5.0 a reset in flight could leave two windows marked for the fast path).
        let change = match self.rng.below(40) {
            0 => Some(("shared reset", "SELECT quota.reset($1, 'calls')".to_string())),
            1 => Some(("shared set_override", format!("SELECT quota.set_override($1, 'calls', {})", 10 * amount))),
            2 => Some(("shared clear_override", "SELECT quota.clear_override($1, 'calls')".to_string())),
            3 => Some(("shared assign_plan", format!("SELECT quota.assign_plan($1, '{}')", PLANS[(amount % 2) as usize].0))),
            _ => None,
        };
        if let Some((what, sql)) = change {
            self.count(what);
            self.client.execute(sql.as_str(), &[&subject]).map_err(db)?;
            return Ok(());
        }
        let (kind, sql) = match self.rng.below(10) {
            0 => {
                self.count("shared grant");
                self.client.execute("SELECT quota.grant($1, 'calls', $2)", &[&subject, &amount]).map_err(db)?;
                self.granted_shared += amount;
                return Ok(());
            }
            1 => ("record", "SELECT event_id, from_allowance, from_grants, overage, allowed FROM quota.record($1, 'calls', $2)"),
            _ => ("consume", "SELECT event_id, from_allowance, from_grants, overage, allowed FROM quota.consume($1, 'calls', $2)"),
        };
        self.count(if kind == "record" { "shared record" } else { "shared consume" });
        let row = self.client.query_one(sql, &[&subject, &amount]).map_err(db)?;
        let kind = if row.get::<_, bool>("allowed") { kind } else { "denial" };
        match row.get::<_, Option<i64>>(0) {
            Some(event_id) => self.acknowledged.push((event_id, row.get(1), row.get(2), row.get(3), kind)),
            None if kind == "consume" && row.get::<_, i64>(1) == amount => self.counted_without_ledger += amount,
            None => return fail(format!("shared {kind} of {amount} answered without a ledger row, from_allowance {}", row.get::<_, i64>(1))),
        }
        Ok(())
    }
}

/// A time zone (a fixed offset: no daylight saving) where it is about noon now: "daily"'s
/// days, today and the ones before it, stay the same during a run whatever the time of day
/// it starts (a run at UTC midnight would otherwise see a day pass).
fn day_zone(client: &mut Client) -> Result<String, Fail> {
    let utc_hour: i32 = client.query_one("SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int4", &[]).map_err(db)?.get(0);
    // POSIX signs: Etc/GMT-5 is 5 hours ahead of UTC.
    Ok(match 12 - utc_hour {
        0 => "Etc/GMT".to_string(),
        ahead if ahead > 0 => format!("Etc/GMT-{ahead}"),
        behind => format!("Etc/GMT+{}", -behind),
    })
}

/// Creates the plans and assigns the shared subjects; returns "daily"'s time zone.
fn setup(dbname: &str, shared: &[Uuid]) -> Result<String, Fail> {
    let mut client = fresh_database(dbname).map_err(db)?;
    let zone = day_zone(&mut client)?;
    for (index, (plan, limits)) in PLANS.iter().enumerate() {
        let mut json = serde_json::Map::new();
        for (metric, limit) in METRICS.iter().zip(limits) {
            if let Some(limit) = limit {
                let per = match *metric {
                    "tokens" => "year",
                    "daily" => "day",
                    _ => "lifetime",
                };
                let mut spec = serde_json::json!({"limit": limit, "per": per});
                if *metric == "daily" {
                    spec["time_zone"] = serde_json::json!(zone);
                }
                if index == 0 && *metric == "daily" {
                    spec["rollover"] = serde_json::json!({"max": ROLLOVER_MAX, "expires_after": ROLLOVER_DAYS});
                }
                if index == 0 && *metric == "tokens" {
                    spec["rate"] = serde_json::json!([{"limit": 1, "per": "7 days", "burst": RATE_BURST}]);
                }
                if index == 1 && *metric == "tokens" {
                    spec["overage"] = serde_json::json!({"max": SOFT_OVERAGE_MAX});
                }
                if index == 0 && *metric == "calls" {
                    spec["alerts"] = serde_json::json!(ALERT_RULES);
                }
                if index == 1 && *metric == "calls" {
                    spec["ledger"] = serde_json::json!("counters");
                }
                json.insert(metric.to_string(), spec);
            }
        }
        json.insert(SEATS.to_string(), serde_json::json!({"limit": SEATS_LIMITS[index], "per": "lifetime"}));
        json.insert(CHANGES.to_string(), serde_json::json!({"limit": CHANGES_LIMITS[index], "per": "year"}));
        json.insert(ARCHIVED.to_string(), serde_json::json!({"limit": ARCHIVED_LIMITS[index], "per": "day", "time_zone": zone}));
        client
            .execute("SELECT quota.create_plan($1, $2, $3)", &[plan, &serde_json::Value::Object(json), &(index == 0)])
            .map_err(db)?;
    }
    for subject in shared {
        client.execute("SELECT quota.assign_plan($1, 'sim_a')", &[subject]).map_err(db)?;
    }
    let pool_plan = serde_json::json!({"calls": {"limit": POOL_PLAN.1, "per": "lifetime"}});
    client.execute("SELECT quota.create_plan($1, $2)", &[&POOL_PLAN.0, &pool_plan]).map_err(db)?;
    enforce::setup_table(&mut client)?;
    Ok(zone)
}

/// usage() of a metric against the model: the current window's usage and holds, what is
/// left, the grants apart from the carries, and the carries (made grants or not yet).
fn compare_usage(client: &mut Client, subject: &Subject, metric: usize) -> Result<(), Fail> {
    let name = METRICS[metric];
    let sql = "SELECT used, reserved, remaining, grants_remaining, rollover_remaining FROM quota.usage($1) WHERE metric = $2";
    let Some(row) = client.query_opt(sql, &[&subject.id, &name]).map_err(db)? else {
        let in_plan = PLANS[subject.plan].1[metric].is_some();
        return if in_plan { fail(format!("{} {name}: missing from quota.usage()", subject.id)) } else { Ok(()) };
    };
    let epoch = subject.epoch(metric);
    let carries = subject.carries_left(metric);
    let expected =
        (subject.used[metric][epoch], subject.held(metric, epoch, None), subject.remaining(metric, epoch), (subject.grants_usable(metric, epoch) - carries).max(0), carries);
    let got: (i64, i64, Option<i64>, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if got != expected {
        return fail(format!(
            "{} {name}: usage() used, reserved, remaining, grants_remaining, rollover_remaining {got:?}, model {expected:?}",
            subject.id
        ));
    }
    Ok(())
}

/// "archived"'s days before today against the model: a counter for each open day that counted
/// something, with its usage, none for a closed day (no closed window was counted again), and
/// closed rollups for each closed day.
fn verify_archived(client: &mut Client, subject: &Subject) -> Result<(), Fail> {
    let mut used: Vec<i64> = client
        .query(&format!("SELECT used::int8 FROM quota.counters WHERE subject = $1 AND metric = '{ARCHIVED}'"), &[&subject.id])
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    used.sort();
    let mut expected: Vec<i64> = subject.archived[1..].iter().flatten().copied().filter(|&used| used > 0).collect();
    expected.sort();
    let closed: i64 = client
        .query_one(
            &format!("SELECT count(DISTINCT window_start) FROM quota.ledger_rollups WHERE counted_in = $1 AND metric = '{ARCHIVED}' AND window_closed"),
            &[&subject.id],
        )
        .map_err(db)?
        .get(0);
    let expected_closed = subject.archived[1..].iter().filter(|day| day.is_none()).count() as i64;
    if used != expected || closed != expected_closed {
        return fail(format!(
            "{} {ARCHIVED}: open windows' usage {used:?} and {closed} closed, model {expected:?} and {expected_closed} closed",
            subject.id
        ));
    }
    Ok(())
}

/// The subject's carries that calls made grants, against the model's: each made once, of the
/// amount the model worked out, living until the end of its last day, with what the model has
/// left of it, taken back when the model's was. One no call made is one nothing was spent from.
fn verify_carries(client: &mut Client, subject: &Subject, day_zone: &str) -> Result<(), Fail> {
    let rows = client
        .query(
            "SELECT extract(epoch FROM date_trunc('day', now(), $2) - rollover_of)::int8 / 86400 AS days_ago,
                    extract(epoch FROM expires_at - date_trunc('day', now(), $2))::int8 / 86400 AS lives_days,
                    amount, remaining, revoked_at IS NOT NULL AS revoked, reason
               FROM quota.grants WHERE subject = $1 AND rollover_of IS NOT NULL",
            &[&subject.id, &day_zone],
        )
        .map_err(db)?;
    let made: Vec<(i64, i64, i64, i64, bool, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    let modelled: Vec<(&Grant, Carry)> = subject.grants.iter().filter_map(|g| g.carry.map(|carry| (g, carry))).collect();
    for (days_ago, ..) in &made {
        if !modelled.iter().any(|(_, carry)| carry.days_ago == *days_ago) || made.iter().filter(|m| m.0 == *days_ago).count() > 1 {
            return fail(format!("{}: carries made {made:?}, the model has {modelled:?}", subject.id));
        }
    }
    for (grant, carry) in modelled {
        let expected_row = (carry.days_ago, ROLLOVER_DAYS - carry.days_ago + 1, carry.amount, grant.remaining, grant.revoked, "rollover".to_string());
        let faithful = match made.iter().find(|m| m.0 == carry.days_ago) {
            Some(row) => *row == expected_row,
            None => grant.remaining == carry.amount,
        };
        if !faithful {
            return fail(format!("{}: carry out of {} days ago: made {made:?}, model {expected_row:?}", subject.id, carry.days_ago));
        }
    }
    Ok(())
}

/// The audit trail of administration: one row per administrative call that committed (the
/// setup's plans and shared assignments, every worker's), none for a rolled-back one.
fn verify_admin_changes(client: &mut Client, workers: &[Worker], shared: &[Uuid]) -> Result<(), Fail> {
    let mut expected: HashMap<&str, u64> = HashMap::from([("create_plan", PLANS.len() as u64 + 1), ("assign_plan", shared.len() as u64)]);
    for worker in workers {
        for (op, count) in &worker.counts {
            let action = op.strip_prefix("shared ").unwrap_or(op);
            let pools = ["join_pool", "leave_pool", "set_pool_cap", "clear_pool_cap", "allocate", "revoke_allocation"];
            if ["grant", "revoke_grant", "reset", "assign_plan", "set_override", "clear_override"].contains(&action) || pools.contains(&action) {
                *expected.entry(action).or_default() += count;
            }
        }
    }
    let recorded: HashMap<String, u64> = client
        .query("SELECT action, count(*)::int8 FROM quota.admin_changes GROUP BY action", &[])
        .map_err(db)?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
        .collect();
    let expected: HashMap<String, u64> = expected.into_iter().filter(|(_, n)| *n > 0).map(|(a, n)| (a.to_string(), n)).collect();
    if recorded != expected {
        return fail(format!("quota.admin_changes: recorded {recorded:?}, the model made {expected:?}"));
    }
    Ok(())
}

/// Invariants over the whole database, and the owned subjects against the model.
fn verify(client: &mut Client, workers: &[Worker], shared: &[Uuid]) -> Result<(), Fail> {
    verify_admin_changes(client, workers, shared)?;
    let mismatches = client.query("SELECT subject, metric, item, stored::text, from_ledger::text FROM quota.audit()", &[]).map_err(db)?;
    if let Some(row) = mismatches.first() {
        let (subject, metric, item): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
        return fail(format!("quota.audit(): {} mismatches, first {subject} {metric} {item}", mismatches.len()));
    }
    // Only sim_b's "calls" keeps no row for its fast-path consumes (a subject may have moved
    // to sim_a since); audit() above checked every counter against its ledger plus that.
    let elsewhere: i64 = client
        .query_one(
            "SELECT count(*) FROM quota.counters WHERE counted_without_ledger > 0 AND metric <> 'calls'",
            &[],
        )
        .map_err(db)?
        .get(0);
    if elsewhere > 0 {
        return fail(format!("{elsewhere} windows counted without ledger rows of metrics other than \"calls\""));
    }
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT FROM quota.events WHERE idempotency_key IS NOT NULL AND kind IN ('consume', 'record')
              GROUP BY subject, idempotency_key, metric HAVING count(*) > 1) AS t",
            &[],
        )
        .map_err(db)?
        .get(0);
    if twice > 0 {
        return fail(format!("{twice} idempotency keys charged more than once"));
    }
    for worker in workers {
        worker.pool.verify(client)?;
        worker.verify_enforced(client)?;
        for subject in &worker.subjects {
            verify_carries(client, subject, &worker.day_zone)?;
            verify_archived(client, subject)?;
            for (metric, name) in METRICS.iter().enumerate() {
                compare_usage(client, subject, metric)?;
                let keys = client
                    .query("SELECT idempotency_key, amount FROM quota.events WHERE subject = $1 AND metric = $2 AND idempotency_key IS NOT NULL AND kind IN ('consume', 'record')", &[&subject.id, name])
                    .map_err(db)?;
                let bundled = subject.bundles.values().flatten().filter(|(m, _, _)| *m == metric).count();
                let expected_keys = subject.keys.keys().filter(|(_, m)| *m == metric).count() + bundled;
                if keys.len() != expected_keys {
                    return fail(format!("{} {name}: {} keys in the ledger, model {expected_keys}", subject.id, keys.len()));
                }
            }
            // Usage alerts: exactly the ones the model fired, in the order it fired them.
            let alerts: Vec<(String, String, i64, Option<i64>)> = client
                .query("SELECT metric, rule, used, remaining FROM quota.alerts WHERE subject = $1 ORDER BY alert_id", &[&subject.id])
                .map_err(db)?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            let fired: Vec<(String, String, i64, Option<i64>)> =
                subject.alerts.iter().map(|(m, rule, used, remaining)| (METRICS[*m].to_string(), rule.to_string(), *used, *remaining)).collect();
            if alerts != fired {
                return fail(format!("{}: quota.alerts {alerts:?}, the model fired {fired:?}", subject.id));
            }
            for grant in subject.grants.iter().filter(|g| g.carry.is_none()) {
                let remaining: i64 =
                    client.query_one("SELECT remaining FROM quota.grants WHERE grant_id = $1", &[&grant.id]).map_err(db)?.get(0);
                if remaining != grant.remaining {
                    return fail(format!("grant {}: remaining {remaining}, model {}", grant.id, grant.remaining));
                }
            }
        }
    }
    // Shared subjects: every acknowledged call is in the ledger as it was answered, and
    // nothing else is; the allowance was never exceeded; grants paid no more than given.
    let mut acknowledged: Vec<(i64, i64, i64, i64, &str)> = workers.iter().flat_map(|w| w.acknowledged.iter().cloned()).collect();
    acknowledged.sort();
    let ledger: Vec<(i64, i64, i64, i64, String)> = client
        .query(
            "SELECT event_id, from_allowance, from_grants, overage, kind FROM quota.events
              WHERE subject = ANY($1) AND kind IN ('consume', 'record', 'denial') ORDER BY event_id",
            &[&shared],
        )
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let ledger_view: Vec<(i64, i64, i64, i64, &str)> = ledger.iter().map(|(a, b, c, d, k)| (*a, *b, *c, *d, k.as_str())).collect();
    if ledger_view != acknowledged {
        return fail(format!("shared subjects: {} acknowledged calls, {} ledger rows, or they differ", acknowledged.len(), ledger.len()));
    }
    let marked_twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT FROM quota.counters WHERE fast GROUP BY subject, metric HAVING count(*) > 1) AS t",
            &[],
        )
        .map_err(db)?
        .get(0);
    if marked_twice > 0 {
        return fail(format!("{marked_twice} (subject, metric) pairs with more than one window marked for the fast path"));
    }
    // The bound on a window's holds' expiry that calls under its lock trust: no hold the
    // counter counts expires before it.
    let bound_too_late: i64 = client
        .query_one(
            "SELECT count(*) FROM quota.counters AS c
              WHERE c.holds_expire_at > (SELECT min(r.expires_at) FROM quota.reservations AS r
                                          WHERE r.subject = c.subject AND r.metric = c.metric
                                            AND r.window_start = c.window_start AND r.status = 'held')",
            &[],
        )
        .map_err(db)?
        .get(0);
    if bound_too_late > 0 {
        return fail(format!("{bound_too_late} counters whose bound on their holds' expiry is later than a hold they count"));
    }
    for subject in shared {
        // Resets, overrides and plan changes move the allowance: no consume that took from
        // the allowance left its window above the allowance it decided with.
        let past: i64 = client
            .query_one(
                "SELECT count(*) FROM quota.events WHERE subject = $1 AND kind = 'consume' AND from_allowance > 0
                    AND allowance IS NOT NULL AND used > allowance",
                &[subject],
            )
            .map_err(db)?
            .get(0);
        if past > 0 {
            return fail(format!("shared subject {subject}: {past} consumes left their window above its allowance"));
        }
        let from_grants: i64 = client
            .query_one(
                "SELECT coalesce(sum(from_grants), 0)::int8 FROM quota.events WHERE subject = $1 AND kind IN ('consume', 'record')",
                &[subject],
            )
            .map_err(db)?
            .get(0);
        let granted: i64 = client
            .query_one("SELECT coalesce(sum(amount), 0)::int8 FROM quota.grants WHERE subject = $1", &[subject])
            .map_err(db)?
            .get(0);
        if from_grants > granted {
            return fail(format!("shared subject {subject}: grants paid {from_grants} of {granted} given"));
        }
    }
    let without_rows: i64 = workers.iter().map(|w| w.counted_without_ledger).sum();
    let counted_so: i64 = client
        .query_one(
            "SELECT coalesce(sum(counted_without_ledger), 0)::int8 FROM quota.counters WHERE subject = ANY($1)",
            &[&shared],
        )
        .map_err(db)?
        .get(0);
    if without_rows != counted_so {
        return fail(format!("shared subjects: {without_rows} units acknowledged without ledger rows, counters say {counted_so}"));
    }
    let given: i64 = workers.iter().map(|w| w.granted_shared).sum();
    let granted: i64 =
        client.query_one("SELECT coalesce(sum(amount), 0)::int8 FROM quota.grants WHERE subject = ANY($1)", &[&shared]).map_err(db)?.get(0);
    if given != granted {
        return fail(format!("shared subjects: {given} granted by the workers, {granted} in quota.grants"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed = seed_from(arg(&args, "--seed"));
    let ops: u64 = arg(&args, "--ops").and_then(|v| v.parse().ok()).unwrap_or(2000);
    let connections: usize = arg(&args, "--connections").and_then(|v| v.parse().ok()).unwrap_or(4);
    let dbname = arg(&args, "--db").unwrap_or_else(|| "pgq_simulate".into());
    println!("simulate: seed={seed} ops={ops} per connection, connections={connections}");
    let reproduce = format!("simulate --seed {seed} --ops {ops} --connections {connections} --db {dbname}");
    let started = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let shared: Vec<Uuid> = (0..SHARED_SUBJECTS).map(|_| rng.uuid()).collect();
    let setups_done = std::sync::Arc::new(std::sync::Barrier::new(connections));
    let outcome = setup(&dbname, &shared).and_then(|day_zone| {
        let handles: Vec<_> = (0..connections)
            .map(|index| {
                // Each connection's generator is seeded from the run's: independent streams.
                let mut rng = Rng::new(rng.next_u64());
                let subjects: Vec<Subject> = (0..4).map(|_| Subject::new(rng.uuid())).collect();
                let pool = PoolModel::new(rng.uuid(), [rng.uuid(), rng.uuid()]);
                let (shared, dbname, day_zone, setups_done) = (shared.clone(), dbname.clone(), day_zone.clone(), setups_done.clone());
                thread::spawn(move || -> Result<Worker, Fail> {
                    let mut client = connect(&dbname).map_err(db)?;
                    let preloaded = client.query_one("SELECT quota.preloaded()", &[]).map_err(db)?.get(0);
                    let mut worker = Worker {
                        index,
                        rng,
                        client,
                        subjects,
                        shared,
                        grant_seq: 0,
                        key_seq: 0,
                        counts: HashMap::new(),
                        acknowledged: Vec::new(),
                        counted_without_ledger: 0,
                        granted_shared: 0,
                        trace: Vec::new(),
                        preloaded,
                        pool,
                        enforced: EnforceModel::default(),
                        day_zone,
                    };
                    // Every connection's setup is done before any operation: the setups'
                    // compactions would fold what no operation expects folded.
                    let ready = worker.setup_pool().and_then(|()| worker.setup_rollover()).and_then(|()| worker.setup_archive());
                    setups_done.wait();
                    ready?;
                    for op in 0..ops {
                        worker.step().map_err(|e| {
                            let last = &worker.trace[worker.trace.len().saturating_sub(24)..];
                            format!("connection {index}, operation {op}: {e}\n  last operations: {last:?}")
                        })?;
                    }
                    Ok(worker)
                })
            })
            .collect();
        let workers: Vec<Worker> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a connection thread panicked".into())))
            .collect::<Result<_, _>>()?;
        let mut client = connect(&dbname).map_err(db)?;
        verify(&mut client, &workers, &shared)?;
        Ok(workers)
    });
    match outcome {
        Ok(workers) => {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for worker in &workers {
                for (kind, n) in &worker.counts {
                    *counts.entry(kind).or_default() += n;
                }
            }
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort();
            let detail: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "simulate: ok, seed={seed}, {} operations over {connections} connections in {:.1}s, model agrees, invariants hold [{}]",
                ops * connections as u64,
                started.elapsed().as_secs_f64(),
                detail.join(", ")
            );
        }
        Err(why) => {
            eprintln!("simulate: {why}");
            eprintln!("simulate: FAILED seed={seed} (reproduce: {reproduce})");
            std::process::exit(1);
        }
    }
}
