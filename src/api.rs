//! The SQL entry points of schema `quota`. Each one validates its arguments, runs its
//! statements through `store`, and turns the outcome into a SQL value or a SQL error.
//!
//! Every function is SECURITY DEFINER with a pinned search_path, and EXECUTE is revoked
//! from PUBLIC (sql/finalize.sql): granting EXECUTE is the one gate to these functions.
//! Arguments are `Option` so that PostgreSQL does not declare the functions STRICT: a NULL
//! argument must raise, not silently return NULL.

use std::cell::Cell;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::datum::Interval;
use pgrx::{AnyNumeric, PgTupleDesc, Uuid};

use crate::jsonb::Jsonb;

use crate::batch::parse_batch;
use crate::claims::subject_from_claims;
use crate::decide::{
    after_holds, ceiling, effective_allowance, grants_total, percent_used, remaining, remaining_with_grants, split, Ceiling,
    Decision, Reason, Split,
};
use crate::error::{positive_amount, required, sql_call, QResult, QuotaError};
use crate::plan::{parse_limits, validate_metric, validate_plan_name, LimitDef};
use crate::store::{self, timestamp, to_micros, transaction_now, EventRow, Governing};
use crate::window::{Micros, Window};

type DecisionTuple = pgrx::composite_type!('static, "quota.decision");
type UsageTuple = pgrx::composite_type!('static, "quota.usage_row");

// ---------------------------------------------------------------------------------------
// consume / check / record

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

/// What consume would decide now. Writes nothing, not even the default plan assignment.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn check(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount, None)?;
        let decision = Spi::connect(|client| check_in(client, &request))?;
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
        let tuples = decisions.iter().map(decision_tuple).collect::<QResult<Vec<_>>>()?;
        Ok(SetOfIterator::new(tuples))
    })
}

/// Consume is all or nothing; record and settle never deny (the work is done) and count
/// what does not fit as overage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Consume,
    Record,
    Reserve,
    Settle,
    Release,
    GiveBack,
}

impl Mode {
    fn event_kind(self) -> &'static str {
        match self {
            Mode::Consume => "consume",
            Mode::Record => "record",
            Mode::Reserve => "reserve",
            Mode::Settle => "settle",
            Mode::Release => "release",
            Mode::GiveBack => "give_back",
        }
    }

    fn overage_allowed(self) -> bool {
        matches!(self, Mode::Record | Mode::Settle)
    }
}

/// A window after a call: its usage, what active holds keep, and the usable grants left.
#[derive(Debug, Clone, Copy)]
struct Standing {
    used: i64,
    reserved: i64,
    grants_left: i64,
}

/// A validated request, decided at the transaction's start instant `now`; usage counts
/// into the window that contains `at` (now, except for records of the past).
struct Request<'a> {
    subject: Uuid,
    metric: &'a str,
    amount: i64,
    now: Micros,
    at: Micros,
}

/// Records may arrive from clocks a little ahead of the database's.
const FUTURE_TOLERANCE: Micros = 5 * 60 * 1_000_000;

impl<'a> Request<'a> {
    fn new(subject: Option<Uuid>, metric: Option<&'a str>, amount: Option<i64>, at: Option<Micros>) -> QResult<Self> {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        validate_metric(metric)?;
        let amount = positive_amount(amount)?;
        let now = transaction_now()?;
        let at = at.unwrap_or(now);
        if at > now.saturating_add(FUTURE_TOLERANCE) {
            return Err(QuotaError::invalid("occurred_at is in the future")
                .with_hint("Record usage that already happened; clocks may be ahead by at most 5 minutes."));
        }
        Ok(Request { subject, metric, amount, now, at })
    }

    fn decision(&self, paid: Option<&Split>, standing: Standing, allowance: Option<i64>, window: Window) -> Decision {
        let reason = match paid {
            None => Reason::QuotaExceeded,
            Some(split) if split.overage > 0 => Reason::Overage,
            Some(_) => Reason::Ok,
        };
        Decision {
            allowed: paid.is_some(),
            metric: self.metric.to_string(),
            amount: self.amount,
            from_allowance: paid.map_or(0, |split| split.from_allowance),
            from_grants: paid.map_or(0, Split::grants_total),
            overage: paid.map_or(0, |split| split.overage),
            used: standing.used,
            reserved: standing.reserved,
            allowance,
            remaining: remaining_with_grants(allowance, standing.used, standing.grants_left, standing.reserved),
            window_start: window.start,
            resets_at: window.end,
            replayed: false,
            reason,
            event_id: None,
        }
    }
}

