-- Rollover (0.11.0): a limit's "rollover" carries the unused allowance of a window into the
-- next ones, at most "max" out of each window, spendable for "expires_after" windows. A carry
-- becomes a grant (reason 'rollover') the first time a call that writes touches the new
-- window, once; it is spent after the allowance and before every other grant, shown in
-- usage() as rollover_remaining, and taken back by a plan change. Subjects 230001...
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": 10, "per": "lifetime", "rollover": {"max": 5}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": null, "per": "day", "rollover": {"max": 5}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": 10, "per": "day", "rollover": {"max": 0}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": 10, "per": "day", "rollover": {"max": 5, "expires_after": 101}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": 10, "per": "day", "rollover": {"max": 5, "expires": 2}}}')$$);
SELECT try($$SELECT quota.create_plan('bad_roll', '{"calls": {"limit": 10, "per": "day", "rollover": true}}')$$);

SELECT quota.create_plan('rolling', '{"calls": {"limit": 100, "per": "day", "rollover": {"max": 50, "expires_after": 2}},
                                      "tokens": {"limit": 1000, "per": "month", "anchor": "subscription", "rollover": {"max": null}},
                                      "seats": {"limit": 3, "per": "lifetime"}}');
SELECT quota.create_plan('flat', '{"calls": {"limit": 100, "per": "day"}}');
SELECT metric, allowance, rollover_max, rollover_windows FROM quota.limits WHERE plan = 'rolling' ORDER BY metric;

-- A subject on the plan since `since`: the assignment is backdated as if it had been made then
-- (only windows the plan governed all of carry).
CREATE FUNCTION pg_temp.on_plan_since(subject uuid, plan text, since interval) RETURNS void LANGUAGE sql AS $$
    SELECT quota.assign_plan(subject, plan, now() - since);
    UPDATE quota.assignments SET assigned_at = now() - since WHERE assignments.subject = on_plan_since.subject;
$$;
CREATE FUNCTION pg_temp.days_ago(n int) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT date_trunc('day', now(), 'UTC') - make_interval(days => n) + interval '12 hours'
$$;
CREATE FUNCTION pg_temp.carries(subject uuid) RETURNS TABLE (carried_from_days_ago int, amount bigint, remaining bigint,
                                                            lives_days int, reason text, first boolean, revoked boolean)
LANGUAGE sql AS $$
    SELECT (date_trunc('day', now(), 'UTC')::date - rollover_of::date), amount, remaining,
           (expires_at::date - date_trunc('day', now(), 'UTC')::date), reason, priority = -2147483648, revoked_at IS NOT NULL
      FROM quota.grants WHERE grants.subject = carries.subject AND rollover_of IS NOT NULL ORDER BY rollover_of
$$;
SET TimeZone = 'UTC';

-- 230001 on the plan for 10 days: two days ago it used 70 (30 left), yesterday 95 (5 left),
-- three days ago nothing (its carry expired at the end of yesterday).
SELECT pg_temp.on_plan_since(s(230001), 'rolling', '10 days');
SELECT used FROM quota.record(s(230001), 'calls', 70, occurred_at => pg_temp.days_ago(2));
SELECT used FROM quota.record(s(230001), 'calls', 95, occurred_at => pg_temp.days_ago(1));
-- Records of earlier windows materialise nothing: they may still change what a window left.
SELECT count(*) AS grants FROM quota.grants WHERE subject = s(230001);
-- Readers see the pending carries (30 + 5) apart from the allowance; nothing is written.
SELECT metric, used, allowance, remaining, grants_remaining, rollover_remaining FROM quota.usage(s(230001)) WHERE metric = 'calls';
SELECT allowed, from_allowance, from_grants, remaining FROM quota.check(s(230001), 'calls', 135);
SELECT allowed FROM quota.check(s(230001), 'calls', 136);
SELECT count(*) AS grants FROM quota.grants WHERE subject = s(230001);
-- The first write of the window makes them grants; the allowance pays first, then the carry
-- that expires first.
SELECT allowed, from_allowance, from_grants, remaining FROM quota.consume(s(230001), 'calls', 130);
SELECT * FROM pg_temp.carries(s(230001));
SELECT g.amount FROM quota.event_grants AS g JOIN quota.events AS e USING (subject, event_id)
 WHERE e.subject = s(230001) AND e.kind = 'consume';
SELECT allowed, from_grants, remaining FROM quota.consume(s(230001), 'calls', 6);
SELECT allowed, from_grants, remaining FROM quota.consume(s(230001), 'calls', 5);
SELECT metric, used, remaining, grants_remaining, rollover_remaining FROM quota.usage(s(230001)) WHERE metric = 'calls';
-- Later writes find them made: once, however many calls touch the window.
SELECT allowed FROM quota.consume(s(230001), 'calls', 1);
SELECT count(*) AS grants FROM quota.grants WHERE subject = s(230001);

