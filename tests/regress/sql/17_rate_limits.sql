-- Rate rules (issue 19): a token bucket per (subject, metric, rule), decided with the quota
-- in one step. Calls in one statement share its instant (statement_timestamp()), so a burst
-- in one statement is exact; each call references the series so that it runs per row.
SELECT quota.create_plan('rated', '{
  "ai":  {"limit": 100, "per": "day", "rate": [{"limit": 10, "per": "1 minute", "burst": 5}]},
  "api": {"rate": [{"limit": 100, "per": "1 minute"}, {"limit": 5, "per": "1 second"}]},
  "one": {"limit": 1, "per": "day", "rate": [{"limit": 100, "per": "1 second"}]}
}');
SELECT metric, allowance, period, rate FROM quota.limits WHERE plan = 'rated' ORDER BY metric;
SELECT quota.assign_plan(s(1701), 'rated'), quota.assign_plan(s(1702), 'rated'), quota.assign_plan(s(1703), 'rated');

-- A burst of 8 in one instant: the burst (5) is admitted, 3 are rate_limited and fit again
-- when one unit has come back (1 minute / 10 = 6 s); the quota counted only the 5.
SELECT d.reason, count(*), min(d.retry_after - statement_timestamp()) AS retry_in, max(d.used) AS used
  FROM generate_series(1, 8) AS g, LATERAL quota.consume(s(1701), 'ai', 1 + 0 * g) AS d
 GROUP BY d.reason ORDER BY d.reason;
SELECT used FROM quota.counters WHERE subject = s(1701) AND metric = 'ai';
-- Denials stay in the ledger: "rate limit hits per day" is one query.
SELECT date_trunc('day', created_at) = date_trunc('day', now()) AS today, metric, count(*) AS rate_limit_hits
  FROM quota.events WHERE reason = 'rate_limited' AND subject = s(1701)
 GROUP BY 1, 2;
-- A denial changes no state: the rule's tat is the same before and after.
CREATE TEMP TABLE tat_before AS SELECT per, tat_us FROM quota.rate_state WHERE subject = s(1701) AND metric = 'ai';
SELECT allowed, reason, retry_after > statement_timestamp() AS later FROM quota.consume(s(1701), 'ai');
SELECT (SELECT tat_us FROM quota.rate_state WHERE subject = s(1701) AND metric = 'ai') = (SELECT tat_us FROM tat_before) AS unchanged;
-- check reports the rule without changing it; an amount over the burst never fits.
SELECT allowed, reason, retry_after IS NOT NULL AS has_retry FROM quota.check(s(1701), 'ai');
SELECT allowed, reason, retry_after FROM quota.check(s(1702), 'ai', 6);
SELECT allowed, reason, retry_after FROM quota.consume(s(1702), 'ai', 6);
SELECT (SELECT tat_us FROM quota.rate_state WHERE subject = s(1701) AND metric = 'ai') = (SELECT tat_us FROM tat_before) AS unchanged;
-- usage() shows each rule: remaining now, when the next unit comes back.
SELECT metric, allowance, used,
       jsonb_path_query_array(rates, '$[*].per') AS pers,
       jsonb_path_query_array(rates, '$[*].remaining') AS remaining,
       (rates -> 0 ->> 'next_unit_at')::timestamptz > now() AS next_unit_later
  FROM quota.usage(s(1701)) ORDER BY metric;

-- Two rules, a rate-only metric (no quota): 5 per second admits 5 of 8 in one instant.
SELECT d.reason, count(*), min(d.allowance) AS allowance, min(d.retry_after - statement_timestamp()) AS retry_in
  FROM generate_series(1, 8) AS g, LATERAL quota.consume(s(1701), 'api', 1 + 0 * g) AS d
 GROUP BY d.reason ORDER BY d.reason;

