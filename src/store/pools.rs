//! The statements of pools (sql/pools.sql): membership and caps, each member's draws from
//! its pool, and allocations.

use pgrx::spi::SpiClient;
use pgrx::Uuid;

use quota_rules::decide::Decision;
use quota_rules::locks::POOL_MEMBERSHIP_LOCK_SEED;
use quota_rules::window::{Micros, Window};

use super::ledger::decision_from_row;
use super::{column, from_window_key, instant, not_null, query, query_row, the_row, timestamp, window_end, window_key, Args, Kept, transaction_snapshot_is_fixed};
use crate::error::{QResult, QuotaError};
use crate::jsonb::Jsonb;

/// The member's pool, and its own cap for the metric or the pool's default.
macro_rules! seat {
    () => {
        "SELECT m.pool, own.member IS NOT NULL AS own_cap, own.cap AS member_cap, dflt.cap AS default_cap
           FROM quota.pool_members AS m
           LEFT JOIN quota.pool_caps AS own ON own.pool = m.pool AND own.metric = $metric AND own.member = m.member
           LEFT JOIN quota.pool_caps AS dflt ON dflt.pool = m.pool AND dflt.metric = $metric AND dflt.member IS NULL
          WHERE m.member = $member"
    };
}

thread_local! {
    // The member's pool and its cap for the metric, locked against the member leaving
    // until the call commits (leave_pool deletes the row).
    static SEAT: Kept = const { Kept::new(concat!(seat!(), " FOR KEY SHARE OF m")) };
    // On the member's draws row marked for the pooled fast path, if the pool's counter of the
    // same window is marked too (src/pools/mod.rs): the draws row locked first (the member's
    // rows before the pool's, as everywhere), the amount taken from the pool's cached
    // allowance within the cached cap, the draws moved and the ledger row written, in one
    // statement. No row when either is not marked, the window has ended or has holds, the
    // allowance or the cap has no room, or the pool's next alert would fire (the locked path
    // decides then).
    static FAST_POOLED: Kept = const { Kept::new(
        concat!("WITH seat AS MATERIALIZED (
             SELECT pool, window_start, drawn::int8 AS drawn, cap FROM quota.pool_draws
              WHERE member = $member AND metric = $metric AND fast
                AND window_start <= $now AND (window_end IS NULL OR window_end > $now)
                FOR UPDATE),
         taken AS (
             UPDATE quota.counters AS c SET used = c.used + $amount
               FROM seat
              WHERE c.subject = seat.pool AND c.metric = $metric AND c.window_start = seat.window_start
                AND c.fast AND NOT c.rated AND NOT c.wallet AND c.held = 0
                AND c.window_start <= $now AND (c.window_end IS NULL OR c.window_end > $now)
                AND (c.allowance IS NULL OR c.used <= c.allowance - $amount)
                AND (seat.cap IS NULL OR seat.drawn <= seat.cap - $amount)
                AND (c.alert_at IS NULL OR c.used < c.alert_at - $amount)
             RETURNING seat.pool, c.window_start, c.window_end, c.used::int8 AS used, c.allowance,
                       seat.cap - seat.drawn - $amount AS cap_left),
         drew AS (
             UPDATE quota.pool_draws AS d SET drawn = d.drawn + $amount
               FROM taken
              WHERE d.pool = taken.pool AND d.member = $member AND d.metric = $metric
                AND d.window_start = taken.window_start)
         INSERT INTO quota.events (subject, kind, metric, amount, from_allowance, window_start, window_end,
                                   used, allowance, remaining, reason, idempotency_key, metadata, pool)
         SELECT $member, 'consume', $metric, $amount, $amount, window_start, window_end, used, allowance,
                CASE WHEN allowance IS NULL THEN cap_left
                     WHEN cap_left IS NULL THEN allowance - used
                     ELSE least(allowance - used, cap_left) END,
                'ok', $idempotency_key, $metadata, pool
           FROM taken
         RETURNING ", decision_columns!()),
    ) };
    // Marks the member's draws row of the window: its cap cached, every other row of its
    // (member, metric) unmarked.
    // After FAST_POOLED took nothing: the member's marked draws row and its pool's marked
    // window as this snapshot has them, for the denial they decide (a denial moves nothing,
    // so it needs no lock).
    static MARKED_POOLED: Kept = const { Kept::new(
        "SELECT d.pool, c.window_start, c.window_end, c.used::int8 AS used, c.allowance, d.drawn::int8 AS drawn, d.cap
           FROM quota.pool_draws AS d
           JOIN quota.counters AS c ON c.subject = d.pool AND c.metric = d.metric AND c.window_start = d.window_start
          WHERE d.member = $member AND d.metric = $metric AND d.fast AND c.fast AND NOT c.rated AND NOT c.wallet AND c.held = 0
            AND c.window_start <= $now AND (c.window_end IS NULL OR c.window_end > $now)",
    ) };
    // Whether the member's draws row of the window and the pool's counter are both marked
    // already (a consume the pooled fast path could not take: a denial).
    static MARKED_FOR_FAST_POOLED: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.pool_draws AS d
                          JOIN quota.counters AS c ON c.subject = d.pool AND c.metric = d.metric AND c.window_start = d.window_start
                         WHERE d.pool = $pool AND d.member = $member AND d.metric = $metric AND d.window_start = $window_start
                           AND d.fast AND c.fast AND NOT c.rated AND NOT c.wallet) AS marked",
    ) };
    // Unmarks the member's draws rows of the metric from older windows, but those another
    // transaction holds, and says whether no other row is marked now (pool_draws_fast allows
    // one): FAST_POOLED may hold a member's older marked row while it waits for the current
    // one, which the marking consume holds; and a newer marked row is never locked (see
    // UNMARK_OLDER in store::fast_path). Rows of another pool count as older.
    static UNMARK_OLDER_DRAWS: Kept = const { Kept::new(
        "WITH unmarked AS (
             UPDATE quota.pool_draws AS d SET fast = false
               FROM (SELECT o.pool, o.window_start FROM quota.pool_draws AS o
                      WHERE o.member = $member AND o.metric = $metric AND o.fast
                        AND (o.window_start < $window_start OR o.pool <> $pool)
                        FOR UPDATE SKIP LOCKED) AS older
              WHERE d.pool = older.pool AND d.member = $member AND d.metric = $metric AND d.window_start = older.window_start
             RETURNING d.pool)
         SELECT (SELECT count(*) FROM unmarked) = (SELECT count(*) FROM quota.pool_draws AS o
                                                    WHERE o.member = $member AND o.metric = $metric AND o.fast
                                                      AND (o.pool, o.window_start) <> ($pool, $window_start)) AS only_this",
    ) };
    static MARK_DRAWS: Kept = const { Kept::new(
        "UPDATE quota.pool_draws SET fast = true, cap = $cap
          WHERE pool = $pool AND member = $member AND metric = $metric AND window_start = $window_start",
    ) };
    static IS_MEMBER: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.pool_members WHERE member = $member) AS member",
    ) };
    static LOCK_DRAWS: Kept = const { Kept::new(
        "INSERT INTO quota.pool_draws AS d (pool, member, metric, window_start, window_end, drawn)
         VALUES ($pool, $member, $metric, $window_start, $window_end, 0)
         ON CONFLICT (pool, member, metric, window_start) DO UPDATE SET drawn = d.drawn
         RETURNING d.drawn::int8 AS drawn",
    ) };
    static ADJUST_DRAWS: Kept = const { Kept::new(
        "UPDATE quota.pool_draws SET drawn = drawn + $change
          WHERE pool = $pool AND member = $member AND metric = $metric AND window_start = $window_start
         RETURNING drawn::int8 AS drawn",
    ) };
    static READ_DRAWS: Kept = const { Kept::new(
        "SELECT drawn::int8 AS drawn FROM quota.pool_draws
          WHERE pool = $pool AND member = $member AND metric = $metric AND window_start = $window_start",
    ) };
    // Under the pool's counter lock: what the member's unexpired holds on the pool keep in
    // the window (but the one being settled).
    static MEMBER_HOLDS: Kept = const { Kept::new(
        "SELECT coalesce(sum(amount), 0)::int8 AS held FROM quota.reservations
          WHERE subject = $pool AND metric = $metric AND window_start = $window_start AND status = 'held'
            AND expires_at > $now AND member = $member AND reservation_id IS DISTINCT FROM $settling",
    ) };
    static JOIN: Kept = const { Kept::new(
        "INSERT INTO quota.pool_members (pool, member) VALUES ($pool, $member)
         ON CONFLICT (member) DO NOTHING RETURNING pool",
    ) };
    static LOCK_MEMBERSHIPS: Kept = const { Kept::new(
        "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('quota.join_pool', $seed))",
    ) };
    // Read after LOCK_MEMBERSHIPS, in a snapshot that has every join committed before.
    static NESTING: Kept = const { Kept::new(
        "SELECT (SELECT m.pool FROM quota.pool_members AS m WHERE m.member = $pool) AS pool_is_in,
                EXISTS (SELECT FROM quota.pool_members AS m WHERE m.pool = $member) AS member_has_members",
    ) };
    static POOL_OF: Kept = const { Kept::new(
        "SELECT pool FROM quota.pool_members WHERE member = $member",
    ) };
    static LEAVE: Kept = const { Kept::new(
        "DELETE FROM quota.pool_members WHERE member = $member RETURNING pool",
    ) };
    static SET_CAP: Kept = const { Kept::new(
        "INSERT INTO quota.pool_caps (pool, metric, member, cap) VALUES ($pool, $metric, $member, $cap)
         ON CONFLICT (pool, metric, member) DO UPDATE SET cap = excluded.cap, updated_at = pg_catalog.now()",
    ) };
    static CLEAR_CAP: Kept = const { Kept::new(
        "DELETE FROM quota.pool_caps WHERE pool = $pool AND metric = $metric AND member IS NOT DISTINCT FROM $member",
    ) };
    static ADD_ADMIN: Kept = const { Kept::new(
        "INSERT INTO quota.pool_admins (pool, admin) VALUES ($pool, $admin) ON CONFLICT DO NOTHING",
    ) };
    static REMOVE_ADMIN: Kept = const { Kept::new(
        "DELETE FROM quota.pool_admins WHERE pool = $pool AND admin = $admin",
    ) };
    // Who administers a pool is sql/pools.sql's quota.administered_pools(), which row level
    // security reads too: one rule for what an admin may read and what it may do.
    static CALLER_ADMINISTERS: Kept = const { Kept::new(
        "SELECT $pool = ANY (quota.administered_pools()) AS administers",
    ) };
    static ADMINISTERS: Kept = const { Kept::new(
        "SELECT EXISTS (SELECT FROM quota.pool_admins WHERE pool = $pool AND admin = $admin) AS admin",
    ) };
    static INSERT_ALLOCATION: Kept = const { Kept::new(
        "INSERT INTO quota.allocations (pool, member, metric, amount, grant_id, event_id, window_start, idempotency_key)
         VALUES ($pool, $member, $metric, $amount, $grant_id, $event_id, $window_start, $idempotency_key)
         RETURNING allocation_id",
    ) };
    static ALLOCATION_BY_KEY: Kept = const { Kept::new(
        concat!("SELECT ", allocation_columns!(), " FROM quota.allocations WHERE pool = $pool AND idempotency_key = $key"),
    ) };
    static LOCK_ALLOCATION: Kept = const { Kept::new(
        concat!("SELECT ", allocation_columns!(), " FROM quota.allocations WHERE allocation_id = $allocation_id FOR UPDATE"),
    ) };
    static SEAT_UNLOCKED: Kept = const { Kept::new(seat!()) };
    static FIND_ALLOCATION: Kept = const { Kept::new(
        concat!("SELECT ", allocation_columns!(), " FROM quota.allocations WHERE allocation_id = $allocation_id"),
    ) };
    static LOCK_GRANT: Kept = const { Kept::new(
        "SELECT remaining FROM quota.grants WHERE subject = $subject AND grant_id = $grant_id FOR UPDATE",
    ) };
    // The pool's window the allocation came from, what it took from the allowance (all that
    // revoking it may return), and what the pool had left after it (what a retry answers).
    static ALLOCATION_EVENT: Kept = const { Kept::new(
        "SELECT window_start, window_end, from_allowance::int8 AS from_allowance, remaining FROM quota.events
          WHERE subject = $pool AND event_id = $event_id",
    ) };
    static MEMBER_ALLOCATIONS: Kept = const { Kept::new(
        "SELECT allocation_id FROM quota.allocations WHERE member = $member AND revoked_at IS NULL ORDER BY allocation_id",
    ) };
    static CLOSE_ALLOCATION: Kept = const { Kept::new(
        "UPDATE quota.allocations SET revoked_at = pg_catalog.now(), returned = $returned
          WHERE pool = $pool AND allocation_id = $allocation_id",
    ) };
    // The audit trail's view of a membership and of a pool's caps.
    static MEMBERSHIP_STATE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_jsonb(m)::text AS state FROM quota.pool_members AS m WHERE member = $member",
    ) };
    static CAP_STATE: Kept = const { Kept::new(
        "SELECT pg_catalog.to_jsonb(c)::text AS state FROM quota.pool_caps AS c
          WHERE pool = $pool AND metric = $metric AND member IS NOT DISTINCT FROM $member",
    ) };
}

