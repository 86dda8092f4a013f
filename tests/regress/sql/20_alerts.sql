-- Usage alerts (0.10.0): rules per plan metric and per subject, each firing once per window
-- in the transaction of the usage that crossed it (consume on both paths, record, settle,
-- consume_many, a pool's members), recovered after a grant, a reset, a new window; the
-- consumer API (claim, visibility, retry, acknowledge, dead letter, requeue, purge) and its
-- errors. Subjects 200001...
CREATE FUNCTION pg_temp.fired(first int, last int) RETURNS TABLE (subject int, rule text, used bigint, allowance bigint, remaining bigint, cause text, by_event boolean)
    LANGUAGE sql AS $$
    SELECT (SELECT n FROM generate_series(first, last) AS n WHERE s(n) = a.subject), a.rule, a.used, a.allowance, a.remaining, a.cause,
           a.event_id IS NOT NULL AND EXISTS (SELECT FROM quota.events AS e WHERE e.subject = a.subject AND e.event_id = a.event_id
                                                                            OR e.pool = a.subject AND e.event_id = a.event_id)
      FROM quota.alerts AS a WHERE a.subject BETWEEN s(first) AND s(last) ORDER BY a.alert_id $$;
CREATE FUNCTION pg_temp.window_of(n int) RETURNS TABLE (used bigint, alert_at bigint, alerted text[], fast boolean)
    LANGUAGE sql AS $$
    SELECT used, alert_at, alerted, fast FROM quota.counters WHERE subject = s(n) ORDER BY window_start DESC LIMIT 1 $$;

-- Rules are validated, stored canonically, and part of the plan's limit.
SELECT try($$SELECT quota.create_plan('bad_alerts', '{"calls": {"limit": 10, "per": "day", "alerts": ["recovered"]}}')$$);
SELECT try($$SELECT quota.create_plan('bad_alerts', '{"calls": {"limit": 10, "per": "day", "alerts": ["0%"]}}')$$);
SELECT try($$SELECT quota.create_plan('bad_alerts', '{"calls": {"limit": 10, "per": "day", "alerts": ["eighty"]}}')$$);
SELECT try($$SELECT quota.create_plan('bad_alerts', '{"calls": {"limit": 10, "per": "day", "alerts": "80%"}}')$$);
SELECT try($$SELECT quota.create_plan('bad_alerts', '{"calls": {"limit": 10, "per": "day", "alerts": ["80%", "80 %"]}}')$$);
SELECT quota.create_plan('alerting', '{"calls": {"limit": 10, "per": "day", "alerts": ["100%", "depleted", "80%", "recovered"]},
                                       "tokens": {"limit": 1000, "per": "day", "alerts": ["150%", "100 left"]},
                                       "quiet": {"limit": 5, "per": "day"}}');
SELECT metric, alerts FROM quota.limits WHERE plan = 'alerting' ORDER BY metric;
SELECT quota.assign_plan(s(n), 'alerting') FROM generate_series(200001, 200009) AS n;

-- Below 80% nothing fires, and the fast path's window watches the usage of the next rule.
SELECT used FROM quota.consume(s(200001), 'calls', 3);
SELECT used FROM quota.consume(s(200001), 'calls', 4);
SELECT * FROM pg_temp.window_of(200001);
SELECT count(*) AS alerts FROM quota.alerts WHERE subject = s(200001);
-- The consume that reaches 80% fires it, with the numbers after it and its ledger row.
SELECT used, remaining FROM quota.consume(s(200001), 'calls', 1);
SELECT * FROM pg_temp.fired(200001, 200001);
SELECT * FROM pg_temp.window_of(200001);
-- Once per window: usage given back and taken again does not fire it twice.
SELECT used FROM quota.give_back(s(200001), 'calls', 2);
SELECT used FROM quota.consume(s(200001), 'calls', 2);
SELECT count(*) AS alerts_of_80 FROM quota.alerts WHERE subject = s(200001) AND rule = '80%';
-- The last unit fires 100% and depleted together; a denial fires nothing.
SELECT used, remaining FROM quota.consume(s(200001), 'calls', 2);
SELECT allowed, reason FROM quota.consume(s(200001), 'calls', 1);
SELECT * FROM pg_temp.fired(200001, 200001);
SELECT * FROM pg_temp.window_of(200001);
-- A grant makes it usable again: recovered, at once, with the window's numbers.
SELECT quota.grant(s(200001), 'calls', 5) IS NOT NULL AS granted;
SELECT * FROM pg_temp.fired(200001, 200001) WHERE rule = 'recovered';
-- Spending the grant to nothing does not fire depleted again in this window.
SELECT used, from_grants, remaining FROM quota.consume(s(200001), 'calls', 5);
SELECT count(*) AS depleted_alerts FROM quota.alerts WHERE subject = s(200001) AND rule = 'depleted';

-- A call that rolls back leaves no alert; the next one to cross fires it.
SELECT used FROM quota.consume(s(200002), 'calls', 7);
BEGIN;
SELECT used FROM quota.consume(s(200002), 'calls', 1);
SELECT count(*) AS alert_inside FROM quota.alerts WHERE subject = s(200002);
ROLLBACK;
SELECT count(*) AS alerts_after_rollback, (SELECT alerted FROM quota.counters WHERE subject = s(200002)) FROM quota.alerts WHERE subject = s(200002);
SELECT used FROM quota.consume(s(200002), 'calls', 1);
SELECT * FROM pg_temp.fired(200002, 200002);

-- Records past the allowance: 150% of tokens is overage, "100 left" fires on the way.
SELECT used, overage FROM quota.record(s(200003), 'tokens', 950);
SELECT used, overage FROM quota.record(s(200003), 'tokens', 600);
SELECT * FROM pg_temp.fired(200003, 200003);
-- A metric without rules fires nothing, however far it goes.
SELECT used FROM quota.record(s(200003), 'quiet', 50);
SELECT count(*) AS quiet_alerts FROM quota.alerts WHERE subject = s(200003) AND metric = 'quiet';

-- A hold settled: the settle is the usage that crosses.
SELECT reservation_id IS NOT NULL AS held FROM quota.reserve(s(200004), 'calls', 9) \gset
SELECT reservation_id AS rid FROM quota.reservations WHERE subject = s(200004) \gset
SELECT count(*) AS alerts_while_held FROM quota.alerts WHERE subject = s(200004);
SELECT used FROM quota.settle(:'rid', 9);
SELECT * FROM pg_temp.fired(200004, 200004);

-- consume_many: each metric's rules, in the same transaction.
SELECT metric, used FROM quota.consume_many(s(200005), '{"calls": 10, "tokens": 900}') ORDER BY metric;
SELECT * FROM pg_temp.fired(200005, 200005);

-- A reset starts a new window: the depletion is answered at once, and the new window's
-- thresholds fire again.
SELECT quota.reset(s(200005), 'calls');
SELECT * FROM pg_temp.fired(200005, 200005) WHERE rule = 'recovered';
SELECT used FROM quota.consume(s(200005), 'calls', 8);
SELECT rule, count(*) FROM quota.alerts WHERE subject = s(200005) AND metric = 'calls' GROUP BY rule ORDER BY rule;

-- A window that ended depleted: emit_due_recoveries() answers it with the window usable now.
SELECT used FROM quota.record(s(200006), 'calls', 10, occurred_at => now() - interval '1 day');
SELECT rule, used, remaining, resets_at < now() AS in_the_past FROM quota.alerts WHERE subject = s(200006);
SELECT quota.emit_due_recoveries() >= 1 AS answered;
SELECT rule, used, remaining, window_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS todays, cause
  FROM quota.alerts WHERE subject = s(200006) ORDER BY alert_id;
SELECT quota.emit_due_recoveries() AS answered_again;
-- A window that ended depleted before one with nothing either (an allowance of 0): the
-- sweep carries the depletion to the new window and moves on; a grant answers it.
SELECT quota.create_plan('alerting_zero', '{"calls": {"limit": 0, "per": "day", "alerts": ["depleted", "recovered"]}}');
SELECT quota.assign_plan(s(200009), 'alerting_zero');
SELECT used, overage FROM quota.record(s(200009), 'calls', 1, occurred_at => now() - interval '1 day');
SELECT quota.emit_due_recoveries() AS answered;
SELECT window_end > now() AS in_the_new_window, alerted FROM quota.counters
 WHERE subject = s(200009) AND 'depleted' = ANY (alerted) AND NOT ('recovered' = ANY (alerted));
SELECT quota.emit_due_recoveries() AS answered_again;
SELECT quota.grant(s(200009), 'calls', 1) IS NOT NULL AS granted;
SELECT rule, used, remaining, cause FROM quota.alerts WHERE subject = s(200009) ORDER BY alert_id;
SELECT try($$SELECT quota.emit_due_recoveries(0)$$);
SELECT try($$SELECT quota.emit_due_recoveries(NULL)$$);

-- A subject's own rules replace its plan's; an empty list silences them; clearing restores.
SELECT quota.set_alerts(s(200007), 'calls', ARRAY['3 left', '50%']);
SELECT used FROM quota.consume(s(200007), 'calls', 5);
SELECT used FROM quota.consume(s(200007), 'calls', 3);
SELECT * FROM pg_temp.fired(200007, 200007);
SELECT quota.set_alerts(s(200008), 'calls', '{}');
SELECT used FROM quota.consume(s(200008), 'calls', 10);
SELECT count(*) AS silenced FROM quota.alerts WHERE subject = s(200008);
-- A change of a subject's own rules unmarks its window: the next consume watches the new ones.
SELECT fast AS marked_before FROM quota.counters WHERE subject = s(200008);
SELECT quota.clear_alerts(s(200008), 'calls') AS had_own, quota.clear_alerts(s(200008), 'calls') AS again;
SELECT fast AS marked_after FROM quota.counters WHERE subject = s(200008);
SELECT action, subject = s(200007) AS subject, metric, after FROM quota.admin_changes
 WHERE action IN ('set_alerts', 'clear_alerts') AND subject BETWEEN s(200007) AND s(200008) ORDER BY change_id;
SELECT try($$SELECT quota.set_alerts(s(200007), 'calls', ARRAY['80%', NULL])$$);
SELECT try($$SELECT quota.set_alerts(s(200007), 'calls', NULL)$$);
SELECT try($$SELECT quota.set_alerts(s(200007), 'nonexistent', ARRAY['80%'])$$);
SELECT try($$SELECT quota.set_alerts(s(200007), 'calls', ARRAY['recovered'])$$);

-- A change of the allowance (a plan, an override) re-arms the thresholds that no longer hold:
-- 80% of 10 is not 80% of 100. 200013 moves up to a plan of 100 after 80% of 10 fired, and
-- fires 80% again at 80 of 100; a downgrade into depletion fires what holds at once (no
-- later call counts anything), with the change as its cause; an override does the same.
SELECT quota.create_plan('alerting_100', '{"calls": {"limit": 100, "per": "day", "alerts": ["100%", "depleted", "80%", "recovered"]}}');
SELECT quota.assign_plan(s(n), 'alerting') FROM generate_series(200013, 200014) AS n;
SELECT used FROM quota.consume(s(200013), 'calls', 9);
SELECT quota.assign_plan(s(200013), 'alerting_100');
SELECT * FROM pg_temp.window_of(200013);
SELECT used FROM quota.consume(s(200013), 'calls', 70);
SELECT used FROM quota.consume(s(200013), 'calls', 2);
SELECT quota.assign_plan(s(200013), 'alerting');
SELECT allowed, reason FROM quota.consume(s(200013), 'calls', 1);
SELECT * FROM pg_temp.fired(200013, 200013);
SELECT used FROM quota.consume(s(200014), 'calls', 9);
SELECT quota.set_override(s(200014), 'calls', 20);
SELECT used FROM quota.consume(s(200014), 'calls', 7);
SELECT quota.set_override(s(200014), 'calls', 5);
SELECT quota.clear_override(s(200014), 'calls');
SELECT * FROM pg_temp.fired(200014, 200014);

-- A pool's rules read the pool's window, whoever of its members spends it.
SELECT quota.create_plan('alerting_pool', '{"seats": {"limit": 4, "per": "day", "alerts": ["50%", "depleted"]}}');
SELECT quota.create_plan('alerting_member', '{"seats": {"limit": 0, "per": "day", "alerts": ["depleted"]}}');
SELECT quota.assign_plan(s(200010), 'alerting_pool');
SELECT quota.assign_plan(s(n), 'alerting_member') FROM generate_series(200011, 200012) AS n;
SELECT quota.join_pool(s(200010), s(n)) FROM generate_series(200011, 200012) AS n;
SELECT used FROM quota.consume(s(200011), 'seats', 1);
SELECT used FROM quota.consume(s(200012), 'seats', 1);
SELECT used FROM quota.consume(s(200011), 'seats', 1);
SELECT used FROM quota.consume(s(200012), 'seats', 1);
SELECT * FROM pg_temp.fired(200010, 200012);

-- A signed-in user reads their own alerts through row level security, nobody else's.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', jsonb_build_object('sub', s(200002), 'role', 'authenticated')::text, true) IS NOT NULL AS signed_in;
SELECT count(*) AS visible, count(*) FILTER (WHERE subject <> s(200002)) AS of_others, min(rule) AS rule FROM quota.alerts;
ROLLBACK;

