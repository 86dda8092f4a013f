//! Reservations: reserve holds units before slow work (an AI call) so that concurrent
//! callers cannot spend them; settle pays what the work used and frees the hold; release
//! frees it unused. Holds expire by themselves (quota.expire_reservations() tidies up). A
//! pool's member holds on its pool what its own means cannot (src/pools.rs).

use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::{Decision, Reason, Standing};
use quota_rules::request::{self, hold_ttl_micros, replayable_hold, still_held, validate_idempotency_key, EventKind, Mode, ReservationStatus};
use quota_rules::window::{Micros, Window};

use crate::alerts::{self, Alerting};
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::pools;
use crate::rates::{self, StateRows};
use crate::spending::{governing_for_write, governing_with_assignment, lock_capacity, overage_of, pay, rate_limited, resolve_known, write_event, Entry, Request};
use crate::fast_path::mark_if_it_can_decide;
use crate::store::counters;
use crate::store::fast_holds::{self, NewFastHold};
use crate::store::fast_path;
use crate::store::schema::{self, Part};
use crate::store::ledger;
use crate::store::reservations::{self as held_rows, FindBy, NewHold, Reservation};
use crate::store::transaction_now;
use crate::tuples::{decision_tuple, reservation_tuple, Hold};

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
        let ttl = required(ttl, "ttl")?;
        let ttl = hold_ttl_micros(ttl.months(), ttl.days(), ttl.micros(), || ttl.to_string())?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let (hold, decision) = Spi::connect(|client| hold(client, &request, ttl, key))?;
        reservation_tuple(hold, &decision)
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
        let actual = actual.map(|actual| request::not_negative("actual", actual)).transpose()?;
        let now = transaction_now()?;
        let decision = Spi::connect(|client| settle_reservation(client, id, actual, now))?;
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
        Spi::connect(|client| release_reservation(client, id, now))
    })
}

/// reserve: holds the amount if the window's room and grants cover it after the other holds.
fn hold(client: &SpiClient, request: &Request, ttl: Micros, key: Option<&str>) -> QResult<(Option<Hold>, Decision)> {
    let subject = request.subject;
    let expires_at = request.now.checked_add(ttl).ok_or_else(|| QuotaError::overflow("expires_at"))?;
    let fast_path = schema::has(client, Part::HoldsBound)?;
    if fast_path && key.is_none() {
        let new_hold = NewFastHold { subject, metric: request.metric, amount: request.amount, now: request.now, expires_at };
        if let Some((reservation_id, decision)) = fast_holds::reserve(client, new_hold)? {
            return Ok((Some(Hold { reservation_id, expires_at }), decision));
        }
    }
    if let Some(key) = key {
        ledger::lock_idempotency_key(client, subject, request.metric, key)?;
        if let Some(held) = held_rows::find_reservation(client, FindBy::Key { subject, metric: request.metric, key })? {
            let original = ledger::find_reservation_event(client, held.id, EventKind::Allowed(Mode::Reserve))?
                .ok_or_else(|| QuotaError::internal("reservation without its reserve event"))?;
            let replayed = request::replay(original, request.metric, request.amount, key)?;
            replayable_hold(key, held.id, held.status, held.expires_at, request.now)?;
            let hold = Hold { reservation_id: held.id, expires_at: held.expires_at };
            return Ok((Some(hold), replayed));
        }
    }
    let mut governing = governing_with_assignment(client, request)?;
    let membership = pools::membership(client, request, true)?;
    let member = membership.is_member();
    let pool = membership.call();
    // A hold that grants may pay keeps them from every other window of the subject (one that
    // is current once this hold's window ends, or after a reset): a window marked as a
    // wallet's is decided by a fast statement that does not look for such holds. So the
    // subject's marks go (waiting for a consume that is marking, whose key stays taken until
    // this transaction ends), and none is made while the hold holds
    // (Governing::grants_held_elsewhere). The fast path never holds beside grants anyway.
    // Else the window is marked as a consume marks it, so that the next reserve and settle
    // can take the fast path.
    let pool_has_grants = pool.as_ref().is_some_and(|call| call.governing.grants_left > 0);
    if governing.grants_left > 0 {
        fast_path::forget_subject(client, subject, Some(request.metric))?;
    } else if fast_path && !fast_path::is_marked(client, subject, request.metric, request.now)? {
        governing = mark_if_it_can_decide(client, request, governing, member)?;
    }
    if let Some(call) = &pool {
        pools::lock_member(client, request, call)?;
        // The pool's marks too, after the member's rows (the order every member's call locks
        // them in).
        if pool_has_grants {
            fast_path::forget_subject(client, call.seat.pool, Some(request.metric))?;
        }
    }
    if governing.plan.is_none() && pool.is_none() {
        let denied = request.no_plan(governing.grants_left, Window::LIFETIME);
        let entry = Entry { key, ..Entry::new(subject, Mode::Reserve, Window::LIFETIME) };
        return Ok((None, write_event(client, entry, denied)?));
    }
    let allowance = governing.allowance();
    let window = governing.counting_window(request.now)?;
    let rate = rates::decide(client, request, &governing.rates, StateRows::Lock)?;
    if !rate.admitted() {
        let denied = rate_limited(client, request, &governing, window, &rate)?;
        return Ok((None, write_event(client, Entry { key, ..Entry::new(subject, Mode::Reserve, window) }, denied)?));
    }
    let capacity = lock_capacity(client, request, window, allowance, None)?;
    let standing = Standing { used: capacity.counter.used, reserved: capacity.reserved, grants_left: capacity.grants_total() };
    if capacity.split(request.amount, overage_of(Mode::Reserve, &governing, false)).is_none() {
        if capacity.expired != 0 {
            counters::adjust_counter(client, request.counter(window), 0, -capacity.expired)?;
        }
        if let Some(pool) = pool {
            return pools::hold_from_pool(client, request, pool, &rate, ttl, key);
        }
        let denied = request.decision(None, standing, allowance, window);
        return Ok((None, write_event(client, Entry { key, ..Entry::new(subject, Mode::Reserve, window) }, denied)?));
    }
    let new_hold = NewHold { subject, metric: request.metric, amount: request.amount, window, expires_at, idempotency_key: key, member: None };
    let id = held_rows::insert_reservation(client, new_hold)?;
    // A hold starts the call: it takes the rate rules' room now, and settle takes none.
    rate.commit(client, request)?;
    counters::add_hold(client, request.counter(window), request.amount, capacity.expired, expires_at)?;
    // A hold pays nothing yet: the decision shows what it keeps.
    let reserved = capacity.reserved.saturating_add(request.amount);
    let held = request.decision(None, Standing { reserved, ..standing }, allowance, window);
    let held = Decision { allowed: true, reason: Reason::Ok, retry_after: None, ..held };
    let entry = Entry { key, reservation_id: Some(id), ..Entry::new(subject, Mode::Reserve, window) };
    let decision = write_event(client, entry, held)?;
    Ok((Some(Hold { reservation_id: id, expires_at }), decision))
}

