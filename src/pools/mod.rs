//! Pools: a subject (a team, a class, a teacher) whose plan its members draw from, each
//! within a cap, and allocations: fixed parts of the pool given to a member. The tables are
//! in sql/pools.sql, the arithmetic in quota_rules::pool, the documentation in docs/pools.md;
//! administration (membership, caps, admins, allocations) in `admin`.
//!
//! Here: how the pool decides a member's call. Every path (consume, record, check, reserve,
//! settle, consume_many, give_back; require and the enforce trigger call them) pays wholly
//! by the member's own means when they cover the amount (its plan's allowance, then its
//! grants, allocations among them), otherwise wholly by the pool: the member's cap and the
//! pool's remaining are decided together, under their locks, and both move or neither.
//! Locks are always taken member first (its membership, its draws row, its own counter and
//! grants), then the pool (its rate states, counter, grants), so that members, allocations
//! and admins cannot deadlock. The fast path never decides a member (src/fast_path.rs marks none
//! of its windows).

mod admin;

pub use admin::Allocated;

use std::cell::RefCell;
use std::collections::HashSet;

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::{after_holds, ceiling, remaining, remaining_with_grants, Ceiling, Decision, Limit, Reason, Split, Standing};
use quota_rules::governing::Governing;
use quota_rules::pool::{cap_binds, cap_left, member_remaining, pooled_split};
use quota_rules::request::{Mode, ReservationStatus};
use quota_rules::window::{Micros, Window};

use crate::alerts::{self, Alerting};
use crate::error::{QResult, QuotaError};
use crate::store::fast_path as fast_path_keys;
use crate::jsonb::Jsonb;
use crate::rates::{self, RateCheck, StateRows};
use crate::spending::{
    governing_for_write, governing_with_assignment, lock_capacity, rate_limited, replay_the_key_holder, resolve_known, try_write_event, write_event, Capacity,
    Entry, Request,
};
use crate::store::counters;
use crate::store::transaction_snapshot_is_fixed;
use crate::store::pools::{self as statements, DrawsKey, Seat};
use crate::store::reservations::{self as held_rows, NewHold, Reservation};
use crate::store::schema::{self, Part};
use crate::tuples::Hold;

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

/// A subject's place in a pool, for one metric.
pub enum Membership<'a> {
    /// In no pool.
    None,
    /// A member of a pool whose plan lacks the metric: its own means alone decide it.
    Unpooled,
    /// A member its pool pays for when its own means cannot.
    Pooled(PoolCall<'a>),
}

impl<'a> Membership<'a> {
    pub fn is_member(&self) -> bool {
        !matches!(self, Membership::None)
    }

    pub fn call(self) -> Option<PoolCall<'a>> {
        match self {
            Membership::Pooled(call) => Some(call),
            _ => None,
        }
    }
}

/// The request's subject in its pool, the membership locked until commit, so that leaving
/// waits for the call. `assign`: give an unassigned pool the default plan (as a consume gives
/// its subject), so that its windows have an anchor.
pub fn membership<'a>(client: &SpiClient, request: &Request<'a>, assign: bool) -> QResult<Membership<'a>> {
    if !schema::has(client, Part::Pools)? {
        return Ok(Membership::None);
    }
    let Some(seat) = statements::seat(client, request.subject, request.metric)? else {
        return Ok(Membership::None);
    };
    let pool_request = Request { subject: seat.pool, ..*request };
    let governing = counters::resolve(client, seat.pool, request.metric, request.at, request.now)?;
    if !pools_metric(&governing) {
        return Ok(Membership::Unpooled);
    }
    let governing = match (assign, governing.assigned) {
        (true, false) => governing_with_assignment(client, &pool_request)?,
        (true, true) => governing_for_write(client, &pool_request, governing)?,
        (false, _) => governing,
    };
    let window = governing.window_at(request.at)?;
    Ok(Membership::Pooled(PoolCall { seat, request: pool_request, governing, window }))
}

/// The pool that pays for the request's subject when its own means cannot: None for a
/// subject in no pool, or whose pool's plan lacks the metric.
pub fn pool_call<'a>(client: &SpiClient, request: &Request<'a>, assign: bool) -> QResult<Option<PoolCall<'a>>> {
    membership(client, request, assign).map(Membership::call)
}

