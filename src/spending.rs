//! Spending: consume, check, record, record_batch and give_back, and how a call is paid:
//! the allowance first, then grants, then overage (record, settle, and consume under a soft
//! limit, up to its ceiling). Reservations pay through
//! `pay` too (src/reservations.rs); consume tries the fast path first (src/fast_path.rs); a
//! pool pays what a member's own means do not cover (src/pools.rs).
//!
//! Every function is SECURITY DEFINER with a pinned search_path, and EXECUTE is revoked
//! from PUBLIC (sql/privileges.sql): granting EXECUTE is the one gate to these functions.
//! Arguments are `Option` so that PostgreSQL does not declare the functions STRICT: a NULL
//! argument must raise, not silently return NULL.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::batch::parse_batch;
use quota_rules::decide::{after_holds, ceiling, remaining, set_aside_from_grants, split_within, Ceiling, Decision, Overage, Reason, Split, Standing};
use quota_rules::governing::Governing;
use quota_rules::plan::validate_metric;
use quota_rules::request::{self, replay, validate_idempotency_key, EventKind, Mode};
use quota_rules::window::{Micros, Window};

use crate::alerts::{self, Alerting};
use crate::error::{positive_amount, required, sql_call, QResult, QuotaError};
use crate::fast_path;
use crate::pools;
use crate::jsonb::Jsonb;
use crate::rates::{self, RateCheck, StateRows};
use crate::store::counters::{self, CounterKey, GrantBalance};
use crate::store::ledger::{self, EventRow};
use crate::store::reservations::{self, Reservation};
use crate::store::rollover;
use crate::store::schema::{self, Part};
use crate::store::{statement_now, to_micros, transaction_now};
use crate::tuples::{decision_tuple, DecisionTuple};

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn consume(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
    idempotency_key: default!(Option<&str>, "NULL"),
    metadata: default!(Option<Jsonb>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount, None)?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let decision = Spi::connect(|client| spend(client, &request, Mode::Consume, key, metadata))?;
        decision_tuple(&decision)
    })
}

/// consume's decision for a caller inside the extension (the enforce trigger): no key, no
/// metadata.
pub fn consume_units(client: &SpiClient, subject: Uuid, metric: &str, amount: i64) -> QResult<Decision> {
    let request = Request::new(Some(subject), Some(metric), Some(amount), None)?;
    spend(client, &request, Mode::Consume, None, None)
}

/// Whether consume would allow `amount` now, and the window as it is now (used, reserved,
/// remaining before the call; consume reports them after). Writes nothing, not even the
/// default plan assignment.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn check(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount, None)?;
        let decision = Spi::connect(|client| what_consume_would_decide(client, &request))?;
        decision_tuple(&decision)
    })
}

/// Usage that already happened: never denies, counts into the window that contains
/// `occurred_at`; beyond allowance and grants it is overage.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: Option<i64>,
    idempotency_key: default!(Option<&str>, "NULL"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "pg_catalog.now()"),
    metadata: default!(Option<Jsonb>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let occurred_at = to_micros(required(occurred_at, "occurred_at")?, "occurred_at")?;
        let request = Request::new(subject, metric, amount, Some(occurred_at))?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let decision = Spi::connect(|client| spend(client, &request, Mode::Record, key, metadata))?;
        decision_tuple(&decision)
    })
}

/// Many records in one call, all or nothing; each is idempotent on its own key.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_batch(
    events: Option<Jsonb>,
) -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.decision")>, ErrorReport> {
    sql_call(|| {
        let events = parse_batch(&required(events, "events")?.text()?)?;
        // Every event is validated before the first one is written.
        let requests = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let subject = Uuid::from_bytes(*event.subject.as_bytes());
                let key = event.idempotency_key.as_deref().map(validate_idempotency_key).transpose();
                Request::new(Some(subject), Some(&event.metric), Some(event.amount), event.occurred_at)
                    .and_then(|request| Ok((request, key?)))
                    .map_err(|error| error.in_context(&format!("events[{index}]")))
            })
            .collect::<QResult<Vec<_>>>()?;
        // Each event in an SPI connection of its own: what it allocates in PostgreSQL memory
        // (its metadata, statement parameters and results) is freed before the next one, so
        // memory stays flat in the number of events. Kept statements survive the connection.
        let decisions = requests
            .iter()
            .zip(&events)
            .enumerate()
            .map(|(index, ((request, key), event))| {
                Spi::connect(|client| {
                    let metadata = event.metadata.as_deref().map(|raw| Jsonb::from_text(raw.get())).transpose()?;
                    spend(client, request, Mode::Record, *key, metadata)
                })
                .map_err(|error| error.in_context(&format!("events[{index}]")))
            })
            .collect::<QResult<Vec<_>>>()?;
        let tuples = decisions.iter().map(decision_tuple).collect::<QResult<Vec<DecisionTuple>>>()?;
        Ok(SetOfIterator::new(tuples))
    })
}