macro_rules! allocation_columns {
    () => {
        "pool, allocation_id, member, metric, amount, grant_id, event_id, revoked_at IS NOT NULL AS revoked"
    };
}
use allocation_columns;

/// A member's place in its pool for one metric.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    pub pool: Uuid,
    /// What the member may draw per window of the pool (None = no cap).
    pub cap: Option<i64>,
}

/// The member's pool and cap for `metric`, the membership locked until commit; None for a
/// subject in no pool.
pub fn seat(client: &SpiClient, member: Uuid, metric: &str) -> QResult<Option<Seat>> {
    query_row(client, &SEAT, [("member", member.into()), ("metric", metric.into())], seat_from_row)
}

fn seat_from_row(row: &super::Row) -> QResult<Seat> {
    let cap = match not_null::<bool>(row, "own_cap")? {
        true => column(row, "member_cap")?,
        false => column(row, "default_cap")?,
    };
    Ok(Seat { pool: not_null(row, "pool")?, cap })
}

/// seat() without the lock, for readers (my_usage runs as the user).
pub fn seat_unlocked(client: &SpiClient, member: Uuid, metric: &str) -> QResult<Option<Seat>> {
    query_row(client, &SEAT_UNLOCKED, [("member", member.into()), ("metric", metric.into())], seat_from_row)
}