-- A quota denial does not advance the rule: "one" allows 1 a day.
SELECT allowed, reason FROM quota.consume(s(1702), 'one');
CREATE TEMP TABLE one_before AS SELECT tat_us FROM quota.rate_state WHERE subject = s(1702) AND metric = 'one';
SELECT allowed, reason, retry_after = resets_at AS retry_at_window_end FROM quota.consume(s(1702), 'one');
SELECT (SELECT tat_us FROM quota.rate_state WHERE subject = s(1702) AND metric = 'one') = (SELECT tat_us FROM one_before) AS unchanged;

-- consume_many: all or nothing across rules and quotas. s(1701) has no "ai" room now.
SELECT metric, allowed, reason FROM quota.consume_many(s(1701), '{"ai": 1, "one": 1}');
SELECT count(*) AS one_untouched FROM quota.rate_state WHERE subject = s(1701) AND metric = 'one' AND tat_us > 0;
SELECT metric, allowed, reason FROM quota.consume_many(s(1703), '{"ai": 1, "one": 1}');

-- reserve takes the rule's room when the hold is made; settle takes none.
SELECT d.allowed, count(*) FROM generate_series(1, 6) AS g, LATERAL quota.reserve(s(1703), 'ai', 1 + 0 * g, '1 minute') AS d
 GROUP BY d.allowed ORDER BY d.allowed;
SELECT reason, retry_after IS NOT NULL AS has_retry FROM quota.reserve(s(1703), 'ai', 1);
-- record is usage that already happened: no rule applies.
SELECT allowed, reason FROM quota.record(s(1703), 'ai', 3);

-- Overrides: double the rate until a given time; add a rule of its own; clear.
SELECT quota.set_rate_override(s(1702), 'ai', '1 minute', 20, 10, now() + interval '1 day');
SELECT d.reason, count(*) FROM generate_series(1, 12) AS g, LATERAL quota.consume(s(1702), 'ai', 1 + 0 * g) AS d
 GROUP BY d.reason ORDER BY d.reason;
SELECT quota.set_rate_override(s(1703), 'api', '1 hour', 1);
SELECT jsonb_path_query_array(rates, '$[*].per') FROM quota.usage(s(1703)) WHERE metric = 'api';
SELECT d.reason, count(*) FROM generate_series(1, 3) AS g, LATERAL quota.consume(s(1703), 'api', 1 + 0 * g) AS d
 GROUP BY d.reason ORDER BY d.reason;
SELECT quota.clear_rate_override(s(1703), 'api', '60 minutes');
SELECT jsonb_path_query_array(rates, '$[*].per') FROM quota.usage(s(1703)) WHERE metric = 'api';
SELECT action, metric, before IS NULL AS was_new, after ->> 'per' AS per FROM quota.admin_changes
 WHERE action LIKE '%rate_override' ORDER BY change_id;
-- An override ends at expires_at.
SELECT quota.assign_plan(s(1704), 'rated');
SELECT quota.set_rate_override(s(1704), 'api', '1 second', 1, expires_at => clock_timestamp() + interval '1 second');
SELECT jsonb_path_query_array(rates, '$[*].limit') FROM quota.usage(s(1704)) WHERE metric = 'api';
SELECT reason FROM quota.consume(s(1704), 'api');
SELECT reason FROM quota.consume(s(1704), 'api');
SELECT pg_sleep(1.1);
SELECT jsonb_path_query_array(rates, '$[*].limit') FROM quota.usage(s(1704)) WHERE metric = 'api';
-- Consume's fast path caches the rules in force beside the window until the override's
-- expiry: past it, the plan's 5 per second decides again (not the cached 1).
SELECT reason FROM quota.consume(s(1704), 'api');
SELECT reason FROM quota.consume(s(1704), 'api');
SELECT reason FROM quota.consume(s(1704), 'api');
SELECT per, fast, rule_limit, rule_burst, rule_until FROM quota.rate_state WHERE subject = s(1704) ORDER BY per COLLATE "C";
SELECT fast FROM quota.counters WHERE subject = s(1704) AND metric = 'api';

