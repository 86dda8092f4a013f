//! consume's fast path: one statement that decides the rate rules cached beside a window
//! marked with its effective allowance, takes the amount and writes the ledger row; and the
//! marks themselves (quota.counters' `fast`, `allowance`, `alert_at`, quota.rate_state's
//! `fast` and cached rule; the triggers in sql/fast_path.sql unmark counters on every
//! change). The fast path needs the schema of 0.15.0 (`ledger_rows` of 0.12.0, and
//! `holds_expire_at`, which tells whether a window's holds are all active); on an older one
//! every consume takes the slow path until ALTER EXTENSION UPDATE.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::alert::AlertRule;
use quota_rules::decide::{Decision, Split, Standing};
use quota_rules::plan::LedgerMode;
use quota_rules::rate::{cached_rule, per_text, RateRule};
use quota_rules::locks::{FAST_PATH_PLAN_LOCK_SEED, FAST_PATH_SUBJECT_LOCK_SEED};
use quota_rules::window::{Micros, Window};

use super::counters::{lock_counter, CounterKey};
use super::rates::create_states;
use super::schema::{self, Part};
use super::ledger::decision_from_row;
use super::alerts::watched;
use super::{column, from_window_key, instant, not_null, query, the_row, query_row, timestamp, window_key, Kept};
use crate::error::QResult;
use crate::jsonb::Jsonb;

/// The (subject, metric)'s counter row marked for consume's fast path, if it is the window
/// that contains `$now`. At most one row of a (subject, metric) is marked, so this reads one
/// row of the partial index counters_fast, however long the subject's history of windows.
macro_rules! marked_window_containing_now {
    () => {
        "subject = $subject AND metric = $metric AND fast
         AND window_start <= $now AND (window_end IS NULL OR window_end > $now)"
    };
}

/// A counter row whose `held` is exactly what its unexpired holds keep: it has none, or its
/// bound on their expiry lies ahead of `$now` (no hold it counts can have expired, so none
/// has to be found and marked expired first, as the slow path does).
macro_rules! holds_all_active {
    () => {
        "(held = 0 OR holds_expire_at > $now)"
    };
}

/// The marked window at `$now`, if its holds are all active: a decision on it counts `held`
/// as the window's reserved units.
macro_rules! marked_window_at_now {
    () => {
        concat!(marked_window_containing_now!(), " AND ", holds_all_active!())
    };
}

/// The marked window at `$now`, if it has no holds (a wallet's statements: the grants a hold
/// sets aside would have to be found first, as the slow path finds them).
macro_rules! marked_window_without_holds {
    () => {
        concat!(marked_window_containing_now!(), " AND held = 0")
    };
}

/// Whether `$used + $held $op $bound` (`$op`: `<=` or `<`), for `$held` >= 0, without forming
/// the sum: usage past the allowance (overage) has no bound below bigint's, so the sum could
/// overflow. The CASE fixes the order: `$bound - $used` is computed only when it cannot
/// overflow.
macro_rules! sum_within {
    ($used:literal, $held:literal, $op:literal, $bound:literal) => {
        concat!("(CASE WHEN ", $used, " ", $op, " ", $bound, " THEN ", $held, " ", $op, " ", $bound, " - ", $used, " ELSE false END)")
    };
}

/// The marked window at `$now` if it has room for `$amount` beside its holds, below the usage
/// at which an alert fires (the slow path fires it; the holds count as usage here, since a
/// rule on what remains reads them). Not a wallet's window: the decision would have to report
/// its grants, which the slow path reads under their locks.
macro_rules! marked_window_with_room {
    () => {
        concat!(marked_window_at_now!(), " AND NOT wallet
                    AND (allowance IS NULL OR ", sum_within!("used", "held", "<=", "allowance - $amount"), ")
                    AND (alert_at IS NULL OR ", sum_within!("used", "held", "<", "alert_at - $amount"), ")")
    };
}

/// Takes `$amount` from the marked window's cached allowance (FAST_CONSUME's `taken`).
macro_rules! take_from_marked_window {
    () => {
        concat!("UPDATE quota.counters SET used = used + $amount WHERE ", marked_window_with_room!())
    };
}

/// A marked window that the fast path denies: no rate rules (they decide first), not a
/// wallet's (its grants may pay), no room for `$amount` beside its holds.
macro_rules! window_without_room {
    () => {
        concat!("NOT rated AND NOT wallet AND allowance IS NOT NULL AND NOT ", sum_within!("used", "held", "<=", "allowance - $amount"))
    };
}

/// The denial of `$amount` on a marked window without room, as the slow path would write it
/// (its `remaining` and reason; retry_after is computed from the window), read from the
/// window that follows.
macro_rules! denial_row_from {
    () => {
        "INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end,
                                   used, reserved, allowance, remaining, reason, idempotency_key, metadata)
         SELECT $subject, 'denial', $metric, $amount, 0, window_start, window_end, used, held, allowance,
                CASE WHEN used < allowance THEN GREATEST(allowance - used - held, 0) ELSE 0 END, 'quota_exceeded',
                $idempotency_key, $metadata
           FROM "
    };
}