/// Locks the member's draws row of the pool's window (creating it) before any other row of
/// the member: a consume on the pooled fast path holds it when it falls back to the locked
/// path, which then locks the member's own counter and grants (and a bundle or a hold locks
/// those before it asks the pool).
pub fn lock_member(client: &SpiClient, request: &Request, call: &PoolCall) -> QResult<()> {
    statements::lock_draws(client, call.draws(request.subject)).map(drop)
}

/// pool_call for readers: no lock on the membership (check and my_usage are STABLE, and
/// my_usage runs as the user), no assignment written.
pub fn pool_call_unlocked<'a>(client: &SpiClient, request: &Request<'a>) -> QResult<Option<PoolCall<'a>>> {
    if !schema::has(client, Part::Pools)? {
        return Ok(None);
    }
    let Some(seat) = statements::seat_unlocked(client, request.subject, request.metric)? else {
        return Ok(None);
    };
    let governing = counters::resolve(client, seat.pool, request.metric, request.at, request.now)?;
    if !pools_metric(&governing) {
        return Ok(None);
    }
    let window = governing.window_at(request.at)?;
    Ok(Some(PoolCall { seat, request: Request { subject: seat.pool, ..*request }, governing, window }))
}

/// A pool pays for the metrics its plan has a limit for.
fn pools_metric(governing: &Governing) -> bool {
    governing.plan.is_some() && governing.plan_limit != Limit::Absent
}

/// The pool the subject is a member of (None on a schema without pools).
pub fn pool_of(client: &SpiClient, member: Uuid) -> QResult<Option<Uuid>> {
    match schema::has(client, Part::Pools)? {
        true => statements::pool_of(client, member),
        false => Ok(None),
    }
}

