-- pg_quota 0.13.0 -> 0.14.0: the enforce trigger decides a row in one call. quota.enforce()
-- is replaced in place (every trigger quota.enforce_on() attached keeps working): it calls
-- the new quota.enforce_row() (src/enforce.rs), which reads the row, charges or gives back
-- and returns the denial it raises; quota.enforce_charge(), which it called per charge, is
-- gone (the charge is made in Rust). setup_supabase() grants service_role every function
-- but quota.enforce_row (the trigger's alone). Nothing is rewritten.
CREATE FUNCTION quota."enforce_row"(
	"enforced_table" oid,
	"table_name" TEXT,
	"metric" TEXT,
	"subject_column" TEXT,
	"amount" TEXT,
	"new" anyelement,
	"old" anyelement
) RETURNS quota.decision
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'enforce_row_wrapper';
REVOKE EXECUTE ON FUNCTION quota.enforce_row(oid, text, text, text, text, anyelement, anyelement) FROM PUBLIC;

CREATE OR REPLACE FUNCTION quota.enforce() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d quota.decision;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_NARGS NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION 'quota.enforce(metric [, subject_column [, amount]]) must run AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW (trigger % on %)',
            TG_NAME, TG_TABLE_NAME
            USING ERRCODE = '22023', HINT = 'Attach it with quota.enforce_on(table, metric, subject_column, amount).';
    END IF;
    d := quota.enforce_row(TG_RELID, TG_TABLE_NAME, TG_ARGV[0], coalesce(TG_ARGV[1], 'user_id'), coalesce(TG_ARGV[2], '1'),
                           NEW, OLD);
    IF NOT d.allowed THEN
        PERFORM quota.raise_denied(quota.row_uuid(NEW, coalesce(TG_ARGV[1], 'user_id'), TG_TABLE_NAME), d.metric, d.reason,
                                   d.amount, d.used, d.reserved, d.allowance, d.remaining, d.window_start, d.resets_at,
                                   d.retry_after, 'enforce', TG_RELID::regclass::text);
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION quota.enforce_charge(regclass, uuid, text, bigint);

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
                     AND p.proname NOT IN ('setup_supabase', 'teardown_supabase', 'enforce_row') AND p.prorettype <> 'trigger'::regtype
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