-- 230002 used nothing for days: each of the two windows before today carries its whole
-- allowance, at most 50; bonus grants come after the carries whatever their priority.
SELECT pg_temp.on_plan_since(s(230002), 'rolling', '30 days');
SELECT quota.grant(s(230002), 'calls', 20, priority => -5, reason => 'bonus') IS NOT NULL AS granted;
SELECT allowed, from_allowance, from_grants, remaining FROM quota.consume(s(230002), 'calls', 190);
SELECT * FROM pg_temp.carries(s(230002));
SELECT remaining FROM quota.grants WHERE subject = s(230002) AND reason = 'bonus';

-- A sign-up's first, partial window carries nothing, nor do windows before it: a new
-- subject has no rollover.
SELECT quota.assign_plan(s(230003), 'rolling');
SELECT rollover_remaining FROM quota.usage(s(230003)) WHERE metric = 'calls';
-- On the plan since yesterday noon: yesterday began before, so it carries nothing; on the
-- plan since yesterday began, it does.
SELECT pg_temp.on_plan_since(s(230004), 'rolling', now() - pg_temp.days_ago(1));
SELECT rollover_remaining FROM quota.usage(s(230004)) WHERE metric = 'calls';
SELECT pg_temp.on_plan_since(s(230004), 'rolling', now() - pg_temp.days_ago(1) + interval '12 hours');
SELECT rollover_remaining FROM quota.usage(s(230004)) WHERE metric = 'calls';

-- A reset yesterday: what the window used since the reset is what it spent of its allowance.
SELECT pg_temp.on_plan_since(s(230005), 'rolling', '10 days');
SELECT used FROM quota.record(s(230005), 'calls', 90, occurred_at => pg_temp.days_ago(1) - interval '2 hours');
INSERT INTO quota.resets (subject, metric, reset_at) VALUES (s(230005), 'calls', pg_temp.days_ago(1));
SELECT used FROM quota.record(s(230005), 'calls', 80, occurred_at => pg_temp.days_ago(1) + interval '1 hour');
SELECT rollover_remaining FROM quota.usage(s(230005)) WHERE metric = 'calls';

-- Monthly subscription windows without a cap: last month's whole unused allowance.
SELECT pg_temp.on_plan_since(s(230006), 'rolling', '75 days');
SELECT used FROM quota.record(s(230006), 'tokens', 400, occurred_at => now() - interval '40 days');
SELECT metric, allowance, rollover_remaining FROM quota.usage(s(230006)) WHERE metric = 'tokens';

-- A plan change takes back what is left of the carries (they were the old plan's
-- allowance), and the window it happens in carries nothing; assigning the same plan again
-- changes neither.
SELECT pg_temp.on_plan_since(s(230007), 'rolling', '10 days');
SELECT allowed, from_grants FROM quota.consume(s(230007), 'calls', 120);
SELECT quota.assign_plan(s(230007), 'rolling');
SELECT rollover_remaining FROM quota.usage(s(230007)) WHERE metric = 'calls';
SELECT assigned_at < now() - interval '9 days' AS assigned_long_ago FROM quota.assignments WHERE subject = s(230007);
SELECT quota.assign_plan(s(230007), 'flat');
SELECT * FROM pg_temp.carries(s(230007));
SELECT remaining, grants_remaining, rollover_remaining FROM quota.usage(s(230007)) WHERE metric = 'calls';
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(230007), 'calls', 1);
SELECT quota.assign_plan(s(230007), 'rolling');
SELECT rollover_remaining FROM quota.usage(s(230007)) WHERE metric = 'calls';

-- A plan that stops rolling over makes no new carries; those made stay grants until they
-- expire (expires_after 1: the end of today).
SELECT quota.create_plan('rolling_off', '{"calls": {"limit": 100, "per": "day", "rollover": {"max": 10}}}');
SELECT pg_temp.on_plan_since(s(230009), 'rolling_off', '10 days');
SELECT allowed, from_grants FROM quota.consume(s(230009), 'calls', 1);
SELECT quota.set_limits('rolling_off', '{"calls": {"limit": 100, "per": "day"}}');
SELECT rollover_remaining FROM quota.usage(s(230009)) WHERE metric = 'calls';
SELECT * FROM pg_temp.carries(s(230009));

-- What a signed-in user reads of their own: usage and their carries' grants.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', jsonb_build_object('sub', s(230002), 'role', 'authenticated')::text, true) IS NOT NULL AS signed_in;
SELECT metric, rollover_remaining FROM quota.my_usage() WHERE metric = 'calls';
SELECT count(*) AS own_carries, count(*) FILTER (WHERE subject <> s(230002)) AS others FROM quota.grants WHERE rollover_of IS NOT NULL;
ROLLBACK;

-- Every carry is a grant the ledger accounts for.
SELECT * FROM quota.audit() WHERE subject IN (SELECT s(n) FROM generate_series(230001, 230009) AS n);
RESET TimeZone;