/// Gives units back to the subject's current window (a deleted project frees its slot):
/// the window's usage drops by `amount`, never below zero. Grants are not refilled.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn give_back(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount, None)?;
        let decision = Spi::connect(|client| give_back_units(client, &request))?;
        decision_tuple(&decision)
    })
}

/// A validated request, decided at the transaction's start instant `now`; usage counts
/// into the window that contains `at` (now, except for records of the past). Rate rules
/// decide at `instant`, the statement's start.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub amount: i64,
    pub now: Micros,
    pub at: Micros,
    pub instant: Micros,
}

impl<'a> Request<'a> {
    pub fn new(subject: Option<Uuid>, metric: Option<&'a str>, amount: Option<i64>, occurred_at: Option<Micros>) -> QResult<Self> {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        validate_metric(metric)?;
        let amount = positive_amount(amount)?;
        let now = transaction_now()?;
        let at = request::usage_instant(occurred_at, now)?;
        Ok(Request { subject, metric, amount, now, at, instant: statement_now()? })
    }

    pub fn decision(&self, paid: Option<&Split>, standing: Standing, allowance: Option<i64>, window: Window) -> Decision {
        Decision::new(self.metric, self.amount, paid, standing, allowance, window)
    }

    /// The denial of a subject that has no plan (and there is no default plan).
    pub fn no_plan(&self, grants_left: i64, window: Window) -> Decision {
        let standing = Standing { used: 0, reserved: 0, grants_left };
        Decision { reason: Reason::NoPlan, ..self.decision(None, standing, Some(0), window) }
    }

    /// The counter of this request's (subject, metric) in `window`.
    pub fn counter(&self, window: Window) -> CounterKey<'a> {
        CounterKey { subject: self.subject, metric: self.metric, window }
    }
}

/// How a call was paid (None = denied), with the grants it takes: (grant, amount taken).
pub struct Paid {
    pub split: Option<Split>,
    pub grants_taken: Vec<(Uuid, i64)>,
    pub standing: Standing,
}

impl Paid {
    fn denied(standing: Standing) -> Paid {
        Paid { split: None, grants_taken: Vec::new(), standing }
    }
}

