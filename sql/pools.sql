-- Pools (docs/pools.md): a pool is a subject (a team, a class, a teacher) with a plan of its
-- own; its members draw from it, each within a cap. A subject is a member of at most one
-- pool, for every metric the pool's plan has. What decides a member's call is in
-- src/pools.rs; the arithmetic in crates/quota-rules/src/pool.rs.
-- Every table leads its key with the pool: a sharded deployment routes a pool's rows and
-- its members' pool rows together (quota.routing_key()).

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
CREATE TABLE quota.pool_draws (
    pool         uuid NOT NULL,
    member       uuid NOT NULL,
    metric       text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz,
    drawn        quota.units NOT NULL,
    PRIMARY KEY (pool, member, metric, window_start)
) WITH (fillfactor = 80);

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

-- Joining or leaving changes who pays for every metric of the member: its windows are
-- unmarked, under its fast-path key (sql/fast_path.sql), and a consume marks none of a
-- member's (src/fast_path.rs): the fast path never decides a member alone.
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

-- Where a sharded deployment sends a subject's rows: a member goes with its pool.
CREATE FUNCTION quota.routing_key(subject uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT m.pool FROM quota.pool_members AS m WHERE m.member = routing_key.subject), routing_key.subject)
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
