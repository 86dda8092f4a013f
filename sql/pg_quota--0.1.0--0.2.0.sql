-- pg_quota 0.1.0 -> 0.2.0: consume's one-statement fast path.
-- Counters cache their effective allowance and a "fast" mark; triggers on the
-- configuration tables unmark them; quota.audit() also checks the marks. Existing rows
-- start unmarked: the first consume of each window marks it.

ALTER TABLE quota.counters ADD COLUMN allowance bigint, ADD COLUMN fast boolean NOT NULL DEFAULT false;
CREATE INDEX counters_fast ON quota.counters (subject, metric) WHERE fast;

-- consume's fast path (src/store.rs) decides on a counter row marked fast, trusting the
-- allowance cached in it. Every change that could alter a subject's allowance, window or
-- usable grants unmarks the rows it concerns, here. It first takes an exclusive advisory
-- lock that consume takes in shared mode before it resolves and marks a row: a mark is
-- never made from a configuration older than the change that ought to remove it (a
-- consume that resolved first has committed, and its mark is visible to the UPDATE below;
-- one that comes later waits for this transaction and resolves the new configuration).
-- Subject-level changes lock the subject's key, plan-level changes (limits) a global one.
CREATE FUNCTION quota.forget_fast_path() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed jsonb;
BEGIN
    FOREACH changed IN ARRAY ARRAY[to_jsonb(OLD), to_jsonb(NEW)] LOOP
        CONTINUE WHEN changed IS NULL;
        IF TG_TABLE_NAME = 'limits' THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(1903128, 0);
            UPDATE quota.counters AS c SET fast = false
              FROM quota.assignments AS a
             WHERE a.plan = changed->>'plan' AND c.subject = a.subject AND c.metric = changed->>'metric' AND c.fast;
        ELSE
            PERFORM pg_catalog.pg_advisory_xact_lock(1903127, pg_catalog.hashtext(changed->>'subject'));
            UPDATE quota.counters AS c SET fast = false
             WHERE c.subject = (changed->>'subject')::uuid AND c.fast
               AND (changed->>'metric' IS NULL OR c.metric = changed->>'metric');
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.limits
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER UPDATE OR DELETE ON quota.assignments
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.overrides
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.resets
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
-- Spending a grant lowers remaining and changes nothing for the fast path, whose rows have
-- no usable grants; a new grant, or one made usable again, does.
CREATE TRIGGER forget_fast_path AFTER INSERT ON quota.grants
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path_on_update AFTER UPDATE ON quota.grants
    FOR EACH ROW WHEN (NEW.remaining > OLD.remaining OR NEW.expires_at IS DISTINCT FROM OLD.expires_at
                       OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at OR NEW.subject <> OLD.subject
                       OR NEW.metric <> OLD.metric)
    EXECUTE FUNCTION quota.forget_fast_path();

-- Recomputes every counter and every grant balance from the ledger and returns what
-- disagrees: a window whose counter is not the sum of its consume/record/settle events
-- (from_allowance + overage) less its give_back events, a window whose held is not the sum of its held
-- reservations, a grant whose remaining is not its amount less what event_grants says it
-- paid, an event whose from_grants is not what event_grants lists, or a counter marked for
-- the fast path whose cached allowance is not the effective one (or that another marked row,
-- a usable grant or a later reset should have unmarked). Returns no rows on a healthy
-- database.
CREATE OR REPLACE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, 'window ' || window_start, c.used, e.used
    FROM quota.counters AS c
    FULL JOIN (SELECT subject, metric, window_start,
                      sum(CASE kind WHEN 'give_back' THEN -from_allowance ELSE from_allowance + overage END) AS used
               FROM quota.events
               WHERE kind IN ('consume', 'record', 'settle', 'give_back')
               GROUP BY subject, metric, window_start) AS e
         USING (subject, metric, window_start)
    WHERE coalesce(c.used, 0) <> coalesce(e.used, 0)
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

REVOKE EXECUTE ON FUNCTION quota.forget_fast_path() FROM PUBLIC;
