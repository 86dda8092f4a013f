//! Many metrics, one decision: quota.consume_many() consumes a bundle (an API call's request
//! and its tokens) all or nothing. Every metric is decided as consume decides it, under its
//! counter lock, before any is taken; metrics are locked in one fixed order
//! (quota_rules::bundle), so that concurrent bundles cannot deadlock. One ledger row per
//! metric, one idempotency key for the bundle. A pool's member has each metric its own means
//! do not cover decided by its pool, in the same all-or-nothing step (src/pools.rs).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::bundle::{parse_amounts, replay_bundle, Part};
use quota_rules::decide::{Decision, Reason, Split};
use quota_rules::governing::Governing;
use quota_rules::request::{validate_idempotency_key, Mode};
use quota_rules::window::Window;

use crate::alerts::Alerting;
use crate::error::{required, sql_call, QResult, QuotaError};
use crate::jsonb::Jsonb;
use crate::pools::{self, PooledDecided};
use crate::rates::{self, RateCheck, StateRows};
use crate::spending::{governing_with_assignment, lock_capacity, overage_of, write_event, Capacity, Entry, Request};
use crate::store::ledger;
use crate::tuples::{decision_tuple, DecisionTuple};

/// `amounts`: `{"ai_requests": 1, "tokens": 1200}`. One decision per metric, in bytewise
/// order of the metric names. If any metric is denied, none is consumed: the denied ones say
/// why (quota_exceeded, rate_limited, no_plan), the others `bundle_denied`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn consume_many(
    subject: Option<Uuid>,
    amounts: Option<Jsonb>,
    idempotency_key: default!(Option<&str>, "NULL"),
    metadata: default!(Option<Jsonb>, "NULL"),
) -> Result<SetOfIterator<'static, pgrx::composite_type!('static, "quota.decision")>, ErrorReport> {
    sql_call(|| {
        let parts = parse_amounts(&required(amounts, "amounts")?.parse("amounts")?)?;
        let requests = parts
            .iter()
            .map(|part| Request::new(subject, Some(&part.metric), Some(part.amount), None))
            .collect::<QResult<Vec<_>>>()?;
        let key = idempotency_key.map(validate_idempotency_key).transpose()?;
        let decisions = Spi::connect(|client| consume_bundle(client, &requests, &parts, key, metadata))?;
        let tuples = decisions.iter().map(decision_tuple).collect::<QResult<Vec<DecisionTuple>>>()?;
        Ok(SetOfIterator::new(tuples))
    })
}

/// One metric of the bundle, decided under its counter lock and not taken yet.
struct Decided<'r> {
    request: &'r Request<'r>,
    window: Window,
    allowance: Option<i64>,
    /// None: the subject has no plan, so nothing was locked.
    capacity: Option<Capacity>,
    paid: Option<Split>,
    grants_left: i64,
    /// The metric's rate rules, decided under their state locks.
    rate: RateCheck,
    /// What the subject's pool would pay, when the subject is a member and its own means
    /// do not cover the metric (src/pools.rs).
    pooled: Option<PooledDecided<'r>>,
    governing: Governing,
}

fn consume_bundle(client: &SpiClient, requests: &[Request], parts: &[Part], key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Vec<Decision>> {
    let subject = requests.first().map(|request| request.subject).ok_or_else(|| QuotaError::internal("an empty bundle"))?;
    if let Some(key) = key {
        // The key of each metric, in the bundle's order: a single consume of one of them with
        // the same key waits as a retry of the bundle does.
        for request in requests {
            ledger::lock_idempotency_key(client, subject, request.metric, key)?;
        }
        if let Some(replayed) = replay_bundle(ledger::find_keyed(client, subject, key)?, parts, key)? {
            return Ok(replayed);
        }
    }
    let mut decided = Vec::with_capacity(requests.len());
    for request in requests {
        let governing = governing_with_assignment(client, request)?;
        let pool = pools::pool_call(client, request, true)?;
        if let Some(call) = &pool {
            pools::lock_member(client, request, call)?;
        }
        let allowance = governing.allowance();
        let window = governing.counting_window(request.at)?;
        let grants_left = governing.grants_usable();
        // Each metric's rate states, then its counter: the order a single consume locks them in
        // (a pool's member: its draws row first); then, for a member its own means do not
        // cover, the pool's (member first, then pool).
        let rate = rates::decide(client, request, &governing.rates, StateRows::Lock)?;
        let (capacity, paid) = match (&governing.plan, &pool) {
            (None, None) => (None, None),
            _ => {
                let capacity = lock_capacity(client, request, window, allowance, None)?;
                let paid = capacity.split(request.amount, overage_of(Mode::Consume, &governing, pool.is_some())).filter(|_| rate.admitted());
                (Some(capacity), paid)
            }
        };
        let pooled = match (pool, &paid, rate.admitted()) {
            (Some(call), None, true) => Some(pools::decide_from_pool(client, request, call, Mode::Consume)?),
            _ => None,
        };
        decided.push(Decided { request, window, allowance, capacity, paid, grants_left, rate, pooled, governing });
    }
    let all_fit = decided.iter().all(|metric| metric.paid.is_some() || metric.pooled.as_ref().is_some_and(PooledDecided::fits));
    decided.into_iter().map(|metric| take(client, metric, all_fit, key, metadata)).collect()
}

/// Takes one metric's share (when every metric fits) and writes its ledger row; a metric
/// that fits in a denied bundle only frees its expired holds and writes nothing.
fn take(client: &SpiClient, metric: Decided, all_fit: bool, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Decision> {
    let Decided { request, window, allowance, capacity, paid, grants_left, rate, pooled, governing } = metric;
    if let Some(pooled) = pooled {
        if let Some(capacity) = capacity {
            capacity.take(client, request, window, None, 0)?;
        }
        return pools::take_decided(client, request, Mode::Consume, pooled, all_fit, &rate, key, metadata);
    }
    let Some(capacity) = capacity else {
        let entry = Entry { key, metadata, ..Entry::new(request.subject, Mode::Consume, window) };
        return write_event(client, entry, request.no_plan(grants_left, window));
    };
    let fits = paid.is_some();
    let taken = capacity.take(client, request, window, paid.filter(|_| all_fit), 0)?;
    let decision = request.decision(taken.split.as_ref(), taken.standing, allowance, window);
    if !rate.admitted() {
        let entry = Entry { key, metadata, ..Entry::new(request.subject, Mode::Consume, window) };
        return write_event(client, entry, decision.rate_limited(rate.retry_at()));
    }
    if fits && !all_fit {
        return Ok(Decision { reason: Reason::BundleDenied, retry_after: None, ..decision });
    }
    if all_fit {
        rate.commit(client, request)?;
    }
    let alerting = Some(Alerting::own(request.subject, &governing));
    let entry = Entry { grants_taken: &taken.grants_taken, key, metadata, alerting, ..Entry::new(request.subject, Mode::Consume, window) };
    write_event(client, entry, decision)
}
