//! Pools: a subject (a team, a class, a teacher) whose plan its members draw from, each
//! within a cap, and allocations: fixed parts of the pool given to a member. The tables are
//! in sql/pools.sql, the arithmetic in quota_rules::pool, the documentation in docs/pools.md.
//!
//! A member's consume, record and check (and require and the enforce trigger, which call
//! them) are paid wholly by the member's own means when they cover the amount (its plan's
//! allowance, then its grants, allocations among them), otherwise wholly by the pool: the
//! member's cap and the pool's remaining are decided together, under their locks, and both
//! move or neither. Locks are always taken member first (its membership, its counter and
//! grants, its draws row), then the pool (its rate states, counter, grants), so that members,
//! allocations and admins cannot deadlock. The fast path never decides a member
//! (src/fast_path.rs marks none of its windows).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::{Decision, Reason, Split, Standing};
use quota_rules::governing::Governing;
use quota_rules::plan::validate_metric;
use quota_rules::pool::{cap_left, member_remaining, pooled_split};
use quota_rules::request::{self, validate_idempotency_key, Mode};
use quota_rules::window::Window;

use crate::admin::require_known_metric;
use crate::callers::{authorize, authorize_for_pool, Caller};
use crate::changes::{audited, record, Change};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::jsonb::Jsonb;
use crate::rates::{self, RateCheck, StateRows};
use crate::spending::{governing_with_assignment, lock_capacity, rate_limited, write_event, Entry, Paid, Request};
use crate::store::admin::{self as admin_statements, NewGrant};
use crate::store::changes::grant_state;
use crate::store::counters::{self, CounterKey};
use crate::store::ledger;
use crate::store::pools::{self as statements, DrawsKey, NewAllocation, Seat};
use crate::store::schema::{self, Part};
use crate::store::{to_micros, transaction_now};
use crate::tuples::allocation_tuple;
use quota_rules::claims::QuotaRole;

/// A member's call that its pool may pay for: the member's seat, the pool's side of the
/// request and what governs the pool, and the pool's window.
pub struct PoolCall<'a> {
    pub seat: Seat,
    pub request: Request<'a>,
    pub governing: Governing,
    pub window: Window,
}

impl<'a> PoolCall<'a> {
    fn draws(&self, member: Uuid) -> DrawsKey<'a> {
        DrawsKey { pool: self.seat.pool, member, metric: self.request.metric, window: self.window }
    }
}

/// The pool that pays for the request's subject when its own means cannot: None for a
/// subject in no pool, or whose pool's plan lacks the metric. Locks the membership until
/// commit, so that leaving waits for the call. `assign`: give an unassigned pool the default
/// plan (as a consume gives its subject), so that its windows have an anchor.
pub fn pool_call<'a>(client: &SpiClient, request: &Request<'a>, assign: bool) -> QResult<Option<PoolCall<'a>>> {
    if !schema::has(client, Part::Pools)? {
        return Ok(None);
    }
    let Some(seat) = statements::seat(client, request.subject, request.metric)? else {
        return Ok(None);
    };
    let pool_request = Request { subject: seat.pool, ..*request };
    let governing = counters::resolve(client, seat.pool, request.metric, request.at, request.now)?;
    if governing.plan.is_none() || governing.plan_limit == quota_rules::decide::Limit::Absent {
        return Ok(None);
    }
    let governing = match assign && !governing.assigned {
        true => governing_with_assignment(client, &pool_request)?,
        false => governing,
    };
    let window = governing.window_at(request.at)?;
    Ok(Some(PoolCall { seat, request: pool_request, governing, window }))
}

/// What the pool paid for a member's call (split None: denied), and the member's cap left.
struct PoolPaid {
    paid: Paid,
    cap_left: Option<i64>,
}