fn validate_idempotency_key(key: &str) -> QResult<&str> {
    if (1..=255).contains(&key.chars().count()) {
        Ok(key)
    } else {
        Err(QuotaError::invalid("idempotency_key must be 1 to 255 characters")
            .with_hint("Use a request id or a UUID; pass NULL for no idempotency."))
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
            store::lock_idempotency_key(client, request.subject, key)?;
        }
        if let Some(original) = store::find_replay(client, request.subject, key)? {
            return replay(original, request, key);
        }
    }
    let fast_path = mode == Mode::Consume && store::fast_path_installed(client)?;
    if fast_path {
        if let Some(decided) = store::fast_consume(client, request.subject, request.metric, request.amount, request.now, key, metadata)? {
            return Ok(decided);
        }
        // A marked window without room denies, as the slow path would; with room after all
        // (a concurrent give-back or reset), or without a mark, the slow path decides.
        if let Some(marked) = store::marked_window(client, request.subject, request.metric, request.now)? {
            if !ceiling(marked.allowance, request.amount).admits(marked.used) {
                let standing = Standing { used: marked.used, reserved: 0, grants_left: 0 };
                let denied = request.decision(None, standing, marked.allowance, marked.window);
                return write_event(client, request.subject, mode, denied, marked.window, None, key, metadata, None);
            }
        }
    }
    let mut governing = governing_with_assignment(client, request)?;
    // A window the fast path could decide on is marked, from a configuration resolved
    // again after the lock that configuration changes take exclusively: that snapshot sees
    // every change committed before. Only at READ COMMITTED, whose snapshots are fresh.
    // The window is marked only when it is the one every later call counts in: not when a
    // reset came after this transaction's instant (the reset's window is current then).
    let fast_path_can_decide =
        |governing: &Governing| governing.assigned && governing.plan.is_some() && governing.grants_left == 0 && !governing.reset_since;
    let mut mark = fast_path && !transaction_snapshot_is_fixed() && fast_path_can_decide(&governing);
    if let (true, Some(plan)) = (mark, governing.plan.clone()) {
        mark = store::try_lock_fast_path(client, request.subject, &plan)?;
        if mark {
            governing = resolve_known(client, request)?;
            // A plan change committed meanwhile: its plan's key is not held, so no mark.
            mark = fast_path_can_decide(&governing) && governing.plan.as_deref() == Some(plan.as_str());
        }
    }
    let window = if governing.plan.is_some() { governing.window_at(request.at)? } else { LIFETIME };
    let allowance = match governing.plan {
        Some(_) => effective_allowance(governing.plan_limit, governing.override_limit),
        None => Some(0),
    };
    if mark {
        store::mark_fast(client, request.subject, request.metric, window, allowance)?;
    }
    // Without a plan consume is denied outright; record still counts (as overage).
    let (paid, standing) = match governing.plan {
        None if mode == Mode::Consume => (None, Standing { used: 0, reserved: 0, grants_left: governing.grants_left }),
        _ => pay(client, request, mode, &governing, window, allowance, None)?,
    };
    let decision = request.decision(paid.as_ref().map(|(split, _)| split), standing, allowance, window);
    let decision = match governing.plan {
        None => Decision { reason: Reason::NoPlan, ..decision },
        Some(_) => decision,
    };
    let grants = paid.as_ref().map(|(_, grants)| grants.as_slice());
    if let Some(written) = try_write_event(client, request.subject, mode, decision, window, grants, key, metadata, None)? {
        return Ok(written);
    }
    // A concurrent record with the same key committed first: undo this one's count (its
    // grants were not spent yet) and answer with that call's decision.
    let counted = paid.as_ref().map_or(0, |(split, _)| split.counted());
    if counted != 0 {
        store::adjust_counter(client, request.subject, request.metric, window, -counted, 0)?;
    }
    let key = key.ok_or_else(|| QuotaError::internal("a ledger row without a key conflicted"))?;
    let original = store::find_replay(client, request.subject, key)?
        .ok_or_else(|| QuotaError::internal("an idempotency key conflicted without its ledger row"))?;
    replay(original, request, key)
}