pub fn is_member(client: &SpiClient, member: Uuid) -> QResult<bool> {
    the_row(query_row(client, &IS_MEMBER, [("member", member.into())], |row| not_null(row, "member"))?)
}

/// The member's draws from the pool in one of the pool's windows.
#[derive(Clone, Copy)]
pub struct DrawsKey<'a> {
    pub pool: Uuid,
    pub member: Uuid,
    pub metric: &'a str,
    pub window: Window,
}

impl<'a> DrawsKey<'a> {
    fn args(&self) -> QResult<Args<'a, 4>> {
        Ok([
            ("pool", self.pool.into()),
            ("member", self.member.into()),
            ("metric", self.metric.into()),
            ("window_start", window_key(self.window.start)?.into()),
        ])
    }
}

/// Locks the member's draws row of the window (creating it) and returns what it drew.
pub fn lock_draws(client: &SpiClient, key: DrawsKey) -> QResult<i64> {
    let [pool, member, metric, window_start] = key.args()?;
    let args = [pool, member, metric, window_start, ("window_end", window_end(key.window.end)?.into())];
    the_row(query_row(client, &LOCK_DRAWS, args, |row| not_null(row, "drawn"))?)
}

/// The member's consume on its marked draws row and its pool's marked window (FAST_POOLED);
/// None when the locked path must decide.
pub fn fast_consume(client: &SpiClient, member: Uuid, metric: &str, amount: i64, now: Micros, idempotency_key: Option<&str>, metadata: Option<Jsonb>) -> QResult<Option<Decision>> {
    let args = [
        ("member", member.into()),
        ("metric", metric.into()),
        ("amount", amount.into()),
        ("now", timestamp(now)?.into()),
        ("idempotency_key", idempotency_key.into()),
        ("metadata", metadata.into()),
    ];
    let decided = query_row(client, &FAST_POOLED, args, decision_from_row)?;
    Ok(decided.map(|decision| Decision { replayed: false, ..decision }))
}

