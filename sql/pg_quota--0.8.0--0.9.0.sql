-- 0.8.0 -> 0.9.0: pools (issue 21): members draw from a pool's plan within caps,
-- allocations, pool admins; quota.events names the pool that paid, quota.usage_row shows a
-- member's pool, the audit checks each member's draws, row level security lets members read
-- their pool and admins their members. Function bodies are those of a fresh install; OR
-- REPLACE keeps the grants quota.setup_supabase() gave.

ALTER DOMAIN quota.event_kind DROP CONSTRAINT event_kind_check;
ALTER DOMAIN quota.event_kind ADD CONSTRAINT event_kind_check CHECK (VALUE IN ('consume', 'record', 'settle', 'reserve', 'release',
                                                 'give_back', 'denial', 'reset', 'allocate'));
ALTER TABLE quota.events ADD COLUMN pool uuid;
ALTER TABLE quota.reservations ADD COLUMN member uuid;
DROP INDEX quota.reservations_idempotency_key;
CREATE UNIQUE INDEX reservations_idempotency_key ON quota.reservations (coalesce(member, subject), idempotency_key, metric)
    WHERE idempotency_key IS NOT NULL;
ALTER TYPE quota.usage_row ADD ATTRIBUTE pool uuid, ADD ATTRIBUTE pool_drawn bigint, ADD ATTRIBUTE pool_cap bigint,
    ADD ATTRIBUTE pool_remaining bigint;

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

SELECT pg_catalog.pg_extension_config_dump('quota.pool_members', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_admins', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_caps', '');
SELECT pg_catalog.pg_extension_config_dump('quota.pool_draws', '');
SELECT pg_catalog.pg_extension_config_dump('quota.allocations', '');
ALTER TABLE quota.pool_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_admins  ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_caps    ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.pool_draws   ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.allocations  ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION quota.forget_fast_path_of_subject(subject uuid, metric text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(forget_fast_path_of_subject.subject::text, 1903127));
    UPDATE quota.counters AS c SET fast = false
      FROM (SELECT k.metric, k.window_start FROM quota.counters AS k
             WHERE k.subject = forget_fast_path_of_subject.subject AND k.fast
               AND (forget_fast_path_of_subject.metric IS NULL OR k.metric = forget_fast_path_of_subject.metric)
             ORDER BY k.metric COLLATE "C"
               FOR UPDATE) AS marked
     WHERE c.subject = forget_fast_path_of_subject.subject AND c.metric = marked.metric
       AND c.window_start = marked.window_start;
    -- A pool's member: its own means may now pay (sql/schema.sql, quota.pool_draws).
    UPDATE quota.pool_draws AS d SET fast = false
     WHERE d.member = forget_fast_path_of_subject.subject AND d.fast
       AND (forget_fast_path_of_subject.metric IS NULL OR d.metric = forget_fast_path_of_subject.metric);
$$;

CREATE OR REPLACE FUNCTION quota.forget_fast_path_of_plan(plan text, metric text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(forget_fast_path_of_plan.plan, 1903128));
    UPDATE quota.counters AS c SET fast = false
      FROM quota.assignments AS a
     WHERE a.plan = forget_fast_path_of_plan.plan AND c.subject = a.subject
       AND c.metric = forget_fast_path_of_plan.metric AND c.fast;
    UPDATE quota.pool_draws AS d SET fast = false
      FROM quota.assignments AS a
     WHERE a.plan = forget_fast_path_of_plan.plan AND d.member = a.subject
       AND d.metric = forget_fast_path_of_plan.metric AND d.fast;
$$;

-- Pools (docs/pools.md): what keeps the fast path's marks of members true, who may read a
-- pool's rows, the routing key, and the admins' view. The tables are in sql/schema.sql;
-- what decides a member's call is in src/pools/, the arithmetic in
-- crates/quota-rules/src/pool.rs.

-- Joining or leaving changes who pays for every metric of the member: its windows and its
-- draws are unmarked, under its fast-path key (sql/fast_path.sql). A consume marks none of
-- a member's windows (src/fast_path.rs); its draws from the pool it marks itself
-- (src/pools/mod.rs).
CREATE FUNCTION quota.forget_fast_path_of_member() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM quota.forget_fast_path_of_subject(OLD.member, NULL);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM quota.forget_fast_path_of_subject(NEW.member, NULL);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.pool_members
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path_of_member();