/// REPEATABLE READ and SERIALIZABLE transactions read one snapshot throughout.
fn transaction_snapshot_is_fixed() -> bool {
    // SAFETY: a backend global, set for the running transaction.
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Writes the ledger row of a decision, and which grants paid for it.
#[allow(clippy::too_many_arguments)]
fn write_event(
    client: &SpiClient,
    subject: Uuid,
    mode: Mode,
    decision: Decision,
    window: Window,
    grants: Option<&[(Uuid, i64)]>,
    key: Option<&str>,
    metadata: Option<Jsonb>,
    reservation_id: Option<Uuid>,
) -> QResult<Decision> {
    try_write_event(client, subject, mode, decision, window, grants, key, metadata, reservation_id)?.ok_or_else(|| {
        QuotaError::new(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("idempotency key \"{}\" was used by another call at the same time", key.unwrap_or_default()),
        )
        .with_hint("Retry: the call that holds the key has committed.")
    })
}

/// write_event, or None when a concurrent consume or record committed the same key first.
#[allow(clippy::too_many_arguments)]
fn try_write_event(
    client: &SpiClient,
    subject: Uuid,
    mode: Mode,
    decision: Decision,
    window: Window,
    grants: Option<&[(Uuid, i64)]>,
    key: Option<&str>,
    metadata: Option<Jsonb>,
    reservation_id: Option<Uuid>,
) -> QResult<Option<Decision>> {
    let kind = if decision.allowed { mode.event_kind() } else { "denial" };
    let event = EventRow { subject, kind, decision: &decision, window, idempotency_key: key, metadata, reservation_id };
    let Some(event_id) = store::insert_event(client, event)? else {
        return Ok(None);
    };
    for (grant_id, taken) in grants.unwrap_or_default() {
        store::spend_grant(client, subject, event_id, *grant_id, *taken)?;
    }
    Ok(Some(Decision { event_id: Some(event_id), ..decision }))
}

const LIFETIME: Window = Window { start: None, end: None };

/// What a window can still give, read under its counter lock.
struct Capacity {
    counter: store::Counter,
    /// Holds that had expired and were just marked so: `held` must drop by this much.
    expired: i64,
    /// What the window's unexpired holds keep (but the one being settled).
    reserved: i64,
    /// Usable grants in spending order: (id, remaining).
    grants: Vec<(Uuid, i64)>,
    /// Allowance room and grant balances left for this call once holds have their share.
    room: Option<i64>,
    balances: Vec<i64>,
}

/// Locks the counter, then the grants (always in this order, so writers cannot deadlock),
/// and works out what is free once the active holds are set aside.
fn lock_capacity(
    client: &SpiClient,
    request: &Request,
    window: Window,
    allowance: Option<i64>,
    settling: Option<Uuid>,
) -> QResult<Capacity> {
    let (subject, metric) = (request.subject, request.metric);
    let counter = store::lock_counter(client, subject, metric, window)?;
    let (expired, reserved) = match counter.held {
        0 => (0, 0),
        _ => store::expire_and_sum_holds(client, subject, metric, window, request.now, settling)?,
    };
    let grants = store::lock_grants(client, subject, metric, request.now)?;
    let mut balances: Vec<i64> = grants.iter().map(|(_, remaining)| *remaining).collect();
    let room = after_holds(remaining(allowance, counter.used), &mut balances, reserved);
    Ok(Capacity { counter, expired, reserved, grants, room, balances })
}

impl Capacity {
    fn grants_total(&self) -> i64 {
        grants_total(&self.grants.iter().map(|(_, remaining)| *remaining).collect::<Vec<_>>())
    }
}

/// Pays the amount from the window's allowance, then grants, then (record, settle) overage.
/// Returns how it was paid (None = denied) with the grants taken, and the window after.
/// `settling` is the hold being settled: it is released in the same update.
#[allow(clippy::type_complexity)]
fn pay(
    client: &SpiClient,
    request: &Request,
    mode: Mode,
    governing: &Governing,
    window: Window,
    allowance: Option<i64>,
    settling: Option<&store::Reservation>,
) -> QResult<(Option<(Split, Vec<(Uuid, i64)>)>, Standing)> {
    let (subject, metric, amount) = (request.subject, request.metric, request.amount);
    if settling.is_none() {
        // Fast path: the allowance alone pays, in one conditional upsert.
        let max_used = match ceiling(allowance, amount) {
            Ceiling::Never => None,
            Ceiling::Unlimited => Some(None),
            Ceiling::AtMost(max_used) => Some(Some(max_used)),
        };
        if let Some(max_used) = max_used {
            if let Some(used) = store::bump(client, subject, metric, window, amount, max_used)? {
                let standing = Standing { used, reserved: 0, grants_left: governing.grants_left };
                return Ok((Some((Split::allowance_only(amount), Vec::new())), standing));
            }
        }
        if mode == Mode::Consume && governing.grants_left == 0 {
            let counter = store::read_counter(client, subject, metric, window)?;
            if counter.held == 0 {
                return Ok((None, Standing { used: counter.used, reserved: 0, grants_left: 0 }));
            }
        }
    }
    // Slow path: under the counter lock, with holds and grants.
    let capacity = lock_capacity(client, request, window, allowance, settling.map(|r| r.id))?;
    let released = settling.map_or(0, |r| r.amount);
    let held_change = -(capacity.expired + released);
    let grants_total = capacity.grants_total();
    let Some(split) = split(amount, capacity.room, &capacity.balances, mode.overage_allowed()) else {
        if held_change != 0 {
            store::adjust_counter(client, subject, metric, window, 0, held_change)?;
        }
        let standing = Standing { used: capacity.counter.used, reserved: capacity.reserved, grants_left: grants_total };
        return Ok((None, standing));
    };
    let used = match (split.counted(), held_change) {
        (0, 0) => capacity.counter.used,
        (counted, held_change) => store::adjust_counter(client, subject, metric, window, counted, held_change)?,
    };
    let taken = split.from_grants.iter().map(|(index, taken)| (capacity.grants[*index].0, *taken)).collect();
    let standing = Standing { used, reserved: capacity.reserved, grants_left: grants_total.saturating_sub(split.grants_total()) };
    Ok((Some((split, taken)), standing))
}

/// The original decision for a retried key, or 23505 (HTTP 409) when the key is reused
/// for a different request.
fn replay(original: Decision, request: &Request, key: &str) -> QResult<Decision> {
    if original.metric == request.metric && original.amount == request.amount {
        return Ok(original);
    }
    Err(QuotaError::new(
        PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        format!(
            "idempotency key \"{key}\" was already used for {} of \"{}\", not {} of \"{}\"",
            original.amount, original.metric, request.amount, request.metric
        ),
    )
    .with_hint("Retry with the original metric and amount, or use a new key for a new request."))
}

/// Resolves what governs the request, giving an unassigned subject the default plan first.
fn governing_with_assignment(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = resolve_known(client, request)?;
    let Some(plan) = governing.plan.as_deref().filter(|_| !governing.assigned) else {
        return Ok(governing);
    };
    if store::assign_default(client, request.subject, plan, request.now)? {
        Ok(Governing { assigned: true, subscription_anchor: Some(request.now), ..governing })
    } else {
        // A concurrent first call assigned the plan: its anchor defines the windows.
        resolve_known(client, request)
    }
}

fn resolve_known(client: &SpiClient, request: &Request) -> QResult<Governing> {
    let governing = store::resolve(client, request.subject, request.metric, request.at, request.now)?;
    if governing.metric_known {
        Ok(governing)
    } else {
        Err(QuotaError::unknown_metric(request.metric))
    }
}

fn check_in(client: &SpiClient, request: &Request) -> QResult<Decision> {
    let governing = resolve_known(client, request)?;
    if governing.plan.is_none() {
        let standing = Standing { used: 0, reserved: 0, grants_left: governing.grants_left };
        let denied = request.decision(None, standing, Some(0), LIFETIME);
        return Ok(Decision { reason: Reason::NoPlan, ..denied });
    }
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let window = governing.window_at(request.at)?;
    let counter = store::read_counter(client, request.subject, request.metric, window)?;
    let reserved = match counter.held {
        0 => 0,
        _ => store::active_holds(client, request.subject, request.metric, window, request.now)?,
    };
    // Grants count as one balance here: check reports the split, it does not take it.
    let mut grants = [governing.grants_left];
    let room = after_holds(remaining(allowance, counter.used), &mut grants, reserved);
    let standing = Standing { used: counter.used, reserved, grants_left: governing.grants_left };
    match split(request.amount, room, &grants, false) {
        Some(paid) => {
            let used = counter.used.checked_add(paid.counted()).ok_or_else(|| QuotaError::overflow("used + amount"))?;
            let grants_left = governing.grants_left.saturating_sub(paid.grants_total());
            Ok(request.decision(Some(&paid), Standing { used, grants_left, ..standing }, allowance, window))
        }
        None => Ok(request.decision(None, standing, allowance, window)),
    }
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
        let decision = Spi::connect(|client| give_back_in(client, &request))?;
        decision_tuple(&decision)
    })
}