thread_local! {
    // What this backend learned of the pooled fast path: the subjects its pools paid for
    // last (their consume tries it first: a member's windows are never marked), and the
    // metrics any pool paid for (a consume of such a metric whose window is not marked tries
    // it next). Only hints: a stale one costs a statement, never a wrong decision.
    static POOLED_MEMBERS: RefCell<HashSet<Uuid>> = RefCell::new(HashSet::new());
    static POOLED_METRICS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// At most this many hints of each kind per backend; past it they are forgotten at once.
const POOLED_HINTS: usize = 65_536;

/// Whether the member's consume should try the pooled fast path before consume's own.
pub fn hinted(member: Uuid) -> bool {
    POOLED_MEMBERS.with(|hints| hints.borrow().contains(&member))
}

/// Whether a consume of the metric whose window is not marked should try the pooled fast
/// path.
pub fn metric_hinted(metric: &str) -> bool {
    POOLED_METRICS.with(|hints| hints.borrow().contains(metric))
}

/// Remembers whether the subject's last consume was paid for by a pool.
pub fn remember(member: Uuid, metric: &str, pooled: bool) {
    POOLED_MEMBERS.with(|hints| {
        let mut hints = hints.borrow_mut();
        if !pooled {
            hints.remove(&member);
            return;
        }
        if hints.len() >= POOLED_HINTS {
            hints.clear();
        }
        hints.insert(member);
    });
    if pooled && !metric_hinted(metric) {
        POOLED_METRICS.with(|hints| {
            let mut hints = hints.borrow_mut();
            if hints.len() >= POOLED_HINTS {
                hints.clear();
            }
            hints.insert(metric.to_string());
        });
    }
}

/// A member's consume on its draws row and its pool's window, both marked: one statement;
/// None when the locked path must decide.
pub fn fast_consume(client: &SpiClient, request: &Request, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Option<Decision>> {
    let decided = statements::fast_consume(client, request.subject, request.metric, request.amount, request.now, key, metadata)?;
    if decided.is_some() {
        remember(request.subject, request.metric, true);
    }
    Ok(decided)
}

/// After the pooled fast path took nothing: the denial its marks decide, as the locked path
/// would (the pool's, or the cap's while the pool could pay), with its ledger row; None when
/// nothing is marked, or the amount fits after all (a concurrent give-back or reset).
pub fn fast_denial(client: &SpiClient, request: &Request, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Option<Decision>> {
    let Some(marked) = statements::marked_pooled(client, request.subject, request.metric, request.now)? else {
        return Ok(None);
    };
    let room = remaining(marked.allowance, marked.used);
    let standing = CapStanding { cap: marked.cap, drawn: marked.drawn, held: 0 };
    if pooled_split(request.amount, room, &[], standing.left(), false).is_some() {
        return Ok(None);
    }
    let pool_request = Request { subject: marked.pool, ..*request };
    let pool_standing = Standing { used: marked.used, reserved: 0, grants_left: 0 };
    let denied = pool_request.decision(None, pool_standing, marked.allowance, marked.window);
    let denied = standing.view(denied, cap_binds(request.amount, room, &[], standing.left()));
    let entry = Entry { key, metadata, pool: Some(marked.pool), ..Entry::new(request.subject, Mode::Consume, marked.window) };
    write_event(client, entry, denied).map(Some)
}

/// Marks the member's draws row of the pool's current window, and the pool's window, for
/// the pooled fast path when both can be decided on alone: the member's own means pay
/// nothing for the metric (an assigned plan with no allowance for it, no usable grants, no
/// rate rule) and the pool's window may be marked (src/fast_path.rs) without rate rules.
/// Under both subjects' fast-path keys (the changes that unmark them take the same), what
/// governs both is read again, and the member's draws rows are locked before the pool's
/// counter.
pub fn mark_if_it_can_decide(client: &SpiClient, request: &Request, member: &Governing, call: &PoolCall) -> QResult<()> {
    let (Some(member_plan), Some(pool_plan)) = (member.plan.as_deref(), call.governing.plan.as_deref()) else {
        return Ok(());
    };
    if !pooled_fast_path_can_decide(member, call) || transaction_snapshot_is_fixed() {
        return Ok(());
    }
    if statements::marked_for_fast_pooled(client, call.draws(request.subject))? {
        return Ok(());
    }
    if !fast_path_keys::try_lock(client, request.subject, member_plan)? || !fast_path_keys::try_lock(client, call.seat.pool, pool_plan)? {
        return Ok(());
    }
    let member_now = resolve_known(client, request)?;
    let Some(call_now) = pool_call_unlocked(client, request)? else {
        return Ok(());
    };
    let same_plans = member_now.plan.as_deref() == Some(member_plan) && call_now.governing.plan.as_deref() == Some(pool_plan);
    // A reset of the pool committed since the call resolved its window: the call still counts
    // in the window it resolved, and marking the new one would lock it first (a release in the
    // older window locks the newer one after it: a deadlock).
    if !same_plans || call_now.seat.pool != call.seat.pool || call_now.window != call.window || !pooled_fast_path_can_decide(&member_now, &call_now) {
        return Ok(());
    }
    // Not now when another transaction holds an older marked row of the member.
    if !statements::mark_draws(client, call_now.draws(request.subject), call_now.seat.cap)? {
        return Ok(());
    }
    let no_rules = fast_path_keys::RulesInForce { rules: &[], until: None };
    let pool = &call_now.governing;
    fast_path_keys::mark(client, call_now.request.counter(call_now.window), pool.allowance(), no_rules, &pool.alerts, pool.ledger, false)
}

fn pooled_fast_path_can_decide(member: &Governing, call: &PoolCall) -> bool {
    member.assigned && member.allowance() == Some(0) && member.grants_left == 0 && member.rates.is_empty()
        && call.governing.fast_path_can_decide() && call.governing.rates.is_empty()
}

/// A member against its cap in the pool's window: what it drew, and what its unexpired
/// holds on the pool keep.
#[derive(Debug, Clone, Copy)]
struct CapStanding {
    cap: Option<i64>,
    drawn: i64,
    held: i64,
}

impl CapStanding {
    /// Under the member's draws lock and the pool's counter lock (holds are read only when
    /// the window has any). `settling`: the hold being settled, which is not counted.
    fn read(client: &SpiClient, call: &PoolCall, draws: DrawsKey, drawn: i64, window_holds: i64, settling: Option<Uuid>) -> QResult<Self> {
        let held = match (call.seat.cap, window_holds) {
            (None, _) | (_, 0) => 0,
            _ => statements::member_holds(client, draws, call.request.now, settling)?,
        };
        Ok(CapStanding { cap: call.seat.cap, drawn, held })
    }

    /// What the member may still draw (None = no cap).
    fn left(self) -> Option<i64> {
        cap_left(self.cap, self.drawn.saturating_add(self.held))
    }

    fn after(self, taken: i64, held_change: i64) -> CapStanding {
        CapStanding { drawn: self.drawn.saturating_add(taken), held: self.held.saturating_add(held_change), ..self }
    }

    /// A decision on the pool's window as the member sees it. The pool's denial keeps the
    /// pool's numbers, what the member can still draw is the pool's remaining at most its cap
    /// left, and an amount over the cap never fits (no retry_after). The cap's own denial
    /// (the pool could pay: `pool_could_pay`) is cap_reached, with the cap's numbers: used is
    /// what the member drew, reserved what it holds, allowance its cap.
    fn view(self, decision: Decision, pool_could_pay: bool) -> Decision {
        let over_cap = self.cap.is_some_and(|cap| decision.amount > cap);
        if decision.reason == Reason::QuotaExceeded && pool_could_pay {
            return Decision {
                reason: Reason::CapReached,
                used: self.drawn,
                reserved: self.held,
                allowance: self.cap,
                remaining: self.left(),
                retry_after: decision.resets_at.filter(|_| !over_cap),
                ..decision
            };
        }
        Decision {
            remaining: member_remaining(decision.remaining, self.left()),
            retry_after: decision.retry_after.filter(|_| !over_cap),
            ..decision
        }
    }
}

/// All a split takes from the pool counts toward the member's cap, grants and overage too.
fn drawn_by(split: &Split) -> i64 {
    split.from_allowance + split.grants_total() + split.overage
}

/// The pool's side of a member's call, decided under the member's draws lock and the pool's
/// locks, not taken yet: consume, record and each metric of a bundle.
pub struct PooledDecided<'r> {
    call: PoolCall<'r>,
    draws: DrawsKey<'r>,
    rate: RateCheck,
    capacity: Capacity,
    standing: CapStanding,
    paid: Option<Split>,
    /// The pool alone could pay: a denial is the cap's.
    pool_could_pay: bool,
}

impl PooledDecided<'_> {
    pub fn fits(&self) -> bool {
        self.paid.is_some()
    }
}

/// Locks the member's draws, then the pool's rate states, counter and grants, and decides
/// how the pool would pay the amount within the cap (record and settle: beyond it, overage).
pub fn decide_from_pool<'r>(client: &SpiClient, request: &Request<'r>, call: PoolCall<'r>, mode: Mode) -> QResult<PooledDecided<'r>> {
    let draws = call.draws(request.subject);
    let drawn = statements::lock_draws(client, draws)?;
    // Records are usage that already happened: rate rules do not apply to them.
    let rules = if mode == Mode::Consume { &call.governing.rates[..] } else { &[] };
    let rate = rates::decide(client, &call.request, rules, StateRows::Lock)?;
    decide_locked(client, request, call, mode, draws, drawn, rate)
}

/// decide_from_pool under the member's draws lock and the pool's rate states.
fn decide_locked<'r>(
    client: &SpiClient,
    request: &Request<'r>,
    call: PoolCall<'r>,
    mode: Mode,
    draws: DrawsKey<'r>,
    drawn: i64,
    rate: RateCheck,
) -> QResult<PooledDecided<'r>> {
    let capacity = lock_capacity(client, &call.request, call.window, call.governing.allowance(), None)?;
    let standing = CapStanding::read(client, &call, draws, drawn, capacity.reserved, None)?;
    let amount = request.amount;
    let paid = pooled_split(amount, capacity.room, &capacity.balances, standing.left(), mode.overage_allowed()).filter(|_| rate.admitted());
    let pool_could_pay = cap_binds(amount, capacity.room, &capacity.balances, standing.left());
    Ok(PooledDecided { call, draws, rate, capacity, standing, paid, pool_could_pay })
}

