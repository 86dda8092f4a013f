-- Supabase (0.7.0): in-app admins and support through app_metadata.quota_role, the audit
-- trail of administration, deep user_metadata, and the uninstall path. Uses the fixture of
-- 08_supabase (schema auth, auth.users, the roles). Requests run as PostgREST runs them: one
-- transaction, SET LOCAL ROLE, the claims in request.jwt.claims (GETs read-only).

-- A PostgREST request as `role` with `claims`, running `statement`: its first value, or
-- the SQLSTATE and message it failed with. The role and claims end with the request.
CREATE FUNCTION pg_temp.request(role text, claims jsonb, statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text; state text; message text;
BEGIN
    PERFORM set_config('request.jwt.claims', claims::text, true);
    EXECUTE format('SET LOCAL ROLE %I', role);
    EXECUTE statement INTO result;
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    RETURN CASE WHEN result IS NULL THEN 'null' WHEN result = '' THEN 'ok' ELSE result END;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
    RETURN state || ': ' || message;
END $$;
-- Instants in a change's states depend on the day the suite runs.
CREATE FUNCTION pg_temp.masked(state jsonb) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT regexp_replace(state::text, '"\d{4}-\d\d-\d\dT[0-9:.]+[+-]\d\d:\d\d"', '"<instant>"', 'g') $$;
-- Supabase grants the end-user roles USAGE on schema auth, for auth.uid().
GRANT USAGE ON SCHEMA auth TO authenticated;
-- The claims of a signed-in user n, with app_metadata and user_metadata as given.
CREATE FUNCTION pg_temp.claims(n int, app_metadata jsonb DEFAULT '{}', user_metadata jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE sql AS $$ SELECT jsonb_build_object('sub', s(n), 'role', 'authenticated', 'aud', 'authenticated',
                                                 'app_metadata', app_metadata || '{"provider": "email"}',
                                                 'user_metadata', user_metadata) $$;

-- Users: an admin (150001), a support agent (150002), a plain user (150003), a user who
-- wrote quota_role into their own user_metadata (150004), and the customer (150005).
SELECT quota.create_plan('video', '{"videos": {"limit": 5, "per": "month", "anchor": "subscription"}}');
SELECT quota.create_plan('video_pro', '{"videos": {"limit": 50, "per": "month", "anchor": "subscription"}}');
SELECT count(*) FROM (SELECT quota.assign_plan(s(n), 'video') FROM generate_series(150001, 150005) AS n) AS a;
SELECT count(*) FROM (SELECT quota.consume(s(n), 'videos', 2) FROM generate_series(150001, 150005) AS n) AS c;
SELECT quota.grant(s(150005), 'videos', 1, reason => 'to be revoked') AS grant_to_revoke \gset
CREATE TEMP TABLE callers (caller text PRIMARY KEY, role text, claims jsonb);
INSERT INTO callers VALUES
    ('admin',          'authenticated', pg_temp.claims(150001, '{"quota_role": "admin"}')),
    ('support',        'authenticated', pg_temp.claims(150002, '{"quota_role": "support"}')),
    ('user',           'authenticated', pg_temp.claims(150003)),
    ('forged',         'authenticated', pg_temp.claims(150004, '{}', '{"quota_role": "admin", "app_metadata": {"quota_role": "admin"}}')
                                        || '{"quota_role": "admin"}'),
    ('anon',           'anon',          '{"role": "anon"}'),
    ('service_role',   'service_role',  '{"role": "service_role"}');
GRANT SELECT ON callers TO PUBLIC;

-- What each caller reads through row level security: rows of other subjects than their own.
SELECT c.caller,
       pg_temp.request(c.role, c.claims, $$SELECT count(DISTINCT subject) FILTER (WHERE subject IS DISTINCT FROM quota.current_subject())
                                            FROM quota.assignments WHERE subject BETWEEN s(150001) AND s(150005)$$) AS assignments,
       pg_temp.request(c.role, c.claims, $$SELECT count(DISTINCT subject) FILTER (WHERE subject IS DISTINCT FROM quota.current_subject())
                                            FROM quota.events WHERE subject BETWEEN s(150001) AND s(150005)$$) AS events,
       pg_temp.request(c.role, c.claims, $$SELECT count(*) FROM quota.plans WHERE plan LIKE 'video%'$$) AS plans,
       pg_temp.request(c.role, c.claims, $$SELECT quota.current_quota_role()$$) AS quota_role
  FROM callers AS c ORDER BY c.caller;

-- What each caller may call: usage of another subject (support), the administration
-- functions (admin). 42501 otherwise; writes to the tables stay refused for everyone.
SELECT c.caller, f.call, pg_temp.request(c.role, c.claims, f.statement) AS outcome
  FROM callers AS c, (VALUES
    (1, 'usage',          $$SELECT used FROM quota.usage(s(150005))$$),
    (2, 'assign_plan',    $$SELECT quota.assign_plan(s(150005), 'video_pro')$$),
    (3, 'set_override',   $$SELECT quota.set_override(s(150005), 'videos', 7)$$),
    (4, 'clear_override', $$SELECT quota.clear_override(s(150005), 'videos')$$),
    (5, 'grant',          $$SELECT quota.grant(s(150005), 'videos', 3, reason => 'goodwill') IS NOT NULL$$),
    (6, 'revoke_grant',   format($$SELECT quota.revoke_grant(%L)$$, :'grant_to_revoke')),
    (7, 'reset',          $$SELECT quota.reset(s(150005), 'videos')$$),
    (8, 'create_plan',    $$SELECT quota.create_plan('video_free_for_all', '{}')$$),
    (9, 'consume',        $$SELECT quota.consume(s(150005), 'videos')$$),
    (10, 'table write',   $$UPDATE quota.assignments SET plan = 'video_pro' WHERE subject = s(150005)$$),
    (11, 'set_alerts',    $$SELECT quota.set_alerts(s(150005), 'videos', ARRAY['90%'])$$),
    (12, 'clear_alerts',  $$SELECT quota.clear_alerts(s(150005), 'videos')$$)
  ) AS f(n, call, statement)
 WHERE c.caller <> 'service_role'
 ORDER BY c.caller, f.n;

-- An admin's changes, as PostgREST runs them (POST: one read-write transaction).
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims(150001, '{"quota_role": "admin"}')::text, true);
SELECT quota.assign_plan(s(150005), 'video_pro');
SELECT quota.set_override(s(150005), 'videos', 60);
SELECT quota.grant(s(150005), 'videos', 500, reason => 'support ticket 42') IS NOT NULL AS granted;
SELECT quota.reset(s(150005), 'videos');
SELECT metric, used, allowance, grants_remaining FROM quota.usage(s(150005));
COMMIT;
-- Support reads usage in a read-only transaction (a GET).
BEGIN READ ONLY;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', pg_temp.claims(150002, '{"quota_role": "support"}')::text, true);
SELECT metric, used, allowance FROM quota.usage(s(150005));
SELECT try($$SELECT quota.reset(s(150005), 'videos')$$);
ROLLBACK;

-- The audit trail: one row per change, with who called and the state before and after.
-- ("Who gave this user 500 credits?")
SELECT action, db_role, jwt_subject = s(150001) AS by_the_admin, jwt_role, quota_role, subject = s(150005) AS subject,
       metric, plan, pg_temp.masked(before - 'updated_at' - 'created_at' - 'grant_id') AS before,
       pg_temp.masked(after - 'updated_at' - 'created_at' - 'grant_id') AS after
  FROM quota.admin_changes
 WHERE subject = s(150005) AND jwt_subject = s(150001) ORDER BY change_id;
SELECT a.db_role, a.jwt_subject = s(150001) AS by_the_admin, a.after->>'reason' AS reason, (a.after->>'amount')::int AS amount
  FROM quota.admin_changes AS a
 WHERE a.action = 'grant' AND a.subject = s(150005) AND (a.after->>'amount')::int = 500;
-- The service role and a superuser are recorded as themselves; plan changes too.
SELECT pg_temp.request('service_role', '{"role": "service_role"}', $$SELECT quota.set_override(s(150005), 'videos', 61)$$);
SELECT quota.set_limits('video', '{"videos": {"limit": 6, "per": "month", "anchor": "subscription"}}');
SELECT action, db_role, jwt_role, plan,
       coalesce(before->'limits'->'videos', before)->>'allowance' AS allowance_before,
       coalesce(after->'limits'->'videos', after)->>'allowance' AS allowance_after
  FROM quota.admin_changes WHERE action IN ('set_limits', 'set_override') AND (plan = 'video' OR subject = s(150005))
 ORDER BY change_id DESC LIMIT 2;
-- Only admins read it (and the service role); nobody writes it, not even admins.
SELECT c.caller,
       pg_temp.request(c.role, c.claims, $$SELECT count(*) > 0 FROM quota.admin_changes$$) AS reads,
       pg_temp.request(c.role, c.claims, $$DELETE FROM quota.admin_changes$$) AS deletes
  FROM callers AS c ORDER BY c.caller;
-- A refused call records nothing.
SELECT count(*) AS refused_changes FROM quota.admin_changes WHERE jwt_subject IN (s(150002), s(150003), s(150004));

-- A deep user_metadata (the auth server copies what the user wrote into the token) does not
-- hide the user's own sub: current_subject() agrees with auth.uid(), my_usage works, and
-- row level security shows their rows.
CREATE TEMP TABLE deep_claims AS
SELECT depth, ('{"sub": "' || s(150003) || '", "role": "authenticated", "user_metadata": '
               || repeat('{"a": ', depth) || '1' || repeat('}', depth) || '}')::text AS claims
  FROM unnest(ARRAY[126, 127, 128, 1000]) AS depth;
GRANT SELECT ON deep_claims TO PUBLIC;
SELECT depth,
       pg_temp.request('authenticated', claims::jsonb, $$SELECT quota.current_subject() = auth.uid()$$) AS same_as_auth_uid,
       pg_temp.request('authenticated', claims::jsonb, $$SELECT string_agg(metric || '=' || used, ',') FROM quota.my_usage()$$) AS my_usage,
       pg_temp.request('authenticated', claims::jsonb, $$SELECT count(*) FROM quota.assignments$$) AS own_rows
  FROM deep_claims ORDER BY depth;

-- Uninstall: DROP EXTENSION refuses while the sign-up trigger is on auth.users;
-- teardown_supabase() removes it and the grants, after which DROP EXTENSION works and
-- sign-ups go on. (Last in the suites: the extension is gone afterwards.)
-- (Tables under quota.enforce come first: enforce_off() for each.)
SELECT count(quota.enforce_off(t.tgrelid::regclass, substr(t.tgname, length('quota_enforce_') + 1))) AS enforced_tables
  FROM pg_trigger AS t WHERE t.tgname LIKE 'quota\_enforce\_%';
SELECT try($$DROP EXTENSION pg_quota$$);
SELECT * FROM quota.teardown_supabase();
SELECT * FROM quota.teardown_supabase();
SELECT has_function_privilege('authenticated', 'quota.my_usage()', 'EXECUTE') AS authenticated_keeps_my_usage,
       has_schema_privilege('service_role', 'quota', 'USAGE') AS service_role_keeps_schema;
SELECT try($$DROP EXTENSION pg_quota$$);
SET ROLE supabase_auth_admin;
SET search_path = auth;
INSERT INTO users (id, email) VALUES (public.s(150099), 'after-uninstall@example.com');
RESET search_path;
RESET ROLE;
SELECT count(*) AS signed_up_after_uninstall FROM auth.users WHERE id = s(150099);
CREATE EXTENSION pg_quota;
SELECT extversion IS NOT NULL AS reinstalled FROM pg_extension WHERE extname = 'pg_quota';