-- A cap change unmarks the members' rows it concerns (they cache the cap), under the pool's
-- fast-path key (FAST_PATH_SUBJECT_LOCK_SEED = 1903127), which a consume that marks them
-- takes first (src/pools/mod.rs).
CREATE FUNCTION quota.forget_fast_path_of_caps() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed quota.pool_caps := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(changed.pool::text, 1903127));
    UPDATE quota.pool_draws AS d SET fast = false
     WHERE d.pool = changed.pool AND d.metric = changed.metric AND d.fast
       AND (changed.member IS NULL OR d.member = changed.member);
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.pool_caps
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path_of_caps();

-- Where a sharded deployment sends a subject's rows: a member goes with its pool.
CREATE FUNCTION quota.routing_key(subject uuid) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'subject must not be NULL';
    END IF;
    RETURN coalesce((SELECT m.pool FROM quota.pool_members AS m WHERE m.member = routing_key.subject), routing_key.subject);
END
$$;

-- Whose rows the signed-in user may read besides their own (row level security, in
-- sql/privileges.sql). Evaluated once per query.
-- The pool the caller draws from: its plan, counter and grants (what my_usage() reports as
-- the pool's remaining), not its ledger.
CREATE FUNCTION quota.my_pool() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.pool FROM quota.pool_members AS m WHERE m.member = quota.current_subject()
$$;

-- The pools the caller administers: the pool itself once it has members, and the pools
-- that name the caller in pool_admins.
CREATE FUNCTION quota.administered_pools() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(pg_catalog.array_agg(DISTINCT pools.pool), '{}') FROM (
        SELECT m.pool FROM quota.pool_members AS m WHERE m.pool = quota.current_subject()
        UNION ALL
        SELECT a.pool FROM quota.pool_admins AS a WHERE a.admin = quota.current_subject()) AS pools
$$;

-- The pools the caller administers and their members: everything about them, the ledger
-- included.
CREATE FUNCTION quota.administered_subjects() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH pools AS (SELECT pg_catalog.unnest(quota.administered_pools()) AS pool)
    SELECT coalesce(pg_catalog.array_agg(s), '{}') FROM (
        SELECT pool AS s FROM pools
        UNION SELECT m.member FROM quota.pool_members AS m WHERE m.pool IN (SELECT pool FROM pools)) AS subjects
$$;

-- Every member of a pool with what it drew in the pool's current window of each metric,
-- its cap and its unspent allocations. SECURITY INVOKER: through row level security a
-- pool's admins see their members, a member only itself.
CREATE FUNCTION quota.pool_usage(pool uuid)
RETURNS TABLE (member uuid, metric text, drawn bigint, cap bigint, allocated_left bigint,
               window_start timestamptz, resets_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.member, l.metric,
           coalesce(d.drawn, 0)::int8,
           CASE WHEN own.member IS NOT NULL THEN own.cap ELSE dflt.cap END,
           (SELECT coalesce(sum(g.remaining), 0)::int8
              FROM quota.allocations AS al JOIN quota.grants AS g ON g.subject = al.member AND g.grant_id = al.grant_id
             WHERE al.pool = m.pool AND al.member = m.member AND al.metric = l.metric AND al.revoked_at IS NULL
               AND (g.expires_at IS NULL OR g.expires_at > pg_catalog.now())),
           d.window_start, d.window_end
      FROM quota.pool_members AS m
      JOIN quota.assignments AS a ON a.subject = m.pool
      JOIN quota.limits AS l ON l.plan = a.plan
      LEFT JOIN LATERAL (SELECT x.drawn::int8 AS drawn, nullif(x.window_start, '-infinity') AS window_start, x.window_end
                           FROM quota.pool_draws AS x
                          WHERE x.pool = m.pool AND x.member = m.member AND x.metric = l.metric
                            AND x.window_start <= pg_catalog.now()
                            AND (x.window_end IS NULL OR x.window_end > pg_catalog.now())
                          ORDER BY x.window_start DESC LIMIT 1) AS d ON true
      LEFT JOIN quota.pool_caps AS own ON own.pool = m.pool AND own.metric = l.metric AND own.member = m.member
      LEFT JOIN quota.pool_caps AS dflt ON dflt.pool = m.pool AND dflt.metric = l.metric AND dflt.member IS NULL
     WHERE m.pool = pool_usage.pool
     ORDER BY m.member, l.metric
$$;

CREATE OR REPLACE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, 'window ' || window_start, c.used, e.used
    FROM quota.counters AS c
    FULL JOIN (SELECT coalesce(pool, subject) AS subject, metric, window_start,
                      sum(CASE kind WHEN 'give_back' THEN -from_allowance ELSE from_allowance + overage END) AS used
               FROM quota.events
               WHERE kind IN ('consume', 'record', 'settle', 'give_back', 'allocate')
               GROUP BY 1, metric, window_start) AS e
         USING (subject, metric, window_start)
    WHERE coalesce(c.used, 0) <> coalesce(e.used, 0)
    UNION ALL
    SELECT member, metric, 'drawn from ' || pool || ' ' || window_start, d.drawn, e.drawn
    FROM quota.pool_draws AS d
    FULL JOIN (SELECT pool, subject AS member, metric, window_start,
                      sum(CASE kind WHEN 'give_back' THEN -from_allowance ELSE from_allowance + from_grants + overage END) AS drawn
               FROM quota.events
               WHERE pool IS NOT NULL AND kind IN ('consume', 'record', 'settle', 'give_back')
               GROUP BY pool, subject, metric, window_start) AS e
         USING (pool, member, metric, window_start)
    WHERE coalesce(d.drawn, 0) <> coalesce(e.drawn, 0)
    UNION ALL
    SELECT c.subject, c.metric, 'holds ' || c.window_start, c.held, coalesce(sum(r.amount), 0)
    FROM quota.counters AS c
    LEFT JOIN quota.reservations AS r
           ON r.subject = c.subject AND r.metric = c.metric AND r.window_start = c.window_start
          AND r.status = 'held'
    GROUP BY c.subject, c.metric, c.window_start, c.held
    HAVING c.held <> coalesce(sum(r.amount), 0)
    UNION ALL
    SELECT g.subject, g.metric, 'grant ' || g.grant_id, g.remaining, g.amount - coalesce(p.paid, 0)
    FROM quota.grants AS g
    LEFT JOIN (SELECT grant_id, sum(amount) AS paid FROM quota.event_grants GROUP BY grant_id) AS p
           USING (grant_id)
    WHERE g.remaining <> g.amount - coalesce(p.paid, 0)
    UNION ALL
    SELECT e.subject, e.metric, 'event ' || e.event_id, e.from_grants, coalesce(sum(p.amount), 0)
    FROM quota.events AS e
    LEFT JOIN quota.event_grants AS p USING (subject, event_id)
    WHERE e.from_grants > 0 OR p.event_id IS NOT NULL
    GROUP BY e.subject, e.metric, e.event_id, e.from_grants
    HAVING e.from_grants <> coalesce(sum(p.amount), 0)
    UNION ALL
    SELECT c.subject, c.metric, 'fast ' || c.window_start, c.allowance, effective.allowance
    FROM quota.counters AS c
    LEFT JOIN quota.assignments AS a USING (subject)
    LEFT JOIN quota.limits AS l ON l.plan = a.plan AND l.metric = c.metric
    LEFT JOIN quota.overrides AS o ON o.subject = c.subject AND o.metric = c.metric
    CROSS JOIN LATERAL (SELECT CASE WHEN o.subject IS NOT NULL THEN o.allowance
                                    WHEN l.plan IS NOT NULL THEN l.allowance
                                    ELSE 0 END AS allowance) AS effective
    WHERE c.fast
      AND (a.subject IS NULL OR c.allowance IS DISTINCT FROM effective.allowance
           OR EXISTS (SELECT FROM quota.counters AS other
                       WHERE other.subject = c.subject AND other.metric = c.metric AND other.fast
                         AND other.window_start <> c.window_start)
           OR EXISTS (SELECT FROM quota.grants AS g
                       WHERE g.subject = c.subject AND g.metric = c.metric AND g.remaining > 0
                         AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now()))
           OR EXISTS (SELECT FROM quota.resets AS r
                       WHERE r.subject = c.subject AND r.metric = c.metric
                         AND r.reset_at > c.window_start AND r.reset_at <= now()))
    ORDER BY 1, 2, 3
$$;

CREATE OR REPLACE FUNCTION quota.setup_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- my_pool and administered_* are what row level security asks of pools (sql/pools.sql).
    end_user constant text[] := ARRAY['current_subject', 'current_quota_role', 'my_usage', 'my_check', 'limit_request',
                                      'my_pool', 'administered_pools', 'administered_subjects', 'pool_usage'];
    -- Callable by every signed-in user, allowed only to those whose claims carry the
    -- quota_role they need (support: usage; admin: the rest), or, for a pool's functions,
    -- to the pool and its admins (a member may leave); src/callers.rs.
    in_app_admin constant text[] := ARRAY['usage', 'assign_plan', 'set_override', 'clear_override', 'reset',
                                          'grant', 'revoke_grant', 'join_pool', 'leave_pool', 'set_pool_cap',
                                          'clear_pool_cap', 'set_pool_admin', 'allocate', 'revoke_allocation'];
    fn regprocedure;
BEGIN
    step := 'sign-up trigger quota_on_signup on auth.users';
    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        outcome := 'skipped: there is no table auth.users';
    ELSE
        CREATE OR REPLACE TRIGGER quota_on_signup AFTER INSERT ON auth.users
            FOR EACH ROW EXECUTE FUNCTION quota.on_signup();
        outcome := 'created';
    END IF;
    RETURN NEXT;

    step := 'service_role: the privileged functions, read access to every table';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        outcome := 'skipped: there is no role service_role';
    ELSE
        GRANT USAGE ON SCHEMA quota TO service_role;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace
                     AND p.proname NOT IN ('setup_supabase', 'teardown_supabase') AND p.prorettype <> 'trigger'::regtype
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO service_role;
        outcome := 'granted';
    END IF;
    RETURN NEXT;

    step := 'authenticated: ' || array_to_string(end_user, ', ') || ', and its own rows; for its admins '
            || array_to_string(in_app_admin, ', ');
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        outcome := 'skipped: there is no role authenticated';
    ELSE
        GRANT USAGE ON SCHEMA quota TO authenticated;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace AND p.proname = ANY (end_user || in_app_admin)
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO authenticated;
        outcome := 'granted (row level security limits it to the user''s own rows, the functions to admins)';
    END IF;
    RETURN NEXT;

    -- PostgREST runs the pre-request function as the request's role, anon included.
    step := 'anon: limit_request only';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        outcome := 'skipped: there is no role anon';
    ELSE
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM anon;
        REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM anon;
        GRANT USAGE ON SCHEMA quota TO anon;
        GRANT EXECUTE ON FUNCTION quota.limit_request(text) TO anon;
        outcome := 'granted (no table, no other function)';
    END IF;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION quota.raise_denied(subject uuid, metric text, reason text, requested bigint, used bigint,
                                   reserved bigint, allowance bigint, remaining bigint, window_start timestamptz,
                                   resets_at timestamptz, retry_after timestamptz, raised_by text,
                                   source_table text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message text;
    detail text;
    hint text;
BEGIN
    PERFORM quota.journal_denial(subject, metric, reason, requested, used, reserved, allowance, remaining,
                                 window_start, resets_at, retry_after, raised_by, source_table);
    IF reason = 'no_plan' THEN
        message := format('quota exceeded for "%s": subject %s has no plan and there is no default plan', metric, subject);
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested)::text;
        hint := 'Assign a plan with quota.assign_plan() or create a default plan with quota.create_plan(..., is_default => true).';
    ELSIF reason = 'rate_limited' THEN
        message := CASE WHEN retry_after IS NULL
            THEN format('rate limit exceeded for "%s": requested %s, more than a rate rule of the metric admits at once', metric, requested)
            ELSE format('rate limit exceeded for "%s": requested %s, try again at %s', metric, requested, retry_after) END;
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested, 'retry_after', retry_after)::text;
        hint := CASE WHEN retry_after IS NULL
            THEN 'Ask for at most the smallest burst of the metric''s rate rules (quota.usage() shows them).'
            ELSE 'Slow down and retry after retry_after; quota.set_rate_override() raises a subject''s rule.' END;
    ELSIF reason = 'cap_reached' THEN
        -- A pool's member (sql/pools.sql): used is what it drew from the pool in the pool's
        -- window, reserved what its holds there keep, allowance its cap.
        message := format('cap reached for "%s": requested %s, %s of the cap of %s left in the pool''s window%s',
                          metric, requested, remaining, allowance,
                          CASE WHEN resets_at IS NULL THEN ''
                               ELSE ' (resets at ' || to_char(resets_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') || ')' END);
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested, 'available', remaining,
                                    'cap', allowance, 'drawn', used, 'reserved', reserved, 'resets_at', resets_at)::text;
        hint := 'An admin of the pool can raise the cap (quota.set_pool_cap()) or allocate units (quota.allocate()).';
    ELSE
        SELECT d.message, d.detail, d.hint INTO message, detail, hint
          FROM quota.explain_denial(subject, metric, requested, used, reserved, allowance, resets_at) AS d;
    END IF;
    IF coalesce(current_setting('request.method', true), '') <> '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PGRST',
            MESSAGE = json_build_object('code', 'PT429', 'message', message, 'details', detail, 'hint', hint)::text,
            DETAIL  = json_build_object('status', 429, 'headers', CASE
                WHEN retry_after IS NULL THEN '{}'::json
                ELSE json_build_object('Retry-After',
                        greatest(ceil(extract(epoch FROM retry_after - statement_timestamp())), 0)::bigint::text)
                END)::text;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'PT429', MESSAGE = message, DETAIL = detail, HINT = hint;