/// consume and record: decide, pay, and write the ledger row.
fn spend(client: &SpiClient, request: &Request, mode: Mode, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Decision> {
    if let Some(key) = key {
        // A consume holds its key's lock until it commits, so that a concurrent retry waits
        // and replays its decision. A record takes none (a batch would need one lock per
        // event): the ledger's unique index makes a concurrent retry wait at its ledger row
        // instead, and it then undoes its count and replays (the end of this function).
        if mode == Mode::Consume {
            ledger::lock_idempotency_key(client, request.subject, request.metric, key)?;
        }
        if let Some(original) = ledger::find_replay(client, request.subject, request.metric, key)? {
            return Ok(replay(original, request.metric, request.amount, key)?);
        }
    }
    // The fast statements read `ledger_rows` (0.12.0) and `holds_expire_at` (0.15.0).
    let fast_path = mode == Mode::Consume && schema::has(client, Part::HoldsBound)?;
    let mut marked = false;
    // A pool's member is decided on its draws (src/pools/mod.rs), others on their window:
    // a member this backend knows goes to its draws at once (their denial too); after a miss
    // on the window, a metric some pool pays for tries the draws before the window's denial
    // is read.
    if fast_path && pools::hinted(request.subject) {
        if let Some(decision) = pools::fast_consume(client, request, key, metadata)? {
            return Ok(decision);
        }
        if let Some(decision) = pools::fast_denial(client, request, key, metadata)? {
            return Ok(decision);
        }
    } else if fast_path {
        if let Some(decision) = fast_path::take(client, request, key, metadata)? {
            return Ok(decision);
        }
        if pools::metric_hinted(request.metric) {
            if let Some(decision) = pools::fast_consume(client, request, key, metadata)? {
                return Ok(decision);
            }
        }
        match fast_path::after_miss(client, request, key, metadata)? {
            fast_path::Outcome::Decided(decision) => return Ok(decision),
            fast_path::Outcome::Denied { decision, window } => {
                return write_event(client, Entry { key, metadata, ..Entry::new(request.subject, mode, window) }, decision);
            }
            fast_path::Outcome::SlowPath => {}
            fast_path::Outcome::SlowPathMarked => marked = true,
        }
    }
    let mut governing = governing_with_assignment(client, request)?;
    let membership = pools::membership(client, request, true)?;
    if fast_path && !marked {
        governing = fast_path::mark_if_it_can_decide(client, request, governing, membership.is_member())?;
    }
    let pool = membership.call();
    if let Some(call) = &pool {
        pools::lock_member(client, request, call)?;
    }
    if fast_path {
        pools::remember(request.subject, request.metric, pool.is_some());
    }
    let window = governing.counting_window(request.at)?;
    let allowance = governing.allowance();
    // Records are usage that already happened: rate rules do not apply to them.
    let rules = if mode == Mode::Consume { &governing.rates[..] } else { &[] };
    let rate = rates::decide(client, request, rules, StateRows::Lock)?;
    if !rate.admitted() {
        let decision = rate_limited(client, request, &governing, window, &rate)?;
        return write_event(client, Entry { key, metadata, ..Entry::new(request.subject, mode, window) }, decision);
    }
    let paid = match (&pool, &governing.plan) {
        // A member's own means pay only an amount they cover in full; else its pool pays.
        // Without allowance or grants of its own they cannot (its holds could only take).
        (Some(_), _) if allowance == Some(0) && governing.grants_left == 0 => Paid::denied(Standing { used: 0, reserved: 0, grants_left: 0 }),
        (Some(_), _) => pay(client, request, Mode::Consume, overage_of(Mode::Consume, &governing, true), &governing, window, allowance, None)?,
        // Without a plan consume is denied outright; record still counts (as overage).
        (None, None) if mode == Mode::Consume => Paid::denied(Standing { used: 0, reserved: 0, grants_left: governing.grants_left }),
        (None, _) => pay(client, request, mode, overage_of(mode, &governing, false), &governing, window, allowance, None)?,
    };
    let pooled = pool.is_some();
    if let (Some(pool), None) = (pool, &paid.split) {
        if fast_path {
            pools::mark_if_it_can_decide(client, request, &governing, &pool)?;
        }
        return pools::spend_from_pool(client, request, mode, pool, &rate, key, metadata);
    }
    if paid.split.is_some() {
        rate.commit(client, request)?;
    }
    let decision = request.decision(paid.split.as_ref(), paid.standing, allowance, window);
    let decision = match (&governing.plan, pooled) {
        (None, false) => Decision { reason: Reason::NoPlan, ..decision },
        _ => decision,
    };
    let alerting = Some(Alerting::own(request.subject, &governing));
    let entry = Entry { grants_taken: &paid.grants_taken, key, metadata, alerting, ..Entry::new(request.subject, mode, window) };
    if let Some(written) = try_write_event(client, entry, decision)? {
        return Ok(written);
    }
    // A concurrent record with the same key committed first: undo this one's count (its
    // grants were not spent yet) and answer with that call's decision.
    let counted = paid.split.as_ref().map_or(0, Split::counted);
    if counted != 0 {
        counters::adjust_counter(client, request.counter(window), -counted, 0)?;
    }
    replay_the_key_holder(client, request, key)
}

/// The decision of the call that committed this request's key first, after this one's
/// ledger row conflicted with it and its count was undone.
pub fn replay_the_key_holder(client: &SpiClient, request: &Request, key: Option<&str>) -> QResult<Decision> {
    let key = key.ok_or_else(|| QuotaError::internal("a ledger row without a key conflicted"))?;
    let original = ledger::find_replay(client, request.subject, request.metric, key)?
        .ok_or_else(|| QuotaError::internal("an idempotency key conflicted without its ledger row"))?;
    Ok(replay(original, request.metric, request.amount, key)?)
}

/// The denial of a call a rate rule has no room for, with the window as it stands.
pub fn rate_limited(client: &SpiClient, request: &Request, governing: &Governing, window: Window, rate: &RateCheck) -> QResult<Decision> {
    let counter = counters::read_counter(client, request.counter(window))?;
    let reserved = counters::active_holds(client, request.counter(window), counter, request.now)?;
    let standing = Standing { used: counter.used, reserved, grants_left: governing.grants_usable() };
    Ok(request.decision(None, standing, governing.allowance(), window).rate_limited(rate.retry_at()))
}

/// Where a decision goes in the ledger: whose it is, how it was made, in which window, what
/// paid for it and what it carries.
pub struct Entry<'a> {
    pub subject: Uuid,
    pub mode: Mode,
    pub window: Window,
    /// The grants that paid: (grant, amount taken).
    pub grants_taken: &'a [(Uuid, i64)],
    pub key: Option<&'a str>,
    pub metadata: Option<Jsonb>,
    pub reservation_id: Option<Uuid>,
    /// The pool that paid for a member's call: its window is `window`, the grants taken are
    /// its own (src/pools.rs).
    pub pool: Option<Uuid>,
    /// Whose alert rules read the usage it counts (src/alerts.rs); None for rows that count
    /// nothing.
    pub alerting: Option<Alerting<'a>>,
}

