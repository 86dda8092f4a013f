-- Plans, consumption, denial, all-or-nothing, lazy default plan, overrides, resets, usage.
SELECT quota.create_plan('free', '{"ai_requests": {"limit": 10, "per": "day"},
                                   "tokens": {"limit": 10000, "per": "month", "anchor": "subscription"},
                                   "projects": {"limit": 3, "per": "lifetime"}}', is_default => true);
SELECT quota.create_plan('pro', '{"ai_requests": {"limit": 1000, "per": "day"},
                                  "tokens": {"limit": 1000000, "per": "month"},
                                  "projects": {"limit": null},
                                  "exports": {"limit": 20, "per": "month", "time_zone": "America/New_York"}}');
SELECT plan, is_default FROM quota.plans ORDER BY plan;
SELECT plan, metric, allowance, period, anchor, time_zone FROM quota.limits ORDER BY plan, metric;

-- An unknown subject gets the default plan on first consume.
SELECT allowed, amount, from_allowance, from_grants, used, allowance, remaining, replayed, reason,
       window_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start,
       resets_at = window_start + interval '1 day' AS day_end
  FROM quota.consume(s(1), 'ai_requests');
SELECT plan, anchor = assigned_at AS anchored_at_first_consume FROM quota.assignments WHERE subject = s(1);

-- All or nothing: 9 fits exactly, then 1 more is denied and nothing is consumed.
SELECT allowed, used, remaining, reason FROM quota.consume(s(1), 'ai_requests', 9);
SELECT allowed, used, remaining, reason, from_allowance FROM quota.consume(s(1), 'ai_requests', 1);
SELECT allowed, used, remaining, reason FROM quota.consume(s(1), 'ai_requests', 11);
-- The denials are in the ledger; the counter equals the consumed events.
SELECT kind, amount, from_allowance, used, reason FROM quota.events WHERE subject = s(1) ORDER BY event_id;
SELECT used FROM quota.counters WHERE subject = s(1) AND metric = 'ai_requests';

-- check() decides like consume() but writes nothing.
SELECT allowed, used, remaining, reason, event_id FROM quota.check(s(1), 'ai_requests');
SELECT allowed, used, remaining FROM quota.check(s(2), 'ai_requests', 10);
SELECT count(*) AS assignments_of_s2 FROM quota.assignments WHERE subject = s(2);
SELECT count(*) AS events_of_s2 FROM quota.events WHERE subject = s(2);
-- check() does not even assign a transaction id (it is safe in read-only transactions).
BEGIN READ ONLY;
SELECT allowed FROM quota.check(s(2), 'tokens', 5);
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid;
COMMIT;

-- A metric missing from the subject's plan has allowance 0.
SELECT allowed, allowance, remaining, reason, window_start, resets_at FROM quota.consume(s(1), 'exports');

-- Lifetime windows: no reset time.
SELECT allowed, used, window_start, resets_at FROM quota.consume(s(1), 'projects', 3);
SELECT allowed, used, reason FROM quota.consume(s(1), 'projects');

-- Unlimited allowance still counts usage.
SELECT quota.assign_plan(s(3), 'pro');
SELECT allowed, used, allowance, remaining FROM quota.consume(s(3), 'projects', 1000000);
SELECT allowed, used, allowance, remaining FROM quota.consume(s(3), 'projects', 1);

-- Time zones: the pro plan counts exports in New York months.
SELECT window_start = date_trunc('month', now() AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York' AS ny_month_start,
       resets_at = (date_trunc('month', now() AT TIME ZONE 'America/New_York') + interval '1 month') AT TIME ZONE 'America/New_York' AS ny_month_end
  FROM quota.consume(s(3), 'exports');
-- The session's TimeZone changes nothing.
SET TimeZone = 'Asia/Tokyo';
SELECT window_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS still_utc_day
  FROM quota.check(s(1), 'ai_requests');
RESET TimeZone;

-- Subscription anchors: monthly from Jan 31 gives Feb 28, never chained.
SELECT quota.assign_plan(s(4), 'free', anchor => '2025-01-31 10:00+00');
SELECT used, window_start >= '2025-01-31 10:00+00' AS after_anchor,
       extract(day FROM window_start AT TIME ZONE 'UTC') IN (28, 29, 30, 31) AS month_end_clamped,
       resets_at > now() AS current
  FROM quota.consume(s(4), 'tokens', 500);

-- Overrides replace the plan's allowance; NULL = unlimited; clearing restores the plan.
SELECT quota.set_override(s(1), 'ai_requests', 12);
SELECT allowed, used, allowance, remaining FROM quota.consume(s(1), 'ai_requests', 2);
SELECT quota.set_override(s(1), 'ai_requests', NULL);
SELECT allowed, allowance, remaining FROM quota.consume(s(1), 'ai_requests', 100);
SELECT quota.clear_override(s(1), 'ai_requests');
SELECT allowed, used, allowance FROM quota.check(s(1), 'ai_requests');
SELECT quota.set_override(s(1), 'exports', 2);
SELECT allowed, used, allowance, resets_at FROM quota.consume(s(1), 'exports');

-- Reset starts the window over now; the old window stays as history.
SELECT quota.reset(s(1), 'ai_requests');
SELECT allowed, used, remaining,
       window_start = (SELECT reset_at FROM quota.resets WHERE subject = s(1) AND metric = 'ai_requests') AS starts_at_reset,
       resets_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' AS same_end
  FROM quota.consume(s(1), 'ai_requests');
SELECT count(*) AS windows_kept FROM quota.counters WHERE subject = s(1) AND metric = 'ai_requests';
SELECT quota.reset(s(1));
SELECT metric, used FROM quota.usage(s(1));
SELECT kind, metric, reason FROM quota.events WHERE subject = s(1) AND kind = 'reset' ORDER BY event_id;

-- Plan changes: counting continues in the same window with the new allowance.
SELECT allowed, used, allowance FROM quota.consume(s(1), 'ai_requests', 3);
SELECT quota.assign_plan(s(1), 'pro');
SELECT allowed, used, allowance FROM quota.consume(s(1), 'ai_requests', 500);

-- usage(): one row per metric of the plan.
SELECT metric, used, allowance, remaining, grants_remaining, percent_used,
       resets_at IS NULL AS lifetime
  FROM quota.usage(s(1));
SELECT metric, used, allowance, remaining, percent_used FROM quota.usage(s(2));

-- set_limits() changes a plan in place: new metrics are added, named ones replaced,
-- others kept.
SELECT quota.set_limits('free', '{"ai_requests": {"limit": 20, "per": "day"}, "exports": {"limit": 1, "per": "week"}}');
SELECT metric, allowance, period FROM quota.limits WHERE plan = 'free' ORDER BY metric;
SELECT allowed, used, allowance FROM quota.check(s(2), 'ai_requests', 20);

-- The default plan can move; without any default, unknown subjects are denied with no_plan.
SELECT quota.create_plan('starter', '{"ai_requests": {"limit": 5, "per": "hour"}}', is_default => true);
SELECT plan FROM quota.plans WHERE is_default;
UPDATE quota.plans SET is_default = false;
SELECT allowed, used, allowance, remaining, reason, window_start, resets_at FROM quota.consume(s(9), 'ai_requests');
SELECT kind, reason FROM quota.events WHERE subject = s(9);
SELECT allowed, reason FROM quota.check(s(9), 'ai_requests');
SELECT count(*) FROM quota.usage(s(9));

-- The ledger explains every counter.
SELECT count(*) AS audit_mismatches FROM quota.audit();
