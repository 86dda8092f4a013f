-- Idempotency keys: scoped to the subject, replay the original decision, 409 on reuse
-- for another request, and only committed allowed consumption holds a key.
SELECT quota.create_plan('idem', '{"calls": {"limit": 5, "per": "day"}}');
SELECT quota.assign_plan(s(20), 'idem');
SELECT quota.assign_plan(s(21), 'idem');

SELECT allowed, used, replayed, event_id IS NOT NULL AS has_event
  FROM quota.consume(s(20), 'calls', 2, idempotency_key => 'req-1', metadata => '{"model": "gpt"}');
-- The retry replays the original decision and consumes nothing.
SELECT allowed, used, remaining, replayed FROM quota.consume(s(20), 'calls', 2, idempotency_key => 'req-1');
SELECT used FROM quota.counters WHERE subject = s(20);
SELECT (SELECT event_id FROM quota.consume(s(20), 'calls', 2, idempotency_key => 'req-1'))
     = (SELECT event_id FROM quota.events WHERE subject = s(20) AND idempotency_key = 'req-1') AS same_event;
-- The same key with another amount is a conflict (23505, HTTP 409); with another metric it
-- is another request (keys are scoped to subject and metric, 0.7.0).
SELECT try($$SELECT quota.consume(s(20), 'calls', 3, idempotency_key => 'req-1')$$);
SELECT metric, allowed, replayed FROM quota.consume(s(20), 'ai_requests', 2, idempotency_key => 'req-1');
-- Keys are scoped to their subject.
SELECT allowed, used, replayed FROM quota.consume(s(21), 'calls', 2, idempotency_key => 'req-1');

-- A rolled-back consume holds no key: the retry is decided afresh.
BEGIN;
SELECT allowed, used FROM quota.consume(s(20), 'calls', 1, idempotency_key => 'req-2');
ROLLBACK;
SELECT allowed, used, replayed FROM quota.consume(s(20), 'calls', 1, idempotency_key => 'req-2');

-- A savepoint rolled back undoes exactly its consume.
BEGIN;
SELECT used FROM quota.consume(s(20), 'calls', 1);
SAVEPOINT attempt;
SELECT used FROM quota.consume(s(20), 'calls', 1, idempotency_key => 'req-sp');
ROLLBACK TO SAVEPOINT attempt;
SELECT used AS used_after_rollback_to_savepoint FROM quota.counters WHERE subject = s(20) AND metric = 'calls';
COMMIT;
SELECT count(*) AS key_free FROM quota.events WHERE idempotency_key = 'req-sp';

-- A denied attempt holds no key either.
SELECT allowed, used, replayed FROM quota.consume(s(20), 'calls', 5, idempotency_key => 'req-3');
SELECT quota.set_override(s(20), 'calls', 100);
SELECT allowed, used, replayed FROM quota.consume(s(20), 'calls', 5, idempotency_key => 'req-3');
SELECT allowed, used, replayed FROM quota.consume(s(20), 'calls', 5, idempotency_key => 'req-3');

-- A replay returns the original decision even after the window or plan changed.
SELECT quota.reset(s(20), 'calls');
SELECT allowed, used, replayed FROM quota.consume(s(20), 'calls', 2, idempotency_key => 'req-1');

-- Metadata is stored on the event and queryable.
SELECT metric, metadata->>'model' AS model FROM quota.events WHERE subject = s(20) AND idempotency_key = 'req-1' ORDER BY metric;
SELECT count(*) AS audit_mismatches FROM quota.audit();