/// Whether FAST_POOLED could find the member's draws row and the pool's window marked.
pub fn marked_for_fast_pooled(client: &SpiClient, key: DrawsKey) -> QResult<bool> {
    the_row(query_row(client, &MARKED_FOR_FAST_POOLED, key.args()?, |row| not_null(row, "marked"))?)
}

/// The member's marked draws and its pool's marked window (MARKED_POOLED).
pub struct MarkedPooled {
    pub pool: Uuid,
    pub window: Window,
    pub used: i64,
    pub allowance: Option<i64>,
    pub drawn: i64,
    pub cap: Option<i64>,
}

pub fn marked_pooled(client: &SpiClient, member: Uuid, metric: &str, now: Micros) -> QResult<Option<MarkedPooled>> {
    let args = [("member", member.into()), ("metric", metric.into()), ("now", timestamp(now)?.into())];
    query_row(client, &MARKED_POOLED, args, |row| {
        Ok(MarkedPooled {
            pool: not_null(row, "pool")?,
            window: Window { start: from_window_key(not_null(row, "window_start")?)?, end: instant(row, "window_end")? },
            used: not_null(row, "used")?,
            allowance: column(row, "allowance")?,
            drawn: not_null(row, "drawn")?,
            cap: column(row, "cap")?,
        })
    })
}

