-- Edges found in the review of 0.5.0; each failed on 0.5.0.
SELECT quota.create_plan('edges', '{"tokens": {"limit": 10, "per": "day"}, "bytes": {"limit": null}}');
SELECT quota.assign_plan(s(n), 'edges') FROM generate_series(130, 136) AS n;

-- record_batch keeps metadata exactly as record() does: no number becomes a float.
SELECT allowed FROM quota.record(s(130), 'tokens', 1, metadata => '{"big": 123456789012345678901234567890, "tiny": 1e-400, "ratio": 0.1}');
SELECT count(*) FROM quota.record_batch(jsonb_build_array(jsonb_build_object(
    'subject', s(130), 'metric', 'tokens', 'amount', 1,
    'metadata', '{"big": 123456789012345678901234567890, "tiny": 1e-400, "ratio": 0.1}'::jsonb)));
SELECT count(DISTINCT metadata) AS distinct_metadata, min(metadata->>'big') AS big, length(min(metadata->>'tiny')) AS tiny_digits
  FROM quota.events WHERE subject = s(130) AND kind = 'record';

-- Grants that add up past bigint do not lock a subject out: sums saturate.
SELECT quota.grant(s(131), 'tokens', 9223372036854775807) IS NOT NULL AS granted;
SELECT quota.grant(s(131), 'tokens', 9223372036854775807) IS NOT NULL AS granted;
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(131), 'tokens', 11);
SELECT metric, used, remaining, grants_remaining FROM quota.usage(s(131)) WHERE metric = 'tokens';
SELECT allowed, remaining FROM quota.check(s(131), 'tokens', 5);

-- A window that cannot be computed is refused when the plan is made, not on every consume.
SELECT try($$SELECT quota.create_plan('eons', '{"x": {"limit": 1, "per": "15250000 weeks"}}')$$);
SELECT try($$SELECT quota.set_limits('edges', '{"x": {"limit": 1, "per": "36526 days"}}')$$);
SELECT quota.create_plan('century', '{"x": {"limit": 1, "per": "36525 days"}}');
SELECT quota.assign_plan(s(132), 'century');
SELECT allowed, resets_at > now() + interval '1 day' AS resets_later FROM quota.consume(s(132), 'x');

-- Instants past the end of the supported calendar are 22023, as documented.
SELECT try($$SELECT quota.record(s(133), 'tokens', 1, occurred_at => '294276-12-31 23:59:59+00')$$);
SELECT try($$SELECT quota.assign_plan(s(133), 'edges', '294276-12-31 23:59:59+00')$$);
SELECT try($$SELECT quota.grant(s(133), 'tokens', 1, expires_at => '294276-12-31 23:59:59+00')$$);

-- The README's grants for a backend role are enough for enforce_on on its own table.
CREATE ROLE edge_backend;
GRANT USAGE ON SCHEMA quota TO edge_backend;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA quota TO edge_backend;
GRANT CREATE ON SCHEMA public TO edge_backend;
SET ROLE edge_backend;
CREATE TABLE public.edge_items (id serial, user_id uuid);
SELECT quota.enforce_on('public.edge_items', 'tokens');
SELECT try($$SELECT quota.enforce_on('public.edge_items', 'no_such_metric')$$);
INSERT INTO public.edge_items (user_id) VALUES (s(134));
RESET ROLE;
SELECT used FROM quota.usage(s(134)) WHERE metric = 'tokens';
DROP TABLE public.edge_items;
REVOKE ALL ON SCHEMA public FROM edge_backend;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM edge_backend;
REVOKE ALL ON SCHEMA quota FROM edge_backend;
DROP ROLE edge_backend;

-- No client sees a Rust backtrace, even with RUST_BACKTRACE set in the server's environment
-- (scripts/cluster.sh sets it): an error raised inside one of pg_quota's statements.
SELECT used FROM quota.record(s(135), 'bytes', 9223372036854775807);
DO $$
DECLARE state text; detail text;
BEGIN
    PERFORM quota.record('00000000-0000-0000-0000-000000000135', 'bytes', 1);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'SQLSTATE %, detail: %', state, CASE WHEN detail = '' THEN '(none)' ELSE detail END;
END $$;

-- A keyed record_batch holds no lock per event (0.5.0 held one advisory lock per keyed event
-- until commit: 100,000 of them exhausted the shared lock table for every session).
BEGIN;
SELECT count(*) AS recorded FROM quota.record_batch((SELECT jsonb_agg(jsonb_build_object(
    'subject', s(136), 'metric', 'bytes', 'amount', 1, 'idempotency_key', 'lock-' || n)) FROM generate_series(1, 2000) AS n));
SELECT count(*) AS advisory_locks_held FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
-- The same batch again replays every event: nothing is counted twice.
SELECT count(*) FILTER (WHERE replayed) AS replayed FROM quota.record_batch((SELECT jsonb_agg(jsonb_build_object(
    'subject', s(136), 'metric', 'bytes', 'amount', 1, 'idempotency_key', 'lock-' || n)) FROM generate_series(1, 2000) AS n));
SELECT used FROM quota.usage(s(136)) WHERE metric = 'bytes';
