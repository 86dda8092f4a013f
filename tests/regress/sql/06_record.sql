-- record(): usage that already happened. Never denies; counts into the window that
-- contains occurred_at; past allowance and grants it is overage, counted and flagged.
SELECT quota.create_plan('metered', '{"tokens": {"limit": 100, "per": "day"}}');
SELECT quota.assign_plan(s(60), 'metered', anchor => now() - interval '10 days');

SELECT allowed, from_allowance, overage, used, remaining, reason FROM quota.record(s(60), 'tokens', 60);
SELECT allowed, from_allowance, overage, used, remaining, reason FROM quota.record(s(60), 'tokens', 70);
-- A late event from yesterday lands in yesterday's window, not today's.
SELECT allowed, used, reason,
       window_start = date_trunc('day', (now() - interval '1 day') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS yesterday
  FROM quota.record(s(60), 'tokens', 30, occurred_at => now() - interval '1 day');
SELECT used FROM quota.check(s(60), 'tokens', 1);
-- Grants pay before overage.
SELECT quota.grant(s(60), 'tokens', 50) IS NOT NULL AS granted;
SELECT from_allowance, from_grants, overage, reason FROM quota.record(s(60), 'tokens', 60);
-- Idempotent on the key; another amount under the key is a conflict.
SELECT used, replayed FROM quota.record(s(60), 'tokens', 5, idempotency_key => 'sync-1', metadata => '{"device": "ipad"}');
SELECT used, replayed FROM quota.record(s(60), 'tokens', 5, idempotency_key => 'sync-1');
SELECT try($$SELECT quota.record(s(60), 'tokens', 6, idempotency_key => 'sync-1')$$);
SELECT kind, amount, overage, metadata->>'device' AS device FROM quota.events
 WHERE subject = s(60) AND kind = 'record' ORDER BY event_id DESC LIMIT 1;

-- Without any plan, record still counts (it never denies), flagged no_plan.
SELECT allowed, from_allowance, overage, used, reason FROM quota.record(s(63), 'tokens', 4);

-- record_batch(): one call, each event idempotent on its own key; a replayed batch
-- changes nothing.
SELECT quota.assign_plan(s(61), 'metered');
SELECT allowed, amount, replayed FROM quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(61), 'metric', 'tokens', 'amount', 10, 'idempotency_key', 'b1'),
    jsonb_build_object('subject', s(61), 'metric', 'tokens', 'amount', 20, 'idempotency_key', 'b2',
                       'occurred_at', to_char((now() - interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                       'metadata', jsonb_build_object('model', 'small')),
    jsonb_build_object('subject', s(61), 'metric', 'tokens', 'amount', 30)));
SELECT allowed, amount, replayed FROM quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(61), 'metric', 'tokens', 'amount', 20, 'idempotency_key', 'b2',
                       'occurred_at', to_char((now() - interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
    jsonb_build_object('subject', s(61), 'metric', 'tokens', 'amount', 10, 'idempotency_key', 'b1')));
SELECT window_start < now() - interval '2 days' AS three_days_ago, used FROM quota.counters WHERE subject = s(61) ORDER BY window_start;
SELECT count(*) FROM quota.record_batch('[]');

-- A batch with one malformed event fails naming its index, and writes nothing.
SELECT try($$SELECT quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(62), 'metric', 'tokens', 'amount', 1),
    jsonb_build_object('subject', s(62), 'metric', 'tokens', 'amount', 0)))$$);
SELECT try($$SELECT quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(62), 'metric', 'tokens', 'amount', 1),
    jsonb_build_object('subject', s(62), 'metric', 'nope', 'amount', 1)))$$);
SELECT try($$SELECT quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(62), 'metric', 'tokens', 'amount', 1),
    jsonb_build_object('subject', 'not-a-uuid', 'metric', 'tokens', 'amount', 1)))$$);
SELECT try($$SELECT quota.record_batch(jsonb_build_array(
    jsonb_build_object('subject', s(62), 'metric', 'tokens', 'amount', 1,
                       'occurred_at', to_char(now() + interval '1 day', 'YYYY-MM-DD HH24:MI:SSOF'))))$$);
SELECT try($$SELECT quota.record_batch('{"subject": "x"}')$$);
SELECT try($$SELECT quota.record_batch('[{"subject": "00000000-0000-0000-0000-000000000062", "metric": "tokens", "amount": 1, "colour": "red"}]')$$);
SELECT try($$SELECT quota.record_batch(NULL)$$);
SELECT count(*) AS written FROM quota.events WHERE subject = s(62);

-- Bad input for record().
SELECT try($$SELECT quota.record(s(60), 'tokens', 0)$$);
SELECT try($$SELECT quota.record(s(60), 'tokens', NULL)$$);
SELECT try($$SELECT quota.record(s(60), 'nope', 1)$$);
SELECT try($$SELECT quota.record(s(60), 'tokens', 1, occurred_at => now() + interval '1 hour')$$);
SELECT try($$SELECT quota.record(s(60), 'tokens', 1, occurred_at => 'infinity')$$);
SELECT try($$SELECT quota.record(s(60), 'tokens', 1, occurred_at => NULL)$$);
SELECT allowed FROM quota.record(s(60), 'tokens', 1, occurred_at => now() + interval '1 minute');
SELECT count(*) AS audit_mismatches FROM quota.audit();
