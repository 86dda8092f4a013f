-- Usage analytics (0.11.0): usage per bucket in the limit's time zone, late records, top
-- consumers, denial spikes against a subject's own baseline, rate limit hits, forecasts,
-- plan distribution, active subjects; who sees what through row level security; every
-- error's SQLSTATE. History is written into the ledger at fixed instants of March 2025
-- (the United States moved to daylight time on 2025-03-09), so the output does not depend
-- on the day the suite runs. Subjects 220001...
SELECT count(*) AS steps FROM quota.setup_supabase();
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
-- A ledger row of subject n at `at`, in the daily window of `zone` that contains
-- `window_at` (a late record: a window that ended before the row was written).
CREATE FUNCTION pg_temp.ledger(n int, metric text, kind text, amount bigint, at timestamptz, reason text DEFAULT 'ok',
                               from_grants bigint DEFAULT 0, overage bigint DEFAULT 0, zone text DEFAULT 'America/New_York',
                               window_at timestamptz DEFAULT NULL) RETURNS int LANGUAGE sql AS $$
    INSERT INTO quota.events (subject, created_at, kind, metric, amount, from_allowance, from_grants, overage,
                              window_start, window_end, used, reason)
    SELECT s(n), at, kind, metric, amount,
           CASE WHEN kind IN ('consume', 'record', 'settle', 'give_back') THEN amount - from_grants - overage ELSE 0 END,
           from_grants, overage, w.start, w.start + interval '1 day', 0, reason
      FROM (SELECT date_trunc('day', coalesce(window_at, at), zone) AS start) AS w
    RETURNING 1 $$;

SELECT quota.create_plan('ana_ny', '{"ana_calls": {"limit": 100, "per": "day", "time_zone": "America/New_York"},
                                     "ana_tokens": {"limit": 1000, "per": "month"}}');
SELECT quota.create_plan('ana_utc', '{"ana_calls": {"limit": 1000, "per": "day"}}');
SELECT quota.assign_plan(s(n), 'ana_ny') FROM generate_series(220001, 220004) AS n;
SELECT quota.assign_plan(s(220005), 'ana_utc');

-- History of 220001 in New York days: 03-07 22:00 New York is already 03-08 in UTC; 03-09
-- is 23 hours long; a give-back nets out; grants and overage paid units are used too;
-- denials are counted apart (one of them by a rate rule); a reserve and a reset move nothing.
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 5, '2025-03-07 15:00-05');
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 3, '2025-03-07 22:00-05');
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 4, '2025-03-08 10:00-05', from_grants => 4);
SELECT pg_temp.ledger(220001, 'ana_calls', 'give_back', 1, '2025-03-08 11:00-05');
SELECT pg_temp.ledger(220001, 'ana_calls', 'record', 9, '2025-03-08 12:00-05', reason => 'overage', overage => 2);
SELECT pg_temp.ledger(220001, 'ana_calls', 'denial', 1, '2025-03-08 13:00-05', reason => 'quota_exceeded');
SELECT pg_temp.ledger(220001, 'ana_calls', 'denial', 1, '2025-03-08 13:30-05', reason => 'rate_limited');
SELECT pg_temp.ledger(220001, 'ana_calls', 'reserve', 6, '2025-03-08 14:00-05');
SELECT pg_temp.ledger(220001, 'ana_calls', 'reset', 0, '2025-03-08 15:00-05', reason => 'reset');
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 2, '2025-03-09 01:30-05');
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 7, '2025-03-09 03:30-04');
SELECT pg_temp.ledger(220001, 'ana_calls', 'consume', 1, '2025-03-09 23:30-04');
-- Another subject and another metric of the same subject do not count.
SELECT pg_temp.ledger(220002, 'ana_calls', 'consume', 50, '2025-03-08 10:00-05');
SELECT pg_temp.ledger(220001, 'ana_tokens', 'consume', 500, '2025-03-08 10:00-05', zone => 'UTC');

-- Days of New York, from the one containing since to the one containing until, empty ones
-- included; the day of the DST change ends 23 hours after it starts.
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_day, bucket_end - bucket_start AS length,
       used, from_grants, overage, denials, rate_limited
  FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-06 12:00-05', '2025-03-10 12:00-04');