-- require: PT429 with the retry instant; through PostgREST (request.method is set) the same
-- denial is SQLSTATE PGRST with exactly the JSON PostgREST parses: the message an object
-- with string code and message, string or null details and hint; the detail an object with
-- an integer status and string headers, Retry-After in whole seconds.
SELECT try($$SELECT quota.require(s(1701), 'ai')$$) LIKE '%rate limit exceeded for "ai": requested 1, try again at%' AS pt429;
CREATE FUNCTION pg_temp.postgrest_error(statement text) RETURNS TABLE (error_state text, message jsonb, detail jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.method', 'POST', true);
    EXECUTE statement;
    RAISE EXCEPTION 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    PERFORM set_config('request.method', '', true);
    RETURN NEXT;
END $$;
BEGIN;
SELECT error_state,
       jsonb_typeof(message -> 'code') = 'string' AND jsonb_typeof(message -> 'message') = 'string'
         AND jsonb_typeof(message -> 'details') IN ('string', 'null') AND jsonb_typeof(message -> 'hint') IN ('string', 'null') AS message_parses,
       message ->> 'code' AS code,
       (message ->> 'details')::jsonb ->> 'reason' AS reason,
       jsonb_typeof(detail -> 'status') = 'number' AND jsonb_typeof(detail -> 'headers') = 'object' AS detail_parses,
       detail -> 'status' AS status,
       (SELECT bool_and(jsonb_typeof(v) = 'string') FROM jsonb_each(detail -> 'headers') AS h(k, v)) AS headers_are_text,
       (detail -> 'headers' ->> 'Retry-After')::int BETWEEN 1 AND 6 AS retry_after_seconds
  FROM pg_temp.postgrest_error($$SELECT quota.require(s(1701), 'ai')$$);
-- A quota denial retries at the window's end; one only a top-up helps has no Retry-After.
SELECT error_state, message ->> 'code' AS code, (detail -> 'headers' ->> 'Retry-After')::int > 0 AS retry_after,
       detail -> 'status' AS status
  FROM pg_temp.postgrest_error($$SELECT quota.require(s(1702), 'one')$$);
SELECT error_state, detail -> 'headers' AS headers FROM pg_temp.postgrest_error($$SELECT quota.require(s(1702), 'ai', 50)$$);
COMMIT;

-- The pre-request function: per JWT subject, or per client address when anonymous.
SELECT quota.create_plan('visitors', '{"api_requests": {"rate": [{"limit": 2, "per": "1 minute"}]}}', is_default => true);
BEGIN;
SELECT set_config('request.method', 'POST', true), set_config('request.headers', '{"x-forwarded-for": "203.0.113.9, 10.0.0.1"}', true);
SELECT quota.limit_request();
SELECT quota.limit_request();
SELECT error_state, detail -> 'status' AS status FROM pg_temp.postgrest_error($$SELECT quota.limit_request()$$);
SELECT set_config('request.method', 'POST', true);
SELECT subject = quota.subject_for('ip:203.0.113.9') AS per_client_address, count(*) FROM quota.events
 WHERE metric = 'api_requests' GROUP BY 1;
SELECT set_config('request.jwt.claims', json_build_object('sub', s(1705))::text, true);
SELECT quota.limit_request();
SELECT count(*) AS signed_in_requests FROM quota.events WHERE metric = 'api_requests' AND subject = s(1705);
COMMIT;
-- GET and HEAD run read-only: the function only checks, writes nothing, never fails there
-- but with 429 for a bucket already empty.
BEGIN READ ONLY;
SELECT set_config('request.method', 'GET', true), set_config('request.jwt.claims', json_build_object('sub', s(1706))::text, true);
SELECT quota.limit_request();
SELECT quota.limit_request();
SELECT quota.limit_request();
COMMIT;
SELECT count(*) AS get_writes FROM quota.events WHERE subject = s(1706);
BEGIN READ ONLY;
SELECT set_config('request.method', 'GET', true), set_config('request.headers', '{"x-forwarded-for": "203.0.113.9"}', true);
SELECT error_state, detail -> 'status' AS status FROM pg_temp.postgrest_error($$SELECT quota.limit_request()$$);
COMMIT;
-- Behind proxies that append to X-Forwarded-For the client writes its first entries: with
-- quota.trusted_proxies = N the address is the N-th from the right (the leftmost when the
-- header has fewer); a setting that is no number is 22023.
BEGIN;
SELECT set_config('request.method', 'POST', true), set_config('request.headers', '{"x-forwarded-for": "192.0.2.66, 198.51.100.7, 10.0.0.1"}', true);
SET LOCAL quota.trusted_proxies = 2;
SELECT quota.limit_request();
SET LOCAL quota.trusted_proxies = 1;
SELECT quota.limit_request();
SET LOCAL quota.trusted_proxies = 9;
SELECT quota.limit_request();
SELECT a.address, count(e.event_id) AS requests
  FROM (VALUES ('192.0.2.66'), ('198.51.100.7'), ('10.0.0.1')) AS a (address)
  LEFT JOIN quota.events AS e ON e.subject = quota.subject_for('ip:' || a.address) AND e.metric = 'api_requests'
 GROUP BY 1 ORDER BY 1;
SET LOCAL quota.trusted_proxies = 'two';
SELECT try($$SELECT quota.limit_request()$$);
COMMIT;

-- Bad input: SQLSTATE 22023 naming the key or argument, with a hint.
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 0, "per": "1 second"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": -1, "per": "1 second"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 1, "per": "1 month"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 1, "per": "fortnight"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 1, "per": "1 second", "burst": 0}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 1, "per": "1 second", "burts": 2}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"per": "1 second"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": [{"limit": 1, "per": "1 second"}, {"limit": 2, "per": "1 second"}]}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": {"limit": 1}}}')$$);
SELECT try($$SELECT quota.set_limits('rated', '{"x": {"rate": []}}')$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', '1 month', 1)$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', '1 minute', 0)$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', '1 minute', 1, 0)$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', '1 minute', 1, expires_at => now() - interval '1 day')$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'nope', '1 minute', 1)$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', NULL, 1)$$);
SELECT try($$SELECT quota.set_rate_override(s(1701), 'ai', '1 minute', NULL)$$);
SELECT try($$SELECT quota.clear_rate_override(s(1701), 'ai', 'soon')$$);

-- Denials of a window marked for the fast path with rules cached beside it are decided there
-- too, without resolving the subject's plan (no scan of quota.assignments): a rule's denial
-- first, else the quota's. The calls of one statement share its instant.
CREATE FUNCTION public.rated_path(subject uuid, metric text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    scans_before bigint := public.assignment_scans();
    decided quota.decision := quota.consume(subject, metric);
BEGIN
    RETURN format('%s: allowed=%s reason=%s retry=%s',
                  CASE WHEN public.assignment_scans()
                            > scans_before THEN 'slow' ELSE 'fast' END,
                  decided.allowed, decided.reason, decided.retry_after IS NOT NULL);
END $$;
SELECT quota.assign_plan(s(1730), 'rated');
SELECT rated_path(s(1730), 'ai') FROM generate_series(1, 7);
SELECT rated_path(s(1730), 'one') FROM generate_series(1, 3);
SELECT count(*) FILTER (WHERE reason = 'rate_limited') AS rate_limited, count(*) FILTER (WHERE reason = 'quota_exceeded') AS quota_exceeded
  FROM quota.events WHERE subject = s(1730) AND kind = 'denial';
SELECT used FROM quota.counters WHERE subject = s(1730) ORDER BY metric;