/// Takes what was decided when `take` (a bundle: when every metric fits), and writes the
/// ledger row, on the member, naming the pool. A call that fits in a denied bundle only
/// frees the pool's expired holds and writes nothing. `own_rate`: the member's own rules,
/// admitted, committed with the pool's.
pub fn take_decided(
    client: &SpiClient,
    request: &Request,
    mode: Mode,
    decided: PooledDecided,
    take: bool,
    own_rate: &RateCheck,
    key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Decision> {
    let PooledDecided { call, draws, rate, capacity, standing, paid, pool_could_pay } = decided;
    let entry = |grants_taken, alerting| Entry { grants_taken, key, metadata, pool: Some(call.seat.pool), alerting, ..Entry::new(request.subject, mode, call.window) };
    if !rate.admitted() {
        capacity.take(client, &call.request, call.window, None, 0)?;
        let denied = rate_limited(client, &call.request, &call.governing, call.window, &rate)?;
        return write_event(client, entry(&[], None), standing.view(denied, false));
    }
    let fits = paid.is_some();
    let taken = capacity.take(client, &call.request, call.window, paid.filter(|_| take), 0)?;
    let drawn = taken.split.as_ref().map_or(0, drawn_by);
    let pool_decision = call.request.decision(taken.split.as_ref(), taken.standing, call.governing.allowance(), call.window);
    let alerting = Alerting::pool(call.seat.pool, &call.governing, &pool_decision);
    let decision = standing.after(drawn, 0).view(pool_decision, pool_could_pay);
    if fits && !take {
        return Ok(Decision { reason: Reason::BundleDenied, retry_after: None, ..decision });
    }
    if drawn != 0 {
        own_rate.commit(client, request)?;
        rate.commit(client, &call.request)?;
        statements::adjust_draws(client, draws, drawn)?;
    }
    if let Some(written) = try_write_event(client, entry(&taken.grants_taken, Some(alerting)), decision)? {
        return Ok(written);
    }
    // A concurrent record with the same key committed first (a record takes no key lock):
    // undo this one's count in the pool's window and the member's draws (the pool's grants
    // were not spent yet) and answer with that call's decision.
    let counted = taken.split.as_ref().map_or(0, Split::counted);
    if counted != 0 {
        counters::adjust_counter(client, call.request.counter(call.window), -counted, 0)?;
    }
    if drawn != 0 {
        statements::adjust_draws(client, draws, -drawn)?;
    }
    replay_the_key_holder(client, request, key)
}

/// consume and record of a member its own means do not cover: decided and taken at once.
pub fn spend_from_pool(
    client: &SpiClient,
    request: &Request,
    mode: Mode,
    call: PoolCall,
    own_rate: &RateCheck,
    key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Decision> {
    let draws = call.draws(request.subject);
    let drawn = statements::lock_draws(client, draws)?;
    let rules = if mode == Mode::Consume { &call.governing.rates[..] } else { &[] };
    let rate = rates::decide(client, &call.request, rules, StateRows::Lock)?;
    if let Some((pool_decision, decision)) = bump_pool(client, request, mode, &call, drawn, &rate)? {
        own_rate.commit(client, request)?;
        rate.commit(client, &call.request)?;
        statements::adjust_draws(client, draws, request.amount)?;
        let alerting = Some(Alerting::pool(call.seat.pool, &call.governing, &pool_decision));
        let entry = Entry { key, metadata, pool: Some(call.seat.pool), alerting, ..Entry::new(request.subject, mode, call.window) };
        return write_event(client, entry, decision);
    }
    let decided = decide_locked(client, request, call, mode, draws, drawn, rate)?;
    take_decided(client, request, mode, decided, true, own_rate, key, metadata)
}

/// The pool's allowance alone pays, in one conditional upsert of its counter (as consume's
/// allowance does, src/spending.rs): when the amount is within the member's cap and the
/// pool's window has no holds (the upsert checks that, so the member has none there either).
/// The decision on the pool's window, and the member's view of it; None: the locked path
/// decides.
fn bump_pool(client: &SpiClient, request: &Request, mode: Mode, call: &PoolCall, drawn: i64, rate: &RateCheck) -> QResult<Option<(Decision, Decision)>> {
    let standing = CapStanding { cap: call.seat.cap, drawn, held: 0 };
    if mode != Mode::Consume || !rate.admitted() || standing.left().is_some_and(|left| request.amount > left) {
        return Ok(None);
    }
    let allowance = call.governing.allowance();
    let max_used = match ceiling(allowance, request.amount) {
        Ceiling::Never => return Ok(None),
        Ceiling::Unlimited => None,
        Ceiling::AtMost(max_used) => Some(max_used),
    };
    let Some(used) = counters::bump(client, call.request.counter(call.window), request.amount, max_used)? else {
        return Ok(None);
    };
    let pool_standing = Standing { used, reserved: 0, grants_left: call.governing.grants_usable() };
    let decision = call.request.decision(Some(&Split::allowance_only(request.amount)), pool_standing, allowance, call.window);
    Ok(Some((decision.clone(), standing.after(request.amount, 0).view(decision, false))))
}

/// reserve() of a member whose own means cannot hold the amount: a hold on the pool's
/// window (the reservation's subject is the pool, its member the caller), within the
/// member's cap less what it drew and holds already.
pub fn hold_from_pool(
    client: &SpiClient,
    request: &Request,
    call: PoolCall,
    own_rate: &RateCheck,
    ttl: Micros,
    key: Option<&str>,
) -> QResult<(Option<Hold>, Decision)> {
    let member = request.subject;
    let pool = call.seat.pool;
    let window = call.window;
    let entry = |reservation_id| Entry { key, reservation_id, pool: Some(pool), ..Entry::new(member, Mode::Reserve, window) };
    let decided = decide_from_pool(client, request, call, Mode::Reserve)?;
    let PooledDecided { call, rate, capacity, standing, paid, pool_could_pay, .. } = decided;
    if !rate.admitted() {
        capacity.take(client, &call.request, window, None, 0)?;
        let denied = rate_limited(client, &call.request, &call.governing, window, &rate)?;
        return Ok((None, write_event(client, entry(None), standing.view(denied, false))?));
    }
    let allowance = call.governing.allowance();
    let pool_standing = Standing { used: capacity.counter.used, reserved: capacity.reserved, grants_left: capacity.grants_total() };
    if paid.is_none() {
        capacity.take(client, &call.request, window, None, 0)?;
        let denied = call.request.decision(None, pool_standing, allowance, window);
        return Ok((None, write_event(client, entry(None), standing.view(denied, pool_could_pay))?));
    }
    let expires_at = request.now.checked_add(ttl).ok_or_else(|| QuotaError::overflow("expires_at"))?;
    let new_hold = NewHold { subject: pool, metric: request.metric, amount: request.amount, window, expires_at, idempotency_key: key, member: Some(member) };
    let id = held_rows::insert_reservation(client, new_hold)?;
    own_rate.commit(client, request)?;
    rate.commit(client, &call.request)?;
    counters::add_hold(client, call.request.counter(window), request.amount, capacity.expired, expires_at)?;
    let reserved = capacity.reserved.saturating_add(request.amount);
    let held = call.request.decision(None, Standing { reserved, ..pool_standing }, allowance, window);
    let held = Decision { allowed: true, reason: Reason::Ok, retry_after: None, ..held };
    let decision = write_event(client, entry(Some(id)), standing.after(0, request.amount).view(held, false))?;
    Ok((Some(Hold { reservation_id: id, expires_at }), decision))
}

/// settle() of a member's hold on its pool: pays the actual amount from the pool as a
/// record would (beyond the hold and the cap it is overage), frees the hold, and counts what
/// it took in the member's draws. The cap is the member's current one in that pool (none
/// once it left: the hold was admitted).
pub fn settle_from_pool(client: &SpiClient, held: &Reservation, actual: i64, now: Micros) -> QResult<Decision> {
    let member = held.member.ok_or_else(|| QuotaError::internal("a pooled settle of a hold without a member"))?;
    let request = Request { subject: held.subject, metric: &held.metric, amount: actual, now, at: now, instant: now };
    let seat = statements::seat_unlocked(client, member, &held.metric)?.filter(|seat| seat.pool == held.subject);
    let seat = Seat { pool: held.subject, cap: seat.and_then(|seat| seat.cap) };
    let governing = resolve_known(client, &request)?;
    let call = PoolCall { seat, request, governing, window: held.window };
    let draws = call.draws(member);
    let drawn = statements::lock_draws(client, draws)?;
    let allowance = call.governing.allowance();
    let capacity = lock_capacity(client, &call.request, held.window, allowance, Some(held))?;
    let standing = CapStanding::read(client, &call, draws, drawn, capacity.reserved, Some(held.id))?;
    let split = pooled_split(actual, capacity.room, &capacity.balances, standing.left(), true);
    let paid = capacity.take(client, &call.request, held.window, split, held.amount)?;
    let taken = paid.split.as_ref().map_or(0, drawn_by);
    if taken != 0 {
        statements::adjust_draws(client, draws, taken)?;
    }
    held_rows::set_reservation_status(client, held, ReservationStatus::Settled)?;
    let pool_decision = call.request.decision(paid.split.as_ref(), paid.standing, allowance, held.window);
    let alerting = Some(Alerting::pool(held.subject, &call.governing, &pool_decision));
    let decision = standing.after(taken, 0).view(pool_decision, false);
    let entry = Entry { grants_taken: &paid.grants_taken, reservation_id: Some(held.id), pool: Some(held.subject), alerting, ..Entry::new(member, Mode::Settle, held.window) };
    write_event(client, entry, decision)
}

/// What the pool's window has now, read without locks: its counter, the active holds, and
/// the room its allowance and grants leave after them.
struct PoolNow {
    used: i64,
    reserved: i64,
    room: Option<i64>,
    grants: [i64; 1],
}

fn read_pool(client: &SpiClient, call: &PoolCall) -> QResult<PoolNow> {
    let key = call.request.counter(call.window);
    let counter = counters::read_counter(client, key)?;
    let reserved = counters::active_holds(client, key, counter, call.request.now)?;
    // Grants count as one balance here: readers report, they do not spend.
    let mut grants = [call.governing.grants_usable()];
    let room = after_holds(remaining(call.governing.allowance(), counter.used), &mut grants, reserved);
    Ok(PoolNow { used: counter.used, reserved, room, grants })
}

/// The member against its cap, read without locks.
fn read_standing(client: &SpiClient, call: &PoolCall, member: Uuid, window_holds: i64) -> QResult<CapStanding> {
    let draws = call.draws(member);
    let drawn = statements::read_draws(client, draws)?;
    CapStanding::read(client, call, draws, drawn, window_holds, None)
}

/// check() of a member whose own means do not cover the amount: what the pool would decide
/// now, read without locks or writes.
pub fn check_from_pool(client: &SpiClient, call: &PoolCall, member: Uuid) -> QResult<Decision> {
    let pool = read_pool(client, call)?;
    let standing = read_standing(client, call, member, pool.reserved)?;
    let amount = call.request.amount;
    let paid = pooled_split(amount, pool.room, &pool.grants, standing.left(), false);
    let pool_standing = Standing { used: pool.used, reserved: pool.reserved, grants_left: call.governing.grants_usable() };
    let decision = call.request.decision(paid.as_ref(), pool_standing, call.governing.allowance(), call.window);
    let decision = standing.view(decision, cap_binds(amount, pool.room, &pool.grants, standing.left()));
    let rate = rates::decide(client, &call.request, &call.governing.rates, StateRows::Read)?;
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
    let key = call.request.counter(call.window);
    let counter = counters::lock_counter(client, key)?;
    let returned = request.amount.min(drawn).min(counter.used);
    let used = match returned {
        0 => counter.used,
        _ => {
            statements::adjust_draws(client, draws, -returned)?;
            counters::adjust_counter(client, key, -returned, 0)?
        }
    };
    let reserved = counters::active_holds(client, key, counter, request.now)?;
    let standing = CapStanding::read(client, call, draws, drawn - returned, reserved, None)?;
    let pool_standing = Standing { used, reserved, grants_left: call.governing.grants_usable() };
    // The ledger row records what was given back as from_allowance, so audit() can subtract it.
    let given = Decision {
        allowed: true,
        reason: Reason::Ok,
        retry_after: None,
        amount: returned,
        from_allowance: returned,
        ..call.request.decision(None, pool_standing, call.governing.allowance(), call.window)
    };
    let entry = Entry { pool: Some(call.seat.pool), ..Entry::new(request.subject, Mode::GiveBack, call.window) };
    let given = write_event(client, entry, standing.view(given, false))?;
    alerts::recover(client, call.seat.pool, Some(request.metric), "give_back")?;
    Ok(given)
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
pub fn pool_usage(client: &SpiClient, member: Uuid, metric: &str, now: Micros) -> QResult<Option<PoolUsage>> {
    let request = Request { subject: member, metric, amount: 1, now, at: now, instant: now };
    let Some(call) = pool_call_unlocked(client, &request)? else {
        return Ok(None);
    };
    let pool = read_pool(client, &call)?;
    let standing = read_standing(client, &call, member, pool.reserved)?;
    let pool_left = remaining_with_grants(call.governing.allowance(), pool.used, call.governing.grants_usable(), pool.reserved);
    let remaining = member_remaining(pool_left, standing.left());
    Ok(Some(PoolUsage { pool: call.seat.pool, drawn: standing.drawn, cap: call.seat.cap, remaining }))
}