/// Takes `$amount` from a marked window whose limit keeps no ledger row for an allowed
/// consume without a key ("ledger": "counters"), counting it as counted without a row.
macro_rules! take_counted {
    () => {
        concat!("UPDATE quota.counters SET used = used + $amount, counted_without_ledger = counted_without_ledger + $amount
                  WHERE ", marked_window_with_room!(), " AND NOT rated AND NOT ledger_rows
                 RETURNING window_start, window_end, used::int8 AS used, held::int8 AS reserved, allowance")
    };
}

/// The ledger row of what FAST_CONSUME took, returning the window it took from (the decision
/// is made from it, `taken`: the rest of the row is what the call asked for).
macro_rules! ledger_row_of_taken {
    () => {
        "INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end,
                                   used, reserved, allowance, remaining, reason, idempotency_key, metadata)
         SELECT $subject, 'consume', $metric, $amount, $amount, window_start, window_end, used, held, allowance,
                allowance - used - held, 'ok', $idempotency_key, $metadata
           FROM taken
         RETURNING event_id, window_start, window_end, used, reserved, allowance"
    };
}

/// A credit wallet's consume (FAST_WALLET), the usable grants read as store::counters'
/// `usable_grant!($grants)` reads them.
macro_rules! fast_wallet {
    ($grants:ident) => {
        concat!("WITH counter AS MATERIALIZED (
             SELECT window_start, window_end, used, allowance FROM quota.counters
              WHERE ", marked_window_without_holds!(), " AND wallet AND NOT rated AND allowance IS NOT NULL AND used >= allowance
                FOR UPDATE),
         usable AS MATERIALIZED (
             SELECT g.grant_id, g.remaining, g.priority, g.expires_at, g.created_at FROM quota.grants AS g
              WHERE ", usable_grant!($grants), " AND EXISTS (SELECT FROM counter)),
         first AS (SELECT grant_id FROM usable ORDER BY priority, expires_at, created_at, grant_id LIMIT 1),
         spend AS (
             UPDATE quota.grants AS g SET remaining = g.remaining - $amount
               FROM first
              WHERE g.subject = $subject AND g.grant_id = first.grant_id AND g.remaining >= $amount
                AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > $now)
             RETURNING g.grant_id, g.remaining AS left_after),
         event AS (
             INSERT INTO quota.events (subject, kind, metric, amount, from_grants, window_start, window_end,
                                       used, allowance, remaining, reason, idempotency_key, metadata)
             SELECT $subject, 'consume', $metric, $amount, $amount, c.window_start, c.window_end, c.used, c.allowance,
                    (SELECT least(coalesce(pg_catalog.sum(u.remaining), 0) + spend.left_after + $amount, 9223372036854775807)::int8
                       FROM usable AS u WHERE u.grant_id <> spend.grant_id) - $amount,
                    'ok', $idempotency_key, $metadata
               FROM counter AS c, spend
             RETURNING ", decision_columns!(), "),
         paid AS (
             INSERT INTO quota.event_grants (subject, event_id, grant_id, amount)
             SELECT $subject, event.event_id, spend.grant_id, $amount FROM event, spend)
         SELECT * FROM event")
    };
}