fn give_back_in(client: &SpiClient, request: &Request) -> QResult<Decision> {
    let governing = resolve_known(client, request)?;
    let (window, allowance) = match governing.plan {
        Some(_) => (governing.window_at(request.now)?, effective_allowance(governing.plan_limit, governing.override_limit)),
        None => (LIFETIME, Some(0)),
    };
    let counter = store::lock_counter(client, request.subject, request.metric, window)?;
    let returned = request.amount.min(counter.used);
    let used = match returned {
        0 => counter.used,
        _ => store::adjust_counter(client, request.subject, request.metric, window, -returned, 0)?,
    };
    let reserved = match counter.held {
        0 => 0,
        _ => store::active_holds(client, request.subject, request.metric, window, request.now)?,
    };
    let standing = Standing { used, reserved, grants_left: governing.grants_left };
    // The ledger row records what was given back as from_allowance, so audit() can subtract it.
    let given = Decision {
        allowed: true,
        reason: Reason::Ok,
        amount: returned,
        from_allowance: returned,
        ..request.decision(None, standing, allowance, window)
    };
    write_event(client, request.subject, Mode::GiveBack, given, window, None, None, None, None)
}

// ---------------------------------------------------------------------------------------
// reservations

/// Holds units before slow work (an AI call) so that concurrent callers cannot spend them.
/// A denied reservation holds nothing and is kept in the ledger as a denial.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reserve(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: Option<i64>,
    ttl: default!(Option<Interval>, "'15 minutes'"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.reservation"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(subject, metric, amount, None)?;
        let ttl = ttl_micros(required(ttl, "ttl")?)?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let (held, decision) = Spi::connect(|client| reserve_in(client, &request, ttl, key))?;
        reservation_tuple(held, &decision)
    })
}

/// Consumes the actual amount (default: what was held) in the reservation's window and
/// frees the hold. More than held is charged, as overage if it does not fit: the work is
/// done. Settling again with the same amount replays the decision.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn settle(
    reservation_id: Option<Uuid>,
    actual: default!(Option<i64>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let id = required(reservation_id, "reservation_id")?;
        if let Some(actual) = actual.filter(|actual| *actual < 0) {
            return Err(QuotaError::invalid(format!("actual must not be negative, got {actual}"))
                .with_hint("Pass what the work really used; 0 frees the whole hold."));
        }
        let now = transaction_now()?;
        let decision = Spi::connect(|client| settle_in(client, id, actual, now))?;
        decision_tuple(&decision)
    })
}

/// Frees a hold that will not be used (the work failed).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn release(reservation_id: Option<Uuid>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let id = required(reservation_id, "reservation_id")?;
        let now = transaction_now()?;
        Spi::connect(|client| release_in(client, id, now))
    })
}

/// A hold's lifetime: days, hours, minutes and seconds (months have no fixed length).
fn ttl_micros(ttl: Interval) -> QResult<Micros> {
    let invalid = || {
        QuotaError::invalid(format!("ttl must be a positive interval of days, hours, minutes or seconds, got {ttl}"))
            .with_hint("For example '15 minutes' or '2 hours'.")
    };
    if ttl.months() != 0 {
        return Err(invalid());
    }
    let micros = i64::from(ttl.days()).checked_mul(86_400_000_000).and_then(|days| days.checked_add(ttl.micros()));
    micros.filter(|micros| *micros > 0).ok_or_else(invalid)
}