-- The consumer API. Claims come oldest first, each invisible to other claims while claimed.
SELECT quota.ack_alerts(array_agg(alert_id)) >= 0 AS cleared FROM quota.alerts WHERE subject NOT BETWEEN s(200001) AND s(200002);
SELECT alert_id AS first_id FROM quota.alerts WHERE subject = s(200001) ORDER BY alert_id LIMIT 1 \gset
SELECT alert_id - :first_id AS nth, attempt, payload->>'rule' AS rule, payload->>'subject' = s(200001)::text AS subject,
       payload->'id' = to_jsonb(alert_id) AS id_in_payload, (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(payload) AS k) AS keys
  FROM quota.claim_alerts('worker-a', 2);
SELECT alert_id - :first_id AS nth, payload->>'rule' AS rule FROM quota.claim_alerts('worker-b', 10);
SELECT count(*) AS nothing_left FROM quota.claim_alerts('worker-c', 10);
-- A failed delivery is retried later, not before; an acknowledged one never again.
SELECT quota.retry_alert(:first_id, 1, 'HTTP 500', now() + interval '1 hour') AS given_up;
SELECT quota.ack_alerts(ARRAY[:first_id + 1]::bigint[]) AS acknowledged, quota.ack_alerts(ARRAY[:first_id + 1]::bigint[]) AS again;
SELECT alert_id - :first_id AS nth, attempts, last_error, delivered_at IS NOT NULL AS delivered, available_at > now() AS deferred
  FROM quota.alerts WHERE alert_id BETWEEN :first_id AND :first_id + 1 ORDER BY alert_id;