/// Decides and takes the member's call from the pool: the member's draws row, then the
/// pool's rate rules, counter and grants. Writes the ledger row, on the member, naming the
/// pool. `own_rate`: the member's own rate rules, admitted, committed when the pool pays.
pub fn spend_from_pool(
    client: &SpiClient,
    request: &Request,
    mode: Mode,
    call: &PoolCall,
    own_rate: &RateCheck,
    key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Decision> {
    if let (Mode::Record, Some(key)) = (mode, key) {
        // A record takes no key lock on its own path (src/spending.rs); here a concurrent
        // retry waits, then replays, rather than count in the pool twice.
        ledger::lock_idempotency_key(client, request.subject, request.metric, key)?;
        if let Some(original) = ledger::find_replay(client, request.subject, request.metric, key)? {
            return Ok(request::replay(original, request.metric, request.amount, key)?);
        }
    }
    let entry = |grants_taken| Entry { grants_taken, key, metadata, pool: Some(call.seat.pool), ..Entry::new(request.subject, mode, call.window) };
    let draws = call.draws(request.subject);
    let drawn = statements::lock_draws(client, draws)?;
    let rules = if mode == Mode::Consume { &call.governing.rates[..] } else { &[] };
    let pool_rate = rates::decide(client, &call.request, rules, StateRows::Lock)?;
    if !pool_rate.admitted() {
        let denied = rate_limited(client, &call.request, &call.governing, call.window, &pool_rate)?;
        return write_event(client, entry(&[]), member_view(denied, call.seat.cap, cap_left(call.seat.cap, drawn)));
    }
    let taken = take_from_pool(client, call, mode, draws, drawn)?;
    if taken.paid.split.is_some() {
        own_rate.commit(client, request)?;
        pool_rate.commit(client, &call.request)?;
    }
    let decision = call.request.decision(taken.paid.split.as_ref(), taken.paid.standing, call.governing.allowance(), call.window);
    let decision = member_view(decision, call.seat.cap, taken.cap_left);
    write_event(client, entry(&taken.paid.grants_taken), decision)
}

/// Under the member's draws lock: locks the pool's capacity, splits the amount within the
/// cap, counts it in the pool's window and in the member's draws.
fn take_from_pool(client: &SpiClient, call: &PoolCall, mode: Mode, draws: DrawsKey, drawn: i64) -> QResult<PoolPaid> {
    let capacity = lock_capacity(client, &call.request, call.window, call.governing.allowance(), None)?;
    let split = pooled_split(call.request.amount, capacity.room, &capacity.balances, cap_left(call.seat.cap, drawn), mode.overage_allowed());
    let paid = capacity.take(client, &call.request, call.window, split, 0)?;
    let drawn = match &paid.split {
        Some(split) => statements::adjust_draws(client, draws, drawn_by(split))?,
        None => drawn,
    };
    Ok(PoolPaid { paid, cap_left: cap_left(call.seat.cap, drawn) })
}

/// All a split takes from the pool counts toward the member's cap, grants and overage too.
fn drawn_by(split: &Split) -> i64 {
    split.from_allowance + split.grants_total() + split.overage
}

/// A decision on the pool's window as the member sees it: what it can still draw is the
/// pool's remaining, at most its cap left; an amount over the cap never fits, so it has no
/// retry_after.
fn member_view(decision: Decision, cap: Option<i64>, cap_left: Option<i64>) -> Decision {
    let over_cap = cap.is_some_and(|cap| decision.amount > cap);
    Decision {
        remaining: member_remaining(decision.remaining, cap_left),
        retry_after: decision.retry_after.filter(|_| !over_cap),
        ..decision
    }
}

/// check() of a member whose own means do not cover the amount: what the pool would decide
/// now, read without locks or writes.
pub fn check_from_pool(client: &SpiClient, call: &PoolCall, member: Uuid) -> QResult<Decision> {
    let request = &call.request;
    let counter = counters::read_counter(client, request.counter(call.window))?;
    let reserved = match counter.held {
        0 => 0,
        _ => counters::active_holds(client, request.counter(call.window), request.now)?,
    };
    let allowance = call.governing.allowance();
    let mut grants = [call.governing.grants_left];
    let room = quota_rules::decide::after_holds(quota_rules::decide::remaining(allowance, counter.used), &mut grants, reserved);
    let left = cap_left(call.seat.cap, statements::read_draws(client, call.draws(member))?);
    let paid = pooled_split(request.amount, room, &grants, left, false);
    let standing = Standing { used: counter.used, reserved, grants_left: call.governing.grants_left };
    let decision = member_view(request.decision(paid.as_ref(), standing, allowance, call.window), call.seat.cap, left);
    let rate = rates::decide(client, request, &call.governing.rates, StateRows::Read)?;
    match rate.admitted() {
        true => Ok(decision),
        false => Ok(decision.rate_limited(rate.retry_at())),
    }
}

/// give_back of a member that used nothing of its own window: returns units to its pool's
/// current window, at most what the member drew there.
pub fn give_back_to_pool(client: &SpiClient, request: &Request, call: &PoolCall) -> QResult<Decision> {
    let draws = call.draws(request.subject);
    let drawn = statements::lock_draws(client, draws)?;
    let counter = counters::lock_counter(client, call.request.counter(call.window))?;
    let returned = request.amount.min(drawn).min(counter.used);
    let used = match returned {
        0 => counter.used,
        _ => {
            statements::adjust_draws(client, draws, -returned)?;
            counters::adjust_counter(client, call.request.counter(call.window), -returned, 0)?
        }
    };
    let reserved = match counter.held {
        0 => 0,
        _ => counters::active_holds(client, call.request.counter(call.window), request.now)?,
    };
    let standing = Standing { used, reserved, grants_left: call.governing.grants_left };
    let given = Decision {
        allowed: true,
        reason: Reason::Ok,
        retry_after: None,
        amount: returned,
        from_allowance: returned,
        ..call.request.decision(None, standing, call.governing.allowance(), call.window)
    };
    let given = member_view(given, call.seat.cap, cap_left(call.seat.cap, drawn - returned));
    write_event(client, Entry { pool: Some(call.seat.pool), ..Entry::new(request.subject, Mode::GiveBack, call.window) }, given)
}

/// The pool the subject is a member of (None on a schema without pools).
pub fn pool_of(client: &SpiClient, member: Uuid) -> QResult<Option<Uuid>> {
    match schema::has(client, Part::Pools)? {
        true => statements::pool_of(client, member),
        false => Ok(None),
    }
}

/// What a member's usage row shows of its pool: the pool, what the member drew in the
/// pool's current window, its cap, and what it can still draw.
pub struct PoolUsage {
    pub pool: Uuid,
    pub drawn: i64,
    pub cap: Option<i64>,
    pub remaining: Option<i64>,
}

/// The member's pool side of one metric, read without locks (None: not pooled).
pub fn pool_usage(client: &SpiClient, member: Uuid, metric: &str, now: quota_rules::window::Micros) -> QResult<Option<PoolUsage>> {
    let request = Request { subject: member, metric, amount: 1, now, at: now, instant: now };
    let Some(call) = pool_call_unlocked(client, &request)? else {
        return Ok(None);
    };
    let counter = counters::read_counter(client, call.request.counter(call.window))?;
    let reserved = match counter.held {
        0 => 0,
        _ => counters::active_holds(client, call.request.counter(call.window), now)?,
    };
    let drawn = statements::read_draws(client, call.draws(member))?;
    let pool_left =
        quota_rules::decide::remaining_with_grants(call.governing.allowance(), counter.used, call.governing.grants_left, reserved);
    let remaining = member_remaining(pool_left, cap_left(call.seat.cap, drawn));
    Ok(Some(PoolUsage { pool: call.seat.pool, drawn, cap: call.seat.cap, remaining }))
}

/// pool_call for readers: no lock on the membership (my_usage runs as the user, who may
/// not lock), no assignment written.
pub fn pool_call_unlocked<'a>(client: &SpiClient, request: &Request<'a>) -> QResult<Option<PoolCall<'a>>> {
    if !schema::has(client, Part::Pools)? {
        return Ok(None);
    }
    let Some(seat) = statements::seat_unlocked(client, request.subject, request.metric)? else {
        return Ok(None);
    };
    let governing = counters::resolve(client, seat.pool, request.metric, request.at, request.now)?;
    if governing.plan.is_none() || governing.plan_limit == quota_rules::decide::Limit::Absent {
        return Ok(None);
    }
    let window = governing.window_at(request.at)?;
    Ok(Some(PoolCall { seat, request: Request { subject: seat.pool, ..*request }, governing, window }))
}