fn reserve_in(client: &SpiClient, request: &Request, ttl: Micros, key: Option<&str>) -> QResult<(Option<(Uuid, Micros)>, Decision)> {
    let subject = request.subject;
    if let Some(key) = key {
        store::lock_idempotency_key(client, subject, key)?;
        if let Some(held) = store::find_reservation(client, None, Some((subject, key)))? {
            let original = store::find_reservation_event(client, held.id, "reserve")?
                .ok_or_else(|| QuotaError::internal("reservation without its reserve event"))?;
            return Ok((Some((held.id, held.expires_at)), replay(original, request, key)?));
        }
    }
    let governing = governing_with_assignment(client, request)?;
    if governing.plan.is_none() {
        let standing = Standing { used: 0, reserved: 0, grants_left: governing.grants_left };
        let denied = Decision { reason: Reason::NoPlan, ..request.decision(None, standing, Some(0), LIFETIME) };
        return Ok((None, write_event(client, subject, Mode::Reserve, denied, LIFETIME, None, key, None, None)?));
    }
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let window = governing.window_at(request.now)?;
    let capacity = lock_capacity(client, request, window, allowance, None)?;
    let standing = Standing { used: capacity.counter.used, reserved: capacity.reserved, grants_left: capacity.grants_total() };
    if split(request.amount, capacity.room, &capacity.balances, false).is_none() {
        if capacity.expired != 0 {
            store::adjust_counter(client, subject, request.metric, window, 0, -capacity.expired)?;
        }
        let denied = request.decision(None, standing, allowance, window);
        return Ok((None, write_event(client, subject, Mode::Reserve, denied, window, None, key, None, None)?));
    }
    let expires_at = request.now.checked_add(ttl).ok_or_else(|| QuotaError::overflow("expires_at"))?;
    let id = store::insert_reservation(client, subject, request.metric, request.amount, window, expires_at, key)?;
    store::adjust_counter(client, subject, request.metric, window, 0, request.amount - capacity.expired)?;
    // A hold pays nothing yet: the decision shows what it keeps.
    let reserved = capacity.reserved.saturating_add(request.amount);
    let held = request.decision(None, Standing { reserved, ..standing }, allowance, window);
    let held = Decision { allowed: true, reason: Reason::Ok, ..held };
    Ok((Some((id, expires_at)), write_event(client, subject, Mode::Reserve, held, window, None, key, None, Some(id))?))
}

/// A reservation that can still be settled or released, or the error that says why not.
fn holding(held: &store::Reservation, now: Micros) -> QResult<()> {
    let conflict = |what: &str| QuotaError::invalid(format!("reservation {} was {what}", held.id));
    match held.status.as_str() {
        "released" => Err(conflict("released").with_hint("A released hold is gone; reserve again for new work.")),
        "settled" => Err(conflict("settled already")),
        _ if held.status == "expired" || held.expires_at <= now => Err(QuotaError::invalid(format!(
            "reservation {} expired at {}",
            held.id,
            format_instant(held.expires_at)
        ))
        .with_hint("An expired hold holds nothing. Record usage that happened anyway with quota.record().")),
        _ => Ok(()),
    }
}

fn unknown_reservation(id: Uuid) -> QuotaError {
    QuotaError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown reservation {id}"))
}

fn settle_in(client: &SpiClient, id: Uuid, actual: Option<i64>, now: Micros) -> QResult<Decision> {
    let held = store::find_reservation(client, Some(id), None)?.ok_or_else(|| unknown_reservation(id))?;
    let actual = actual.unwrap_or(held.amount);
    if held.status == "settled" {
        let original = store::find_reservation_event(client, id, "settle")?
            .ok_or_else(|| QuotaError::internal("settled reservation without its settle event"))?;
        if original.amount == actual {
            return Ok(original);
        }
        return Err(QuotaError::new(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("reservation {id} was already settled with {}, not {actual}", original.amount),
        ));
    }
    holding(&held, now)?;
    let request = Request { subject: held.subject, metric: &held.metric, amount: actual, now, at: now };
    let governing = resolve_known(client, &request)?;
    let allowance = match governing.plan {
        Some(_) => effective_allowance(governing.plan_limit, governing.override_limit),
        None => Some(0),
    };
    let (paid, standing) = pay(client, &request, Mode::Settle, &governing, held.window, allowance, Some(&held))?;
    store::set_reservation_status(client, &held, "settled")?;
    let decision = request.decision(paid.as_ref().map(|(split, _)| split), standing, allowance, held.window);
    let grants = paid.as_ref().map(|(_, grants)| grants.as_slice());
    write_event(client, held.subject, Mode::Settle, decision, held.window, grants, None, None, Some(id))
}

fn release_in(client: &SpiClient, id: Uuid, now: Micros) -> QResult<()> {
    let held = store::find_reservation(client, Some(id), None)?.ok_or_else(|| unknown_reservation(id))?;
    holding(&held, now)?;
    let request = Request { subject: held.subject, metric: &held.metric, amount: held.amount, now, at: now };
    let governing = resolve_known(client, &request)?;
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let capacity = lock_capacity(client, &request, held.window, allowance, Some(id))?;
    let used = store::adjust_counter(client, held.subject, &held.metric, held.window, 0, -(held.amount + capacity.expired))?;
    store::set_reservation_status(client, &held, "released")?;
    let standing = Standing { used, reserved: capacity.reserved, grants_left: capacity.grants_total() };
    let released = Decision { allowed: true, reason: Reason::Ok, ..request.decision(None, standing, allowance, held.window) };
    write_event(client, held.subject, Mode::Release, released, held.window, None, None, None, Some(id)).map(drop)
}

fn format_instant(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(|| micros.to_string(), |instant| instant.to_rfc3339())
}

// ---------------------------------------------------------------------------------------
// usage

struct UsageRow {
    metric: String,
    used: i64,
    reserved: i64,
    allowance: Option<i64>,
    grants_left: i64,
    window: Window,
}

#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn usage(
    subject: Option<Uuid>,
) -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.usage_row")>, ErrorReport> {
    sql_call(|| usage_of(required(subject, "subject")?))
}

fn usage_of(subject: Uuid) -> QResult<SetOfIterator<'static, PgHeapTuple<'static, AllocatedByRust>>> {
    let now = transaction_now()?;
    let rows = Spi::connect(|client| usage_in(client, subject, now))?;
    let tuples = rows.iter().map(usage_tuple).collect::<QResult<Vec<_>>>()?;
    Ok(SetOfIterator::new(tuples))
}