impl<'a> Entry<'a> {
    pub fn new(subject: Uuid, mode: Mode, window: Window) -> Entry<'a> {
        Entry { subject, mode, window, grants_taken: &[], key: None, metadata: None, reservation_id: None, pool: None, alerting: None }
    }
}

/// Writes the ledger row of a decision, and which grants paid for it.
pub fn write_event(client: &SpiClient, entry: Entry, decision: Decision) -> QResult<Decision> {
    let key = entry.key;
    try_write_event(client, entry, decision)?.ok_or_else(|| QuotaError::key_in_use(key.unwrap_or_default()))
}

/// write_event, or None when a concurrent consume or record committed the same key first.
/// The alerts that the usage it counts fires are written with it.
pub fn try_write_event(client: &SpiClient, entry: Entry, decision: Decision) -> QResult<Option<Decision>> {
    let kind = EventKind::of(entry.mode, &decision);
    let event = EventRow {
        subject: entry.subject,
        kind,
        decision: &decision,
        window: entry.window,
        idempotency_key: entry.key,
        metadata: entry.metadata,
        reservation_id: entry.reservation_id,
        pool: entry.pool,
    };
    let Some(event_id) = ledger::insert_event(client, event)? else {
        return Ok(None);
    };
    let grants_owner = entry.pool.unwrap_or(entry.subject);
    for (grant_id, taken) in entry.grants_taken {
        counters::spend_grant(client, grants_owner, entry.subject, event_id, *grant_id, *taken)?;
    }
    if let Some(alerting) = &entry.alerting {
        alerts::after_usage(client, alerting, &decision, entry.window, event_id, kind)?;
    }
    Ok(Some(Decision { event_id: Some(event_id), ..decision }))
}

/// What a window can still give, read under its counter lock.
pub struct Capacity {
    pub counter: counters::Counter,
    /// Holds that had expired and were just marked so: `held` must drop by this much.
    pub expired: i64,
    /// What the window's unexpired holds keep (but the one being settled).
    pub reserved: i64,
    /// Usable grants in spending order.
    pub grants: Vec<GrantBalance>,
    /// Allowance room and grant balances left for this call once holds have their share.
    pub room: Option<i64>,
    pub balances: Vec<i64>,
    /// The window's allowance (None = unlimited), against which its overage is counted.
    pub allowance: Option<i64>,
    /// What holds in other windows keep of the grants (held_in_other_windows).
    pub held_elsewhere: i64,
}

/// Locks the counter, then the grants (always in this order, so writers cannot deadlock),
/// and works out what is free once the active holds are set aside.
pub fn lock_capacity(
    client: &SpiClient,
    request: &Request,
    window: Window,
    allowance: Option<i64>,
    settling: Option<&Reservation>,
) -> QResult<Capacity> {
    let counter = counters::lock_counter(client, request.counter(window))?;
    let settling = settling.map(|held| counters::Settling { reservation_id: held.id, amount: held.amount });
    let holds = counters::holds_under_lock(client, request.counter(window), counter, request.now, settling)?;
    let grants = counters::lock_grants(client, request.subject, request.metric, request.now)?;
    let mut balances: Vec<i64> = grants.iter().map(|grant| grant.remaining).collect();
    let held_elsewhere = match grants.is_empty() {
        true => 0,
        false => reservations::held_in_other_windows(client, request.subject, request.metric, window, request.now)?,
    };
    set_aside_from_grants(&mut balances, held_elsewhere);
    let room = after_holds(remaining(allowance, counter.used), &mut balances, holds.reserved);
    Ok(Capacity { counter, expired: holds.expired, reserved: holds.reserved, grants, room, balances, allowance, held_elsewhere })
}