/// Adds `member` to `pool`: from now on the pool pays for the member's calls of the metrics
/// of the pool's plan that its own means do not cover. A subject is in one pool at a time
/// (23505 for another); joining the same pool again changes nothing.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn join_pool(pool: Option<Uuid>, member: Option<Uuid>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let pool = required(pool, "pool")?;
        let member = required(member, "member")?;
        if pool == member {
            return Err(QuotaError::invalid("a pool cannot be a member of itself"));
        }
        Spi::connect(|client| {
            let caller = authorize(client, QuotaRole::Admin, "join_pool")?;
            let before = statements::membership_state(client, member)?;
            match statements::join(client, pool, member)? {
                None => {}
                Some(current) if current == pool => return Ok(()),
                Some(other) => return Err(QuotaError::in_another_pool(member, other)),
            }
            let after = statements::membership_state(client, member)?;
            record(client, &caller, Change { action: "join_pool", subject: Some(member), ..Change::default() }, before, after)
        })
    })
}

/// Removes `member` from `pool`. What it drew stays counted in the pool's window; its
/// allocations that are not revoked are revoked (what they had left returns to the pool).
/// The pool's admins and the member itself may call it.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn leave_pool(pool: Option<Uuid>, member: Option<Uuid>) -> Result<(), ErrorReport> {
    sql_call(|| {
        let pool = required(pool, "pool")?;
        let member = required(member, "member")?;
        Spi::connect(|client| {
            let caller = match crate::callers::claims().subject.map(|subject| Uuid::from_bytes(*subject.as_bytes())) {
                Some(subject) if subject == member => Caller::current(),
                _ => authorize_for_pool(client, pool, "leave_pool")?,
            };
            let before = statements::membership_state(client, member)?;
            if statements::pool_of(client, member)? != Some(pool) {
                return Err(QuotaError::not_a_member(member, pool));
            }
            // The membership first (member-level, as a spend locks it), then its allocations.
            statements::leave(client, member)?;
            for allocation_id in statements::member_allocations(client, member)? {
                close_allocation(client, &caller, allocation_id)?;
            }
            record(client, &caller, Change { action: "leave_pool", subject: Some(member), ..Change::default() }, before, None)
        })
    })
}

