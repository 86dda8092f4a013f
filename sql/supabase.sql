-- Trigger function for AFTER INSERT ON auth.users (or any table whose id is the subject):
-- gives the new user the default plan. It never makes the insert fail (a failing trigger on
-- auth.users fails the sign-up): every problem becomes a WARNING, and the first consume
-- assigns the plan lazily instead. Nor does it make a sign-up wait: a lock held on
-- pg_quota's tables (a migration, a long admin transaction) would hold the auth server's
-- insert until its statement_timeout cancels it, which no trigger can catch. So every lock
-- it waits for is bounded by its own lock_timeout, and a timeout is one more WARNING.
CREATE FUNCTION quota.on_signup() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
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

-- Undoes setup_supabase() before DROP EXTENSION pg_quota: drops the sign-up trigger on
-- auth.users (which depends on quota.on_signup(), so DROP EXTENSION refuses while it is
-- there) and revokes what setup_supabase() granted. Sign-ups go on without pg_quota. Safe
-- to run again.
CREATE FUNCTION quota.teardown_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grantee text;
BEGIN
    step := 'sign-up trigger quota_on_signup on auth.users';
    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        outcome := 'skipped: there is no table auth.users';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'auth.users'::regclass AND tgname = 'quota_on_signup') THEN
        DROP TRIGGER quota_on_signup ON auth.users;
        outcome := 'dropped';
    ELSE
        outcome := 'not there';
    END IF;
    RETURN NEXT;

    FOREACH grantee IN ARRAY ARRAY['service_role', 'authenticated', 'anon'] LOOP
        step := grantee || ': every privilege on schema quota';
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = grantee) THEN
            outcome := 'skipped: there is no role ' || grantee;
        ELSE
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON SCHEMA quota FROM %I', grantee);
            outcome := 'revoked';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The one setup step for Supabase, safe to run again: the sign-up trigger on auth.users,
-- EXECUTE on the privileged functions for service_role, the end-user surface for
-- authenticated, only the pre-request function quota.limit_request() for anon. On plain PostgreSQL it says what it skipped.
CREATE FUNCTION quota.setup_supabase()
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
                                          'clear_pool_cap', 'set_pool_admin', 'allocate', 'revoke_allocation',
                                          'set_alerts', 'clear_alerts'];
    -- Usage analytics (sql/analytics.sql): SECURITY INVOKER, read through row level security.
    -- The my_ forms are the user's own; the others answer support and admins and refuse
    -- (42501) a user without a quota_role, but usage_history and forecast of their own subject.
    analytics constant text[] := ARRAY['my_usage_history', 'my_forecast', 'usage_history', 'forecast', 'top_consumers',
                                       'denial_spikes', 'rate_limit_hits', 'plan_distribution', 'active_subjects',
                                       'signed_in_subject', 'analytics_reader', 'analytics_metric', 'analytics_period',
                                       'analytics_buckets'];
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
            || array_to_string(in_app_admin, ', ') || '; the usage analytics, through row level security';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        outcome := 'skipped: there is no role authenticated';
    ELSE
        GRANT USAGE ON SCHEMA quota TO authenticated;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace AND p.proname = ANY (end_user || in_app_admin || analytics)
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
