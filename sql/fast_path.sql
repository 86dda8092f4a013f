-- The fast path's marks: the triggers that unmark consume's fast-path windows whenever
-- configuration changes. Runs after the schema (sql/schema.sql).

-- consume's fast path (src/fast_path.rs, src/store/fast_path.rs) decides on a counter row marked fast, trusting the
-- allowance cached in it. Every change that could alter a subject's allowance, window or
-- usable grants unmarks the rows it concerns, here. It first takes an exclusive advisory
-- lock that a consume takes before it resolves and marks a row (the subject's key
-- exclusively, the plan's shared): a mark is never made from a configuration older than
-- the change that ought to remove it (a consume that resolved first has committed, and its
-- mark is visible to the UPDATE below; one that comes later waits for this transaction and
-- resolves the new configuration). Subject-level changes lock the subject's key, limits
-- the plan's: a change to one plan never holds back consumes of subjects on another. Keys
-- are 64-bit hashes seeded per kind of lock, named in crates/quota-rules/src/locks.rs:
--   FAST_PATH_SUBJECT_LOCK_SEED = 1903127, FAST_PATH_PLAN_LOCK_SEED = 1903128
CREATE FUNCTION quota.forget_fast_path() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'limits' THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM quota.forget_fast_path_of_plan(OLD.plan, OLD.metric);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM quota.forget_fast_path_of_plan(NEW.plan, NEW.metric);
        END IF;
    ELSIF TG_TABLE_NAME = 'assignments' THEN
        -- A plan change concerns every metric of the subject.
        PERFORM quota.forget_fast_path_of_subject(OLD.subject, NULL);
        IF TG_OP = 'UPDATE' THEN
            PERFORM quota.forget_fast_path_of_subject(NEW.subject, NULL);
        END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN
            PERFORM quota.forget_fast_path_of_subject(OLD.subject, OLD.metric);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM quota.forget_fast_path_of_subject(NEW.subject, NEW.metric);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Unmarks a subject's windows of one metric (NULL: of every metric). The rows are locked in
-- bytewise order of their metrics, the order quota.consume_many() locks a bundle's counters
-- in, so that a plan change cannot deadlock with a bundle in flight.
CREATE FUNCTION quota.forget_fast_path_of_subject(subject uuid, metric text) RETURNS void
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

-- Unmarks the windows of one metric of every subject on a plan.
CREATE FUNCTION quota.forget_fast_path_of_plan(plan text, metric text) RETURNS void
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

CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.limits
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER UPDATE OR DELETE ON quota.assignments
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.overrides
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.resets
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
-- A rate rule is decided on the slow path: a subject's new rate override unmarks its windows.
-- (The plan's rules live in quota.limits, whose trigger is above.)
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.rate_overrides
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
-- A new grant, or one made more usable, unmarks: a window marked without usable grants
-- would deny what it can pay. Spending, revoking or shortening a grant changes nothing for
-- the fast path (a window marked without grants has none usable; a wallet window's fast
-- path reads its grants as they are), and must not lock the counter after the grant: a
-- wallet's consume locks the counter, then the grants.
-- Two update triggers, each on the columns its condition reads: PostgreSQL skips a trigger
-- whose columns an UPDATE does not set before it looks at its WHEN, which it parses again on
-- every statement that does. A wallet spends a grant (SET remaining) on every call, so it
-- pays for the one short condition, not for all of them (0.18.0: about 10% of a wallet's
-- call, docs/benchmarks.md).
CREATE TRIGGER forget_fast_path AFTER INSERT ON quota.grants
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path_on_refund AFTER UPDATE OF remaining ON quota.grants
    FOR EACH ROW WHEN (NEW.remaining > OLD.remaining)
    EXECUTE FUNCTION quota.forget_fast_path();
CREATE TRIGGER forget_fast_path_on_update AFTER UPDATE OF revoked_at, expires_at, subject, metric ON quota.grants
    FOR EACH ROW WHEN ((OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL)
                       OR (NEW.expires_at IS DISTINCT FROM OLD.expires_at
                           AND (NEW.expires_at IS NULL OR NEW.expires_at > OLD.expires_at))
                       OR NEW.subject <> OLD.subject OR NEW.metric <> OLD.metric)
    EXECUTE FUNCTION quota.forget_fast_path();
