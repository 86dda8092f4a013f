-- Installs the extension and the helpers the other suites share.
CREATE EXTENSION pg_quota;
SELECT extname, extversion IS NOT NULL AS has_version, n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'pg_quota';

-- Runs a statement and returns its SQLSTATE, message and hint instead of failing the suite.
CREATE FUNCTION public.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text; message text; hint text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || message || CASE WHEN hint <> '' THEN ' [hint: ' || hint || ']' ELSE '' END;
END $$;

-- Subject n as a uuid.
CREATE FUNCTION public.s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;

-- How many times this transaction has read quota.assignments: the slow path resolves a
-- subject's plan there, the fast path never does, so the suites tell the paths apart by it.
-- Any scan, not only an index scan: the planner may read a small table sequentially.
CREATE FUNCTION public.assignment_scans() RETURNS bigint LANGUAGE sql AS $$
    SELECT t.seq_scan + coalesce(t.idx_scan, 0) FROM pg_catalog.pg_stat_xact_user_tables AS t
     WHERE t.relid = 'quota.assignments'::regclass $$;
