//! The memory-only rate limiter: a metric's rate rules (the plan's, with the subject's
//! overrides) decided against state in shared memory instead of quota.rate_state. Nothing is
//! written to a table, so it counts calls in read-only transactions (PostgREST's GET and
//! HEAD) and on hot standbys; what it admits is not rolled back with the caller's
//! transaction, and a restart forgets every state (a free burst). The arithmetic is the
//! table rules' (quota_rules::rate), the table is quota_rules::memory_table.
//!
//! The rules in force are resolved once per (subject, metric) in a backend and kept until
//! the configuration changes: every committed change to plans, limits, assignments or rate
//! overrides moves a generation counter in shared memory (sql/memory_rates.sql's triggers,
//! `configuration_changed`), and an override's expiry ends its entry. A call that hits the
//! cache runs no SQL at all. Nothing is kept that may not be the rules committed at that
//! generation: rules a transaction resolves after changing the configuration itself (a
//! rollback takes its rows back), or with a snapshot older than the generation it read
//! (REPEATABLE READ, SERIALIZABLE). On a hot standby, whose triggers never run and whose
//! generation never moves, an entry lasts a second.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgXactCallbackEvent, Uuid};

use quota_rules::memory_table::{metric_digest, place, state_of, MemoryKey, Placement, Slot};
use quota_rules::plan::validate_metric;
use quota_rules::rate::{decide_all, RateRule};
use quota_rules::window::Micros;

use super::{preloaded, Table};
use crate::error::{positive_amount, required, sql_call, QResult};
use crate::store::{counters, statement_now, timestamp, transaction_now, transaction_snapshot_is_fixed};

/// Decides `amount` units of the metric's rate rules for the subject in shared memory, all
/// or nothing: admitted by every rule (their states move) or by none (nothing moves).
/// `remaining` is what the tightest rule has left after the call (NULL: the metric has no
/// rule); `retry_after` when the same call would fit (NULL when allowed, or never: the
/// amount is over a burst).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn limit_in_memory(
    subject: Option<Uuid>,
    metric: Option<&str>,
    amount: default!(Option<i64>, 1),
) -> Result<
    TableIterator<
        'static,
        (name!(allowed, bool), name!(reason, String), name!(remaining, Option<i64>), name!(retry_after, Option<TimestampWithTimeZone>)),
    >,
    ErrorReport,
> {
    sql_call(|| {
        let subject = required(subject, "subject")?;
        let metric = required(metric, "metric")?;
        validate_metric(metric)?;
        let amount = positive_amount(amount)?;
        let table = Table::attach("quota.limit_in_memory()")?;
        let rules = rules_in_force(&table, subject, metric, transaction_now()?)?;
        let outcome = decide(&table, &keyed(subject, metric, &rules), statement_now()?, amount);
        let row = match outcome {
            Ok(remaining) => (true, "ok".to_string(), remaining, None),
            Err(retry_at) => (false, "rate_limited".to_string(), Some(0), retry_at.map(timestamp).transpose()?),
        };
        Ok(TableIterator::once(row))
    })
}

/// Whether this server preloaded pg_quota: the memory-only features work (limit_request
/// uses them for read-only requests).
#[pg_extern(stable, parallel_safe, name = "preloaded")]
#[search_path(pg_catalog, pg_temp)]
fn preloaded_sql() -> bool {
    super::preloaded()
}

/// The limiter's state: whether this server preloaded pg_quota, its capacity and the states
/// that still owe (keys whose bucket is not full), calls admitted and limited, evictions that
/// forgot a debt, and the shared memory it takes. Without the preload: false and zeros.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn memory_limiter_state() -> Result<
    TableIterator<
        'static,
        (
            name!(preloaded, bool),
            name!(capacity_keys, i64),
            name!(keys_owing, i64),
            name!(admitted, i64),
            name!(limited, i64),
            name!(lossy_evictions, i64),
            name!(shared_bytes, i64),
        ),
    >,
    ErrorReport,
> {
    sql_call(|| {
        if !super::preloaded() {
            return Ok(TableIterator::once((false, 0, 0, 0, 0, 0, 0)));
        }
        let table = Table::attach("quota.memory_limiter_state()")?;
        let now = statement_now()?;
        let owing: usize = (0..table.sets())
            .map(|set| {
                // Up to millions of sets, one lock each: the scan can be cancelled.
                if set % 4096 == 0 {
                    pg_sys::check_for_interrupts!();
                }
                table.with_sets(&[set], |sets| sets.read(set).iter().filter(|slot| slot.used && slot.tat_us > now).count())
            })
            .sum();
        let (admitted, limited, lossy) = table.counters();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let capacity = table.sets() * quota_rules::memory_table::WAYS;
        Ok(TableIterator::once((
            true,
            count(capacity as u64),
            count(owing as u64),
            count(admitted),
            count(limited),
            count(lossy),
            count(table.bytes() as u64),
        )))
    })
}

/// The rules of a (subject, metric) as resolved at `generation`, in force until `until`
/// (None: until the configuration changes).
struct CachedRules {
    generation: u64,
    rules: Vec<RateRule>,
    until: Option<Micros>,
}

/// Entries a backend keeps at most; past that the cache starts over.
const MAX_CACHED: usize = 10_000;

/// How long a hot standby keeps resolved rules: it replays the primary's changes without
/// running their triggers, so its generation never moves.
const STANDBY_RULES_LIFE_US: Micros = 1_000_000;

