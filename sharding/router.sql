-- The router database of the PL/Proxy deployment (docs/scale.md). Applications call the
-- same quota.* functions they call on one server; each call runs on the shard of its
-- subject (or of its pool), and commits there. sharding/deploy.sh creates the schemas
-- quota and quota_router and pg_quota's composite types, runs this file, then the proxies
-- that sharding/router_functions.sql prints from a shard's catalog, then the cluster
-- definition (the shards' connection strings). Some functions here call proxies created
-- after this file: their bodies are checked when called, not now.
SET check_function_bodies = false;

-- Where a subject lives when that is not the shard its own id hashes to: a pool's member
-- lives on its pool's shard, from when it joins, for good (leaving the pool does not move
-- its rows back). Everyone else is routed by their own id and has no row here.
-- The one table of the router: a redeploy (sharding/deploy.sh) keeps it.
CREATE TABLE IF NOT EXISTS quota_router.homes (
    subject     uuid PRIMARY KEY,
    routing_key uuid NOT NULL,
    since       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER TABLE quota_router.homes ENABLE ROW LEVEL SECURITY;

-- What quota.routing_key(subject) is on one server for a subject that never left its pool:
-- the subject's home, the pool of a member (a member that left stays on its pool's shard).
CREATE FUNCTION quota.routing_key(subject uuid) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION 'subject must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN coalesce((SELECT h.routing_key FROM quota_router.homes AS h WHERE h.subject = routing_key.subject),
                    routing_key.subject);
END
$$;

-- The hash PL/Proxy maps to a shard (modular_mapping: abs(hash % shards)). A NULL subject
-- goes to the first shard, whose pg_quota rejects it with its own error (22004). A call waits
-- for a join of its subject in progress (quota.join_pool), so that no call is routed by the
-- home the subject is leaving.
CREATE FUNCTION quota_router.shard_of(subject uuid) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subject IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(quota_router.home_lock(subject));
    RETURN pg_catalog.hashtext(quota.routing_key(subject)::text);
END
$$;