-- The session's TimeZone changes nothing.
SET TimeZone = 'Asia/Tokyo';
SELECT count(*) AS days, sum(used) AS used FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-06 12:00-05', '2025-03-10 12:00-04');
RESET TimeZone;
-- A limit in UTC buckets UTC days: the same kind of history of 220005 lands on other days.
SELECT pg_temp.ledger(220005, 'ana_calls', 'consume', 3, '2025-03-07 22:00-05', zone => 'UTC');
SELECT pg_temp.ledger(220005, 'ana_calls', 'consume', 4, '2025-03-08 10:00-05', zone => 'UTC');
SELECT bucket_start, used FROM quota.usage_history(s(220005), 'ana_calls', 'day', '2025-03-07', '2025-03-09');
-- Hours across the spring change: 01:00 EST is followed by 03:00 EDT.
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_hour, used
  FROM quota.usage_history(s(220001), 'ana_calls', 'hour', '2025-03-09 00:00-05', '2025-03-09 04:00-04');
-- Weeks start on Monday (2025-03-03 and 2025-03-10), months on the 1st, in New York.
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_week, used, denials
  FROM quota.usage_history(s(220001), 'ana_calls', 'week', '2025-03-05', '2025-03-11');
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_month, used
  FROM quota.usage_history(s(220001), 'ana_calls', 'month', '2025-02-15', '2025-03-20');
-- A subject never seen has empty buckets; a metric of the plan with a UTC limit buckets in UTC.
SELECT count(*) AS days, sum(used) AS used FROM quota.usage_history(s(220099), 'ana_calls', 'day', '2025-03-01', '2025-03-08');
SELECT bucket_start, used FROM quota.usage_history(s(220001), 'ana_tokens', 'day', '2025-03-08', '2025-03-08 12:00');

-- A late record counts in the window it was recorded for: record(occurred_at) writes the row
-- now, and the day of New York it happened on shows it.
SELECT allowed, reason FROM quota.record(s(220003), 'ana_calls', 8, occurred_at => '2025-03-08 12:00-05');
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_day, used
  FROM quota.usage_history(s(220003), 'ana_calls', 'day', '2025-03-07', '2025-03-09 12:00-04');
SELECT (SELECT created_at FROM quota.events WHERE subject = s(220003)) > '2025-03-09' AS written_later,
       counted_at AT TIME ZONE 'America/New_York' AS counted_at_new_york
  FROM quota.usage_events WHERE subject = s(220003);

-- Top consumers of a metric in a period, most first: plan, units, share, denials.
SELECT pg_temp.ledger(220004, 'ana_calls', 'consume', 20, '2025-03-08 09:00-05');
SELECT pg_temp.ledger(220004, 'ana_calls', 'consume', 20, '2025-03-12 09:00-04');
SELECT rank, subject, plan, used, share, denials
  FROM quota.top_consumers('ana_calls', '2025-03-07', '2025-03-10');
SELECT rank, subject, used, share FROM quota.top_consumers('ana_calls', '2025-03-07', '2025-03-10', max_rows => 2);
-- The period decides by the instant a row counts at: the late record of 220003 counts at the
-- last instant of 2025-03-08 in New York, though it was written today.
SELECT subject, used FROM quota.top_consumers('ana_calls', '2025-03-08 23:00-05', '2025-03-09 00:00-05');

-- Denial spikes. 220001 is denied twice a day for a week, then 20 times in one hour (8 of
-- them by a rate rule); 220002 is denied 12 times every hour (its usual: no spike); 220004
-- is denied 15 times in one hour with no denial before (a first burst: baseline one a week).
SELECT count(pg_temp.ledger(220001, 'ana_calls', 'denial', 1, '2025-03-13 00:00+00'::timestamptz + d * interval '1 day' + k * interval '5 hours', reason => 'quota_exceeded'))
  FROM generate_series(0, 6) AS d, generate_series(0, 1) AS k;
SELECT count(pg_temp.ledger(220001, 'ana_calls', 'denial', 1, '2025-03-20 14:00+00'::timestamptz + k * interval '1 minute',
                            reason => CASE WHEN k < 8 THEN 'rate_limited' ELSE 'quota_exceeded' END))
  FROM generate_series(0, 19) AS k;
SELECT count(pg_temp.ledger(220002, 'ana_calls', 'denial', 1, '2025-03-12 00:00+00'::timestamptz + h * interval '1 hour' + k * interval '4 minutes', reason => 'quota_exceeded'))
  FROM generate_series(0, 9 * 24 - 1) AS h, generate_series(0, 11) AS k;
SELECT count(pg_temp.ledger(220004, 'ana_calls', 'denial', 1, '2025-03-20 16:00+00'::timestamptz + k * interval '1 minute', reason => 'rate_limited'))
  FROM generate_series(0, 14) AS k;
