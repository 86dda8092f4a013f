-- pg_quota data model. Runs first in the install script (bootstrap).
-- The extension is not relocatable and always lives in schema "quota", so names are
-- written fully qualified. Every table whose rows belong to a subject has a primary key
-- that leads with the subject, so the tables can later be partitioned or distributed
-- by subject.

COMMENT ON SCHEMA quota IS 'pg_quota: usage quotas enforced inside the transaction';

-- A plan is a named set of limits. At most one plan is the default, given lazily to
-- subjects that have no assignment.
CREATE TABLE quota.plans (
    plan        text PRIMARY KEY
                CHECK (plan ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX plans_single_default ON quota.plans (is_default) WHERE is_default;

-- One limit per (plan, metric). allowance NULL = unlimited (usage is still counted).
-- period is the canonical text of the window engine ('day', '30 days', 'lifetime').
CREATE TABLE quota.limits (
    plan        text NOT NULL REFERENCES quota.plans ON UPDATE CASCADE ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    allowance   bigint CHECK (allowance >= 0),
    period      text NOT NULL,
    anchor      text NOT NULL DEFAULT 'calendar' CHECK (anchor IN ('calendar', 'subscription')),
    time_zone   text NOT NULL DEFAULT 'UTC',
    -- Rate rules, as quota_rules::rate keeps them: [{"limit": 10, "per": "1 minute", "burst": 20}],
    -- ordered by per, "per" in its canonical text. Written only by create_plan / set_limits,
    -- which validate it.
    rate        jsonb NOT NULL DEFAULT '[]',
    -- Usage alert rules as quota_rules::alert stores them: '{80%,100%,"50 left",depleted,recovered}'
    -- (sql/alerts.sql). Written only by create_plan / set_limits, which validate them.
    alerts      text[] NOT NULL DEFAULT '{}',
    -- A soft limit: consume may pass the allowance as overage (reason 'overage'), by at most
    -- overage_max per window (NULL: without a ceiling). Only beside a limited allowance.
    soft        boolean NOT NULL DEFAULT false,
    overage_max bigint CHECK (overage_max >= 0),
    CONSTRAINT limits_overage_of_a_soft_limit CHECK (soft OR overage_max IS NULL),
    -- Rollover (quota_rules::rollover): unused allowance carries into the next window, at most
    -- rollover_max (NULL: all of it), and can be spent for rollover_windows windows. NULL
    -- rollover_windows: none carries.
    rollover_max     bigint CHECK (rollover_max > 0),
    rollover_windows integer CHECK (rollover_windows BETWEEN 1 AND 100),
    CONSTRAINT limits_rollover_max_of_a_rollover CHECK (rollover_windows IS NOT NULL OR rollover_max IS NULL),
    CONSTRAINT limits_rollover_of_a_limited_repeating_window
        CHECK (rollover_windows IS NULL OR (allowance IS NOT NULL AND period <> 'lifetime')),
    -- Which calls write a ledger row (quota_rules::plan::LedgerMode): 'full', every call;
    -- 'counters', not the allowed unkeyed consumes the fast path decides (their units are
    -- kept in the window's counters.counted_without_ledger).
    ledger      text NOT NULL DEFAULT 'full' CHECK (ledger IN ('full', 'counters')),
    PRIMARY KEY (plan, metric)
);
-- "Is this metric known at all?" is asked when a subject's plan lacks the metric.
CREATE INDEX limits_metric ON quota.limits (metric);

-- The plan of a subject, and the instant subscription windows repeat from.
CREATE TABLE quota.assignments (
    subject     uuid PRIMARY KEY,
    plan        text NOT NULL REFERENCES quota.plans ON UPDATE CASCADE,
    anchor      timestamptz NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX assignments_plan ON quota.assignments (plan);

-- A per-subject allowance that replaces the plan's. allowance NULL = unlimited.
CREATE TABLE quota.overrides (
    subject     uuid NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    allowance   bigint CHECK (allowance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subject, metric)
);

-- A per-subject rate rule: it replaces the plan's rule of the metric with the same per
-- (canonical text, e.g. '1 minute'), or adds one, until expires_at (NULL: until cleared).
-- An expired row is simply ignored; quota.clear_rate_override() removes it.
CREATE TABLE quota.rate_overrides (
    subject     uuid NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    per         text NOT NULL,
    rate_limit  bigint NOT NULL CHECK (rate_limit > 0),
    burst       bigint NOT NULL CHECK (burst > 0),
    expires_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subject, metric, per)
);

-- Value rules of the tables every call writes (counters, the ledger, reservations, grants and
-- what they paid, the rate rules cached for the fast path) are domains, not table CHECK
-- constraints: PostgreSQL parses and plans a table's CHECK expressions again on every
-- execution of an INSERT or UPDATE, a domain's once per session, and checks a domain only on
-- the columns a statement writes. On consume's one-statement path that was over a tenth of
-- its throughput; on a wallet's, a reserve's, a settle's and a rated consume's 6-12%
-- (docs/benchmarks.md, 0.4.0 and 0.18.0). Only a rule across columns stays a table CHECK
-- (quota.grants' remaining within its amount). Statements of pg_quota cast domain-typed
-- columns to their base types where they read them (an array_agg of a domain is an array of
-- the domain).
CREATE DOMAIN quota.units AS bigint CONSTRAINT units_check CHECK (VALUE >= 0);
CREATE DOMAIN quota.idempotency_key AS text
    CONSTRAINT idempotency_key_check CHECK (length(VALUE) BETWEEN 1 AND 255);
CREATE DOMAIN quota.event_kind AS text
    CONSTRAINT event_kind_check CHECK (VALUE IN ('consume', 'record', 'settle', 'reserve', 'release',
                                                 'give_back', 'denial', 'reset', 'allocate'));
CREATE DOMAIN quota.positive_units AS bigint CONSTRAINT positive_units_check CHECK (VALUE > 0);
CREATE DOMAIN quota.metric_name AS text
    CONSTRAINT metric_name_check CHECK (VALUE ~ '^[a-z][a-z0-9_.:-]{0,62}$');
CREATE DOMAIN quota.hold_status AS text
    CONSTRAINT hold_status_check CHECK (VALUE IN ('held', 'settled', 'released', 'expired'));

-- The state of each rate rule of each (subject, metric): GCRA's theoretical arrival time,
-- the instant the rule's bucket is full again, in microseconds since 1970-01-01 UTC. One row
-- per (subject, metric, per), written by the calls the rule admits; a tat in the past means
-- a full bucket, so nothing ever needs to delete rows.
-- fast marks the rows of the rules in force when the (subject, metric)'s counter is marked
-- fast too: consume's fast path then decides them in its one statement with the rule cached
-- here (rule_limit per rule_per_us, rule_burst), until rule_until (an override's expiry).
-- Marked with the counter, under its keys (src/store/fast_path.rs); a configuration change
-- unmarks the counter, which is enough.
CREATE TABLE quota.rate_state (
    subject     uuid NOT NULL,
    metric      text NOT NULL,
    per         text NOT NULL,
    tat_us      bigint NOT NULL,
    fast        boolean NOT NULL DEFAULT false,
    -- The cached rule: NULL on a row not marked (src/store/fast_path.rs, MARK_RATES, writes
    -- the three with `fast`); positive, as the fast statement divides by them.
    rule_limit  quota.positive_units,
    rule_per_us quota.positive_units,
    rule_burst  quota.positive_units,
    rule_until  timestamptz,
    PRIMARY KEY (subject, metric, per)
) WITH (fillfactor = 80);

-- quota.reset() starts a window over: the window that contains reset_at then begins at
-- reset_at instead of its calendar or subscription start.
CREATE TABLE quota.resets (
    subject     uuid NOT NULL,
    metric      text NOT NULL,
    reset_at    timestamptz NOT NULL,
    PRIMARY KEY (subject, metric, reset_at)
);

-- Usage per window. Old windows stay as history; nothing deletes them.
-- window_start is '-infinity' for a lifetime window that was never reset;
-- window_end is NULL for lifetime windows. held is the sum of the window's reservations
-- still marked 'held' (some may have expired since: readers only count those that have
-- not, so expiry needs no job).
-- fast marks the row consume's one-statement fast path may decide on alone: it is the
-- subject's current window, allowance is the effective allowance (NULL = unlimited), and
-- the subject had no usable grants when it was marked (or `wallet` says it had). Whatever
-- could change that unmarks
-- the row (quota.forget_fast_path(), sql/fast_path.sql); at most one row of a (subject,
-- metric) is marked, which the unique index counters_fast enforces. rated says that rate
-- rules are cached beside the marked window (quota.rate_state's fast rows): a window marked
-- without them is decided by a statement that does not look for any.
-- alerted lists the alert rules that fired in the window (each fires once per window,
-- sql/alerts.sql); alert_at is the usage at which the next one fires, which a marked row's
-- fast path never reaches (it leaves that consume to the slow path, which fires it).
-- fillfactor leaves room on each page so that the hot UPDATE of "used" stays HOT.
CREATE TABLE quota.counters (
    subject      uuid NOT NULL,
    metric       text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz,
    used         quota.units NOT NULL,
    held         quota.units NOT NULL DEFAULT 0,
    allowance    bigint,
    fast         boolean NOT NULL DEFAULT false,
    rated        boolean NOT NULL DEFAULT false,
    alerted      text[] NOT NULL DEFAULT '{}',
    alert_at     bigint,
    -- A marked window's ledger mode: false when the fast path writes no row for an allowed
    -- consume without a key (a limit's "ledger": "counters"); what it counted so is kept in
    -- counted_without_ledger, so that used = the ledger's sum + counted_without_ledger.
    ledger_rows  boolean NOT NULL DEFAULT true,
    counted_without_ledger bigint NOT NULL DEFAULT 0,
    -- A marked window whose subject had usable grants when it was marked (a credit wallet):
    -- once the allowance is spent the fast path pays from the grants (FAST_WALLET in
    -- src/store/fast_path.rs, which reads them and locks the one it spends), and never
    -- denies on it alone.
    wallet       boolean NOT NULL DEFAULT false,
    -- No hold counted in `held` expires before this instant (NULL: not known): until then a
    -- call or a reader knows, without reading the holds, that none has expired
    -- (src/store/counters.rs: adding a hold lowers it, reading the holds sets it again).
    holds_expire_at timestamptz,
    PRIMARY KEY (subject, metric, window_start)
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX counters_fast ON quota.counters (subject, metric) WHERE fast;
-- Windows whose depletion no `recovered` has answered yet (sql/alerts.sql): few rows.
CREATE INDEX counters_awaiting_recovery ON quota.counters (subject, metric, window_end)
    WHERE 'depleted' = ANY (alerted) AND NOT ('recovered' = ANY (alerted));

-- Holds taken by quota.reserve() before slow work (an AI call). A hold counts against what
-- others can consume in its window until it is settled, released, or expires_at passes.
-- 'expired' is written lazily by the next writer of the window, or by
-- quota.expire_reservations(); nothing depends on it.
CREATE TABLE quota.reservations (
    subject          uuid NOT NULL,
    reservation_id   uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    metric           text NOT NULL,
    amount           quota.positive_units NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz,
    expires_at       timestamptz NOT NULL,
    status           quota.hold_status NOT NULL DEFAULT 'held',
    idempotency_key  quota.idempotency_key,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- A member's hold on its pool (sql/pools.sql): subject is the pool, whose window and
    -- counter it holds, member the subject that reserved.
    member           uuid,
    PRIMARY KEY (subject, reservation_id)
);
CREATE UNIQUE INDEX reservations_reservation_id ON quota.reservations (reservation_id);
-- Idempotency keys are scoped to (subject, metric), as in quota.events: the subject that
-- reserved, which is the member of a pooled hold (sql/pools.sql).
CREATE UNIQUE INDEX reservations_idempotency_key ON quota.reservations (coalesce(member, subject), idempotency_key, metric)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX reservations_held ON quota.reservations (subject, metric, window_start, expires_at)
    WHERE status = 'held';

-- Bonus credits for one (subject, metric). They are spent after the window's allowance:
-- carries of unused allowance first (rollover_of, priority -2147483648), then
-- lowest priority first, then soonest expiry (never-expiring last), then oldest.
-- remaining is what is left to spend; a revoked or expired grant is never spent.
CREATE TABLE quota.grants (
    subject     uuid NOT NULL,
    grant_id    uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    metric      quota.metric_name NOT NULL,
    amount      quota.positive_units NOT NULL,
    remaining   bigint NOT NULL CHECK (remaining BETWEEN 0 AND amount),
    priority    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    revoked_at  timestamptz,
    -- A carry of unused allowance (src/store/rollover.rs): the start of the window it came
    -- out of. At most one per window, whoever touches the next window first.
    rollover_of timestamptz,
    -- Whether nothing is left (0.19.0): grants_spending_order leaves spent grants out, so that
    -- a wallet's calls do not read every grant it ever had. A spend changes it only when it
    -- takes the last unit, so every other spend stays HOT; a refund of a spent grant puts the
    -- grant back.
    spent       boolean NOT NULL GENERATED ALWAYS AS (remaining = 0) STORED,
    PRIMARY KEY (subject, grant_id)
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX grants_rollover ON quota.grants (subject, metric, rollover_of) WHERE rollover_of IS NOT NULL;
CREATE UNIQUE INDEX grants_grant_id ON quota.grants (grant_id);
-- The usable grants in spending order. Spending a grant changes `remaining`, which no index
-- names, so that the update is HOT (no new index entries) on the room fillfactor leaves: a
-- credit wallet spends a grant on every call. Only the spend that takes its last unit changes
-- `spent` and takes the grant out of this index (with `remaining > 0` here instead, every
-- spend would add index entries: measured, a fresh wallet's call at 0.89x). Readers say
-- `NOT spent` to use it.
CREATE INDEX grants_spending_order ON quota.grants (subject, metric, priority, expires_at, created_at, grant_id)
    WHERE revoked_at IS NULL AND NOT spent;

-- The ledger: one row per consume, record, reserve, settle, release, give_back, denial,
-- reset and allocate. Counters always equal the sum of from_allowance + overage of the
-- committed consume/record/settle/allocate events of their window (a pooled member's events
-- count in their pool's), less what give_back events returned; every
-- grant's remaining equals its amount less what event_grants says it paid (quota.audit()).
-- A consume event also keeps the decision it returned, so that a retry with the same
-- idempotency key replays it exactly.
CREATE TABLE quota.events (
    subject          uuid NOT NULL,
    event_id         bigint GENERATED ALWAYS AS IDENTITY (CACHE 64),
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    kind             quota.event_kind NOT NULL,
    metric           text NOT NULL,
    amount           quota.units NOT NULL,
    from_allowance   quota.units NOT NULL DEFAULT 0,
    from_grants      quota.units NOT NULL DEFAULT 0,
    overage          quota.units NOT NULL DEFAULT 0,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz,
    used             bigint NOT NULL,
    reserved         bigint NOT NULL DEFAULT 0,
    allowance        bigint,
    remaining        bigint,
    reason           text NOT NULL,
    idempotency_key  quota.idempotency_key,
    metadata         jsonb,
    reservation_id   uuid,
    -- The pool that paid for a member's call (sql/pools.sql): the pool's window counted it,
    -- and the member's draws from the pool, not the member's own window.
    pool             uuid,
    PRIMARY KEY (subject, event_id)
);
CREATE INDEX events_reservation ON quota.events (reservation_id, kind) WHERE reservation_id IS NOT NULL;
-- Only committed, allowed consumption holds an idempotency key (reservations keep theirs
-- in quota.reservations). A key is scoped to (subject, metric): one request id may pay for
-- a request and its tokens. The key leads the metric so that a bundle's retry
-- (quota.consume_many()) finds every metric of its key in one range.
CREATE UNIQUE INDEX events_idempotency_key ON quota.events (subject, idempotency_key, metric)
    WHERE idempotency_key IS NOT NULL AND kind IN ('consume', 'record');

-- Which grants paid for an event, and how much each: the detail of events.from_grants.
CREATE TABLE quota.event_grants (
    subject   uuid NOT NULL,
    event_id  bigint NOT NULL,
    grant_id  uuid NOT NULL,
    amount    quota.positive_units NOT NULL,
    PRIMARY KEY (subject, event_id, grant_id)
);
CREATE INDEX event_grants_grant ON quota.event_grants (grant_id);

-- What each table under quota.enforce has charged each subject and still holds (its live
-- rows of lifetime metrics). A delete or an update gives back at most this much: a table
-- cannot free units it never charged, whoever attached the trigger and however.
CREATE TABLE quota.enforced_charges (
    subject     uuid NOT NULL,
    metric      text NOT NULL,
    enforced_table regclass NOT NULL,   -- follows renames and survives pg_dump (restored by name)
    units       quota.units NOT NULL,
    PRIMARY KEY (subject, metric, enforced_table)
);

-- The audit trail of administration: one row per administrative change (create_plan,
-- set_limits, assign_plan, set_override, clear_override, grant, revoke_grant, reset),
-- written by the function in the caller's transaction. db_role is the role that called
-- (PostgREST's role after SET ROLE, else the session's); jwt_* and quota_role come from
-- request.jwt.claims. before and after are the changed object's state (NULL: it did not
-- exist before, or no longer exists after). Nothing writes it but those functions.
CREATE TABLE quota.admin_changes (
    change_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    action       text NOT NULL,
    db_role      text NOT NULL,
    jwt_subject  uuid,
    jwt_role     text,
    quota_role   text,
    subject      uuid,
    metric       text,
    plan         text,
    before       jsonb,
    after        jsonb
);
CREATE INDEX admin_changes_subject ON quota.admin_changes (subject, change_id) WHERE subject IS NOT NULL;

-- Pools (docs/pools.md): a pool is a subject (a team, a class, a teacher) with a plan of its
-- own; its members draw from it, each within a cap. A subject is a member of at most one
-- pool, for every metric the pool's plan has. Every table leads its key with the pool: a
-- sharded deployment routes a pool's rows and its members' pool rows together
-- (quota.routing_key(), sql/pools.sql).
CREATE TABLE quota.pool_members (
    pool       uuid NOT NULL,
    member     uuid NOT NULL,
    joined_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (pool, member),
    CHECK (pool <> member)
);
CREATE UNIQUE INDEX pool_members_member ON quota.pool_members (member);

-- Subjects who administer a pool besides the pool itself (a team's owner): they allocate,
-- set caps and see every member's usage.
CREATE TABLE quota.pool_admins (
    pool       uuid NOT NULL,
    admin      uuid NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (pool, admin)
);
CREATE INDEX pool_admins_admin ON quota.pool_admins (admin);

-- What a member may draw from the pool per window of the pool's metric: member NULL is the
-- pool's default for its members, a member's row replaces it. cap NULL = no cap; no row at
-- all = no cap.
CREATE TABLE quota.pool_caps (
    pool       uuid NOT NULL,
    metric     text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    member     uuid,
    cap        bigint CHECK (cap >= 0),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX pool_caps_key ON quota.pool_caps (pool, metric, member) NULLS NOT DISTINCT;

-- What each member drew from the pool in each of the pool's windows: the ledger's events of
-- the member with this pool, summed (quota.audit()). Kept after the member leaves.
-- fast marks the row a member's consume may be decided on alone (src/pools/mod.rs): the
-- member's own means pay nothing for the metric (no allowance, no usable grants, no rate
-- rule of its own), it is in the pool, and cap is its effective cap (NULL = none). The
-- pool's side is the pool's counter of the same window, which must be marked too. Whatever
-- could change that unmarks the row (sql/fast_path.sql, sql/pools.sql); at most one row of
-- a (member, metric) is marked.
CREATE TABLE quota.pool_draws (
    pool         uuid NOT NULL,
    member       uuid NOT NULL,
    metric       text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz,
    drawn        quota.units NOT NULL,
    fast         boolean NOT NULL DEFAULT false,
    cap          bigint,
    PRIMARY KEY (pool, member, metric, window_start)
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX pool_draws_fast ON quota.pool_draws (member, metric) WHERE fast;

-- A fixed part of the pool given to a member: taken from the pool's window at once (the
-- pool's 'allocate' event, event_id), and the member's as a grant (grant_id) spent before
-- anything the pool pays. Revoking stops the grant and returns what it had left.
CREATE TABLE quota.allocations (
    pool            uuid NOT NULL,
    allocation_id   uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    member          uuid NOT NULL,
    metric          text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    grant_id        uuid NOT NULL,
    event_id        bigint NOT NULL,
    window_start    timestamptz NOT NULL,
    idempotency_key quota.idempotency_key,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    revoked_at      timestamptz,
    returned        bigint CHECK (returned >= 0),
    PRIMARY KEY (pool, allocation_id),
    CHECK ((revoked_at IS NULL) = (returned IS NULL))
);
CREATE UNIQUE INDEX allocations_allocation_id ON quota.allocations (allocation_id);
CREATE UNIQUE INDEX allocations_idempotency_key ON quota.allocations (pool, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX allocations_member ON quota.allocations (member) WHERE revoked_at IS NULL;
CREATE INDEX events_pool ON quota.events (pool, metric, window_start) WHERE pool IS NOT NULL;

-- A subject's own usage alert rules for a metric: they replace its plan's (an empty list
-- silences them). Written by quota.set_alerts() / quota.clear_alerts().
CREATE TABLE quota.alert_overrides (
    subject     uuid NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    alerts      text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subject, metric)
);

-- The outbox of usage alerts (docs/alerts.md): one row per (subject, metric, window, rule)
-- that fired, written in the transaction whose usage fired it; `recovered` once per
-- depletion it answers, with the window usable now. The numbers are the window's after that
-- usage; event_id is its ledger row (NULL when a change or the end of a window answered a
-- depletion), cause what it was (consume, record, settle, allocate, grant, reset,
-- plan_change, override, give_back, release, window_end).
-- Delivery (the consumer API in sql/alerts.sql): attempts counts claims; a claim makes the
-- row invisible to others until claimed_until; retry_alert() defers it to available_at;
-- delivered_at once acknowledged; dead_at once it had max_attempts claims.
CREATE TABLE quota.alerts (
    subject       uuid NOT NULL,
    alert_id      bigint GENERATED ALWAYS AS IDENTITY,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    metric        text NOT NULL,
    rule          text NOT NULL,
    window_start  timestamptz NOT NULL,   -- '-infinity': a lifetime window never reset
    resets_at     timestamptz,
    used          bigint NOT NULL,
    allowance     bigint,
    remaining     bigint,
    event_id      bigint,
    cause         text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_by    text,
    claimed_until timestamptz,
    delivered_at  timestamptz,
    dead_at       timestamptz,
    last_error    text,
    PRIMARY KEY (subject, alert_id)
);
CREATE UNIQUE INDEX alerts_alert_id ON quota.alerts (alert_id);
-- What consumers claim from, in order.
CREATE INDEX alerts_pending ON quota.alerts (alert_id) WHERE delivered_at IS NULL AND dead_at IS NULL;

-- The result of consume / check / require.
CREATE TYPE quota.decision AS (
    allowed         boolean,
    metric          text,
    amount          bigint,
    from_allowance  bigint,
    from_grants     bigint,
    overage         bigint,       -- counted beyond allowance and grants: record, settle, a soft limit's consume
    used            bigint,       -- in this window, after this call (check: now)
    reserved        bigint,       -- active holds in this window (reservations)
    allowance       bigint,       -- NULL = unlimited
    remaining       bigint,       -- allowance left + usable grants - holds; NULL = unlimited
    window_start    timestamptz,  -- NULL for a lifetime window that was never reset
    resets_at       timestamptz,  -- NULL for lifetime windows
    replayed        boolean,
    reason          text,         -- ok | quota_exceeded | rate_limited | no_plan | overage | bundle_denied
    event_id        bigint,       -- the ledger row; NULL for check()
    retry_after     timestamptz   -- when the same call would next succeed; NULL when allowed
                                  -- or when only a reset or a top-up can help
);

-- The result of reserve().
CREATE TYPE quota.reservation AS (
    reservation_id  uuid,         -- NULL when denied
    allowed         boolean,
    metric          text,
    amount          bigint,       -- held
    expires_at      timestamptz,
    used            bigint,
    reserved        bigint,       -- active holds in the window, this one included
    allowance       bigint,
    remaining       bigint,
    window_start    timestamptz,
    resets_at       timestamptz,
    replayed        boolean,
    reason          text,
    retry_after     timestamptz
);

-- The result of allocate() (sql/pools.sql).
CREATE TYPE quota.allocation AS (
    allocation_id   uuid,         -- NULL when denied
    allowed         boolean,
    pool            uuid,
    member          uuid,
    metric          text,
    amount          bigint,
    grant_id        uuid,         -- the member's grant that holds it
    pool_remaining  bigint,       -- what the pool has left after it; NULL = unlimited
    replayed        boolean,
    reason          text          -- ok | quota_exceeded | no_plan
);

CREATE TYPE quota.usage_row AS (
    metric           text,
    used             bigint,
    reserved         bigint,
    allowance        bigint,
    remaining        bigint,
    grants_remaining bigint,
    window_start     timestamptz,
    resets_at        timestamptz,
    percent_used     numeric,
    rates            jsonb,        -- each rate rule in force: limit, per, burst, remaining, next_unit_at
    pool             uuid,         -- the pool the subject draws this metric from (sql/pools.sql), or NULL
    pool_drawn       bigint,       -- what the subject drew from it in the pool's current window
    pool_cap         bigint,       -- its cap there; NULL = no cap
    pool_remaining   bigint,       -- what it can still draw: the pool's remaining, at most the cap left
    rollover_remaining bigint      -- unused allowance of earlier windows carried into this one, left to spend
);

-- Keep configuration and usage in pg_dump output (extension tables are skipped otherwise).
SELECT pg_catalog.pg_extension_config_dump('quota.plans', '');
SELECT pg_catalog.pg_extension_config_dump('quota.limits', '');
SELECT pg_catalog.pg_extension_config_dump('quota.assignments', '');
SELECT pg_catalog.pg_extension_config_dump('quota.overrides', '');
SELECT pg_catalog.pg_extension_config_dump('quota.resets', '');
SELECT pg_catalog.pg_extension_config_dump('quota.counters', '');
SELECT pg_catalog.pg_extension_config_dump('quota.events', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grants', '');
SELECT pg_catalog.pg_extension_config_dump('quota.event_grants', '');
SELECT pg_catalog.pg_extension_config_dump('quota.reservations', '');
SELECT pg_catalog.pg_extension_config_dump('quota.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.enforced_charges', '');
SELECT pg_catalog.pg_extension_config_dump('quota.admin_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.admin_changes_change_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('quota.rate_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('quota.rate_state', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_members', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_admins', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_caps', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_draws', '');
SELECT pg_catalog.pg_extension_config_dump('quota.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('quota.alert_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('quota.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('quota.alerts_alert_id_seq', '');

-- Rows are reached through the functions (SECURITY DEFINER); nobody else sees or writes
-- them until the policies of the end-user surface say so.
ALTER TABLE quota.plans       ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.limits      ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.overrides   ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.resets      ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.counters    ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.events      ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.grants      ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.event_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.enforced_charges ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.admin_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.rate_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.rate_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_admins  ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_caps    ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_draws   ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.allocations  ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.alert_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.alerts       ENABLE ROW LEVEL SECURITY;