fn usage_in(client: &SpiClient, subject: Uuid, now: Micros) -> QResult<Vec<UsageRow>> {
    let metrics = plan_metrics(client, subject)?;
    metrics
        .into_iter()
        .map(|metric| {
            let governing = store::resolve(client, subject, &metric, now, now)?;
            let window = governing.window_at(now)?;
            let counter = store::read_counter(client, subject, &metric, window)?;
            let reserved = match counter.held {
                0 => 0,
                _ => store::active_holds(client, subject, &metric, window, now)?,
            };
            let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
            Ok(UsageRow { metric, used: counter.used, reserved, allowance, grants_left: governing.grants_left, window })
        })
        .collect()
}

/// The metrics of the subject's plan (the default plan when it has no assignment yet).
fn plan_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    let rows = client.select(
        "SELECT l.metric FROM quota.limits AS l
          WHERE l.plan = coalesce((SELECT a.plan FROM quota.assignments AS a WHERE a.subject = $1),
                                  (SELECT d.plan FROM quota.plans AS d WHERE d.is_default))
          ORDER BY l.metric",
        None,
        &[subject.into()],
    )?;
    rows.map(|row| row.get::<String>(1)?.ok_or_else(|| QuotaError::internal("metric is NULL"))).collect()
}

// ---------------------------------------------------------------------------------------
// end-user surface: safe to grant to Supabase's `authenticated`. None takes a subject, and
// all are SECURITY INVOKER: they read the tables as the caller, through row level
// security, so they can only ever see the caller's own rows.

/// The caller's subject: `sub` of the JWT claims PostgREST sets; NULL when absent, empty
/// (a pooled connection after a request) or not a uuid.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn current_subject() -> Option<Uuid> {
    // SAFETY: with missing_ok, GetConfigOption returns NULL or a valid C string that lives
    // until the setting changes; it is copied before anything else runs.
    let claims = unsafe {
        let value = pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false);
        (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value).to_string_lossy().into_owned())
    };
    subject_from_claims(claims.as_deref()).map(|subject| Uuid::from_bytes(*subject.as_bytes()))
}

fn signed_in() -> QResult<Uuid> {
    current_subject().ok_or_else(|| {
        QuotaError::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, "no signed-in user")
            .with_hint("Call with a user's JWT: request.jwt.claims has no uuid in sub.")
    })
}

/// quota.usage() of the caller.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn my_usage() -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.usage_row")>, ErrorReport> {
    sql_call(|| usage_of(signed_in()?))
}

/// quota.check() for the caller: what a consume would decide now. Writes nothing.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn my_check(
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<pgrx::composite_type!('static, "quota.decision"), ErrorReport> {
    sql_call(|| {
        let request = Request::new(Some(signed_in()?), metric, amount, None)?;
        let decision = Spi::connect(|client| check_in(client, &request))?;
        decision_tuple(&decision)
    })
}

// ---------------------------------------------------------------------------------------
// administration

/// Creates a plan with its limits. An existing plan is an error (42710); change limits
/// with quota.set_limits(). `is_default => true` makes this the one default plan.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_plan(
    plan: Option<&str>,
    limits: default!(Option<Jsonb>, "'{}'"),
    is_default: default!(Option<bool>, false),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        validate_plan_name(plan)?;
        let limits = parse_limits(&required(limits, "limits")?.parse("limits")?)?;
        let is_default = required(is_default, "is_default")?;
        Spi::connect_mut(|client| {
            if is_default {
                client.update("UPDATE quota.plans SET is_default = false WHERE is_default", None, &[])?;
            }
            let created = client.update(
                "INSERT INTO quota.plans (plan, is_default) VALUES ($1, $2) ON CONFLICT (plan) DO NOTHING",
                None,
                &[plan.into(), is_default.into()],
            )?;
            if created.is_empty() {
                return Err(QuotaError::new(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("plan \"{plan}\" already exists"))
                    .with_hint("Change its limits with quota.set_limits(), or pick another name."));
            }
            upsert_limits(client, plan, &limits)
        })
    })
}

/// Adds or replaces limits of an existing plan; metrics not named keep their limits.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_limits(plan: Option<&str>, limits: Option<Jsonb>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let plan = required(plan, "plan")?;
        let limits = parse_limits(&required(limits, "limits")?.parse("limits")?)?;
        Spi::connect_mut(|client| {
            require_plan(client, plan)?;
            upsert_limits(client, plan, &limits)
        })
    })
}

fn upsert_limits(client: &mut pgrx::spi::SpiClient, plan: &str, limits: &[LimitDef]) -> QResult<()> {
    for limit in limits {
        client.update(
            "INSERT INTO quota.limits (plan, metric, allowance, period, anchor, time_zone)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (plan, metric) DO UPDATE
                SET allowance = excluded.allowance, period = excluded.period,
                    anchor = excluded.anchor, time_zone = excluded.time_zone",
            None,
            &[
                plan.into(),
                limit.metric.as_str().into(),
                limit.allowance.into(),
                limit.period.canonical().into(),
                limit.anchor.as_str().into(),
                limit.time_zone.name().into(),
            ],
        )?;
    }
    Ok(())
}

fn require_plan(client: &SpiClient, plan: &str) -> QResult<()> {
    let found = client.select("SELECT FROM quota.plans WHERE plan = $1", None, &[plan.into()])?;
    if found.is_empty() {
        Err(QuotaError::unknown_plan(plan))
    } else {
        Ok(())
    }
}

fn require_known_metric(client: &SpiClient, metric: &str) -> QResult<()> {
    validate_metric(metric)?;
    let found = client.select("SELECT FROM quota.limits WHERE metric = $1 LIMIT 1", None, &[metric.into()])?;
    if found.is_empty() {
        Err(QuotaError::unknown_metric(metric))
    } else {
        Ok(())
    }
}

