CREATE EXTENSION pg_quota;
CREATE FUNCTION public.s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;
-- One hot subject with 1,000 units a day; 1,000 subjects on the default plan (20 a day),
-- assigned lazily by their first concurrent consume; one unlimited subject for key retries.
SELECT quota.create_plan('hammer', '{"units": {"limit": 1000, "per": "day"}}');
SELECT quota.create_plan('burst', '{"units": {"limit": 20, "per": "day"}}', is_default => true);
SELECT quota.create_plan('open', '{"units": {"limit": null, "per": "day"}}');
SELECT quota.assign_plan(s(1), 'hammer');
SELECT quota.assign_plan(s(5000), 'open');
SELECT quota.assign_plan(s(5001), 'open');
-- A wallet drawn on by many sessions at once: allowance 0, three grants of 300 units.
SELECT quota.create_plan('wallet', '{"credits": {"limit": 0, "per": "lifetime"}, "units": {"limit": 50, "per": "day"}}');
SELECT quota.assign_plan(s(6000), 'wallet');
SELECT quota.grant(s(6000), 'credits', 300, priority => p) FROM generate_series(1, 3) AS p;
-- ... and a daily allowance of 50 topped up by a grant of 200, spent by both.
SELECT quota.grant(s(6000), 'units', 200);
-- Reservations against one subject: 1,000 tokens a day.
SELECT quota.create_plan('llm', '{"tokens": {"limit": 1000, "per": "day"}}');
SELECT quota.assign_plan(s(8000), 'llm');
-- At most 3 projects, enforced by a trigger on an app table.
SELECT quota.create_plan('builder', '{"projects": {"limit": 3, "per": "lifetime"}}');
SELECT quota.assign_plan(s(9000), 'builder');
CREATE TABLE public.projects (id bigserial PRIMARY KEY, user_id uuid NOT NULL, name text);
SELECT quota.enforce_on('public.projects', 'projects');
-- pgbench aborts a client on any error: a denial is expected here, so it is caught.
CREATE FUNCTION public.try_insert_project() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.projects (user_id, name) VALUES (public.s(9000), 'p');
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END $$;
-- consume against every kind of change in flight (admin_mix).
SELECT quota.create_plan('mixed', '{"units": {"limit": 50, "per": "day"}}');
SELECT quota.create_plan('mixed_more', '{"units": {"limit": 80, "per": "day"}}');
SELECT quota.assign_plan(s(7000), 'mixed');
-- Bundles (consume_many) of two subjects' requests, tokens and images against single
-- consumes, plan changes, resets and grants of the same metrics (bundles).
SELECT quota.create_plan('bundled', '{"requests": {"limit": 40, "per": "day"}, "tokens": {"limit": 1500, "per": "day"}, "images": {"limit": 30, "per": "day"}}');
SELECT quota.create_plan('bundled_more', '{"requests": {"limit": 60, "per": "day"}, "tokens": {"limit": 2000, "per": "day"}, "images": {"limit": 40, "per": "day"}}');
SELECT quota.assign_plan(s(7100), 'bundled');
SELECT quota.assign_plan(s(7101), 'bundled');
-- A rate rule of 10 per second with a burst of 10, hammered by every session (paced).
SELECT quota.create_plan('paced', '{"paced": {"limit": null, "rate": [{"limit": 10, "per": "1 second", "burst": 10}]}}');
SELECT quota.assign_plan(s(7200), 'paced');
-- A pool of 100 AI units a day shared by 8 members with a cap of 20 each, their own plan
-- counting diary entries (pools).
SELECT quota.create_plan('class100', '{"ai": {"limit": 100, "per": "day"}}');
SELECT quota.create_plan('diary', '{"diary": {"limit": 100000, "per": "day"}}');
SELECT quota.assign_plan(s(7300), 'class100');
SELECT quota.assign_plan(s(n), 'diary') FROM generate_series(7301, 7308) AS n;
SELECT quota.join_pool(s(7300), s(n)) FROM generate_series(7301, 7308) AS n;
SELECT quota.set_pool_cap(s(7300), 'ai', 20);
-- Offline devices of a pool's members resending their records (pool_records).
SELECT quota.assign_plan(s(7310), 'class100');
SELECT quota.assign_plan(s(n), 'diary') FROM generate_series(7311, 7314) AS n;
SELECT quota.join_pool(s(7310), s(n)) FROM generate_series(7311, 7314) AS n;
SELECT quota.set_pool_cap(s(7310), 'ai', 20);
-- Usage alerts (alerts): 8 subjects whose thresholds 32 sessions cross together, half of the
-- calls rolled back, with grants (recovered) and resets (a new window) now and then.
SELECT quota.create_plan('alerting', '{"units": {"limit": 100, "per": "day", "alerts": ["50%", "80%", "100%", "150%", "10 left", "depleted", "recovered"]}}');
SELECT quota.assign_plan(s(n), 'alerting') FROM generate_series(7401, 7408) AS n;
-- 3,000 alerts waiting for consumers (alert_consumers): each subject's one call reaches 100%.
SELECT quota.create_plan('announced', '{"notices": {"limit": 1, "per": "day", "alerts": ["100%"]}}');
SELECT count(quota.assign_plan(s(n), 'announced')) FROM generate_series(20001, 23000) AS n;
SELECT count(quota.consume(s(n), 'notices')) FROM generate_series(20001, 23000) AS n;
-- Rollover (rollover): 64 subjects on a plan since 10 days ago, each with its own usage of the
-- three days before today; every carry they left waits for today's first call, which 32
-- sessions make together (some of them rolled back).
SELECT quota.create_plan('rolling', '{"calls": {"limit": 20, "per": "day", "rollover": {"max": 15, "expires_after": 3}}}');
SELECT count(quota.assign_plan(s(n), 'rolling')) FROM generate_series(7501, 7564) AS n;
UPDATE quota.assignments SET assigned_at = now() - interval '10 days' WHERE subject IN (SELECT s(n) FROM generate_series(7501, 7564) AS n);
SELECT count(quota.record(s(n), 'calls', (n * 7 + d * 5) % 30, occurred_at => date_trunc('day', now(), 'UTC') - make_interval(days => d) + interval '1 hour'))
  FROM generate_series(7501, 7564) AS n, generate_series(1, 3) AS d WHERE (n * 7 + d * 5) % 30 > 0;
-- Ledger mode "counters" (counted): one hot subject (s(7601), 1,000 pings a day) and 20 more
-- of 100, unkeyed calls counted without ledger rows, keyed ones kept.
SELECT quota.create_plan('counted', '{"pings": {"limit": 100, "per": "day", "ledger": "counters"}}');
SELECT count(quota.assign_plan(s(n), 'counted')) FROM generate_series(7601, 7621) AS n;
SELECT quota.set_override(s(7601), 'pings', 1000);