/// What a member may draw from the pool per window of the metric: `member` NULL sets the
/// pool's default for its members, a member's own cap replaces it. `cap` NULL: no cap.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_pool_cap(pool: Option<Uuid>, metric: Option<&str>, cap: Option<i64>, member: default!(Option<Uuid>, "NULL")) -> Result<(), ErrorReport> {
    sql_call(|| {
        let cap = cap.map(|cap| request::not_negative("cap", cap)).transpose()?;
        change_cap(pool, metric, member, "set_pool_cap", |client, pool, metric| statements::set_cap(client, pool, metric, member, cap))
    })
}

/// Removes a cap: a member's falls back to the pool's default, the default to no cap.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn clear_pool_cap(pool: Option<Uuid>, metric: Option<&str>, member: default!(Option<Uuid>, "NULL")) -> Result<(), ErrorReport> {
    sql_call(|| change_cap(pool, metric, member, "clear_pool_cap", |client, pool, metric| statements::clear_cap(client, pool, metric, member)))
}

fn change_cap(
    pool: Option<Uuid>,
    metric: Option<&str>,
    member: Option<Uuid>,
    action: &'static str,
    apply: impl FnOnce(&SpiClient, Uuid, &str) -> QResult<()>,
) -> QResult<()> {
    let pool = required(pool, "pool")?;
    let metric = required(metric, "metric")?;
    validate_metric(metric)?;
    Spi::connect(|client| {
        let caller = authorize_for_pool(client, pool, action)?;
        require_known_metric(client, metric)?;
        if let Some(member) = member {
            if statements::pool_of(client, member)? != Some(pool) {
                return Err(QuotaError::not_a_member(member, pool));
            }
        }
        let change = Change { action, subject: Some(member.unwrap_or(pool)), metric: Some(metric), ..Change::default() };
        audited(client, &caller, change, |client| statements::cap_state(client, pool, metric, member), |client| apply(client, pool, metric))
    })
}