thread_local! {
    static CACHE: RefCell<HashMap<(Uuid, String), CachedRules>> = RefCell::new(HashMap::new());
    static CACHE_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether this transaction changed the configuration (until it commits or aborts).
    static CHANGED_IN_TRANSACTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_rules(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    CACHE.with(|cache| cache.borrow_mut().clear());
}

/// The metric's rate rules in force for the subject at `now`, from the cache when the
/// configuration has not changed since they were resolved.
fn rules_in_force(table: &Table, subject: Uuid, metric: &str, now: Micros) -> QResult<Vec<RateRule>> {
    if !CACHE_CALLBACK.with(std::cell::Cell::get) {
        // DROP EXTENSION (and any DDL on pg_quota's tables) invalidates the relcache.
        // SAFETY: registering a relcache callback is allowed at any time in a backend.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_rules), pg_sys::Datum::from(0)) };
        CACHE_CALLBACK.with(|registered| registered.set(true));
    }
    // A transaction that changed the configuration resolves its own uncommitted rules on
    // every call, and neither reads nor keeps an entry.
    let own_changes = CHANGED_IN_TRANSACTION.with(std::cell::Cell::get);
    // Read before resolving: a change committed after this read moves the generation again,
    // so what a statement's fresh snapshot resolves is never kept under a newer generation.
    let generation = table.generation();
    let key = (subject, metric.to_string());
    let hit = CACHE.with(|cache| {
        cache
            .borrow()
            .get(&key)
            .filter(|cached| !own_changes && cached.generation == generation && cached.until.is_none_or(|until| until > now))
            .map(|cached| cached.rules.clone())
    });
    if let Some(rules) = hit {
        return Ok(rules);
    }
    let governing = Spi::connect(|client| counters::resolve(client, subject, metric, now, now))?;
    // A snapshot fixed for the transaction may be older than the generation read.
    if own_changes || transaction_snapshot_is_fixed() {
        return Ok(governing.rates);
    }
    // SAFETY: reads the shared recovery state; valid in any backend.
    let until = if unsafe { pg_sys::RecoveryInProgress() } {
        let life_end = now.checked_add(STANDBY_RULES_LIFE_US).unwrap_or(Micros::MAX);
        Some(governing.rates_until.map_or(life_end, |until| until.min(life_end)))
    } else {
        governing.rates_until
    };
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, CachedRules { generation, rules: governing.rates.clone(), until });
    });
    Ok(governing.rates)
}

/// Called by the statement triggers of sql/memory_rates.sql on every change to what decides
/// a subject's rate rules: moves the configuration generation when the transaction commits
/// (then every backend resolves again), nothing when it rolls back or without the preload.
/// Until then this backend resolves the rules afresh on every call (they are its own
/// uncommitted rows). A transaction prepared for two-phase commit moves nothing when it is
/// committed: the README says to call this by hand after COMMIT PREPARED.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn configuration_changed() {
    if preloaded() && !CHANGED_IN_TRANSACTION.with(|changed| changed.replace(true)) {
        pgrx::register_xact_callback(PgXactCallbackEvent::Commit, || {
            CHANGED_IN_TRANSACTION.with(|changed| changed.set(false));
            super::bump_generation();
        });
        pgrx::register_xact_callback(PgXactCallbackEvent::Abort, || CHANGED_IN_TRANSACTION.with(|changed| changed.set(false)));
    }
}

/// The key of each rule of the (subject, metric) in this database.
fn keyed(subject: Uuid, metric: &str, rules: &[RateRule]) -> Vec<(RateRule, MemoryKey)> {
    let subject = *subject.as_bytes();
    let metric = metric_digest(metric);
    // SAFETY: MyDatabaseId is set for the life of a backend connected to a database.
    let database = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
    rules.iter().map(|rule| (*rule, MemoryKey { subject, metric, per_us: rule.per_us, database })).collect()
}

/// Decides the rules under their sets' locks. Ok(what the tightest rule has left, None
/// without rules) or Err(when the call fits, None: never).
fn decide(table: &Table, rules: &[(RateRule, MemoryKey)], now: Micros, amount: i64) -> Result<Option<i64>, Option<Micros>> {
    if rules.is_empty() {
        return Ok(None);
    }
    let sets: Vec<usize> = rules.iter().map(|(_, key)| key.set_index(table.sets())).collect();
    let (outcome, lossy) = table.with_sets(&sets, |locked| {
        let states: Vec<(RateRule, Option<Micros>)> =
            rules.iter().zip(&sets).map(|((rule, key), &set)| (*rule, state_of(&locked.read(set), key))).collect();
        let tats = match decide_all(&states, now, amount) {
            Ok(tats) => tats,
            Err(retry_at) => return (Err(retry_at), 0),
        };
        let mut lossy = 0;
        let mut written: Vec<(usize, usize)> = Vec::with_capacity(rules.len());
        for (((_, key), &set), tat_us) in rules.iter().zip(&sets).zip(&tats) {
            // Read again: an earlier rule of this call may have taken a slot of the same set,
            // which this one must not take back.
            let keep: Vec<usize> = written.iter().filter(|(written_set, _)| *written_set == set).map(|(_, way)| *way).collect();
            let placement = place(&locked.read(set), key, now, &keep);
            lossy += u64::from(matches!(placement, Placement::Evict(_)));
            locked.write(set, placement.slot(), Slot { key: *key, tat_us: *tat_us, used: true });
            written.push((set, placement.slot()));
        }
        let remaining = rules.iter().zip(&tats).map(|((rule, _), tat)| rule.remaining(Some(*tat), now)).min();
        (Ok(remaining), lossy)
    });
    table.count(outcome.is_ok(), lossy);
    outcome
}
