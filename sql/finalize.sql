-- Hand-written functions and privileges. Runs last in the install script (finalize),
-- after the Rust functions exist.

-- consume's fast path (src/store.rs) decides on a counter row marked fast, trusting the
-- allowance cached in it. Every change that could alter a subject's allowance, window or
-- usable grants unmarks the rows it concerns, here. It first takes an exclusive advisory
-- lock that a consume takes before it resolves and marks a row (the subject's key
-- exclusively, the plan's shared): a mark is never made from a configuration older than
-- the change that ought to remove it (a consume that resolved first has committed, and its
-- mark is visible to the UPDATE below; one that comes later waits for this transaction and
-- resolves the new configuration). Subject-level changes lock the subject's key, limits
-- the plan's: a change to one plan never holds back consumes of subjects on another. Keys
-- are 64-bit hashes seeded per kind of lock (the seeds of src/store.rs).
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

-- Unmarks a subject's windows of one metric (NULL: of every metric).
CREATE FUNCTION quota.forget_fast_path_of_subject(subject uuid, metric text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(forget_fast_path_of_subject.subject::text, 1903127));
    UPDATE quota.counters AS c SET fast = false
     WHERE c.subject = forget_fast_path_of_subject.subject AND c.fast
       AND (forget_fast_path_of_subject.metric IS NULL OR c.metric = forget_fast_path_of_subject.metric);
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
CREATE FUNCTION quota.audit()
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

-- Optional maintenance: marks every expired hold as such and frees it in its counter.
-- Nothing depends on it running (readers ignore expired holds); it keeps windows with old
-- holds on consume's fast path. Counters are locked before reservations, the same order
-- every writer uses, so it cannot deadlock with them.
CREATE FUNCTION quota.expire_reservations() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expired bigint;
BEGIN
    PERFORM FROM quota.counters AS c
     WHERE (c.subject, c.metric, c.window_start) IN
           (SELECT r.subject, r.metric, r.window_start FROM quota.reservations AS r
             WHERE r.status = 'held' AND r.expires_at <= now())
     ORDER BY c.subject, c.metric, c.window_start
       FOR UPDATE;
    WITH done AS (
        UPDATE quota.reservations SET status = 'expired'
         WHERE status = 'held' AND expires_at <= now()
        RETURNING subject, metric, window_start, amount
    ), per_window AS (
        SELECT subject, metric, window_start, sum(amount) AS amount FROM done GROUP BY subject, metric, window_start
    ), freed AS (
        UPDATE quota.counters AS c SET held = c.held - p.amount
          FROM per_window AS p
         WHERE (c.subject, c.metric, c.window_start) = (p.subject, p.metric, p.window_start)
        RETURNING 1
    )
    SELECT count(*) INTO expired FROM done;
    RETURN expired;
END
$$;

-- Row level security: whoever is granted SELECT (Supabase's authenticated, through
-- quota.setup_supabase()) reads only rows of their own subject, and writes none (no write
-- privilege is ever granted). The functions run as the owner and see everything;
-- service_role bypasses RLS. Policies are for PUBLIC, so they need no Supabase roles.
-- (SELECT quota.current_subject()) is evaluated once per query, not per row.
CREATE POLICY own_rows ON quota.assignments  FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.overrides    FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.resets       FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.counters     FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.events       FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.grants       FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.event_grants FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.reservations FOR SELECT USING (subject = (SELECT quota.current_subject()));
CREATE POLICY own_rows ON quota.enforced_charges FOR SELECT USING (subject = (SELECT quota.current_subject()));
-- A user sees the plan they are on (assignments shows them only their own) and the default
-- plan they would get, and those plans' limits: enough for my_usage() and my_check().
CREATE POLICY own_plan ON quota.plans  FOR SELECT USING (is_default OR plan IN (SELECT a.plan FROM quota.assignments AS a));
CREATE POLICY own_plan ON quota.limits FOR SELECT USING (plan IN (SELECT p.plan FROM quota.plans AS p));

-- Trigger function for AFTER INSERT ON auth.users (or any table whose id is the subject):
-- gives the new user the default plan. It never makes the insert fail (a failing trigger on
-- auth.users fails the sign-up): every problem becomes a WARNING, and the first consume
-- assigns the plan lazily instead.
CREATE FUNCTION quota.on_signup() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject uuid;
    default_plan text;
BEGIN
    BEGIN
        -- The one column, read without converting the row (see src/enforce.rs).
        subject := quota.row_uuid(NEW, 'id', TG_TABLE_NAME);
        IF subject IS NULL THEN
            RAISE WARNING 'pg_quota: the id of the new row is NULL, so no plan was assigned';
            RETURN NEW;
        END IF;
        SELECT p.plan INTO default_plan FROM quota.plans AS p WHERE p.is_default;
        IF default_plan IS NULL THEN
            RAISE WARNING 'pg_quota: there is no default plan; user % gets a plan on first use', subject;
            RETURN NEW;
        END IF;
        INSERT INTO quota.assignments (subject, plan, anchor)
        VALUES (subject, default_plan, pg_catalog.now())
        ON CONFLICT DO NOTHING;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_quota: could not assign the default plan to user %: % (SQLSTATE %)',
            subject, SQLERRM, SQLSTATE;
    END;
    -- NEW, not NULL: attached BEFORE INSERT by mistake, it still lets the row in.
    RETURN NEW;
END
$$;

-- The one setup step for Supabase, safe to run again: the sign-up trigger on auth.users,
-- EXECUTE on the privileged functions for service_role, the end-user surface for
-- authenticated, nothing for anon. On plain PostgreSQL it says what it skipped.
CREATE FUNCTION quota.setup_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    end_user constant text[] := ARRAY['current_subject', 'my_usage', 'my_check'];
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
                     AND p.proname <> 'setup_supabase' AND p.prorettype <> 'trigger'::regtype
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO service_role;
        outcome := 'granted';
    END IF;
    RETURN NEXT;

    step := 'authenticated: ' || array_to_string(end_user, ', ') || ', and its own rows';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        outcome := 'skipped: there is no role authenticated';
    ELSE
        GRANT USAGE ON SCHEMA quota TO authenticated;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace AND p.proname = ANY (end_user)
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO authenticated;
        outcome := 'granted (row level security limits it to the user''s own rows)';
    END IF;
    RETURN NEXT;

    step := 'anon: nothing';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        outcome := 'skipped: there is no role anon';
    ELSE
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM anon;
        REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM anon;
        REVOKE ALL ON SCHEMA quota FROM anon;
        outcome := 'nothing granted';
    END IF;
    RETURN NEXT;
END
$$;

-- Nothing is executable or readable by PUBLIC: the README shows the grants for
-- Supabase's service_role and for a plain backend role.
REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA quota FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA quota FROM PUBLIC;