/// Names `admin` as an admin of `pool` (or, with is_admin false, no longer): it may then
/// allocate, set caps and see every member's usage. The pool itself may call it.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_pool_admin(pool: Option<Uuid>, admin: Option<Uuid>, is_admin: default!(Option<bool>, true)) -> Result<(), ErrorReport> {
    sql_call(|| {
        let pool = required(pool, "pool")?;
        let admin = required(admin, "admin")?;
        let is_admin = required(is_admin, "is_admin")?;
        Spi::connect(|client| {
            let caller = authorize_for_pool(client, pool, "set_pool_admin")?;
            let was = statements::administers(client, pool, admin)?;
            statements::set_admin(client, pool, admin, is_admin)?;
            let state = |admin: bool| admin.then(|| serde_json::json!({ "pool": pool.to_string(), "admin": true }).to_string());
            record(client, &caller, Change { action: "set_pool_admin", subject: Some(admin), ..Change::default() }, state(was), state(is_admin))
        })
    })
}

/// Gives `member` a fixed part of the pool: `amount` is taken from the pool's current window
/// at once (its allowance, then its grants) and becomes the member's grant, spent before
/// anything the pool pays. Denied (allowed false) when the pool has not that much left. A
/// retry with the same key replays the first allocation.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn allocate(
    pool: Option<Uuid>,
    member: Option<Uuid>,
    metric: Option<&str>,
    amount: Option<i64>,
    idempotency_key: default!(Option<&str>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<pgrx::composite_type!('static, "quota.allocation"), ErrorReport> {
    sql_call(|| {
        let member = required(member, "member")?;
        let request = Request::new(pool, metric, amount, None)?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let expires_at = expires_at
            .map(|expires_at| Ok::<_, QuotaError>(request::future_expiry(to_micros(expires_at, "expires_at")?, request.now)?))
            .transpose()?;
        let outcome = Spi::connect(|client| allocate_part(client, &request, member, key, expires_at))?;
        allocation_tuple(&outcome)
    })
}

/// What quota.allocate() answers.
pub struct Allocated {
    pub allocation_id: Option<Uuid>,
    pub grant_id: Option<Uuid>,
    pub pool: Uuid,
    pub member: Uuid,
    pub metric: String,
    pub amount: i64,
    pub pool_remaining: Option<i64>,
    pub replayed: bool,
    pub reason: Reason,
}

fn allocate_part(client: &SpiClient, request: &Request, member: Uuid, key: Option<&str>, expires_at: Option<i64>) -> QResult<Allocated> {
    let pool = request.subject;
    let caller = authorize_for_pool(client, pool, "allocate")?;
    if !schema::has(client, Part::Pools)? {
        return Err(QuotaError::schema_too_old("pools", "0.9.0"));
    }
    let answer = |allocation_id, grant_id, pool_remaining, replayed, reason| Allocated {
        allocation_id,
        grant_id,
        pool,
        member,
        metric: request.metric.to_string(),
        amount: request.amount,
        pool_remaining,
        replayed,
        reason,
    };
    if let Some(key) = key {
        crate::store::ledger::lock_idempotency_key(client, pool, request.metric, key)?;
        if let Some(original) = statements::allocation_by_key(client, pool, key)? {
            if original.member != member || original.metric != request.metric || original.amount != request.amount {
                return Err(QuotaError::key_reused(key, &format!("allocating {} {} to {}", original.amount, original.metric, original.member)));
            }
            return Ok(answer(Some(original.allocation_id), Some(original.grant_id), None, true, Reason::Ok));
        }
    }
    // The member's seat, locked as a spend locks it: it cannot leave meanwhile.
    let Some(call) = pool_call(client, &Request { subject: member, ..*request }, true)? else {
        return match statements::pool_of(client, member)? {
            Some(current) if current == pool => Err(QuotaError::not_pooled(pool, request.metric)),
            _ => Err(QuotaError::not_a_member(member, pool)),
        };
    };
    let capacity = lock_capacity(client, request, call.window, call.governing.allowance(), None)?;
    let paid = capacity.split(request.amount, Mode::Allocate);
    let taken = capacity.take(client, request, call.window, paid, 0)?;
    let decision = request.decision(taken.split.as_ref(), taken.standing, call.governing.allowance(), call.window);
    let Some(_) = taken.split else {
        return Ok(answer(None, None, decision.remaining, false, Reason::QuotaExceeded));
    };
    let entry = Entry { grants_taken: &taken.grants_taken, ..Entry::new(pool, Mode::Allocate, call.window) };
    let event_id = write_event(client, entry, decision.clone())?.event_id.ok_or_else(|| QuotaError::internal("an allocation without its event"))?;
    let reason = format!("allocation from pool {pool}");
    let grant = NewGrant { subject: member, metric: request.metric, amount: request.amount, expires_at, priority: 0, reason: Some(&reason) };
    let grant_id = admin_statements::insert_grant(client, grant)?.ok_or_else(|| QuotaError::internal("grant insert returned no row"))?;
    let allocation = NewAllocation { pool, member, metric: request.metric, amount: request.amount, grant_id, event_id, window: call.window, idempotency_key: key };
    let allocation_id = statements::insert_allocation(client, allocation)?;
    let after = grant_state(client, grant_id)?.map(|(_, _, state)| state);
    record(client, &caller, Change { action: "allocate", subject: Some(member), metric: Some(request.metric), ..Change::default() }, None, after)?;
    Ok(answer(Some(allocation_id), Some(grant_id), decision.remaining, false, Reason::Ok))
}

/// Takes back what is left of an allocation: its grant is revoked, and what it had left
/// returns to the pool's window it came from (at most what it took from the pool's
/// allowance: grants of the pool that paid for it are not refilled). Returns the units
/// returned; revoking again returns 0.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_allocation(allocation_id: Option<Uuid>) -> Result<i64, ErrorReport> {
    sql_call(|| {
        let allocation_id = required(allocation_id, "allocation_id")?;
        Spi::connect(|client| {
            let allocation = statements::find_allocation(client, allocation_id)?.ok_or_else(|| QuotaError::unknown_allocation(allocation_id))?;
            let caller = authorize_for_pool(client, allocation.pool, "revoke_allocation")?;
            close_allocation(client, &caller, allocation_id)
        })
    })
}