impl Capacity {
    /// The grants' balance this window can use: what holds in other windows keep is not.
    pub fn grants_total(&self) -> i64 {
        let total = quota_rules::decide::grants_total(&self.grants.iter().map(|grant| grant.remaining).collect::<Vec<_>>());
        total.saturating_sub(self.held_elsewhere).max(0)
    }
}


/// Pays the amount from the window's allowance, then grants, then overage as far as `overage`
/// lets it (overage_of).
/// `settling` is the hold being settled: it is released in the same update.
pub fn pay(
    client: &SpiClient,
    request: &Request,
    mode: Mode,
    overage: Overage,
    governing: &Governing,
    window: Window,
    allowance: Option<i64>,
    settling: Option<&Reservation>,
) -> QResult<Paid> {
    if settling.is_none() {
        // The allowance alone pays, in one conditional upsert.
        let max_used = match ceiling(allowance, request.amount) {
            Ceiling::Never => None,
            Ceiling::Unlimited => Some(None),
            Ceiling::AtMost(max_used) => Some(Some(max_used)),
        };
        if let Some(max_used) = max_used {
            if let Some(used) = counters::bump(client, request.counter(window), request.amount, max_used)? {
                let standing = Standing { used, reserved: 0, grants_left: governing.grants_usable() };
                return Ok(Paid { split: Some(Split::allowance_only(request.amount)), grants_taken: Vec::new(), standing });
            }
        }
        if mode == Mode::Consume && governing.grants_left == 0 && overage == Overage::Hard {
            let counter = counters::read_counter(client, request.counter(window))?;
            if counter.held == 0 {
                return Ok(Paid::denied(Standing { used: counter.used, reserved: 0, grants_left: 0 }));
            }
        }
    }
    // Under the counter lock, with holds and grants.
    let capacity = lock_capacity(client, request, window, allowance, settling)?;
    let paid = capacity.split(request.amount, overage);
    capacity.take(client, request, window, paid, settling.map_or(0, |held| held.amount))
}

/// How far a call of `mode` may pass the allowance and the grants: records and settles
/// without bound (usage that happened), consume as the plan's soft limit says (but a pool's
/// member's own means, `pooled`: its pool pays first), holds and allocations not at all.
pub fn overage_of(mode: Mode, governing: &Governing, pooled: bool) -> Overage {
    match mode {
        _ if mode.overage_allowed() => Overage::Unbounded,
        Mode::Consume if !pooled => governing.overage,
        _ => Overage::Hard,
    }
}

impl Capacity {
    /// How the amount would be paid from what is free (None = it does not fit), passing the
    /// allowance and the grants by at most what `overage` leaves in the window.
    pub fn split(&self, amount: i64, overage: Overage) -> Option<Split> {
        split_within(amount, self.room, &self.balances, overage.room(self.allowance, self.counter.used))
    }

    /// Counts what `paid` takes from the allowance and frees the holds that expired (and
    /// `released`, the hold being settled); nothing is counted when `paid` is None (denied).
    /// The grants it takes are spent when the ledger row is written (write_event).
    pub fn take(self, client: &SpiClient, request: &Request, window: Window, paid: Option<Split>, released: i64) -> QResult<Paid> {
        let held_change = -(self.expired + released);
        let grants_total = self.grants_total();
        let Some(split) = paid else {
            if held_change != 0 {
                counters::adjust_counter(client, request.counter(window), 0, held_change)?;
            }
            return Ok(Paid::denied(Standing { used: self.counter.used, reserved: self.reserved, grants_left: grants_total }));
        };
        let used = match (split.counted(), held_change) {
            (0, 0) => self.counter.used,
            (counted, held_change) => counters::adjust_counter(client, request.counter(window), counted, held_change)?,
        };
        let grants_taken = split.from_grants.iter().map(|(index, taken)| (self.grants[*index].grant_id, *taken)).collect();
        let standing = Standing { used, reserved: self.reserved, grants_left: grants_total.saturating_sub(split.grants_total()) };
        Ok(Paid { split: Some(split), grants_taken, standing })
    }
}

/// Resolves what governs a request that writes, giving an unassigned subject the default
/// plan first, and making the carries of unused allowance due now grants (before any lock
/// the call takes, so that their unique key is the only thing concurrent first calls of a
/// window wait on).
pub fn governing_with_assignment(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = resolve_known(client, request)?;
    let Some(plan) = governing.plan.as_deref().filter(|_| !governing.assigned) else {
        return governing_for_write(client, request, governing);
    };
    if counters::assign_default(client, request.subject, plan, request.now)? {
        Ok(Governing { assigned: true, subscription_anchor: Some(request.now), assigned_at: Some(request.now), ..governing })
    } else {
        // A concurrent first call assigned the plan: its anchor defines the windows.
        governing_for_write(client, request, resolve_known(client, request)?)
    }
}