SELECT quota.retry_alert(:first_id + 1, 1, 'late failure', now()) AS retry_of_delivered;
SELECT delivered_at IS NOT NULL AS still_delivered FROM quota.alerts WHERE alert_id = :first_id + 1;
-- A claim whose visibility ran out is claimed again; past max_attempts it is dead.
SELECT quota.retry_alert(:first_id, 1, 'back now', now()) AS given_up;
SELECT attempt FROM quota.claim_alerts('worker-a', 1, interval '1 millisecond', max_attempts => 3);
SELECT pg_sleep(0.01);
SELECT attempt FROM quota.claim_alerts('worker-a', 1, interval '1 millisecond', max_attempts => 3);
SELECT pg_sleep(0.01);
SELECT count(*) AS claimed FROM quota.claim_alerts('worker-a', 1, interval '1 millisecond', max_attempts => 3) WHERE alert_id = :first_id;
SELECT attempts, dead_at IS NOT NULL AS dead, last_error FROM quota.alerts WHERE alert_id = :first_id;
-- A claim's first holder cannot give up a claim that expired and was claimed again.
SELECT quota.retry_alert(:first_id, 2, 'too late', now()) AS stale_claim_given_up;
SELECT quota.requeue_dead_alerts(ARRAY[:first_id]::bigint[]) AS requeued;
SELECT attempt FROM quota.claim_alerts('worker-a', 1) WHERE alert_id = :first_id;
SELECT quota.ack_alerts(array_agg(alert_id)) > 0 AS acknowledged_all FROM quota.alerts WHERE delivered_at IS NULL;
-- Purging delivered alerts never lets one fire twice: what fired stays in its window.
SELECT quota.purge_alerts(interval '0') > 0 AS purged;
SELECT count(*) AS left_over FROM quota.alerts;
SELECT used FROM quota.consume(s(200002), 'calls', 1);
SELECT count(*) AS refired FROM quota.alerts WHERE subject = s(200002);
-- Errors: a SQLSTATE and, where it helps, a hint.
SELECT try($$SELECT * FROM quota.claim_alerts('', 10)$$);
SELECT try($$SELECT * FROM quota.claim_alerts('w', 0)$$);
SELECT try($$SELECT * FROM quota.claim_alerts(NULL)$$);
SELECT try($$SELECT * FROM quota.claim_alerts('w', 10, interval '0')$$);
SELECT try($$SELECT quota.retry_alert(-1, 1, 'x', now())$$);
SELECT try($$SELECT quota.retry_alert(1, 1, 'x', 'infinity')$$);
SELECT try($$SELECT quota.retry_alert(1, NULL, 'x', now())$$);
SELECT try($$SELECT quota.purge_alerts(NULL)$$);
SELECT try($$SELECT quota.ack_alerts(NULL)$$);
SELECT try($$SELECT quota.purge_alerts(interval '-1 day')$$);

-- The ledger and the counters agree after all of it.
SELECT * FROM quota.audit();
