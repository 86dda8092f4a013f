-- The shared-memory tier (issue 20) on a server that did not preload pg_quota (this suite's
-- server): its functions say so with SQLSTATE 55000 and a hint, never a crash, and
-- everything else works as before (limit_request checks GETs, 17_rate_limits).
-- tests/preload.sh runs the tier itself on servers that preload it.
\set VERBOSITY sqlstate
SELECT quota.preloaded();
SELECT * FROM quota.memory_limiter_state();
SELECT quota.create_plan('memory_rated', '{"hits": {"rate": [{"limit": 2, "per": "1 second"}]}}');
SELECT quota.assign_plan(s(1801), 'memory_rated');
SELECT * FROM quota.limit_in_memory(s(1801), 'hits');
\set VERBOSITY default
SELECT * FROM quota.limit_in_memory(s(1801), 'hits');
-- Bad input is refused before the tier is looked at.
\set VERBOSITY sqlstate
SELECT * FROM quota.limit_in_memory(s(1801), 'hits', 0);
SELECT * FROM quota.limit_in_memory(NULL, 'hits');
SELECT * FROM quota.limit_in_memory(s(1801), NULL);
\set VERBOSITY default
-- The denial journal: nothing is queued, raising denials behave as before.
SELECT * FROM quota.denial_journal_state();
SELECT quota.journal_denial(s(1801), 'hits', 'quota_exceeded', 1, 0, 0, 0, 0, NULL, NULL, NULL, 'require', NULL) AS queued;
-- A read-only request through limit_request still only checks.
BEGIN READ ONLY;
SELECT set_config('request.jwt.claims', json_build_object('sub', s(1801), 'role', 'authenticated')::text, true) IS NOT NULL AS signed_in;
SELECT quota.limit_request('hits');
SELECT count(*) AS states FROM quota.rate_state WHERE subject = s(1801);
COMMIT;