SELECT subject, hour, denials, rate_limited, baseline_per_hour, ratio
  FROM quota.denial_spikes('2025-03-20', '2025-03-21');
-- Thresholds: 220002's steady hours pass a ratio of 1; fewer than min_denials never count.
SELECT count(*) AS steady_hours, min(ratio), max(ratio)
  FROM quota.denial_spikes('2025-03-20', '2025-03-21', min_ratio => 1, min_denials => 12) WHERE subject = s(220002);
SELECT count(*) AS spikes FROM quota.denial_spikes('2025-03-20', '2025-03-21', min_denials => 21);
-- Rate limit hits per subject and metric: most first, the first and the last hit.
SELECT subject, metric, plan, hits, first_hit, last_hit FROM quota.rate_limit_hits('2025-03-01', '2025-04-01');
SELECT subject, hits FROM quota.rate_limit_hits('2025-03-01', '2025-04-01', only_metric => 'ana_calls', max_rows => 1);
SELECT count(*) AS hits_of_tokens FROM quota.rate_limit_hits('2025-03-01', '2025-04-01', only_metric => 'ana_tokens');

-- Forecasts. A lifetime wallet of 220006: 40 units burned over two days (10 of them paid by
-- a grant, 30 given back) and 45 left (allowance 60 less 30 used, plus 15 of the grant):
-- burn 20 a day, so it runs out in 2 days 6 hours. A grant given later adds to what is
-- left, never to the burn. Rows are moved into the past in the transaction of the
-- forecast, whose now() they are relative to.
SELECT quota.create_plan('ana_wallet', '{"ana_credits": {"limit": 60, "per": "lifetime"},
                                         "ana_daily": {"limit": 10, "per": "day"},
                                         "ana_open": {"limit": null, "per": "day"}}');
SELECT quota.assign_plan(s(n), 'ana_wallet') FROM generate_series(220006, 220009) AS n;
BEGIN;
SELECT used FROM quota.consume(s(220006), 'ana_credits', 20);
SELECT quota.grant(s(220006), 'ana_credits', 25, reason => 'pack') IS NOT NULL AS granted;
SELECT used, from_grants FROM quota.consume(s(220006), 'ana_credits', 50);
SELECT used FROM quota.give_back(s(220006), 'ana_credits', 30);
UPDATE quota.events SET created_at = now() - interval '2 days' + (event_id - (SELECT min(event_id) FROM quota.events WHERE subject = s(220006))) * interval '1 hour'
 WHERE subject = s(220006);
SELECT window_start, resets_at, used, remaining, burned, burn_per_hour, status,
       exhausts_at - now() AS exhausts_in, exhausts_before_reset
  FROM quota.forecast(s(220006), 'ana_credits');
SELECT quota.grant(s(220006), 'ana_credits', 45, reason => 'top-up') IS NOT NULL AS granted;
SELECT remaining, burned, status, exhausts_at - now() AS exhausts_in FROM quota.forecast(s(220006), 'ana_credits');
COMMIT;
-- Too short: fewer than 3 usage events in the window; or (a lifetime window) less than a
-- day since the first; nothing burned net; unlimited; nothing left.
SELECT used FROM quota.consume(s(220007), 'ana_daily', 2);
SELECT used FROM quota.consume(s(220007), 'ana_daily', 2);
SELECT status, burned, exhausts_at FROM quota.forecast(s(220007), 'ana_daily');
SELECT count(quota.consume(s(220007), 'ana_credits', 1)) AS consumes FROM generate_series(1, 3);
SELECT status, burned, exhausts_at FROM quota.forecast(s(220007), 'ana_credits');
BEGIN;
SELECT used FROM quota.consume(s(220008), 'ana_credits', 2);
SELECT used FROM quota.consume(s(220008), 'ana_credits', 1);
SELECT used FROM quota.give_back(s(220008), 'ana_credits', 3);
UPDATE quota.events SET created_at = now() - interval '3 days' WHERE subject = s(220008);
SELECT status, burned, burn_per_hour, exhausts_at FROM quota.forecast(s(220008), 'ana_credits');
COMMIT;
SELECT count(quota.consume(s(220008), 'ana_open', 5)) AS consumes FROM generate_series(1, 3);
SELECT status, used, remaining, exhausts_at FROM quota.forecast(s(220008), 'ana_open');
SELECT used FROM quota.consume(s(220009), 'ana_daily', 10);
SELECT status, remaining, exhausts_at = now() AS exhausted_now, exhausts_before_reset FROM quota.forecast(s(220009), 'ana_daily');

