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