thread_local! {
    // On the subject's current window if it is marked fast: decide the rules cached beside
    // it (rate_state rows marked fast, locked before the counter as the slow path locks
    // them), take the amount from the cached allowance, move the rules' states and write the
    // ledger row, in one statement. The rules' arithmetic is quota_rules::rate's (RateRule::
    // decide), exact in numeric. Returns no row when the window is not marked, has a hold
    // that may have expired, a rule or the allowance has no room (beside the holds), or a
    // cached rule has expired.
    static FAST_CONSUME: Kept = const { Kept::new(
        concat!("WITH rules AS MATERIALIZED (
             SELECT per, tat_us, rule_limit, rule_per_us, rule_burst, rule_until FROM quota.rate_state
              WHERE subject = $subject AND metric = $metric AND fast
              ORDER BY per COLLATE \"C\"
                FOR UPDATE),
         priced AS MATERIALIZED (
             SELECT per, GREATEST(tat_us, $instant_us) AS from_us,
                    $amount <= rule_burst AND (rule_until IS NULL OR rule_until > $now)
                    AND GREATEST(tat_us, $instant_us) - $instant_us
                        <= pg_catalog.div((rule_burst - $amount)::numeric * rule_per_us, rule_limit) AS admits,
                    CASE WHEN $amount <= rule_burst
                         THEN pg_catalog.div($amount::numeric * rule_per_us + rule_limit - 1, rule_limit)::int8 END AS cost_us
               FROM rules),
         taken AS (", take_from_marked_window!(), " AND (rated OR ledger_rows OR $idempotency_key IS NOT NULL)
                AND (SELECT COALESCE(pg_catalog.bool_and(admits), true) FROM priced)
             RETURNING window_start, window_end, used, held, allowance),
         paced AS (
             UPDATE quota.rate_state AS s SET tat_us = p.from_us + p.cost_us
               FROM priced AS p
              WHERE s.subject = $subject AND s.metric = $metric AND s.per = p.per AND EXISTS (SELECT FROM taken))
         ", ledger_row_of_taken!()),
    ) };
    // The same on a window marked without rate rules (`NOT rated`): no search for rules,
    // which costs a metric that has none about a third of this statement's throughput. Not
    // on a window that keeps no row for an unkeyed call (FAST_CONSUME_COUNTED's). A window
    // without room is denied by MARKED_WINDOW, the statement that runs after a miss, or after
    // a denial by DENIAL_WITHOUT_ROOM, tried first.
    static FAST_CONSUME_UNRATED: Kept = const { Kept::new(
        concat!("WITH taken AS (", take_from_marked_window!(), " AND NOT rated AND (ledger_rows OR $idempotency_key IS NOT NULL)
             RETURNING window_start, window_end, used, held, allowance)
         ", ledger_row_of_taken!()),
    ) };
    // The denial of `$amount` when the marked window has no room for it, as MARKED_WINDOW
    // writes it (a denial moves no state, so it needs no lock): tried first after the
    // metric's last fast decision was such a denial (FastStatement::UnratedOrDenial,
    // CountedOrDenial), before the statement that takes. One plain statement: measured as
    // plain SQL beside the form it replaced (0.15.0: the taking UPDATE and this read under
    // one UNION ALL feeding one INSERT), it ran a denial at 1.35x that form's throughput
    // (docs/benchmarks.md, 0.16.0), and costs the first allowed call after a denial one
    // statement more.
    static DENIAL_WITHOUT_ROOM: Kept = const { Kept::new(
        concat!(denial_row_from!(), "quota.counters
              WHERE ", marked_window_at_now!(), " AND ", window_without_room!(), "
             RETURNING event_id, window_start, window_end, used, reserved, allowance"),
    ) };
    // FAST_CONSUME_UNRATED on a window whose limit keeps no ledger row for such a call
    // ("ledger": "counters"): the counter alone, which keeps how much it counted so. Only for
    // calls without an idempotency key (a keyed call is kept, so that a retry replays it).
    static FAST_CONSUME_COUNTED: Kept = const { Kept::new(take_counted!()) };
    // A credit wallet's consume once its window's allowance is spent (a window marked as a
    // wallet, without rate rules): the amount from the first usable grant in spending order
    // when that grant covers it, with the ledger row and which grant paid, as the slow path
    // pays it. No row when the window is not such a window, or the first grant does not
    // cover the amount (the slow path splits it over several grants, or denies).
    // Only the grant it spends is locked, by its update, which checks again on the row as
    // locked that the grant still pays (a revoke, a shorter expiry or another window's spend
    // may have committed meanwhile); if it does not, nothing is written and the slow path
    // decides (at REPEATABLE READ such a change is a serialization failure, 40001, as for
    // any locked row). The other usable grants are read unlocked: a new or more usable grant
    // unmarks the counter, which waits for its lock, so the spending order read is the one
    // in force; the `remaining` the row keeps adds the spent grant's balance as locked to
    // the others' as read. Locking every usable grant first, as the slow path does, wrote a
    // lock on each before the update (0.15.0). LOCK_WALLET takes the counter's lock first,
    // in a statement of its own, as the slow path does: the grants are then read with a
    // snapshot taken under that lock, which has every grant committed before it (in one
    // statement, a grant committed while the lock was awaited, by a transaction that also
    // marked the window again, would be invisible, and the wrong grant spent). A grant made
    // later waits for the lock (its trigger unmarks the counter).
    static LOCK_WALLET: Kept = const { Kept::new(
        concat!("SELECT true AS locked FROM quota.counters
                  WHERE ", marked_window_without_holds!(), " AND wallet AND NOT rated AND allowance IS NOT NULL AND used >= allowance
                    FOR UPDATE"),
    ) };
    static FAST_WALLET: Kept = const { Kept::new(fast_wallet!(not_spent)) };
    // FAST_WALLET on a schema before 0.19.0, whose grants have no `spent`.
    static FAST_WALLET_WITHOUT_SPENT_GRANTS: Kept = const { Kept::new(fast_wallet!(any)) };
    // After a fast statement took nothing: the marked window, read with a fresh snapshot (a
    // consumer that the statement waited for has committed), with the rules cached beside it
    // and their states, read in the same snapshot; `rules_current` is false when a cached rule
    // has expired (the slow path resolves them again). On a window without rate rules, and
    // not a wallet's (whose grants may pay), that has no room for the amount, it writes the
    // denial as the slow path would decide it (`denial_event_id`; its `remaining` and reason,
    // retry_after is computed from the window): a denial moves no state, so it needs no lock.
    // A window the snapshot shows with room, that the fast statement did not take (a
    // concurrent consume took it meanwhile, or an alert fires at this usage), is no denial.
    static MARKED_WINDOW: Kept = const { Kept::new(
        concat!("WITH marked AS MATERIALIZED (
             SELECT window_start, window_end, used::int8 AS used, held::int8 AS held, allowance, rated, ledger_rows, wallet, r.limits, r.per_uss,
                    r.bursts, r.tats, r.current AS rules_current
               FROM quota.counters,
                    LATERAL (SELECT coalesce(pg_catalog.array_agg(rule_limit::int8 ORDER BY per COLLATE \"C\"), '{}') AS limits,
                                    coalesce(pg_catalog.array_agg(rule_per_us::int8 ORDER BY per COLLATE \"C\"), '{}') AS per_uss,
                                    coalesce(pg_catalog.array_agg(rule_burst::int8 ORDER BY per COLLATE \"C\"), '{}') AS bursts,
                                    coalesce(pg_catalog.array_agg(tat_us ORDER BY per COLLATE \"C\"), '{}') AS tats,
                                    coalesce(pg_catalog.bool_and(rule_until IS NULL OR rule_until > $now), true) AS current
                               FROM quota.rate_state AS s
                              WHERE counters.rated AND s.subject = $subject AND s.metric = $metric AND s.fast) AS r
              WHERE ", marked_window_at_now!(), "),
         denied AS (", denial_row_from!(), "marked
              WHERE ", window_without_room!(), "
             RETURNING event_id)
         SELECT marked.*, marked.held AS reserved, denied.event_id AS denial_event_id FROM marked LEFT JOIN denied ON true"),
    ) };
    // Whether the (subject, metric)'s window at `$now` is marked, holds or not.
    static IS_MARKED: Kept = const { Kept::new(
        concat!("SELECT EXISTS (SELECT FROM quota.counters WHERE ", marked_window_containing_now!(), ") AS marked"),
    ) };
    // Taken before a consume resolves what governs it, so that it may mark its window for
    // the fast path: quota.forget_fast_path() takes the subject's key and the plan's key
    // exclusively. The subject's key is exclusive here too, so that two consumes of the
    // subject never mark at once (each would unmark what the other cannot see yet). Only
    // tried, never waited for: a consume that cannot have them at once decides on the slow
    // path without marking, so it never waits for another consume or for a change in flight
    // (and cannot deadlock with one that holds its counter row).
    static TRY_LOCK_FAST_PATH: Kept = const { Kept::new(
        "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended($subject::text, $subject_seed))
            AND pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtextextended($plan, $plan_seed)) AS locked",
    ) };
    // What a configuration change of the subject does (sql/fast_path.sql): waits for its
    // key, then unmarks its windows and its draws from a pool.
    static FORGET_SUBJECT: Kept = const { Kept::new(
        "SELECT quota.forget_fast_path_of_subject($subject, $metric)",
    ) };
    // Under the subject's fast-path key: unmarks the (subject, metric)'s older windows
    // (UNMARK_OLDER), then (MARK_FAST) marks the current window with its effective allowance.
    // Separate statements, so that the mark's snapshot sees the unmarking (counters_fast is
    // unique: at most one marked row per (subject, metric)).
    // Under the subject's fast-path key, before the counter is marked: caches the rules in
    // force in their state rows (created first, see store::rates) and unmarks the rows of
    // rules no longer in force. Every row of the (subject, metric) is locked in the order
    // consumes lock them, before the counter.
    static MARK_RATES: Kept = const { Kept::new(
        "WITH locked AS (
             SELECT per FROM quota.rate_state WHERE subject = $subject AND metric = $metric
              ORDER BY per COLLATE \"C\"
                FOR UPDATE)
         UPDATE quota.rate_state AS s
            SET fast = r.per IS NOT NULL, rule_limit = r.rule_limit, rule_per_us = r.rule_per_us,
                rule_burst = r.rule_burst, rule_until = CASE WHEN r.per IS NOT NULL THEN $rule_until END
           FROM locked LEFT JOIN ROWS FROM (pg_catalog.unnest($pers), pg_catalog.unnest($rule_limits),
                                            pg_catalog.unnest($rule_per_uss), pg_catalog.unnest($rule_bursts))
                              AS r (per, rule_limit, rule_per_us, rule_burst) ON r.per = locked.per
          WHERE s.subject = $subject AND s.metric = $metric AND s.per = locked.per
            AND (s.fast OR r.per IS NOT NULL)
            AND (s.fast, s.rule_limit, s.rule_per_us, s.rule_burst, s.rule_until)
                IS DISTINCT FROM (r.per IS NOT NULL, r.rule_limit, r.rule_per_us, r.rule_burst,
                                  CASE WHEN r.per IS NOT NULL THEN $rule_until END)",
    ) };
    // Unmarks the (subject, metric)'s older windows only, and says whether a newer one is
    // marked: a consume still counting in an older window (its transaction began before a
    // reset) must neither lock the newer window's row, which a release in it locks after the
    // older one (a deadlock), nor mark a window that is no longer current.
    static UNMARK_OLDER: Kept = const { Kept::new(
        "WITH unmarked AS (
             UPDATE quota.counters SET fast = false
              WHERE subject = $subject AND metric = $metric AND fast AND window_start < $window_start
             RETURNING window_start)
         SELECT NOT EXISTS (SELECT FROM quota.counters
                             WHERE subject = $subject AND metric = $metric AND fast AND window_start > $window_start) AS newest",
    ) };
    // Marks the window with its effective allowance, whether rate rules are cached beside it,
    // and the usage at which its next alert fires: the least usage threshold of the alert
    // rules not fired in it yet (src/alerts.rs; a crossing unmarks the window, and the next
    // consume marks it again watching what is left).
    static MARK_FAST: Kept = const { Kept::new(
        concat!("UPDATE quota.counters AS c SET fast = true, allowance = $allowance, rated = $rated,
                        ledger_rows = $ledger_rows, wallet = $wallet, alert_at = ", next_alert_at!(), "
                  WHERE subject = $subject AND metric = $metric AND window_start = $window_start
                    AND NOT (fast AND allowance IS NOT DISTINCT FROM $allowance AND rated = $rated
                             AND ledger_rows = $ledger_rows AND wallet = $wallet
                             AND alert_at IS NOT DISTINCT FROM ", next_alert_at!(), ")"),
    ) };
}

/// Which fast statement decides a consume.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FastStatement {
    /// A window marked without rate rules (FAST_CONSUME_UNRATED).
    Unrated,
    /// The denial when the window has no room (DENIAL_WITHOUT_ROOM), else FAST_CONSUME_UNRATED:
    /// tried first after the metric's last fast decision was such a denial.
    UnratedOrDenial,
    /// A window marked without rate rules whose limit keeps no ledger row for an allowed
    /// consume without a key (FAST_CONSUME_COUNTED).
    Counted,
    /// The denial when the window has no room (DENIAL_WITHOUT_ROOM), else FAST_CONSUME_COUNTED:
    /// tried first after the metric's last fast decision was such a denial.
    CountedOrDenial,
    /// A wallet's window without rate rules whose allowance is spent (FAST_WALLET).
    Wallet,
    /// Any marked window, with the rules cached beside it (FAST_CONSUME).
    Rated,
}

/// A marked window as the choice of its statement sees it.
#[derive(Clone, Copy)]
pub struct WindowKind {
    pub rated: bool,
    pub ledger_rows: bool,
    /// Marked as a wallet's (never with rate rules).
    pub wallet: bool,
    /// Its allowance has no room left.
    pub allowance_spent: bool,
}

impl FastStatement {
    /// The statement that decides a call on a window of `kind` (None: the slow path, for a
    /// wallet's window whose allowance still pays); `keyed`: the call has an idempotency key
    /// (always kept in the ledger).
    pub fn for_window(kind: WindowKind, keyed: bool) -> Option<FastStatement> {
        match kind {
            WindowKind { wallet: true, allowance_spent, .. } => allowance_spent.then_some(FastStatement::Wallet),
            WindowKind { rated: true, .. } => Some(FastStatement::Rated),
            WindowKind { ledger_rows: false, .. } if !keyed => Some(FastStatement::Counted),
            _ => Some(FastStatement::Unrated),
        }
    }

    /// Whether this statement takes a window that `suited` suits: the rated statement also
    /// takes an unrated window's allowance (with a row, as the unrated one writes), the
    /// others only their own windows.
    pub fn takes(self, suited: FastStatement) -> bool {
        self == suited
            || (matches!(self, FastStatement::Rated | FastStatement::UnratedOrDenial) && suited == FastStatement::Unrated)
            || (self == FastStatement::CountedOrDenial && suited == FastStatement::Counted)
    }
}

/// The statement to try first for a metric: the one that suited the window this backend last
/// found marked for it (a hint: each statement takes only the windows it suits; after a
/// denial on an unrated window, the denial statement and then the one that takes), else the
/// unrated one.
pub fn first_statement(metric: &str, keyed: bool) -> FastStatement {
    match SEEN_WINDOWS.with(|seen| seen.borrow().get(metric).copied()) {
        Some(FastStatement::Counted | FastStatement::CountedOrDenial) if keyed => FastStatement::Unrated,
        Some(statement) => statement,
        None => FastStatement::Unrated,
    }
}

thread_local! {
    // Per metric, the statement that suited an unkeyed call on its marked window when last
    // seen in this backend: only which fast statement to try first, never what decides.
    static SEEN_WINDOWS: std::cell::RefCell<std::collections::HashMap<String, FastStatement>> = std::cell::RefCell::new(Default::default());
}

/// Notes what the metric's marked window was like (SEEN_WINDOWS).
pub fn remember_window(metric: &str, kind: WindowKind) {
    let first = match FastStatement::for_window(kind, false) {
        Some(FastStatement::Unrated) if kind.allowance_spent => Some(FastStatement::UnratedOrDenial),
        Some(FastStatement::Counted) if kind.allowance_spent => Some(FastStatement::CountedOrDenial),
        Some(FastStatement::Unrated) | None => None,
        statement => statement,
    };
    remember_first(metric, first);
}

/// Notes the statement to try first for the metric (None: the unrated one).
fn remember_first(metric: &str, first: Option<FastStatement>) {
    SEEN_WINDOWS.with(|seen| {
        let mut seen = seen.borrow_mut();
        match first {
            None => seen.remove(metric),
            Some(statement) => seen.insert(metric.to_string(), statement),
        };
    });
}

/// The fast path's decision when `statement` finds the marked window (and the rules cached
/// beside it) with room; else None.
pub fn consume(
    client: &SpiClient,
    key: CounterKeyAt,
    statement: FastStatement,
    amount: i64,
    idempotency_key: Option<&str>,
    metadata: Option<Jsonb>,
) -> QResult<Option<Decision>> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("now", timestamp(key.now)?.into()),
        ("amount", amount.into()),
        ("idempotency_key", idempotency_key.into()),
        ("metadata", metadata.into()),
    ];
    let decided = match statement {
        FastStatement::Unrated => query_row(client, &FAST_CONSUME_UNRATED, args, |row| taken_with_row(row, key.metric, amount))?,
        FastStatement::Counted => {
            let [subject, metric, now, amount_arg, _, _] = args;
            query_row(client, &FAST_CONSUME_COUNTED, [subject, metric, now, amount_arg], |row| taken(row, key.metric, amount, None))?
        }
        FastStatement::UnratedOrDenial | FastStatement::CountedOrDenial => {
            let denied = query_row(client, &DENIAL_WITHOUT_ROOM, args, |row| {
                Ok(denial_written(key.metric, amount, window_returned(row)?, Some(not_null(row, "event_id")?)))
            })?;
            if denied.is_some() {
                denied
            } else {
                let taking = if statement == FastStatement::UnratedOrDenial { FastStatement::Unrated } else { FastStatement::Counted };
                let decided = consume(client, key, taking, amount, idempotency_key, metadata)?;
                if decided.as_ref().is_some_and(|decision| decision.allowed) {
                    remember_first(key.metric, (taking == FastStatement::Counted).then_some(taking));
                }
                decided
            }
        }
        FastStatement::Wallet => {
            let window = [("subject", key.subject.into()), ("metric", key.metric.into()), ("now", timestamp(key.now)?.into())];
            if query_row(client, &LOCK_WALLET, window, |_| Ok(()))?.is_none() {
                return Ok(None);
            }
            let statement = if schema::has(client, Part::SpentGrants)? { &FAST_WALLET } else { &FAST_WALLET_WITHOUT_SPENT_GRANTS };
            query_row(client, statement, args, decision_from_row)?
        }
        FastStatement::Rated => {
            let [subject, metric, now, amount_arg, idempotency_key, metadata] = args;
            let args = [subject, metric, now, ("instant_us", key.instant.into()), amount_arg, idempotency_key, metadata];
            query_row(client, &FAST_CONSUME, args, |row| taken_with_row(row, key.metric, amount))?
        }
    };
    Ok(decided.map(|decision| Decision { replayed: false, ..decision }))
}

/// A consume that a fast statement took from the window's allowance, from the window it
/// returned after the consume (with the ledger row's `event_id`, when it wrote one).
fn taken(row: &super::Row, metric: &str, amount: i64, event_id: Option<i64>) -> QResult<Decision> {
    let read = window_returned(row)?;
    let taken = Decision::new(metric, amount, Some(&Split::allowance_only(amount)), read.standing(), read.allowance, read.window);
    Ok(Decision { event_id, ..taken })
}

/// A marked window as a fast statement read or left it.
#[derive(Clone, Copy)]
pub struct WindowRead {
    pub window: Window,
    pub used: i64,
    /// What its holds keep (all of them active).
    pub reserved: i64,
    /// Its cached allowance.
    pub allowance: Option<i64>,
}

impl WindowRead {
    /// Where the window stands for a decision: a marked window is never a wallet's whose
    /// grants a fast decision reports.
    pub fn standing(&self) -> Standing {
        Standing { used: self.used, reserved: self.reserved, grants_left: 0 }
    }
}

/// The window a fast statement (here or in store::fast_holds) returned (`reserved`: its ledger
/// row's, or the counter's `held` so named).
pub(super) fn window_returned(row: &super::Row) -> QResult<WindowRead> {
    let window = Window { start: from_window_key(not_null(row, "window_start")?)?, end: instant(row, "window_end")? };
    Ok(WindowRead { window, used: not_null(row, "used")?, reserved: not_null(row, "reserved")?, allowance: column(row, "allowance")? })
}

/// A consume that a fast statement took and wrote the ledger row of (ledger_row_of_taken).
fn taken_with_row(row: &super::Row, metric: &str, amount: i64) -> QResult<Decision> {
    taken(row, metric, amount, Some(not_null(row, "event_id")?))
}

/// The denial a statement wrote for a marked window without room, decided again from the
/// window it read, for what only the decision computes (retry_after).
pub fn denial_written(metric: &str, amount: i64, read: WindowRead, event_id: Option<i64>) -> Decision {
    Decision { event_id, ..Decision::new(metric, amount, None, read.standing(), read.allowance, read.window) }
}

/// A (subject, metric) at the transaction's instant (windows) and the statement's (rules).
#[derive(Clone, Copy)]
pub struct CounterKeyAt<'a> {
    pub subject: Uuid,
    pub metric: &'a str,
    pub now: Micros,
    pub instant: Micros,
}

/// A window marked for the fast path: its usage, holds and the effective allowance cached in
/// it.
pub struct MarkedWindow {
    pub read: WindowRead,
    /// Whether the fast path writes a ledger row for an allowed consume without a key.
    pub ledger_rows: bool,
    /// Marked as a wallet's: its grants pay once the allowance is spent.
    pub wallet: bool,
    /// The rate rules cached beside it, with their states, in lock order; None when one of
    /// them has expired.
    pub rules: Option<Vec<(RateRule, Option<Micros>)>>,
    /// The ledger row of the denial written because the window has no room for the amount
    /// (never on a window with rate rules or a wallet's).
    pub denial_event_id: Option<i64>,
}

/// The (subject, metric)'s window marked for the fast path at `now`, if any, and the denial
/// of `amount` when it has no room for it (see MARKED_WINDOW).
pub fn marked_window(client: &SpiClient, key: CounterKeyAt, amount: i64, idempotency_key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Option<MarkedWindow>> {
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("now", timestamp(key.now)?.into()),
        ("amount", amount.into()),
        ("idempotency_key", idempotency_key.into()),
        ("metadata", metadata.into()),
    ];
    query_row(client, &MARKED_WINDOW, args, |row| {
        Ok(MarkedWindow {
            read: window_returned(row)?,
            ledger_rows: not_null(row, "ledger_rows")?,
            wallet: not_null(row, "wallet")?,
            rules: cached_rules(row)?,
            denial_event_id: column(row, "denial_event_id")?,
        })
    })
}

/// The rules MARKED_WINDOW read, each with its state.
fn cached_rules(row: &super::Row) -> QResult<Option<Vec<(RateRule, Option<Micros>)>>> {
    if !not_null::<bool>(row, "rules_current")? {
        return Ok(None);
    }
    let [limits, per_uss, bursts, tats]: [Vec<i64>; 4] =
        [not_null(row, "limits")?, not_null(row, "per_uss")?, not_null(row, "bursts")?, not_null(row, "tats")?];
    limits
        .iter()
        .zip(&per_uss)
        .zip(&bursts)
        .zip(&tats)
        .map(|(((&limit, &per_us), &burst), &tat)| {
            Ok((cached_rule(limit, per_us, burst)?, Some(tat)))
        })
        .collect::<QResult<Vec<_>>>()
        .map(Some)
}

/// Whether the (subject, metric)'s window at `now` is marked (whatever its holds).
pub fn is_marked(client: &SpiClient, subject: Uuid, metric: &str, now: Micros) -> QResult<bool> {
    let args = [("subject", subject.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    the_row(query_row(client, &IS_MARKED, args, |row| not_null(row, "marked"))?)
}

/// Takes the keys a consume needs to mark its window (see TRY_LOCK_FAST_PATH) if they are
/// free now; false when another consume or a configuration change holds them.
pub fn try_lock(client: &SpiClient, subject: Uuid, plan: &str) -> QResult<bool> {
    let args = [
        ("subject", subject.into()),
        ("subject_seed", FAST_PATH_SUBJECT_LOCK_SEED.into()),
        ("plan", plan.into()),
        ("plan_seed", FAST_PATH_PLAN_LOCK_SEED.into()),
    ];
    the_row(query_row(client, &TRY_LOCK_FAST_PATH, args, |row| not_null(row, "locked"))?)
}

/// Does what a configuration change of the subject's metric (None: of all its metrics) does
/// to its marks, before the
/// rows the caller will lock: a change that writes a member's grants after its pool's
/// counter (an allocation) unmarks the member first, so that its trigger neither waits for
/// a consume on the member's marked draws (which waits for the pool's counter) nor takes the
/// member's key after the pool's counter.
pub fn forget_subject(client: &SpiClient, subject: Uuid, metric: Option<&str>) -> QResult<()> {
    query(client, &FORGET_SUBJECT, [("subject", subject.into()), ("metric", metric.into())], |_| Ok(())).map(drop)
}

/// The rate rules in force beside a window being marked, and until when.
pub struct RulesInForce<'a> {
    pub rules: &'a [RateRule],
    pub until: Option<Micros>,
}

/// Marks the window as the (subject, metric)'s only fast-path window, with its effective
/// allowance, the rate rules in force and what its alert rules watch; nothing when a newer
/// window is marked. Runs under the subject's fast-path key (try_lock).
pub fn mark(client: &SpiClient, key: CounterKey, allowance: Option<i64>, rates: RulesInForce, alerts: &[AlertRule], ledger: LedgerMode, wallet: bool) -> QResult<()> {
    let rated = !rates.rules.is_empty();
    mark_rates(client, key, rates)?;
    let start = window_key(key.window.start)?;
    let args = [("subject", key.subject.into()), ("metric", key.metric.into()), ("window_start", start.into())];
    let newest: bool = the_row(query_row(client, &UNMARK_OLDER, args, |row| not_null(row, "newest"))?)?;
    if !newest {
        return Ok(());
    }
    // The row exists first (a first denial creates it), unmarked; then it is marked by a
    // plain UPDATE, never by an INSERT that proposes a marked row.
    lock_counter(client, key)?;
    let (watch_rules, watch_at) = watched(alerts, allowance);
    let args = [
        ("allowance", allowance.into()),
        ("rated", rated.into()),
        ("ledger_rows", (ledger == LedgerMode::Full).into()),
        ("wallet", wallet.into()),
        ("watch_rules", watch_rules.into()),
        ("watch_at", watch_at.into()),
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("window_start", start.into()),
    ];
    query(client, &MARK_FAST, args, |_| Ok(())).map(drop)
}

/// Caches the rules in force in their state rows (see MARK_RATES).
fn mark_rates(client: &SpiClient, key: CounterKey, rates: RulesInForce) -> QResult<()> {
    let pers: Vec<String> = rates.rules.iter().map(|rule| per_text(rule.per_us)).collect();
    if !pers.is_empty() {
        create_states(client, key.subject, key.metric, &pers)?;
    }
    let args = [
        ("subject", key.subject.into()),
        ("metric", key.metric.into()),
        ("pers", pers.into()),
        ("rule_limits", rates.rules.iter().map(|rule| rule.limit).collect::<Vec<i64>>().into()),
        ("rule_per_uss", rates.rules.iter().map(|rule| rule.per_us).collect::<Vec<i64>>().into()),
        ("rule_bursts", rates.rules.iter().map(|rule| rule.burst).collect::<Vec<i64>>().into()),
        ("rule_until", rates.until.map(timestamp).transpose()?.into()),
    ];
    query(client, &MARK_RATES, args, |_| Ok(())).map(drop)
}
