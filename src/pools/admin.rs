//! Administration of pools: membership, caps, the pool's admins, and allocations. Every
//! change is recorded in quota.admin_changes. Callable by trusted roles and pg_quota admins;
//! the pool itself (its JWT subject: a teacher) and the subjects named its admins may act on
//! their pool (callers::authorize_for_pool), a member may leave.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::claims::QuotaRole;
use quota_rules::decide::{Decision, Reason, Standing};
use quota_rules::plan::validate_metric;
use quota_rules::request::{self, validate_idempotency_key, Mode};

use super::pool_call;
use crate::alerts::{self, Alerting};
use crate::admin::require_known_metric;
use crate::callers::{authorize, authorize_for_pool, claims, Caller};
use crate::changes::{audited, record, Change};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::spending::{lock_capacity, overage_of, write_event, Entry, Request};
use crate::store::admin::{self as admin_statements, NewGrant};
use crate::store::changes::grant_state;
use crate::store::counters::{self, CounterKey};
use crate::store::fast_path;
use crate::store::ledger;
use crate::store::pools::{self as statements, NewAllocation};
use crate::store::schema::{self, Part};
use crate::store::{to_micros, transaction_now};
use crate::tuples::allocation_tuple;

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
            // The member's marks first, which the membership's trigger would wait for under the
            // lock of all joins (sql/pools.sql): a transaction that marked them would hold up
            // every join, and one that joined someone first could deadlock with it.
            fast_path::forget_subject(client, member, None)?;
            statements::check_not_nested(client, pool, member)?;
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
            let caller = match claims().subject.map(|subject| Uuid::from_bytes(*subject.as_bytes())) {
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
        ledger::lock_idempotency_key(client, pool, request.metric, key)?;
        if let Some(original) = statements::allocation_by_key(client, pool, key)? {
            if original.member != member || original.metric != request.metric || original.amount != request.amount {
                return Err(QuotaError::key_reused(key, &format!("allocating {} {} to {}", original.amount, original.metric, original.member)));
            }
            let event = statements::allocation_event(client, &original)?;
            return Ok(answer(Some(original.allocation_id), Some(original.grant_id), event.pool_remaining, true, Reason::Ok));
        }
    }
    // The member's seat, locked as a spend locks it: it cannot leave meanwhile.
    let Some(call) = pool_call(client, &Request { subject: member, ..*request }, true)? else {
        return match statements::pool_of(client, member)? {
            Some(current) if current == pool => Err(QuotaError::not_pooled(pool, request.metric)),
            _ => Err(QuotaError::not_a_member(member, pool)),
        };
    };
    // The seat is in the member's own pool, which its admin may not be this pool's: an
    // allocation from any other pool would take from that one's counter with the member's
    // pool's allowance.
    if call.seat.pool != pool {
        return Err(QuotaError::not_a_member(member, pool));
    }
    // The member's key and marks before the pool's counter: the grant's trigger would take
    // them after it (a consume locks the member's draws before it).
    fast_path::forget_subject(client, member, Some(request.metric))?;
    // The member's window too, which answering its depletion after the grant locks.
    alerts::lock_current_window(client, member, request.metric)?;
    let capacity = lock_capacity(client, request, call.window, call.governing.allowance(), None)?;
    let paid = capacity.split(request.amount, overage_of(Mode::Allocate, &call.governing, false));
    let taken = capacity.take(client, request, call.window, paid, 0)?;
    let decision = request.decision(taken.split.as_ref(), taken.standing, call.governing.allowance(), call.window);
    let Some(_) = taken.split else {
        return Ok(answer(None, None, decision.remaining, false, Reason::QuotaExceeded));
    };
    let alerting = Some(Alerting::own(pool, &call.governing));
    let entry = Entry { grants_taken: &taken.grants_taken, alerting, ..Entry::new(pool, Mode::Allocate, call.window) };
    let event_id = write_event(client, entry, decision.clone())?.event_id.ok_or_else(|| QuotaError::internal("an allocation without its event"))?;
    let reason = format!("allocation from pool {pool}");
    let grant = NewGrant { subject: member, metric: request.metric, amount: request.amount, expires_at, priority: 0, reason: Some(&reason) };
    let grant_id = admin_statements::insert_grant(client, grant)?.ok_or_else(|| QuotaError::internal("grant insert returned no row"))?;
    let allocation = NewAllocation { pool, member, metric: request.metric, amount: request.amount, grant_id, event_id, window: call.window, idempotency_key: key };
    let allocation_id = statements::insert_allocation(client, allocation)?;
    alerts::recover(client, member, Some(request.metric), "grant")?;
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
    let statements::AllocationEvent { window, from_allowance, .. } = statements::allocation_event(client, &allocation)?;
    let key = CounterKey { subject: allocation.pool, metric: &allocation.metric, window };
    // A window without a counter (quota.compact() closed it) takes nothing back.
    let returned = match counters::lock_existing_counter(client, key)? {
        Some(counter) => unspent.min(from_allowance).min(counter.used),
        None => 0,
    };
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
        alerts::recover(client, allocation.pool, Some(&allocation.metric), "give_back")?;
    }
    statements::close_allocation(client, &allocation, returned)?;
    let after = grant_state(client, allocation.grant_id)?.map(|(_, _, state)| state);
    let change = Change { action: "revoke_allocation", subject: Some(allocation.member), metric: Some(&allocation.metric), ..Change::default() };
    record(client, caller, change, before, after)?;
    Ok(returned)
}
