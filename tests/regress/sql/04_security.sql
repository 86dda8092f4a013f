-- Pinned search_path, nothing executable by PUBLIC, and objects users create change nothing.
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'quota'
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1;
SELECT p.proname, p.prosecdef
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'quota' ORDER BY 1;
-- No function is executable by PUBLIC.
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'quota' AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;
-- Tables: row level security on, nothing granted to PUBLIC.
SELECT c.relname, c.relrowsecurity, c.relacl IS NULL OR NOT aclcontains(c.relacl, makeaclitem(0, c.relowner, 'SELECT', false)) AS no_public_select
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'quota' AND c.relkind = 'r' ORDER BY 1;
-- The STABLE / VOLATILE contract.
SELECT proname, provolatile FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'quota' AND proname IN ('check', 'usage', 'consume', 'require', 'audit') ORDER BY 1;

-- A role without grants can call nothing.
CREATE ROLE quota_nobody;
SET ROLE quota_nobody;
SELECT try($$SELECT quota.consume(s(40), 'calls')$$);
SELECT try($$SELECT * FROM quota.counters$$);
RESET ROLE;

-- The README's grants for a backend role are enough.
CREATE ROLE quota_backend;
GRANT USAGE ON SCHEMA quota TO quota_backend;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA quota TO quota_backend;
SELECT quota.create_plan('sec', '{"calls": {"limit": 2, "per": "day"}}');
SELECT quota.assign_plan(s(40), 'sec');
SET ROLE quota_backend;
SELECT allowed, used FROM quota.consume(s(40), 'calls');
SELECT try($$SELECT * FROM quota.counters$$);
RESET ROLE;

-- Shadowing objects: a public.now() that lies, a temp table named like ours, a search_path
-- that puts them first. Decisions do not change. A new session prepares its statements
-- with the shadows already in place.
\c
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
CREATE TEMP TABLE counters (subject uuid, metric text, window_start timestamptz, window_end timestamptz, used bigint);
CREATE TEMP TABLE events (x int);
SET search_path = pg_temp, public, pg_catalog;
SELECT allowed, used, resets_at > pg_catalog.now() AS real_clock FROM quota.consume(s(40), 'calls');
SELECT allowed, used FROM quota.consume(s(40), 'calls');
SELECT count(*) AS temp_rows FROM pg_temp.counters;
RESET search_path;
DROP FUNCTION public.now();
DROP ROLE quota_nobody;
REVOKE ALL ON SCHEMA quota FROM quota_backend;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM quota_backend;
DROP ROLE quota_backend;