/// Marks the member's draws row of the window for the pooled fast path, with its cap, once
/// its older rows are unmarked; false (nothing marked) when another transaction holds one of
/// them (a consume may hold the row marked before, FAST_POOLED locked it, while it waits for
/// this one, which the caller holds: pools::lock_member) or a newer row is marked.
pub fn mark_draws(client: &SpiClient, key: DrawsKey, cap: Option<i64>) -> QResult<bool> {
    let [pool, member, metric, window_start] = key.args()?;
    let only_this: bool = the_row(query_row(client, &UNMARK_OLDER_DRAWS, [pool, member, metric, window_start], |row| not_null(row, "only_this"))?)?;
    if !only_this {
        return Ok(false);
    }
    lock_draws(client, key)?;
    let [pool, member, metric, window_start] = key.args()?;
    query(client, &MARK_DRAWS, [pool, member, metric, window_start, ("cap", cap.into())], |_| Ok(()))?;
    Ok(true)
}

/// Changes a locked draws row; returns what the member drew now.
pub fn adjust_draws(client: &SpiClient, key: DrawsKey, change: i64) -> QResult<i64> {
    let [pool, member, metric, window_start] = key.args()?;
    let args = [pool, member, metric, window_start, ("change", change.into())];
    the_row(query_row(client, &ADJUST_DRAWS, args, |row| not_null(row, "drawn"))?)
}

/// What the member drew in the window (read only); 0 before its first draw.
pub fn read_draws(client: &SpiClient, key: DrawsKey) -> QResult<i64> {
    Ok(query_row(client, &READ_DRAWS, key.args()?, |row| not_null(row, "drawn"))?.unwrap_or(0))
}

/// What the member's unexpired holds on the pool keep in the window, but `settling`.
pub fn member_holds(client: &SpiClient, key: DrawsKey, now: Micros, settling: Option<Uuid>) -> QResult<i64> {
    let [pool, member, metric, window_start] = key.args()?;
    let args = [pool, member, metric, window_start, ("now", timestamp(now)?.into()), ("settling", settling.into())];
    the_row(query_row(client, &MEMBER_HOLDS, args, |row| not_null(row, "held"))?)
}

