-- pg_quota 0.19.0 -> 0.20.0: the enforce trigger is a C function (Rust).
--
-- quota.enforce() was PL/pgSQL: each row it charged passed NEW and OLD to quota.enforce_row
-- (Rust) and got a quota.decision back, which cost an insert under it about a tenth of its
-- throughput. It is now the library's enforce_trigger, which reads the row from the trigger's
-- tuple and raises a denial through quota.raise_denied as before. Replaced in place: every
-- attached trigger keeps working. The library keeps enforce_row for schemas not yet updated.
CREATE OR REPLACE FUNCTION quota.enforce() RETURNS trigger
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enforce_trigger';

DROP FUNCTION quota.enforce_row(oid, text, text, text, text, anyelement, anyelement);

-- quota.row_units, which no function has called since 0.14.0's trigger read the amount in
-- Rust, goes too (the library keeps it for the 0.5.0 -> 0.6.0 upgrade script, which uses it).
DROP FUNCTION quota.row_units(anyelement, text, text);

-- setup_supabase() no longer names enforce_row among the functions it does not grant.
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