fn find(client: &SpiClient, id: Uuid) -> QResult<Reservation> {
    held_rows::find_reservation(client, FindBy::Id(id))?.ok_or_else(|| QuotaError::unknown_reservation(id))
}

fn settle_reservation(client: &SpiClient, id: Uuid, actual: Option<i64>, now: Micros) -> QResult<Decision> {
    if schema::has(client, Part::HoldsBound)? {
        if let Some(decision) = fast_holds::settle(client, id, actual, now)? {
            return Ok(decision);
        }
    }
    let held = find(client, id)?;
    let actual = actual.unwrap_or(held.amount);
    if held.status == ReservationStatus::Settled {
        let original = ledger::find_reservation_event(client, id, EventKind::Allowed(Mode::Settle))?
            .ok_or_else(|| QuotaError::internal("settled reservation without its settle event"))?;
        return Ok(request::replay_settle(id, original, actual)?);
    }
    still_held(id, held.status, held.expires_at, now)?;
    if held.member.is_some() {
        return pools::settle_from_pool(client, &held, actual, now);
    }
    let request = Request { subject: held.subject, metric: &held.metric, amount: actual, now, at: now, instant: now };
    let governing = governing_for_write(client, &request, resolve_known(client, &request)?)?;
    let allowance = governing.allowance();
    let paid = pay(client, &request, Mode::Settle, overage_of(Mode::Settle, &governing, false), &governing, held.window, allowance, Some(&held))?;
    held_rows::set_reservation_status(client, &held, ReservationStatus::Settled)?;
    let decision = request.decision(paid.split.as_ref(), paid.standing, allowance, held.window);
    let alerting = Some(Alerting::own(held.subject, &governing));
    let entry = Entry { grants_taken: &paid.grants_taken, reservation_id: Some(id), alerting, ..Entry::new(held.subject, Mode::Settle, held.window) };
    write_event(client, entry, decision)
}

fn release_reservation(client: &SpiClient, id: Uuid, now: Micros) -> QResult<()> {
    let held = find(client, id)?;
    still_held(id, held.status, held.expires_at, now)?;
    let request = Request { subject: held.subject, metric: &held.metric, amount: held.amount, now, at: now, instant: now };
    let governing = resolve_known(client, &request)?;
    let allowance = governing.allowance();
    let capacity = lock_capacity(client, &request, held.window, allowance, Some(&held))?;
    let used = counters::adjust_counter(client, request.counter(held.window), 0, -(held.amount + capacity.expired))?;
    held_rows::set_reservation_status(client, &held, ReservationStatus::Released)?;
    let standing = Standing { used, reserved: capacity.reserved, grants_left: capacity.grants_total() };
    let released = Decision { allowed: true, reason: Reason::Ok, retry_after: None, ..request.decision(None, standing, allowance, held.window) };
    // A member's hold on its pool is the member's in the ledger.
    let entry = Entry { reservation_id: Some(id), pool: held.member.map(|_| held.subject), ..Entry::new(held.member.unwrap_or(held.subject), Mode::Release, held.window) };
    write_event(client, entry, released)?;
    alerts::recover(client, held.subject, Some(&held.metric), "release")
}