/// Pools do not nest: before a join, the pool must be no member of a pool, and the member
/// no pool with members. Joins take one lock, until their transactions end, so that two at
/// once cannot nest pools between them (one lock, not one per subject: a transaction that
/// joins 10,000 members would hold 10,000 locks, past PostgreSQL's lock table); at READ
/// COMMITTED only, whose statements see what committed before them.
pub fn check_not_nested(client: &SpiClient, pool: Uuid, member: Uuid) -> QResult<()> {
    // At REPEATABLE READ or SERIALIZABLE the check would read the transaction's snapshot,
    // older than a join it waited for.
    if transaction_snapshot_is_fixed() {
        return Err(QuotaError::needs_read_committed("quota.join_pool"));
    }
    query(client, &LOCK_MEMBERSHIPS, [("seed", POOL_MEMBERSHIP_LOCK_SEED.into())], |_| Ok(()))?;
    let nesting = query_row(client, &NESTING, [("pool", pool.into()), ("member", member.into())], |row| {
        Ok((column::<Uuid>(row, "pool_is_in")?, not_null::<bool>(row, "member_has_members")?))
    })?;
    match the_row(nesting)? {
        (Some(outer), _) => Err(QuotaError::nested_pool(format!("subject {pool} is a member of pool {outer}, so it cannot be a pool"))),
        (None, true) => Err(QuotaError::nested_pool(format!("subject {member} is a pool with members, so it cannot join a pool"))),
        (None, false) => Ok(()),
    }
}

/// Adds the member to the pool; the pool it is already in (perhaps this one) otherwise.
pub fn join(client: &SpiClient, pool: Uuid, member: Uuid) -> QResult<Option<Uuid>> {
    if query_row(client, &JOIN, [("pool", pool.into()), ("member", member.into())], |_| Ok(()))?.is_some() {
        return Ok(None);
    }
    pool_of(client, member)
}

pub fn pool_of(client: &SpiClient, member: Uuid) -> QResult<Option<Uuid>> {
    query_row(client, &POOL_OF, [("member", member.into())], |row| not_null(row, "pool"))
}

/// Removes the member from its pool; the pool it left, None when it was in none.
pub fn leave(client: &SpiClient, member: Uuid) -> QResult<Option<Uuid>> {
    query_row(client, &LEAVE, [("member", member.into())], |row| not_null(row, "pool"))
}

/// The cap of a member (None: the pool's default for its members).
pub fn set_cap(client: &SpiClient, pool: Uuid, metric: &str, member: Option<Uuid>, cap: Option<i64>) -> QResult<()> {
    let args = [("pool", pool.into()), ("metric", metric.into()), ("member", member.into()), ("cap", cap.into())];
    query(client, &SET_CAP, args, |_| Ok(())).map(drop)
}

pub fn clear_cap(client: &SpiClient, pool: Uuid, metric: &str, member: Option<Uuid>) -> QResult<()> {
    query(client, &CLEAR_CAP, [("pool", pool.into()), ("metric", metric.into()), ("member", member.into())], |_| Ok(())).map(drop)
}

pub fn set_admin(client: &SpiClient, pool: Uuid, admin: Uuid, is_admin: bool) -> QResult<()> {
    let statement = if is_admin { &ADD_ADMIN } else { &REMOVE_ADMIN };
    query(client, statement, [("pool", pool.into()), ("admin", admin.into())], |_| Ok(())).map(drop)
}

/// Whether the signed-in caller administers `pool`: it is the pool and has a member, or is
/// named in quota.pool_admins (quota.administered_pools()).
pub fn caller_administers(client: &SpiClient, pool: Uuid) -> QResult<bool> {
    the_row(query_row(client, &CALLER_ADMINISTERS, [("pool", pool.into())], |row| not_null(row, "administers"))?)
}

/// Whether `admin` is named as an admin of `pool`.
pub fn administers(client: &SpiClient, pool: Uuid, admin: Uuid) -> QResult<bool> {
    the_row(query_row(client, &ADMINISTERS, [("pool", pool.into()), ("admin", admin.into())], |row| not_null(row, "admin"))?)
}

pub struct NewAllocation<'a> {
    pub pool: Uuid,
    pub member: Uuid,
    pub metric: &'a str,
    pub amount: i64,
    pub grant_id: Uuid,
    pub event_id: i64,
    pub window: Window,
    pub idempotency_key: Option<&'a str>,
}

pub fn insert_allocation(client: &SpiClient, allocation: NewAllocation) -> QResult<Uuid> {
    let args = [
        ("pool", allocation.pool.into()),
        ("member", allocation.member.into()),
        ("metric", allocation.metric.into()),
        ("amount", allocation.amount.into()),
        ("grant_id", allocation.grant_id.into()),
        ("event_id", allocation.event_id.into()),
        ("window_start", window_key(allocation.window.start)?.into()),
        ("idempotency_key", allocation.idempotency_key.into()),
    ];
    the_row(query_row(client, &INSERT_ALLOCATION, args, |row| not_null(row, "allocation_id"))?)
}