-- Plan distribution: subjects per plan, those active in the last 30 days (a call of theirs
-- in the ledger: the rows of March 2025 are old; 220003's late record was written today).
SELECT plan, is_default, subjects, active_subjects FROM quota.plan_distribution() WHERE plan LIKE 'ana%' ORDER BY plan;
SELECT plan, subjects, active_subjects FROM quota.plan_distribution(active_within => '100 years') WHERE plan LIKE 'ana%' ORDER BY plan;
-- Active subjects per UTC day of March 2025 (a reset is an administrator's, not activity).
SELECT bucket_start, active_subjects FROM quota.active_subjects('day', '2025-03-07', '2025-03-10');
SELECT bucket_start AT TIME ZONE 'America/New_York' AS new_york_day, active_subjects
  FROM quota.active_subjects('day', '2025-03-07', '2025-03-10', 'America/New_York');

-- Who sees what, as PostgREST runs requests. 220001 is a plain user; 220002 is support;
-- 220004 an admin; anon has nothing; a backend role that reads the tables without
-- bypassing row level security is refused rather than shown nothing.
CREATE TEMP TABLE ana_callers (caller text PRIMARY KEY, role text, claims jsonb);
INSERT INTO ana_callers VALUES
    ('user',         'authenticated', jsonb_build_object('sub', s(220001), 'role', 'authenticated')),
    ('support',      'authenticated', jsonb_build_object('sub', s(220002), 'role', 'authenticated', 'app_metadata', '{"quota_role": "support"}'::jsonb)),
    ('admin',        'authenticated', jsonb_build_object('sub', s(220004), 'role', 'authenticated', 'app_metadata', '{"quota_role": "admin"}'::jsonb)),
    ('signed out',   'authenticated', '{"role": "authenticated"}'),
    ('anon',         'anon',          '{"role": "anon"}'),
    ('service_role', 'service_role',  '{"role": "service_role"}');
GRANT SELECT ON ana_callers TO PUBLIC;
SELECT c.caller, f.call, pg_temp.request(c.role, c.claims, f.statement) AS outcome
  FROM ana_callers AS c, (VALUES
    (1, 'my_usage_history',  $$SELECT sum(used) FROM quota.my_usage_history('ana_calls', 'day', '2025-03-06', '2025-03-11')$$),
    (2, 'own usage_history', $$SELECT sum(used) FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-06', '2025-03-11')$$),
    (3, 'usage_history',     $$SELECT sum(used) FROM quota.usage_history(s(220002), 'ana_calls', 'day', '2025-03-06', '2025-03-11')$$),
    (4, 'top_consumers',     $$SELECT string_agg(rank || ':' || used, ',') FROM quota.top_consumers('ana_calls', '2025-03-07', '2025-03-10')$$),
    (5, 'denial_spikes',     $$SELECT count(*) FROM quota.denial_spikes('2025-03-20', '2025-03-21')$$),
    (6, 'rate_limit_hits',   $$SELECT sum(hits) FROM quota.rate_limit_hits('2025-03-01', '2025-04-01')$$),
    (7, 'plan_distribution', $$SELECT sum(subjects) FROM quota.plan_distribution() WHERE plan LIKE 'ana%'$$),
    (8, 'active_subjects',   $$SELECT sum(active_subjects) FROM quota.active_subjects('day', '2025-03-07', '2025-03-10')$$),
    (9, 'my_forecast',       $$SELECT status FROM quota.my_forecast('ana_calls')$$),
    (10, 'forecast',         $$SELECT status FROM quota.forecast(s(220006), 'ana_credits')$$),
    (11, 'usage_events',     $$SELECT count(DISTINCT subject) FROM quota.usage_events WHERE subject BETWEEN s(220001) AND s(220009)$$)
  ) AS f(n, call, statement)
 ORDER BY c.caller, f.n;
CREATE ROLE ana_backend;
GRANT USAGE ON SCHEMA quota TO ana_backend;
GRANT SELECT ON ALL TABLES IN SCHEMA quota TO ana_backend;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA quota TO ana_backend;
SET ROLE ana_backend;
SELECT try($$SELECT * FROM quota.top_consumers('ana_calls', '2025-03-07', '2025-03-10')$$);
SELECT count(*) AS rows_it_reads FROM quota.events WHERE subject BETWEEN s(220001) AND s(220009);
RESET ROLE;
ALTER ROLE ana_backend BYPASSRLS;
SET ROLE ana_backend;
SELECT string_agg(rank || ':' || used, ',') AS bypassing_rls FROM quota.top_consumers('ana_calls', '2025-03-07', '2025-03-10');
RESET ROLE;
REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM ana_backend;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM ana_backend;
REVOKE ALL ON SCHEMA quota FROM ana_backend;
DROP ROLE ana_backend;

-- Bad input: a clear error with its SQLSTATE, never a silent NULL.
\set VERBOSITY sqlstate
SELECT n, try(statement) FROM (VALUES
    (1,  $$SELECT * FROM quota.usage_history(NULL, 'ana_calls', 'day', '2025-03-01')$$),
    (2,  $$SELECT * FROM quota.usage_history(s(220001), NULL, 'day', '2025-03-01')$$),
    (3,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', NULL, '2025-03-01')$$),
    (4,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'day', NULL)$$),
    (5,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-01', NULL)$$),
    (6,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'fortnight', '2025-03-01')$$),
    (7,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-02', '2025-03-01')$$),
    (8,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'day', '2025-03-01', '2025-03-01')$$),
    (9,  $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'day', '-infinity', '2025-03-01')$$),
    (10, $$SELECT * FROM quota.usage_history(s(220001), 'no_such_metric', 'day', '2025-03-01')$$),
    (11, $$SELECT * FROM quota.usage_history(s(220001), 'Bad Name', 'day', '2025-03-01')$$),
    (12, $$SELECT * FROM quota.top_consumers('ana_calls', '2025-03-01', max_rows => 0)$$),
    (13, $$SELECT * FROM quota.top_consumers('ana_calls', '2025-03-01', max_rows => NULL)$$),
    (14, $$SELECT * FROM quota.top_consumers('no_such_metric', '2025-03-01')$$),
    (15, $$SELECT * FROM quota.top_consumers('ana_calls', NULL)$$),
    (16, $$SELECT * FROM quota.denial_spikes(min_ratio => -1)$$),
    (17, $$SELECT * FROM quota.denial_spikes(min_denials => 0)$$),
    (18, $$SELECT * FROM quota.denial_spikes(min_ratio => NULL)$$),
    (19, $$SELECT * FROM quota.denial_spikes('2025-03-02', '2025-03-01')$$),
    (20, $$SELECT * FROM quota.rate_limit_hits(only_metric => 'no_such_metric')$$),
    (21, $$SELECT * FROM quota.rate_limit_hits(max_rows => -5)$$),
    (22, $$SELECT * FROM quota.forecast(NULL, 'ana_credits')$$),
    (23, $$SELECT * FROM quota.forecast(s(220006), NULL)$$),
    (24, $$SELECT * FROM quota.forecast(s(220006), 'ana_calls')$$),
    (25, $$SELECT * FROM quota.my_forecast('ana_credits')$$),
    (26, $$SELECT * FROM quota.my_usage_history('ana_calls', 'day', '2025-03-01')$$),
    (27, $$SELECT * FROM quota.plan_distribution(NULL)$$),
    (28, $$SELECT * FROM quota.plan_distribution('-1 day')$$),
    (29, $$SELECT * FROM quota.active_subjects('day', '2025-03-01', '2025-03-02', 'Mars/Olympus_Mons')$$),
    (30, $$SELECT * FROM quota.active_subjects('day', '2025-03-01', '2025-03-02', NULL)$$),
    (31, $$SELECT * FROM quota.active_subjects('minute', '2025-03-01', '2025-03-02')$$),
    (32, $$SELECT * FROM quota.usage_history(s(220001), 'ana_calls', 'hour', '1900-01-01', '2025-03-01')$$),
    (33, $$SELECT * FROM quota.active_subjects('hour', '2024-01-01', '2025-03-01')$$),
    (34, $$SELECT * FROM quota.analytics_buckets('month', '1900-01-01', '2900-01-01')$$)
  ) AS t(n, statement) ORDER BY n;
\set VERBOSITY default
-- At most about 10,000 buckets a call: 32-34 ask for more (an hour's buckets since the year 1
-- are 17.7 million rows, which ran a signed-in user's my_usage_history out of time or memory:
-- HTTP 500 through PostgREST). Exactly 10,000 hours is one call.
SELECT count(*) AS hours FROM quota.analytics_buckets('hour', '2025-01-01 00:00+00', timestamptz '2025-01-01 00:00+00' + interval '10000 hours');
SELECT try($$SELECT count(*) FROM quota.analytics_buckets('hour', '2025-01-01 00:00+00', timestamptz '2025-01-01 00:00+00' + interval '10001 hours')$$) AS one_more;