/// What governs a write to an assigned subject: its due carries made grants, by a call that
/// counts in the current window (a record of usage in an earlier window may still change
/// what that window leaves: the carries wait for the current window's first call).
pub fn governing_for_write(client: &SpiClient, request: &Request, mut governing: Governing) -> QResult<Governing> {
    if !governing.carries.is_empty() && governing.window_at(request.at)? == governing.window_at(request.now)? {
        rollover::materialise(client, request.subject, request.metric, &mut governing)?;
    }
    Ok(governing)
}

/// What governs the request; 42704 for a metric no plan defines.
pub fn resolve_known(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = counters::resolve(client, request.subject, request.metric, request.at, request.now)?;
    if governing.metric_known {
        Ok(governing)
    } else {
        Err(QuotaError::unknown_metric(request.metric))
    }
}

/// check: whether consume would allow the amount now and how it would be paid, with the
/// window as it stands now; read without locks or writes.
pub fn what_consume_would_decide(client: &SpiClient, request: &Request) -> QResult<Decision> {
    let governing = resolve_known(client, request)?;
    let pool = pools::pool_call_unlocked(client, request)?;
    if governing.plan.is_none() && pool.is_none() {
        return Ok(request.no_plan(governing.grants_left, Window::LIFETIME));
    }
    let allowance = governing.allowance();
    let window = governing.counting_window(request.at)?;
    let counter = counters::read_counter(client, request.counter(window))?;
    let reserved = counters::active_holds(client, request.counter(window), counter, request.now)?;
    let grants_left = governing.grants_usable();
    // Grants count as one balance here: check reports the split, it does not take it.
    let mut grants = [grants_left];
    let room = after_holds(remaining(allowance, counter.used), &mut grants, reserved);
    let standing = Standing { used: counter.used, reserved, grants_left };
    let overage = overage_of(Mode::Consume, &governing, pool.is_some());
    let paid = split_within(request.amount, room, &grants, overage.room(allowance, counter.used));
    // An amount consume could not count (past bigint) does not fit either.
    if let Some(paid) = &paid {
        counter.used.checked_add(paid.counted()).ok_or_else(|| QuotaError::overflow("used + amount"))?;
    }
    let decision = request.decision(paid.as_ref(), standing, allowance, window);
    // consume decides the rate rules first: a call both deny is rate_limited.
    let rate = rates::decide(client, request, &governing.rates, StateRows::Read)?;
    match (rate.admitted(), &pool, decision.allowed) {
        (false, _, _) => Ok(decision.rate_limited(rate.retry_at())),
        (true, Some(pool), false) => pools::check_from_pool(client, pool, request.subject),
        (true, _, _) => Ok(decision),
    }
}

/// give_back: lowers the current window's usage by at most what it has used.
fn give_back_units(client: &SpiClient, request: &Request) -> QResult<Decision> {
    let governing = resolve_known(client, request)?;
    let window = governing.counting_window(request.now)?;
    let allowance = governing.allowance();
    let pool = pools::pool_call(client, request, false)?;
    if let Some(call) = &pool {
        pools::lock_member(client, request, call)?;
    }
    let counter = counters::lock_counter(client, request.counter(window))?;
    // A member that used nothing of its own gives back to its pool.
    if let (0, Some(pool)) = (counter.used, &pool) {
        return pools::give_back_to_pool(client, request, pool);
    }
    let returned = request.amount.min(counter.used);
    let used = match returned {
        0 => counter.used,
        _ => counters::adjust_counter(client, request.counter(window), -returned, 0)?,
    };
    let reserved = counters::active_holds(client, request.counter(window), counter, request.now)?;
    let standing = Standing { used, reserved, grants_left: governing.grants_usable() };
    // The ledger row records what was given back as from_allowance, so audit() can subtract it.
    let given = Decision {
        allowed: true,
        reason: Reason::Ok,
        retry_after: None,
        amount: returned,
        from_allowance: returned,
        ..request.decision(None, standing, allowance, window)
    };
    let given = write_event(client, Entry::new(request.subject, Mode::GiveBack, window), given)?;
    alerts::recover(client, request.subject, Some(request.metric), "give_back")?;
    Ok(given)
}
