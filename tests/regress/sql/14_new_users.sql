-- What new users tripped over (0.7.0): each case below behaved otherwise in 0.6.0.
-- Instants that depend on today's date are masked.
CREATE FUNCTION pg_temp.masked(message text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT regexp_replace(message, '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00', '<instant>', 'g') $$;
-- The DETAIL of a raised denial, masked.
CREATE FUNCTION pg_temp.denial_detail(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE detail text;
BEGIN
    EXECUTE statement;
    RETURN 'not raised';
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN pg_temp.masked(detail);
END $$;

-- 1. A plan change keeps the subject's subscription cycle and its usage; an explicit
--    anchor restarts the cycle.
SELECT quota.create_plan('video_free', '{"videos": {"limit": 5, "per": "month", "anchor": "subscription"}, "exports": {"limit": 3, "per": "day"}}');
SELECT quota.create_plan('video_creator', '{"videos": {"limit": 50, "per": "month", "anchor": "subscription"}, "exports": {"limit": 30, "per": "day"}}');
SELECT quota.assign_plan(s(1400), 'video_free', anchor => now() - interval '12 days');
SELECT (quota.consume(s(1400), 'videos', 4)).used AS videos, (quota.consume(s(1400), 'exports', 2)).used AS exports;
SELECT quota.assign_plan(s(1400), 'video_creator');  -- the upgrade on day 12
SELECT u.metric, u.used, u.allowance, u.window_start = a.anchor AS same_cycle
  FROM quota.usage(s(1400)) AS u, quota.assignments AS a WHERE a.subject = s(1400) ORDER BY u.metric;
SELECT quota.assign_plan(s(1400), 'video_free');     -- and the downgrade
SELECT allowed, used, allowance FROM quota.consume(s(1400), 'videos', 2);
SELECT allowed, used, allowance FROM quota.consume(s(1400), 'videos', 1);
SELECT quota.assign_plan(s(1400), 'video_free', anchor => now());  -- restart the cycle
SELECT metric, used FROM quota.usage(s(1400)) ORDER BY metric;
-- A new subject's cycle starts at its assignment; a lazily assigned one keeps its first use.
SELECT quota.assign_plan(s(1401), 'video_creator');
SELECT anchor BETWEEN now() - interval '1 minute' AND now() AS anchored_now FROM quota.assignments WHERE subject = s(1401);
SELECT quota.create_plan('video_trial', '{"videos": {"limit": 1, "per": "month", "anchor": "subscription"}}', is_default => true);
SELECT allowed FROM quota.consume(s(1402), 'videos');
SELECT anchor AS trial_anchor FROM quota.assignments WHERE subject = s(1402) \gset
SELECT quota.assign_plan(s(1402), 'video_creator');
SELECT used, window_start = :'trial_anchor'::timestamptz AS same_cycle,
       (SELECT anchor FROM quota.assignments WHERE subject = s(1402)) = :'trial_anchor'::timestamptz AS anchor_kept
  FROM quota.usage(s(1402)) WHERE metric = 'videos';
UPDATE quota.plans SET is_default = false WHERE plan = 'video_trial';

-- 2. check reports the window as it is now; allowed says whether the amount fits now.
SELECT quota.create_plan('chat', '{"ai_requests": {"limit": 10, "per": "day"}, "tokens": {"limit": 1000, "per": "month"}}');
SELECT quota.assign_plan(s(1403), 'chat');
SELECT used FROM quota.consume(s(1403), 'ai_requests', 4);
SELECT allowed, used, reserved, remaining, from_allowance, event_id FROM quota.check(s(1403), 'ai_requests');
SELECT allowed, used, remaining FROM quota.check(s(1403), 'ai_requests', 6);
SELECT allowed, used, remaining, reason FROM quota.check(s(1403), 'ai_requests', 7);
SELECT allowed FROM quota.reserve(s(1403), 'ai_requests', 2);
SELECT allowed, used, reserved, remaining FROM quota.check(s(1403), 'ai_requests', 4);
SELECT allowed, used, reserved, remaining FROM quota.check(s(1403), 'ai_requests', 5);
SELECT quota.grant(s(1403), 'ai_requests', 3) IS NOT NULL AS granted;
SELECT allowed, used, remaining, from_allowance, from_grants FROM quota.check(s(1403), 'ai_requests', 5);
SELECT used, remaining FROM quota.consume(s(1403), 'ai_requests', 1);  -- consume reports after

-- 3. A denial says what was asked and what is available.
SELECT quota.create_plan('wallet', '{"credits": {"limit": 0, "per": "lifetime"}}');
SELECT quota.assign_plan(s(1404), 'wallet');
SELECT quota.grant(s(1404), 'credits', 480) IS NOT NULL AS granted;
SELECT try($$SELECT quota.require(s(1404), 'credits', 500)$$);
SELECT pg_temp.denial_detail($$SELECT quota.require(s(1404), 'credits', 500)$$);
-- A daily window with allowance left, a grant and a hold: 2 + 3 - 2 = 3 available.
SELECT quota.assign_plan(s(1405), 'chat');
SELECT used FROM quota.consume(s(1405), 'ai_requests', 8);
SELECT quota.grant(s(1405), 'ai_requests', 3) IS NOT NULL AS granted;
SELECT allowed FROM quota.reserve(s(1405), 'ai_requests', 2);
SELECT pg_temp.masked(try($$SELECT quota.require(s(1405), 'ai_requests', 5)$$));
SELECT pg_temp.denial_detail($$SELECT quota.require(s(1405), 'ai_requests', 5)$$);
-- Given the decision's remaining, explain_denial words that decision: the grants it counted
-- are what remaining adds to the allowance's room beside the holds (2 + g - 2 = 3: 3), found
-- without a read (the raising functions call it so). s(1404) holds 480 in grants of
-- credits, not of ai_requests: none are read here.
SELECT message FROM quota.explain_denial(s(1404), 'ai_requests', 5, 8, 2, 10, NULL, 3);
-- Where remaining cannot tell them (nothing left beside holds that keep more than the room),
-- or is NULL, or is no balance's (below the room without holds), the grants are read now:
-- s(1405)'s 3.
SELECT message FROM quota.explain_denial(s(1405), 'ai_requests', 5, 8, 9, 10, NULL, 0);
SELECT message FROM quota.explain_denial(s(1405), 'ai_requests', 5, 8, 2, 10, NULL, NULL);
SELECT message FROM quota.explain_denial(s(1405), 'ai_requests', 5, 8, 0, 10, NULL, 1);
-- Nothing left, and the holds keep no more than the allowance left: no grants, without a read
-- (s(1405) has 3).
SELECT message FROM quota.explain_denial(s(1405), 'ai_requests', 5, 10, 0, 10, NULL, 0);
SELECT message FROM quota.explain_denial(s(1405), 'ai_requests', 5, 8, 2, 10, NULL, 0);
-- The enforce trigger raises through require: "at most 1 project".
SELECT quota.create_plan('projects_one', '{"projects": {"limit": 1, "per": "lifetime"}}');
SELECT quota.assign_plan(s(1406), 'projects_one');
CREATE TABLE public.new_user_projects (id serial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('public.new_user_projects', 'projects');
INSERT INTO public.new_user_projects (user_id) VALUES (s(1406));
SELECT try($$INSERT INTO public.new_user_projects (user_id) VALUES (s(1406))$$);

-- 4. One request id is the key of a request and of its tokens.
SELECT quota.assign_plan(s(1407), 'chat');
SELECT metric, allowed, replayed FROM quota.consume(s(1407), 'ai_requests', 1, 'req-1');
SELECT metric, allowed, replayed FROM quota.consume(s(1407), 'tokens', 120, 'req-1');
SELECT metric, allowed, replayed, used FROM quota.consume(s(1407), 'tokens', 120, 'req-1');
SELECT try($$SELECT quota.consume(s(1407), 'tokens', 130, 'req-1')$$);
SELECT (quota.record(s(1407), 'ai_requests', 1, 'rec-1')).replayed, (quota.record(s(1407), 'tokens', 10, 'rec-1')).replayed;
SELECT (quota.record(s(1407), 'tokens', 10, 'rec-1')).replayed AS record_replayed;
SELECT a.replayed, b.replayed, a.reservation_id <> b.reservation_id AS two_holds
  FROM quota.reserve(s(1407), 'ai_requests', 1, idempotency_key => 'res-1') AS a,
       quota.reserve(s(1407), 'tokens', 100, idempotency_key => 'res-1') AS b;
SELECT replayed FROM quota.reserve(s(1407), 'tokens', 100, idempotency_key => 'res-1');

-- 5. Many metrics, one decision: all or nothing, one ledger row per metric, one key.
SELECT quota.assign_plan(s(1408), 'chat');
SELECT metric, allowed, reason, amount, used, remaining FROM quota.consume_many(s(1408), '{"tokens": 600, "ai_requests": 1}');
SELECT metric, allowed, reason, amount, from_allowance, used, remaining, event_id IS NULL AS no_event
  FROM quota.consume_many(s(1408), '{"tokens": 500, "ai_requests": 1}');
SELECT metric, used FROM quota.usage(s(1408)) ORDER BY metric;
SELECT kind, metric, amount FROM quota.events WHERE subject = s(1408) ORDER BY event_id;
SELECT metric, allowed, used, replayed FROM quota.consume_many(s(1408), '{"tokens": 100, "ai_requests": 1}', 'call-7', '{"route": "/chat"}');
SELECT metric, allowed, used, replayed FROM quota.consume_many(s(1408), '{"ai_requests": 1, "tokens": 100}', 'call-7');
-- Another bundle under the key is 23505: part of it, another amount, one more metric.
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"ai_requests": 1}', 'call-7')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"ai_requests": 1, "tokens": 101}', 'call-7')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"ai_requests": 1, "tokens": 100, "videos": 1}', 'call-7')$$);
SELECT metric, metadata FROM quota.events WHERE subject = s(1408) AND idempotency_key = 'call-7' ORDER BY metric;
-- A single consume of one metric of the bundle under its key replays that metric.
SELECT metric, replayed FROM quota.consume(s(1408), 'tokens', 100, 'call-7');
-- Keys are scoped to (subject, metric): what the key paid for other metrics in other
-- transactions is no part of a bundle. Its retry replays after a single call used the key
-- for another metric, a first bundle after such a call is new, and a bundle that names a
-- metric of each is 23505.
SELECT quota.assign_plan(s(1411), 'chat');
SELECT metric, used, replayed FROM quota.consume_many(s(1411), '{"ai_requests": 1}', 'call-8');
SELECT metric, used, replayed FROM quota.consume(s(1411), 'tokens', 30, 'call-8');
SELECT metric, used, replayed FROM quota.consume_many(s(1411), '{"ai_requests": 1}', 'call-8');
SELECT metric, used, replayed FROM quota.consume(s(1411), 'tokens', 20, 'call-9');
SELECT metric, used, replayed FROM quota.consume_many(s(1411), '{"ai_requests": 1}', 'call-9');
SELECT try($$SELECT * FROM quota.consume_many(s(1411), '{"ai_requests": 1, "tokens": 20}', 'call-8')$$);
-- Grants pay in a bundle as in consume.
SELECT quota.grant(s(1408), 'tokens', 50) IS NOT NULL AS granted;
SELECT metric, allowed, from_allowance, from_grants, remaining FROM quota.consume_many(s(1408), '{"tokens": 320, "ai_requests": 1}');
-- A subject without a plan (and no default plan): every metric says no_plan.
SELECT metric, allowed, reason FROM quota.consume_many(s(1409), '{"tokens": 1, "ai_requests": 1}');
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '[{"tokens": 1}]')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{}')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"tokens": 0}')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"tokens": 1.5}')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"Tokens": 1}')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"no_such_metric": 1}')$$);
SELECT try($$SELECT * FROM quota.consume_many(NULL, '{"tokens": 1}')$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), NULL)$$);
SELECT try($$SELECT * FROM quota.consume_many(s(1408), '{"tokens": 1}', '')$$);
-- require_many raises for the first denied metric; nothing of the bundle is consumed.
SELECT pg_temp.masked(try($$SELECT * FROM quota.require_many(s(1408), '{"ai_requests": 1, "tokens": 900}')$$));
SELECT metric, allowed FROM quota.require_many(s(1408), '{"ai_requests": 1, "tokens": 1}');
SELECT try($$SELECT * FROM quota.require_many(s(1409), '{"tokens": 1}')$$);

-- 6. A reserve that raises.
SELECT quota.assign_plan(s(1410), 'chat');
SELECT allowed, amount, reserved, reservation_id IS NOT NULL AS held FROM quota.require_reservation(s(1410), 'tokens', 900);
SELECT pg_temp.masked(try($$SELECT quota.require_reservation(s(1410), 'tokens', 200)$$));
SELECT try($$SELECT quota.require_reservation(s(1410), 'tokens', NULL)$$);

SELECT count(*) AS audit_mismatches FROM quota.audit();