/// Puts a subject on a plan. Subscription windows repeat from `anchor`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn assign_plan(
    subject: Option<Uuid>,
    plan: Option<&str>,
    anchor: default!(Option<TimestampWithTimeZone>, "pg_catalog.now()"),
) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let plan = required(plan, "plan")?;
        let anchor = timestamp(to_micros(required(anchor, "anchor")?, "anchor")?)?;
        Spi::connect_mut(|client| {
            require_plan(client, plan)?;
            client.update(
                "INSERT INTO quota.assignments (subject, plan, anchor) VALUES ($1, $2, $3)
                 ON CONFLICT (subject) DO UPDATE
                    SET plan = excluded.plan, anchor = excluded.anchor, assigned_at = pg_catalog.now()",
                None,
                &[subject.into(), plan.into(), anchor.into()],
            )?;
            Ok(())
        })
    })
}

/// A per-subject allowance that replaces the plan's; NULL = unlimited.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_override(subject: Option<Uuid>, metric: Option<&str>, allowance: Option<i64>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        if let Some(allowance) = allowance.filter(|a| *a < 0) {
            return Err(QuotaError::invalid(format!("allowance must not be negative, got {allowance}"))
                .with_hint("Pass 0 to block the metric, or NULL for unlimited."));
        }
        Spi::connect_mut(|client| {
            require_known_metric(client, metric)?;
            client.update(
                "INSERT INTO quota.overrides (subject, metric, allowance) VALUES ($1, $2, $3)
                 ON CONFLICT (subject, metric) DO UPDATE
                    SET allowance = excluded.allowance, updated_at = pg_catalog.now()",
                None,
                &[subject.into(), metric.into(), allowance.into()],
            )?;
            Ok(())
        })
    })
}

/// Removes a subject's override; the plan's limit applies again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_override(subject: Option<Uuid>, metric: Option<&str>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        Spi::connect_mut(|client| {
            require_known_metric(client, metric)?;
            client.update(
                "DELETE FROM quota.overrides WHERE subject = $1 AND metric = $2",
                None,
                &[subject.into(), metric.into()],
            )?;
            Ok(())
        })
    })
}

/// Bonus units for (subject, metric), spent after the window's allowance: lowest priority
/// first, then soonest expiry, then oldest. Returns the grant's id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn grant(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: Option<i64>,
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    priority: default!(Option<i32>, 0),
    reason: default!(Option<&str>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        let amount = positive_amount(amount)?;
        let priority = required(priority, "priority")?;
        if let Some(expires_at) = expires_at {
            if to_micros(expires_at, "expires_at")? <= transaction_now()? {
                return Err(QuotaError::invalid("expires_at is not in the future")
                    .with_hint("Pass a future expiry, or NULL for a grant that never expires."));
            }
        }
        Spi::connect_mut(|client| {
            require_known_metric(client, metric)?;
            let id = client
                .update(
                    "INSERT INTO quota.grants (subject, metric, amount, remaining, expires_at, priority, reason)
                     VALUES ($1, $2, $3, $3, $4, $5, $6)
                     RETURNING grant_id",
                    None,
                    &[subject.into(), metric.into(), amount.into(), expires_at.into(), priority.into(), reason.into()],
                )?
                .first()
                .get_one::<Uuid>()?;
            id.ok_or_else(|| QuotaError::internal("grant insert returned no row"))
        })
    })
}

/// Stops a grant from being spent. What it already paid for stays paid.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_grant(grant_id: Option<Uuid>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let grant_id = required(grant_id, "grant_id")?;
        Spi::connect_mut(|client| {
            let found = client.update(
                "UPDATE quota.grants SET revoked_at = coalesce(revoked_at, pg_catalog.now())
                  WHERE grant_id = $1 RETURNING grant_id",
                None,
                &[grant_id.into()],
            )?;
            if found.is_empty() {
                return Err(QuotaError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("unknown grant {grant_id}")));
            }
            Ok(())
        })
    })
}

/// Starts the subject's current window over now, for one metric or (NULL) for every metric
/// of its plan and every metric it has used. The old window stays as history.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reset(subject: Option<Uuid>, metric: default!(Option<&str>, "NULL")) -> Result<(), ErrorReport> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let now = transaction_now()?;
        Spi::connect_mut(|client| {
            let metrics = match metric {
                Some(metric) => {
                    require_known_metric(client, metric)?;
                    vec![metric.to_string()]
                }
                None => used_or_planned_metrics(client, subject)?,
            };
            for metric in &metrics {
                reset_metric(client, subject, metric, now)?;
            }
            Ok(())
        })
    })
}

fn used_or_planned_metrics(client: &SpiClient, subject: Uuid) -> QResult<Vec<String>> {
    let mut metrics = plan_metrics(client, subject)?;
    let used = client.select(
        "SELECT DISTINCT metric FROM quota.counters WHERE subject = $1",
        None,
        &[subject.into()],
    )?;
    for row in used {
        if let Some(metric) = row.get::<String>(1)? {
            metrics.push(metric);
        }
    }
    metrics.sort();
    metrics.dedup();
    Ok(metrics)
}

