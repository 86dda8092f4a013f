//! consume's fast path. A window is marked with its effective allowance, and the metric's
//! rate rules in force with it, when a consume on the slow path finds that nothing else can
//! decide later consumes (see `Governing::fast_path_can_decide`); later consumes then decide
//! in one statement. Every
//! configuration change unmarks what it affects (sql/fast_path.sql), under advisory locks
//! whose seeds are named in quota_rules::locks.

use pgrx::spi::SpiClient;

use quota_rules::decide::{ceiling, Decision};
use quota_rules::governing::Governing;
use quota_rules::rate::decide_all;
use quota_rules::window::Window;

use crate::error::QResult;
use crate::jsonb::Jsonb;
use crate::spending::{resolve_known, Request};
use crate::store::fast_path::{self, CounterKeyAt, FastStatement, RulesInForce, WindowKind};
use crate::store::pools;
use crate::store::schema::{self, Part};
use crate::store::transaction_snapshot_is_fixed;

/// What the fast path made of a consume.
pub enum Outcome {
    /// Paid from the marked window, or (an unrated window without room) denied by the read
    /// of the window; the ledger row is written.
    Decided(Decision),
    /// A marked window with rate rules has no room: denied, as the slow path would
    /// (rate_limited when a cached rule has no room either); its ledger row is still to be
    /// written.
    Denied { decision: Decision, window: Window },
    /// No marked window (or one with a hold that may have expired), one with room after all (a
    /// concurrent give-back or reset), or one whose cached rate rules have expired.
    SlowPath,
    /// A wallet's window whose allowance still pays: the slow path decides (its decision
    /// reports the grants), and the window needs no marking again.
    SlowPathMarked,
}

/// The fast statement alone: the consume paid from the marked window (or, when the metric's
/// last fast decision in this backend was such a denial, an unrated window's denial for want
/// of room), or None (see `after_miss`).
pub fn take(client: &SpiClient, request: &Request, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Option<Decision>> {
    let first = fast_path::first_statement(request.metric, key.is_some());
    fast_path::consume(client, at_now(request), first, request.amount, key, metadata)
}

fn at_now<'a>(request: &Request<'a>) -> CounterKeyAt<'a> {
    CounterKeyAt { subject: request.subject, metric: request.metric, now: request.now, instant: request.instant }
}

/// After the fast statement took nothing: whether the window is marked, and then the denial
/// it decides, or the statement that suits the window that it still has to try.
pub fn after_miss(client: &SpiClient, request: &Request, key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Outcome> {
    let at_now = at_now(request);
    let first = fast_path::first_statement(request.metric, key.is_some());
    let Some(marked) = fast_path::marked_window(client, at_now, request.amount, key, metadata)? else {
        return Ok(Outcome::SlowPath);
    };
    if let Some(event_id) = marked.denial_event_id {
        let kind = WindowKind { rated: false, ledger_rows: marked.ledger_rows, wallet: false, allowance_spent: true };
        fast_path::remember_window(request.metric, kind);
        let denial = fast_path::denial_written(request.metric, request.amount, marked.read, Some(event_id));
        return Ok(Outcome::Decided(denial));
    }
    let Some(rules) = marked.rules else {
        return Ok(Outcome::SlowPath); // a cached rule has expired
    };
    // Spent when the holds leave it nothing (a saturated sum: nothing left either).
    let taken_or_held = marked.read.used.saturating_add(marked.read.reserved);
    let allowance_spent = marked.read.allowance.is_some_and(|allowance| taken_or_held >= allowance);
    let kind = WindowKind { rated: !rules.is_empty(), ledger_rows: marked.ledger_rows, wallet: marked.wallet, allowance_spent };
    fast_path::remember_window(request.metric, kind);
    let Some(suited) = FastStatement::for_window(kind, key.is_some()) else {
        return Ok(Outcome::SlowPathMarked);
    };
    if !first.takes(suited) {
        // The statement that suits the window has not run yet (it is rated, keeps no row, or
        // pays from grants).
        return match fast_path::consume(client, at_now, suited, request.amount, key, metadata)? {
            Some(decided) => Ok(Outcome::Decided(decided)),
            None => Ok(Outcome::SlowPath),
        };
    }
    if marked.wallet {
        // Grants may pay what the allowance and the first grant cannot: the slow path splits.
        return Ok(Outcome::SlowPath);
    }
    let decision = request.decision(None, marked.read.standing(), marked.read.allowance, marked.read.window);
    // The rules are decided first, as the slow path decides them, on their states as this
    // snapshot has them: a denial moves no state, so it needs no lock.
    let decision = match decide_all(&rules, request.instant, request.amount) {
        Err(retry_at) => decision.rate_limited(retry_at),
        Ok(_) if ceiling(marked.read.allowance, request.amount).admits(taken_or_held) => return Ok(Outcome::SlowPath), // room after all
        Ok(_) => decision,
    };
    Ok(Outcome::Denied { decision, window: marked.read.window })
}

/// Marks the request's window for the fast path when what governs it allows, and returns
/// what governs it then. The configuration is resolved again after the keys that
/// configuration changes take exclusively: that snapshot sees every change committed before.
/// Only at READ COMMITTED, whose snapshots are fresh.
/// `member`: the subject is a pool's member (src/pools.rs), which is never marked, and takes
/// no key: holding it while its pool's rows are locked would deadlock with an allocation,
/// which takes the member's key after the pool's counter.
pub fn mark_if_it_can_decide(client: &SpiClient, request: &Request, governing: Governing, member: bool) -> QResult<Governing> {
    let can_decide = |governing: &Governing| governing.fast_path_can_decide() || governing.fast_path_can_decide_as_wallet();
    let Some(plan) = governing.plan.clone().filter(|_| can_decide(&governing) && !member && !transaction_snapshot_is_fixed()) else {
        return Ok(governing);
    };
    if !fast_path::try_lock(client, request.subject, &plan)? {
        return Ok(governing);
    }
    let governing = resolve_known(client, request)?;
    // A plan change committed meanwhile: its plan's key is not held, so no mark. Nor a
    // subject that joined a pool meanwhile: joining takes the same key (sql/pools.sql).
    if can_decide(&governing) && governing.plan.as_deref() == Some(plan.as_str()) && !in_a_pool(client, request)? {
        let window = governing.counting_window(request.at)?;
        let rates = RulesInForce { rules: &governing.rates, until: governing.rates_until };
        let wallet = governing.grants_left > 0;
        fast_path::mark(client, request.counter(window), governing.allowance(), rates, &governing.alerts, governing.ledger, wallet)?;
    }
    Ok(governing)
}

fn in_a_pool(client: &SpiClient, request: &Request) -> QResult<bool> {
    Ok(schema::has(client, Part::Pools)? && pools::is_member(client, request.subject)?)
}