END
$$;

CREATE FUNCTION quota."join_pool"(
	"pool" uuid, /* Option < Uuid > */
	"member" uuid /* Option < Uuid > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'join_pool_wrapper';

CREATE FUNCTION quota."leave_pool"(
	"pool" uuid, /* Option < Uuid > */
	"member" uuid /* Option < Uuid > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'leave_pool_wrapper';

CREATE FUNCTION quota."set_pool_cap"(
	"pool" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"cap" bigint, /* Option < i64 > */
	"member" uuid DEFAULT NULL /* Option < Uuid > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_pool_cap_wrapper';

CREATE FUNCTION quota."clear_pool_cap"(
	"pool" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"member" uuid DEFAULT NULL /* Option < Uuid > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clear_pool_cap_wrapper';

CREATE FUNCTION quota."set_pool_admin"(
	"pool" uuid, /* Option < Uuid > */
	"admin" uuid, /* Option < Uuid > */
	"is_admin" bool DEFAULT true /* Option < bool > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_pool_admin_wrapper';

CREATE FUNCTION quota."allocate"(
	"pool" uuid, /* Option < Uuid > */
	"member" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"amount" bigint, /* Option < i64 > */
	"idempotency_key" TEXT DEFAULT NULL, /* Option < & str > */
	"expires_at" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS quota.allocation /* Result < :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox ::
AllocatedByRust > , ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'allocate_wrapper';

CREATE FUNCTION quota."revoke_allocation"(
	"allocation_id" uuid /* Option < Uuid > */
) RETURNS bigint /* Result < i64, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_allocation_wrapper';


-- Members read their pool, admins their members (sql/privileges.sql).
DROP POLICY own_rows ON quota.assignments;
DROP POLICY own_rows ON quota.overrides;
DROP POLICY own_rows ON quota.resets;
DROP POLICY own_rows ON quota.counters;
DROP POLICY own_rows ON quota.events;
DROP POLICY own_rows ON quota.grants;
DROP POLICY own_rows ON quota.event_grants;
DROP POLICY own_rows ON quota.reservations;
DROP POLICY own_rows ON quota.enforced_charges;
DROP POLICY own_rows ON quota.rate_overrides;
DROP POLICY own_rows ON quota.rate_state;
CREATE POLICY own_rows ON quota.assignments  FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.overrides    FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.resets       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.counters     FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.events       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.grants       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.event_grants FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.reservations FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.enforced_charges FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.rate_overrides FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.rate_state   FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_members FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_admins  FOR SELECT USING (admin = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_caps    FOR SELECT USING (member = (SELECT quota.current_subject()) OR (member IS NULL AND pool = (SELECT quota.my_pool()))
                                                   OR pool = ANY ((SELECT quota.administered_pools())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_draws   FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.allocations  FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);

REVOKE ALL ON quota.pool_members, quota.pool_admins, quota.pool_caps, quota.pool_draws, quota.allocations FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.forget_fast_path_of_member() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.forget_fast_path_of_caps() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.routing_key(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.my_pool() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.administered_pools() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.administered_subjects() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.pool_usage(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.join_pool(uuid, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.leave_pool(uuid, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.set_pool_cap(uuid, text, bigint, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.clear_pool_cap(uuid, text, uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.set_pool_admin(uuid, uuid, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.allocate(uuid, uuid, text, bigint, text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.revoke_allocation(uuid) FROM PUBLIC;