/// Revokes the allocation's grant (member level: its row lock first) and returns what it had
/// left to the pool's window (then the pool's counter).
fn close_allocation(client: &SpiClient, caller: &Caller, allocation_id: Uuid) -> QResult<i64> {
    let found = statements::find_allocation(client, allocation_id)?.ok_or_else(|| QuotaError::unknown_allocation(allocation_id))?;
    let unspent = statements::lock_grant(client, found.member, found.grant_id)?;
    let allocation = statements::lock_allocation(client, allocation_id)?.ok_or_else(|| QuotaError::unknown_allocation(allocation_id))?;
    if allocation.revoked {
        return Ok(0);
    }
    let before = grant_state(client, allocation.grant_id)?.map(|(_, _, state)| state);
    admin_statements::revoke_grant(client, allocation.grant_id)?;
    let (window, from_allowance) = statements::allocation_event(client, &allocation)?;
    let key = CounterKey { subject: allocation.pool, metric: &allocation.metric, window };
    let counter = counters::lock_counter(client, key)?;
    let returned = unspent.min(from_allowance).min(counter.used);
    if returned > 0 {
        let used = counters::adjust_counter(client, key, -returned, 0)?;
        let now = transaction_now()?;
        let request = Request { subject: allocation.pool, metric: &allocation.metric, amount: returned, now, at: now, instant: now };
        let standing = Standing { used, reserved: 0, grants_left: 0 };
        let given = Decision {
            allowed: true,
            reason: Reason::Ok,
            retry_after: None,
            from_allowance: returned,
            ..request.decision(None, standing, None, window)
        };
        write_event(client, Entry::new(allocation.pool, Mode::GiveBack, window), given)?;
    }
    statements::close_allocation(client, &allocation, returned)?;
    let after = grant_state(client, allocation.grant_id)?.map(|(_, _, state)| state);
    let change = Change { action: "revoke_allocation", subject: Some(allocation.member), metric: Some(&allocation.metric), ..Change::default() };
    record(client, caller, change, before, after)?;
    Ok(returned)
}