/// An allocation as stored.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub pool: Uuid,
    pub allocation_id: Uuid,
    pub member: Uuid,
    pub metric: String,
    pub amount: i64,
    pub grant_id: Uuid,
    pub event_id: i64,
    pub revoked: bool,
}

fn allocation_from_row(row: &super::Row) -> QResult<Allocation> {
    Ok(Allocation {
        pool: not_null(row, "pool")?,
        allocation_id: not_null(row, "allocation_id")?,
        member: not_null(row, "member")?,
        metric: not_null(row, "metric")?,
        amount: not_null(row, "amount")?,
        grant_id: not_null(row, "grant_id")?,
        event_id: not_null(row, "event_id")?,
        revoked: not_null(row, "revoked")?,
    })
}

pub fn allocation_by_key(client: &SpiClient, pool: Uuid, key: &str) -> QResult<Option<Allocation>> {
    query_row(client, &ALLOCATION_BY_KEY, [("pool", pool.into()), ("key", key.into())], allocation_from_row)
}

pub fn lock_allocation(client: &SpiClient, allocation_id: Uuid) -> QResult<Option<Allocation>> {
    query_row(client, &LOCK_ALLOCATION, [("allocation_id", allocation_id.into())], allocation_from_row)
}

/// The member's allocations not revoked yet.
pub fn member_allocations(client: &SpiClient, member: Uuid) -> QResult<Vec<Uuid>> {
    query(client, &MEMBER_ALLOCATIONS, [("member", member.into())], |row| not_null(row, "allocation_id"))
}

pub fn close_allocation(client: &SpiClient, allocation: &Allocation, returned: i64) -> QResult<()> {
    let args = [("pool", allocation.pool.into()), ("allocation_id", allocation.allocation_id.into()), ("returned", returned.into())];
    query(client, &CLOSE_ALLOCATION, args, |_| Ok(())).map(drop)
}

/// An allocation's 'allocate' event, as the pool's ledger keeps it.
pub struct AllocationEvent {
    /// The pool's window it was taken from.
    pub window: Window,
    /// What it took from the pool's allowance.
    pub from_allowance: i64,
    /// What the pool had left after it (None = unlimited).
    pub pool_remaining: Option<i64>,
}

pub fn allocation_event(client: &SpiClient, allocation: &Allocation) -> QResult<AllocationEvent> {
    let args = [("pool", allocation.pool.into()), ("event_id", allocation.event_id.into())];
    the_row(query_row(client, &ALLOCATION_EVENT, args, |row| {
        Ok(AllocationEvent {
            window: Window { start: from_window_key(not_null(row, "window_start")?)?, end: instant(row, "window_end")? },
            from_allowance: not_null(row, "from_allowance")?,
            pool_remaining: column(row, "remaining")?,
        })
    })?)
}

pub fn find_allocation(client: &SpiClient, allocation_id: Uuid) -> QResult<Option<Allocation>> {
    query_row(client, &FIND_ALLOCATION, [("allocation_id", allocation_id.into())], allocation_from_row)
}

/// Locks a grant and returns what it has left.
pub fn lock_grant(client: &SpiClient, subject: Uuid, grant_id: Uuid) -> QResult<i64> {
    the_row(query_row(client, &LOCK_GRANT, [("subject", subject.into()), ("grant_id", grant_id.into())], |row| not_null(row, "remaining"))?)
}

pub fn membership_state(client: &SpiClient, member: Uuid) -> QResult<Option<String>> {
    query_row(client, &MEMBERSHIP_STATE, [("member", member.into())], |row| not_null(row, "state"))
}

pub fn cap_state(client: &SpiClient, pool: Uuid, metric: &str, member: Option<Uuid>) -> QResult<Option<String>> {
    query_row(client, &CAP_STATE, [("pool", pool.into()), ("metric", metric.into()), ("member", member.into())], |row| {
        not_null(row, "state")
    })
}
