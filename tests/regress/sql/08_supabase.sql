-- Supabase: a fixture like a self-hosted Supabase (schema auth, auth.users, auth.uid(),
-- the roles anon / authenticated / service_role, an auth role whose search_path is auth),
-- requests emulated the way PostgREST runs them: one transaction, SET LOCAL ROLE, claims
-- in request.jwt.claims.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'supabase_auth_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
ALTER ROLE service_role BYPASSRLS;
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
-- The columns of the auth server's users table, in its order (the id is not the first
-- column: the sign-up trigger finds it by name), with a column a later migration adds.
CREATE TABLE auth.users (
    instance_id uuid,
    id uuid NOT NULL,
    aud varchar(255),
    role varchar(255),
    email varchar(255) UNIQUE,
    encrypted_password varchar(255),
    confirmed_at timestamptz,
    invited_at timestamptz,
    confirmation_token varchar(255),
    confirmation_sent_at timestamptz,
    recovery_token varchar(255),
    recovery_sent_at timestamptz,
    email_change_token varchar(255),
    email_change varchar(255),
    email_change_sent_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    is_anonymous boolean NOT NULL DEFAULT false,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claims', true)::jsonb ->> 'sub', '')::uuid $$;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role, supabase_auth_admin;

-- The one setup step; running it again changes nothing.
SELECT * FROM quota.setup_supabase();
SELECT * FROM quota.setup_supabase();
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass;

-- 1,000 sign-ups by the auth role (search_path auth), with odd metadata: none fails.
SELECT quota.create_plan('supa', '{"ai": {"limit": 3, "per": "day"}}', is_default => true);
SET ROLE supabase_auth_admin;
SET search_path = auth;
-- Inserted as the auth server inserts a sign-up: every column it sets, in one statement.
INSERT INTO users (instance_id, id, aud, role, email, encrypted_password, confirmation_token,
                   raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
SELECT '00000000-0000-0000-0000-000000000000', public.s(100000 + n), 'authenticated', 'authenticated',
       'user' || n || '@example.com', '$2a$10$' || md5(n::text), md5('c' || n),
       '{"provider": "email", "providers": ["email"]}',
       CASE n % 5 WHEN 0 THEN NULL WHEN 1 THEN '{"plan": 7, "name": "\u00e9l\u00e8ve"}'
                  WHEN 2 THEN '[1, 2, 3]' WHEN 3 THEN '"just a string"' ELSE '{}' END::jsonb,
       now(), now()
  FROM generate_series(1, 400) AS n;
RESET search_path;
RESET ROLE;
-- Some users already have a plan: the trigger leaves it alone.
SELECT count(*) AS preassigned FROM (SELECT quota.assign_plan(s(100000 + n), 'supa') FROM generate_series(401, 500) AS n) AS a;
-- Without a default plan, sign-up still works (a WARNING each, silenced here).
UPDATE quota.plans SET is_default = false;
SET client_min_messages = error;
SET ROLE supabase_auth_admin;
SET search_path = '';
INSERT INTO auth.users (id, email) SELECT public.s(100000 + n), 'user' || n || '@example.com' FROM generate_series(401, 700) AS n;
RESET search_path;
RESET ROLE;
-- A failure inside the trigger (here a constraint that rejects some users) is a WARNING too.
UPDATE quota.plans SET is_default = true WHERE plan = 'supa';
ALTER TABLE quota.assignments ADD CONSTRAINT test_rejects_some CHECK (subject NOT IN (s(100701), s(100702), s(100703)));
SET ROLE supabase_auth_admin;
INSERT INTO auth.users (id, email) SELECT public.s(100000 + n), 'user' || n || '@example.com' FROM generate_series(701, 1000) AS n;
RESET ROLE;
ALTER TABLE quota.assignments DROP CONSTRAINT test_rejects_some;
RESET client_min_messages;
SELECT count(*) AS users FROM auth.users;
SELECT count(*) AS with_a_plan_after_signup FROM auth.users u JOIN quota.assignments a ON a.subject = u.id;
-- The first consume assigns the rest. (The users without a plan are chosen first: a
-- planner free to join the LATERAL call before the filter would consume for everyone.)
WITH without_a_plan AS MATERIALIZED (
    SELECT u.id FROM auth.users u LEFT JOIN quota.assignments a ON a.subject = u.id WHERE a.subject IS NULL)
SELECT count(*) FILTER (WHERE allowed) AS allowed_first_consumes
  FROM without_a_plan AS w, LATERAL quota.consume(w.id, 'ai') AS d;
SELECT count(*) AS without_a_plan FROM auth.users u LEFT JOIN quota.assignments a ON a.subject = u.id WHERE a.subject IS NULL;

-- The privilege matrix: exactly what the README documents.
SELECT p.proname,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
       has_function_privilege('authenticated', p.oid, 'EXECUTE') AS authenticated,
       has_function_privilege('service_role', p.oid, 'EXECUTE') AS service_role
  FROM pg_proc p WHERE p.pronamespace = 'quota'::regnamespace ORDER BY 1;
-- No end-user function takes a subject, but those that let only a signed-in user whose
-- claims make them support or admin through (15_supabase_admins tests each of them), and a
-- pool's functions, which let through only the pool itself, its named admins, pg_quota
-- admins and (leave_pool) the member itself, and pool_usage, which reads through row level
-- security (19_pools tests each of them as each kind of caller).
CREATE TEMP TABLE in_app_admin (proname name PRIMARY KEY);
INSERT INTO in_app_admin VALUES ('usage'), ('assign_plan'), ('set_override'), ('clear_override'), ('reset'),
                                ('grant'), ('revoke_grant'), ('join_pool'), ('leave_pool'), ('set_pool_cap'),
                                ('clear_pool_cap'), ('set_pool_admin'), ('allocate'), ('revoke_allocation'), ('pool_usage'),
                                ('set_alerts'), ('clear_alerts');
-- What row level security asks of pools: SECURITY DEFINER so that a policy can read
-- memberships the caller cannot, each about the caller's own subject only (sql/pools.sql).
INSERT INTO in_app_admin VALUES ('my_pool'), ('administered_pools'), ('administered_subjects');
-- Usage analytics (sql/analytics.sql, 22_analytics tests each as each kind of caller): SECURITY
-- INVOKER, reading through row level security; those about another subject or all subjects
-- refuse a signed-in user without a quota_role (analytics_reader), but for its own subject.
INSERT INTO in_app_admin VALUES ('usage_history'), ('forecast'), ('top_consumers'), ('denial_spikes'), ('rate_limit_hits'),
                                ('analytics_reader');
SELECT p.oid::regprocedure AS end_user_function_with_a_subject
  FROM pg_proc p
 WHERE p.pronamespace = 'quota'::regnamespace AND has_function_privilege('authenticated', p.oid, 'EXECUTE')
   AND ('uuid'::regtype = ANY (p.proargtypes) OR 'subject' = ANY (coalesce(p.proargnames, '{}')))
   AND p.proname NOT IN (SELECT proname FROM in_app_admin);

-- Catalog checks like Supabase's database linter: all must be empty.
-- (The in-app admin functions are SECURITY DEFINER and executable by authenticated on
-- purpose: they check the caller's quota_role claim (or, for a pool's, its JWT subject) first. The pre-request function
-- limit_request is executable by anon and authenticated on purpose: it takes no subject and
-- spends only the caller's own (JWT sub, or client address). Nothing else is executable by anon.)
SELECT 'security definer executable by anon/authenticated' AS lint, p.oid::regprocedure::text AS object
  FROM pg_proc p WHERE p.pronamespace = 'quota'::regnamespace AND p.prosecdef AND p.proname <> 'limit_request'
   AND (has_function_privilege('anon', p.oid, 'EXECUTE')
        OR (has_function_privilege('authenticated', p.oid, 'EXECUTE') AND p.proname NOT IN (SELECT proname FROM in_app_admin)))
UNION ALL
SELECT 'function without pinned search_path', p.oid::regprocedure::text
  FROM pg_proc p WHERE p.pronamespace = 'quota'::regnamespace
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
UNION ALL
SELECT 'table without row level security', c.oid::regclass::text
  FROM pg_class c WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind = 'r' AND NOT c.relrowsecurity
UNION ALL
SELECT 'policy that is always true', schemaname || '.' || tablename || ' ' || policyname
  FROM pg_policies WHERE schemaname = 'quota' AND (qual = 'true' OR with_check = 'true')
UNION ALL
SELECT 'extension in public', extname FROM pg_extension WHERE extname = 'pg_quota' AND extnamespace = 'public'::regnamespace;

-- current_subject(): NULL when the claims are absent, empty (a pooled connection after a
-- request), or carry no uuid in sub.
SELECT quota.current_subject() IS NULL AS no_claims;
BEGIN;
SELECT set_config('request.jwt.claims', '', true);
SELECT quota.current_subject() IS NULL AS empty_claims;
SELECT set_config('request.jwt.claims', '{"role": "anon"}', true);
SELECT quota.current_subject() IS NULL AS anon_claims;
SELECT set_config('request.jwt.claims', '{"sub": "nope"}', true);
SELECT quota.current_subject() IS NULL AS bad_sub;
SELECT set_config('request.jwt.claims', json_build_object('sub', s(100001))::text, true);
SELECT quota.current_subject() = s(100001) AS user_sub;
COMMIT;

-- Give user A (100001) and user B (100002) rows in every table.
SELECT quota.grant(s(100001), 'ai', 5) IS NOT NULL AND quota.grant(s(100002), 'ai', 5) IS NOT NULL AS granted;
SELECT quota.set_override(s(100002), 'ai', 4);
SELECT count(*) FROM (SELECT quota.consume(s(n), 'ai', 4) FROM unnest(ARRAY[100001, 100002]) AS n) AS c;
SELECT count(*) FROM (SELECT quota.reserve(s(n), 'ai', 1) FROM unnest(ARRAY[100001, 100002]) AS n) AS r;
SELECT quota.reset(s(100002), 'ai');

-- RLS: user A reads only A's rows in every table, and sees only A's plan.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', s(100001), 'role', 'authenticated')::text, true);
SELECT 'assignments' AS t, count(*) AS visible, count(*) FILTER (WHERE subject <> s(100001)) AS foreign_rows FROM quota.assignments
UNION ALL SELECT 'overrides', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.overrides
UNION ALL SELECT 'resets', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.resets
UNION ALL SELECT 'counters', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.counters
UNION ALL SELECT 'events', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.events
UNION ALL SELECT 'grants', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.grants
UNION ALL SELECT 'event_grants', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.event_grants
UNION ALL SELECT 'reservations', count(*), count(*) FILTER (WHERE subject <> s(100001)) FROM quota.reservations;
SELECT plan FROM quota.plans ORDER BY plan;
SELECT plan, metric FROM quota.limits ORDER BY plan, metric;
-- The end-user surface works through RLS.
SELECT metric, used, reserved, allowance, remaining, grants_remaining FROM quota.my_usage();
SELECT allowed, used, reserved, remaining FROM quota.my_check('ai', 1);
-- Writes and privileged calls fail with 42501 (PostgREST: 401/403).
SELECT try($$INSERT INTO quota.counters VALUES (s(100001), 'ai', now(), NULL, 0)$$);
SELECT try($$UPDATE quota.counters SET used = 0$$);
SELECT try($$DELETE FROM quota.events$$);
SELECT try($$SELECT quota.consume(s(100002), 'ai')$$);
SELECT try($$SELECT quota.usage(s(100002))$$);
SELECT try($$SELECT quota.grant(s(100001), 'ai', 100)$$);
ROLLBACK;

-- anon: nothing, not even its own usage.
BEGIN;
SET LOCAL ROLE anon;
SELECT try($$SELECT * FROM quota.my_usage()$$);
SELECT try($$SELECT count(*) FROM quota.counters$$);
ROLLBACK;
-- A signed-in role without a sub: a clear 42501, not an empty answer.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '', true);
SELECT try($$SELECT * FROM quota.my_usage()$$);
ROLLBACK;

-- The SQLSTATE a client receives for each error class, through the service role
-- (PostgREST: 22xxx/42704 -> 400, 23505 -> 409, PT429 -> 429; never XX000 -> 500).
BEGIN;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role": "service_role"}', true);
SELECT try($$SELECT quota.consume(s(100003), 'ai', 0)$$);
SELECT try($$SELECT quota.consume(s(100003), 'nope')$$);
SELECT try($$SELECT quota.consume(s(100003), 'ai', NULL)$$);
SELECT allowed FROM quota.consume(s(100003), 'ai', 1, idempotency_key => 'req-9');
SELECT try($$SELECT quota.consume(s(100003), 'ai', 2, idempotency_key => 'req-9')$$);
SELECT allowed FROM quota.consume(s(100003), 'ai', 2);
SELECT regexp_replace(try($$SELECT quota.require(s(100003), 'ai')$$), '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00', '<reset>');
SELECT count(*) > 0 AS service_role_reads_all FROM quota.counters WHERE subject <> s(100003);
ROLLBACK;
SELECT count(*) AS audit_mismatches FROM quota.audit();
