-- Subjects that are not users (0.7.0): quota.subject_for(key) maps an IP address, an API
-- key or an anonymous device to a subject uuid, the same everywhere: a version 5 uuid in
-- pg_quota's namespace (the values below were computed independently, with Python's uuid5).
-- Runs after 15_supabase_admins reinstalled the extension.
SELECT quota.subject_for('ip:203.0.113.7') AS ip, quota.subject_for('api_key:sk_live_123') AS api_key;
SELECT quota.subject_for('ip:203.0.113.7') = '7d44bfbd-d483-549e-998c-22d00eab0bf0' AS documented_value,
       quota.subject_for('IP:203.0.113.7') <> quota.subject_for('ip:203.0.113.7') AS exact_text,
       substr(quota.subject_for('anon:device-42')::text, 15, 1) AS version;
SELECT provolatile, proparallel FROM pg_proc WHERE oid = 'quota.subject_for(text)'::regprocedure;
-- Such a subject is put on a plan and consumes like a user.
SELECT quota.create_plan('anonymous', '{"api_calls": {"limit": 2, "per": "day"}}');
SELECT quota.assign_plan(quota.subject_for('ip:198.51.100.1'), 'anonymous');
SELECT allowed, used FROM quota.consume(quota.subject_for('ip:198.51.100.1'), 'api_calls');
SELECT allowed, used FROM quota.consume(quota.subject_for('ip:198.51.100.1'), 'api_calls');
SELECT allowed, used, reason FROM quota.consume(quota.subject_for('ip:198.51.100.1'), 'api_calls');
SELECT plan FROM quota.assignments WHERE subject = quota.subject_for('ip:198.51.100.1');
-- Bad keys: 22004 / 22023 with a hint.
SELECT try($$SELECT quota.subject_for(NULL)$$);
SELECT try($$SELECT quota.subject_for('')$$);
SELECT try($$SELECT quota.subject_for(repeat('k', 256))$$);
SELECT quota.subject_for(repeat('é', 255)) IS NOT NULL AS longest_key;