-- The advisory lock key of a subject's home: joins take it exclusively, calls shared.
CREATE FUNCTION quota_router.home_lock(subject uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.hashtextextended('pg_quota router home ' || subject::text, 0)
$$;

-- Which shard (0-based, in the cluster's order) a subject's rows live on.
CREATE FUNCTION quota_router.shard_number(subject uuid) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT abs(quota_router.shard_of(shard_number.subject) % count(*))::integer
      FROM pg_catalog.pg_foreign_server AS s, pg_catalog.pg_options_to_table(s.srvoptions) AS o
     WHERE s.srvname = 'pg_quota' AND o.option_name ~ '^p[0-9]+$'
$$;

-- The calls the router cannot route by a subject: a reservation, a grant or an allocation
-- is known by its id, so every shard is asked and the one holding it answers
-- (sharding/shard.sql). Plans and limits go to every shard.
CREATE FUNCTION quota_router.settle_everywhere(reservation_id uuid, actual bigint) RETURNS SETOF quota.decision
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.settle;
$proxy$;

CREATE FUNCTION quota_router.release_everywhere(reservation_id uuid) RETURNS SETOF boolean
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.release;
$proxy$;

CREATE FUNCTION quota_router.revoke_grant_everywhere(grant_id uuid) RETURNS SETOF boolean
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.revoke_grant;
$proxy$;

CREATE FUNCTION quota_router.revoke_allocation_everywhere(allocation_id uuid) RETURNS SETOF bigint
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.revoke_allocation;
$proxy$;

-- The pool member belongs to on the shard of `shard_key` (a pool, or the member itself).
CREATE FUNCTION quota_router.pool_of(shard_key uuid, member uuid) RETURNS uuid
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON quota_router.shard_of(shard_key);
    SELECT quota_shard.pool_of(member);
$proxy$;

CREATE FUNCTION quota_router.has_rows(subject uuid) RETURNS boolean
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON quota_router.shard_of(subject);
    TARGET quota_shard.has_rows;
$proxy$;

CREATE FUNCTION quota_router.configuration_digests() RETURNS SETOF text
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.configuration_digest;
$proxy$;

CREATE FUNCTION quota.settle(reservation_id uuid, actual bigint DEFAULT NULL) RETURNS quota.decision
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settled quota.decision;
BEGIN
    IF reservation_id IS NULL THEN
        RAISE EXCEPTION 'reservation_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO settled FROM quota_router.settle_everywhere(settle.reservation_id, settle.actual);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown reservation %', reservation_id USING ERRCODE = '42704';
    END IF;
    RETURN settled;
END
$$;

CREATE FUNCTION quota.release(reservation_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF reservation_id IS NULL THEN
        RAISE EXCEPTION 'reservation_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM quota_router.release_everywhere(release.reservation_id)) THEN
        RAISE EXCEPTION 'unknown reservation %', reservation_id USING ERRCODE = '42704';
    END IF;
END
$$;

CREATE FUNCTION quota.revoke_grant(grant_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF grant_id IS NULL THEN
        RAISE EXCEPTION 'grant_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM quota_router.revoke_grant_everywhere(revoke_grant.grant_id)) THEN
        RAISE EXCEPTION 'unknown grant %', grant_id USING ERRCODE = '42704';
    END IF;
END
$$;

CREATE FUNCTION quota.revoke_allocation(allocation_id uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    returned bigint;
BEGIN
    IF allocation_id IS NULL THEN
        RAISE EXCEPTION 'allocation_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT r INTO returned FROM quota_router.revoke_allocation_everywhere(revoke_allocation.allocation_id) AS r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown allocation %', allocation_id USING ERRCODE = '42704';
    END IF;
    RETURN returned;
END
$$;

-- A member joins on its pool's shard, and lives there from then on. A subject that already
-- has rows on another shard cannot join: they would be left behind (moving them is not done).
CREATE FUNCTION quota.join_pool(pool uuid, member uuid) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_pool uuid;
BEGIN
    IF pool IS NULL OR member IS NULL THEN
        RAISE EXCEPTION 'pool and member must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- Joins of one member, and calls routed by it, wait for each other (shard_of).
    PERFORM pg_catalog.pg_advisory_xact_lock(quota_router.home_lock(member));
    -- In another pool: the error one server gives (on the member's shard, where it is).
    current_pool := quota_router.pool_of(member, member);
    IF current_pool IS DISTINCT FROM pool AND current_pool IS NOT NULL THEN
        RAISE EXCEPTION 'subject % is already a member of pool %', member, current_pool USING ERRCODE = '23505',
            HINT = 'A subject draws from one pool at a time: call quota.leave_pool() first.';
    END IF;
    IF quota_router.shard_number(member) <> quota_router.shard_number(pool)
       AND quota_router.has_rows(member) THEN
        RAISE EXCEPTION 'subject % has rows on another shard than pool %', member, pool
            USING ERRCODE = '55000',
                  HINT = 'Through the router, a subject joins a pool before its first call, or joins a pool on its own shard (quota_router.shard_number).';
    END IF;
    -- As the caller, so that the shard's pg_quota decides whether the caller may.
    PERFORM quota_router.join_pool_on_shard(pool, member);
    PERFORM quota_router.move_home(pool, member);
END
$$;

-- Records that a member lives on its pool's shard, once that shard says it joined: the one
-- write to quota_router.homes, which callers cannot write themselves.
CREATE FUNCTION quota_router.move_home(pool uuid, member uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF quota_router.pool_of(pool, member) IS DISTINCT FROM pool THEN
        RAISE EXCEPTION 'subject % is not a member of pool % on its shard', member, pool USING ERRCODE = '55000';
    END IF;
    INSERT INTO quota_router.homes AS h (subject, routing_key) VALUES (member, quota.routing_key(pool))
        ON CONFLICT (subject) DO UPDATE SET routing_key = excluded.routing_key, since = pg_catalog.now();
END
$$;

CREATE FUNCTION quota.create_plan(plan text, limits jsonb DEFAULT '{}', is_default boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM quota_router.create_plan_everywhere(plan, limits, is_default);
END
$$;

CREATE FUNCTION quota.set_limits(plan text, limits jsonb) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM quota_router.set_limits_everywhere(plan, limits);
END
$$;

-- Whether every shard holds the same plans and limits (a change the router made on some
-- shards and not others, say because one was down, shows as more than one digest).
CREATE FUNCTION quota_router.configuration_agrees() RETURNS boolean
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(DISTINCT d) = 1 FROM quota_router.configuration_digests() AS d
$$;

-- The heaviest users across all shards: each shard's top list (a subject is on one shard,
-- so the overall top max_rows are among them), ranked again; share is of every shard's total.
CREATE FUNCTION quota.top_consumers(metric text, since timestamptz, until timestamptz DEFAULT pg_catalog.now(),
                                    max_rows integer DEFAULT 10)
RETURNS TABLE (rank bigint, subject uuid, plan text, used bigint, share numeric, denials bigint)
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
    WITH tops AS (
        SELECT t.subject, t.plan, t.used, t.denials
          FROM quota_router.top_consumers_everywhere(metric, since, until, max_rows) AS t
    ), totals AS (
        SELECT sum(s.total) AS total FROM quota_router.metric_totals(metric, since, until) AS s (total)
    )
    SELECT pg_catalog.row_number() OVER (ORDER BY t.used DESC, t.subject), t.subject, t.plan, t.used,
           round(100 * t.used / totals.total, 2), t.denials
      FROM tops AS t, totals
     ORDER BY t.used DESC, t.subject
     LIMIT max_rows
$$;

CREATE FUNCTION quota_router.metric_totals(metric text, since timestamptz, until timestamptz) RETURNS SETOF numeric
LANGUAGE plproxy AS $proxy$
    CLUSTER 'pg_quota';
    RUN ON ALL;
    TARGET quota_shard.metric_total;
$proxy$;

-- Subjects active per bucket: each subject is on one shard, so the shards' counts add up.
CREATE FUNCTION quota.active_subjects(bucket text, since timestamptz, until timestamptz DEFAULT pg_catalog.now(),
                                      time_zone text DEFAULT 'UTC')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, active_subjects bigint)
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.bucket_start, a.bucket_end, sum(a.active_subjects)::bigint
      FROM quota_router.active_subjects_everywhere(bucket, since, until, time_zone) AS a
     GROUP BY a.bucket_start, a.bucket_end
     ORDER BY a.bucket_start
$$;