fn reset_metric(client: &mut SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<()> {
    client.update(
        "INSERT INTO quota.resets (subject, metric, reset_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        None,
        &[subject.into(), metric.into(), timestamp(now)?.into()],
    )?;
    let governing = store::resolve(client, subject, metric, now, now)?;
    let allowance = effective_allowance(governing.plan_limit, governing.override_limit);
    let window = governing.window_at(now)?;
    let decision = Decision {
        allowed: true,
        metric: metric.to_string(),
        amount: 0,
        from_allowance: 0,
        from_grants: 0,
        overage: 0,
        used: store::read_counter(client, subject, metric, window)?.used,
        reserved: 0,
        allowance,
        remaining: remaining(allowance, 0),
        window_start: window.start,
        resets_at: window.end,
        replayed: false,
        reason: Reason::Reset,
        event_id: None,
    };
    store::insert_event(
        client,
        EventRow { subject, kind: "reset", decision: &decision, window, idempotency_key: None, metadata: None, reservation_id: None },
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// composite results

thread_local! {
    // OIDs of our composite types, looked up once per backend and forgotten whenever
    // pg_type changes (e.g. DROP EXTENSION and CREATE EXTENSION in the same session).
    static DECISION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static USAGE_ROW_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static RESERVATION_OID: Cell<Oid> = const { Cell::new(Oid::INVALID) };
    static INVALIDATION_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_type_oids(_arg: pg_sys::Datum, _cache_id: std::ffi::c_int, _hash: u32) {
    DECISION_OID.with(|oid| oid.set(Oid::INVALID));
    USAGE_ROW_OID.with(|oid| oid.set(Oid::INVALID));
    RESERVATION_OID.with(|oid| oid.set(Oid::INVALID));
}

fn composite_desc(cache: &'static std::thread::LocalKey<Cell<Oid>>, name: &str) -> QResult<PgTupleDesc<'static>> {
    if !INVALIDATION_REGISTERED.with(Cell::get) {
        // SAFETY: registering a syscache callback is allowed at any time in a backend.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::TYPEOID as std::ffi::c_int,
                Some(forget_type_oids),
                pg_sys::Datum::from(0),
            );
        }
        INVALIDATION_REGISTERED.with(|registered| registered.set(true));
    }
    let mut oid = cache.with(Cell::get);
    if oid == Oid::INVALID {
        oid = pgrx::regtypein(name);
        cache.with(|cached| cached.set(oid));
    }
    if oid == Oid::INVALID {
        return Err(QuotaError::internal(format!("type {name} is missing")));
    }
    // The type cache's descriptor, reference-counted until the tuple made with it is dropped:
    // not a copy per tuple (record_batch keeps one tuple per event until it returns).
    // SAFETY: lookup_rowtype_tupdesc returns a pinned descriptor of an existing composite type
    // (or raises), which PgTupleDesc::from_pg releases on drop.
    Ok(unsafe { PgTupleDesc::from_pg(pg_sys::lookup_rowtype_tupdesc(oid, -1)) })
}

fn composite(
    cache: &'static std::thread::LocalKey<Cell<Oid>>,
    name: &str,
    values: Vec<Option<pg_sys::Datum>>,
) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    let desc = composite_desc(cache, name)?;
    // SAFETY: each datum below is built from the Rust type of its column in sql/schema.sql.
    unsafe { PgHeapTuple::from_datums(desc, values) }.map_err(QuotaError::internal)
}

fn optional_timestamp(micros: Option<Micros>) -> QResult<Option<TimestampWithTimeZone>> {
    micros.map(timestamp).transpose()
}

fn decision_tuple(d: &Decision) -> QResult<DecisionTuple> {
    composite(
        &DECISION_OID,
        "quota.decision",
        vec![
            d.allowed.into_datum(),
            d.metric.as_str().into_datum(),
            d.amount.into_datum(),
            d.from_allowance.into_datum(),
            d.from_grants.into_datum(),
            d.overage.into_datum(),
            d.used.into_datum(),
            d.reserved.into_datum(),
            d.allowance.into_datum(),
            d.remaining.into_datum(),
            optional_timestamp(d.window_start)?.into_datum(),
            optional_timestamp(d.resets_at)?.into_datum(),
            d.replayed.into_datum(),
            d.reason.as_str().into_datum(),
            d.event_id.into_datum(),
        ],
    )
}

fn reservation_tuple(held: Option<(Uuid, Micros)>, d: &Decision) -> QResult<PgHeapTuple<'static, AllocatedByRust>> {
    composite(
        &RESERVATION_OID,
        "quota.reservation",
        vec![
            held.map(|(id, _)| id).into_datum(),
            d.allowed.into_datum(),
            d.metric.as_str().into_datum(),
            d.amount.into_datum(),
            optional_timestamp(held.map(|(_, expires_at)| expires_at))?.into_datum(),
            d.used.into_datum(),
            d.reserved.into_datum(),
            d.allowance.into_datum(),
            d.remaining.into_datum(),
            optional_timestamp(d.window_start)?.into_datum(),
            optional_timestamp(d.resets_at)?.into_datum(),
            d.replayed.into_datum(),
            d.reason.as_str().into_datum(),
        ],
    )
}

fn usage_tuple(row: &UsageRow) -> QResult<UsageTuple> {
    let percent = percent_used(row.allowance, row.used)
        .map(AnyNumeric::try_from)
        .transpose()
        .map_err(QuotaError::internal)?;
    composite(
        &USAGE_ROW_OID,
        "quota.usage_row",
        vec![
            row.metric.as_str().into_datum(),
            row.used.into_datum(),
            row.reserved.into_datum(),
            row.allowance.into_datum(),
            remaining_with_grants(row.allowance, row.used, row.grants_left, row.reserved).into_datum(),
            row.grants_left.into_datum(),
            optional_timestamp(row.window.start)?.into_datum(),
            optional_timestamp(row.window.end)?.into_datum(),
            percent.into_datum(),
        ],
    )
}
