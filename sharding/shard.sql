-- pg_quota on a shard of the PL/Proxy deployment (docs/scale.md): what the router calls on
-- every shard besides pg_quota's own functions. Run once per shard database, after
-- CREATE EXTENSION pg_quota, by sharding/deploy.sh.
--
-- The router knows a subject's shard but not a reservation's, a grant's or an allocation's:
-- it asks every shard, and the shard that holds the id answers (the others return nothing).
CREATE SCHEMA IF NOT EXISTS quota_shard;
REVOKE ALL ON SCHEMA quota_shard FROM PUBLIC;

CREATE OR REPLACE FUNCTION quota_shard.settle(reservation_id uuid, actual bigint)
RETURNS SETOF quota.decision
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM quota.reservations AS r WHERE r.reservation_id = settle.reservation_id) THEN
        RETURN QUERY SELECT * FROM quota.settle(settle.reservation_id, settle.actual);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION quota_shard.release(reservation_id uuid)
RETURNS SETOF boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM quota.reservations AS r WHERE r.reservation_id = release.reservation_id) THEN
        PERFORM quota.release(release.reservation_id);
        RETURN NEXT true;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION quota_shard.revoke_grant(grant_id uuid)
RETURNS SETOF boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM quota.grants AS g WHERE g.grant_id = revoke_grant.grant_id) THEN
        PERFORM quota.revoke_grant(revoke_grant.grant_id);
        RETURN NEXT true;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION quota_shard.revoke_allocation(allocation_id uuid)
RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM quota.allocations AS a WHERE a.allocation_id = revoke_allocation.allocation_id) THEN
        RETURN NEXT quota.revoke_allocation(revoke_allocation.allocation_id);
    END IF;
END
$$;

-- The pool a subject is a member of on this shard (NULL: none): the router records a
-- member's new home only once its pool's shard says it joined.
CREATE OR REPLACE FUNCTION quota_shard.pool_of(member uuid)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.pool FROM quota.pool_members AS m WHERE m.member = pool_of.member
$$;

-- Whether a subject has any row on this shard: before a subject joins a pool on another
-- shard, the router checks that nothing of it would be left behind.
CREATE OR REPLACE FUNCTION quota_shard.has_rows(subject uuid)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM quota.assignments AS a WHERE a.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.counters AS c WHERE c.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.events AS e WHERE e.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.grants AS g WHERE g.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.overrides AS o WHERE o.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.reservations AS r WHERE r.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.rate_overrides AS o WHERE o.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.alert_overrides AS o WHERE o.subject = has_rows.subject)
        OR EXISTS (SELECT FROM quota.pool_members AS m WHERE m.member = has_rows.subject OR m.pool = has_rows.subject)
$$;

-- The configuration every shard must hold alike (plans and limits, which the router writes
-- to every shard in turn), as one digest: the router compares the shards' digests.
CREATE OR REPLACE FUNCTION quota_shard.configuration_digest()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(coalesce((SELECT string_agg(format('%s:%s', p.plan, p.is_default), ',' ORDER BY p.plan)
                          FROM quota.plans AS p), '')
               || '|' || coalesce((SELECT string_agg(l::text, ',' ORDER BY l.plan, l.metric) FROM quota.limits AS l), ''))
$$;


-- A metric's total over a period as quota.top_consumers counts it (its share's denominator):
-- the router adds the shards' totals up. As the caller, so that top_consumers' own checks
-- of who may read analytics apply.
CREATE OR REPLACE FUNCTION quota_shard.metric_total(metric text, since timestamptz, until timestamptz)
RETURNS numeric
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(t.used), 0) FROM quota.top_consumers(metric, since, until, 2147483647) AS t
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota_shard FROM PUBLIC;
