-- Hand-written functions and privileges. Runs last in the install script (finalize),
-- after the Rust functions exist.

-- consume() that raises when denied. A custom SQLSTATE cannot be raised from Rust, and
-- PostgREST turns PT429 into HTTP 429, so this thin wrapper is PL/pgSQL.
-- Raising rolls the transaction back, so unlike consume() the denial row is not kept.
CREATE FUNCTION quota.require(
    subject uuid,
    metric text,
    amount bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
) RETURNS quota.decision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d quota.decision := quota.consume(subject, metric, amount, idempotency_key, metadata);
    resets text := coalesce(to_char(d.resets_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'never');
BEGIN
    IF d.allowed THEN
        RETURN d;
    END IF;
    IF d.reason = 'no_plan' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PT429',
            MESSAGE = format('quota exceeded for "%s": subject %s has no plan and there is no default plan',
                             d.metric, subject),
            DETAIL  = json_build_object('metric', d.metric, 'reason', d.reason, 'requested', d.amount)::text,
            HINT    = 'Assign a plan with quota.assign_plan() or create a default plan with quota.create_plan(..., is_default => true).';
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'PT429',
        MESSAGE = format('quota exceeded for "%s": requested %s, used %s of %s, resets at %s',
                         d.metric, d.amount, d.used, coalesce(d.allowance::text, 'unlimited'), resets),
        DETAIL  = json_build_object('metric', d.metric, 'reason', d.reason, 'requested', d.amount,
                                    'used', d.used, 'allowance', d.allowance, 'remaining', d.remaining,
                                    'resets_at', d.resets_at)::text,
        HINT    = CASE WHEN d.resets_at IS NULL
                       THEN 'This limit does not reset: raise the allowance or grant more units.'
                       ELSE 'Retry after the window resets, or raise the allowance.' END;
END
$$;

-- Recomputes every counter and every grant balance from the ledger and returns what
-- disagrees: a window whose counter is not the sum of its consume/record/settle events
-- (from_allowance + overage), a window whose held is not the sum of its held
-- reservations, a grant whose remaining is not its amount less what event_grants says it
-- paid, or an event whose from_grants is not what event_grants lists. Returns no rows on a
-- healthy database.
CREATE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, 'window ' || window_start, c.used, e.used
    FROM quota.counters AS c
    FULL JOIN (SELECT subject, metric, window_start, sum(from_allowance + overage) AS used
               FROM quota.events
               WHERE kind IN ('consume', 'record', 'settle')
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
        subject := (pg_catalog.to_jsonb(NEW) ->> 'id')::uuid;
        IF subject IS NULL THEN
            RAISE WARNING 'pg_quota: the new row has no id, so no plan was assigned';
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
