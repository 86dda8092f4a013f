-- consume's fast path: the first consume of a window marks its counter "fast" with the
-- effective allowance; later consumes decide on that row alone. Every change that could
-- alter the allowance, the window or the usable grants unmarks it, and the next consume
-- decides on the new configuration. quota.audit() checks the marks after each step.
SELECT quota.create_plan('fast_small', '{"calls": {"limit": 3, "per": "day"}, "tokens": {"limit": null, "per": "month"}}');
SELECT quota.create_plan('fast_big', '{"calls": {"limit": 100, "per": "day"}}');
SELECT quota.assign_plan(s(100), 'fast_small');

CREATE FUNCTION public.marks(subject uuid) RETURNS TABLE (metric text, used bigint, allowance bigint, fast boolean)
LANGUAGE sql AS $$
    SELECT metric, used, allowance, fast FROM quota.counters WHERE counters.subject = marks.subject
     ORDER BY metric, window_start $$;
CREATE FUNCTION public.call(subject uuid, amount bigint DEFAULT 1) RETURNS text LANGUAGE sql AS $$
    SELECT format('allowed=%s used=%s allowance=%s remaining=%s reason=%s',
                  allowed, used, coalesce(allowance::text, 'unlimited'), coalesce(remaining::text, 'unlimited'), reason)
      FROM quota.consume(subject, 'calls', amount) $$;

-- Marked by the first consume; the next ones and a denial are decided on the row.
SELECT call(s(100));
SELECT * FROM marks(s(100));
SELECT call(s(100)), call(s(100)), call(s(100));
SELECT kind, amount, from_allowance, used, allowance, remaining, reason FROM quota.events
 WHERE subject = s(100) ORDER BY event_id;
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- An override unmarks; the next consume uses it and marks again.
SELECT quota.set_override(s(100), 'calls', 5);
SELECT * FROM marks(s(100));
SELECT call(s(100)), call(s(100)), call(s(100));
SELECT * FROM marks(s(100));
SELECT quota.clear_override(s(100), 'calls');
SELECT * FROM marks(s(100));
SELECT call(s(100));
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- A plan change, then a change of the plan's limits.
SELECT quota.assign_plan(s(100), 'fast_big');
SELECT * FROM marks(s(100));
SELECT call(s(100));
SELECT quota.set_limits('fast_big', '{"calls": {"limit": 6, "per": "day"}}');
SELECT * FROM marks(s(100));
SELECT call(s(100)), call(s(100));
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- A grant: consumes paid by it take the slow path until it is spent.
SELECT quota.grant(s(100), 'calls', 2) AS grant_id \gset
SELECT * FROM marks(s(100));
SELECT call(s(100), 3), call(s(100));
SELECT from_allowance, from_grants FROM quota.events WHERE subject = s(100) ORDER BY event_id DESC LIMIT 2;
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- A reset starts a new window: the old one is unmarked, the new one marked.
SELECT quota.reset(s(100), 'calls');
SELECT call(s(100));
SELECT used, fast FROM quota.counters WHERE subject = s(100) AND metric = 'calls' ORDER BY window_start;
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- Writes to the tables by hand unmark too (the triggers do it, not the functions).
INSERT INTO quota.overrides (subject, metric, allowance) VALUES (s(100), 'calls', 1);
SELECT count(*) FILTER (WHERE fast) AS marked FROM quota.counters WHERE subject = s(100);
SELECT call(s(100));
UPDATE quota.limits SET allowance = 50 WHERE plan = 'fast_big' AND metric = 'calls';
DELETE FROM quota.overrides WHERE subject = s(100);
SELECT call(s(100));
UPDATE quota.plans SET plan = 'fast_bigger' WHERE plan = 'fast_big';
SELECT count(*) FILTER (WHERE fast) AS marked FROM quota.counters WHERE subject = s(100);
SELECT call(s(100));
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- Unlimited metrics take the fast path too; s(100)'s plan has no tokens any more (0).
SELECT allowed, used, allowance, remaining FROM quota.consume(s(100), 'tokens', 1000);
SELECT quota.assign_plan(s(103), 'fast_small');
SELECT allowed, used, allowance, remaining FROM quota.consume(s(103), 'tokens', 1000);
SELECT allowed, used, allowance, remaining FROM quota.consume(s(103), 'tokens', 1000);
SELECT fast, allowance, used FROM quota.counters WHERE subject = s(103) AND metric = 'tokens';

-- Idempotency keys replay on the fast path; a rolled-back fast consume leaves nothing.
SELECT allowed, used, replayed FROM quota.consume(s(100), 'calls', 1, 'fast-key-1');
SELECT allowed, used, replayed FROM quota.consume(s(100), 'calls', 1, 'fast-key-1');
BEGIN;
SELECT call(s(100), 5);
ROLLBACK;
SELECT used FROM quota.counters WHERE subject = s(100) AND metric = 'calls' AND fast;

-- REPEATABLE READ transactions use marked rows but never mark one (they resolve on an
-- older snapshot).
SELECT quota.assign_plan(s(101), 'fast_small');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT call(s(101));
SELECT count(*) FILTER (WHERE fast) AS marked FROM quota.counters WHERE subject = s(101);
COMMIT;
SELECT call(s(101));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT call(s(101));
COMMIT;
SELECT * FROM marks(s(101));
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- A plan with no limit for the metric (allowance 0) denies on the fast path too.
SELECT quota.create_plan('fast_none', '{"other": {"limit": 1, "per": "day"}}');
SELECT quota.assign_plan(s(102), 'fast_none');
SELECT call(s(102)), call(s(102));
SELECT * FROM marks(s(102));
SELECT kind, reason FROM quota.events WHERE subject = s(102) ORDER BY event_id;

-- audit() notices a mark that disagrees with the configuration.
UPDATE quota.counters SET allowance = 99 WHERE subject = s(102);
SELECT metric, item LIKE 'fast %' AS fast_item, stored, from_ledger FROM quota.audit();
UPDATE quota.counters SET allowance = 0 WHERE subject = s(102);
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- Which path decided, seen from outside: the slow path resolves the subject's plan (a
-- scan of quota.assignments), the fast path reads only the marked counter row. Also
-- true of a subject with a long history of windows: the marked row is found alone.
CREATE FUNCTION public.path_of(subject uuid, amount bigint DEFAULT 1) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    scans_before bigint := public.assignment_scans();
    decided quota.decision := quota.consume(subject, 'calls', amount);
BEGIN
    RETURN format('%s: allowed=%s used=%s reason=%s',
                  CASE WHEN public.assignment_scans()
                            > scans_before THEN 'slow' ELSE 'fast' END,
                  decided.allowed, decided.used, decided.reason);
END $$;
SELECT quota.assign_plan(s(103), 'fast_small');
INSERT INTO quota.counters (subject, metric, window_start, window_end, used)
SELECT s(103), 'calls', day, day + interval '1 day', 3
  FROM generate_series(now() - interval '400 days', now() - interval '2 days', interval '1 day') AS day;
SELECT path_of(s(103));
SELECT path_of(s(103));
SELECT path_of(s(103));
SELECT path_of(s(103));
SELECT path_of(s(103), 3);
SELECT quota.grant(s(103), 'calls', 1) IS NOT NULL AS granted;
SELECT path_of(s(103));
SELECT path_of(s(103));
-- Only the made-up history: the subject's monthly tokens window may also start before
-- yesterday, and its ledger is real.
DELETE FROM quota.counters WHERE subject = s(103) AND metric = 'calls' AND window_start < now() - interval '1 day';
SELECT count(*) AS audit_mismatches FROM quota.audit();

-- Denials on a marked window without room: the first one after an allowed call is written by
-- the statement that reads the window after the fast statement missed; the next ones by the
-- denial statement tried first after a denial, before the one that takes, which takes again
-- once a give-back makes room. Keys and metadata are kept on denial rows either way.
SELECT quota.assign_plan(s(104), 'fast_small');
SELECT path_of(s(104), 3);
SELECT path_of(s(104));
SELECT path_of(s(104));
SELECT allowed, used FROM quota.give_back(s(104), 'calls', 2);
SELECT path_of(s(104));
SELECT path_of(s(104));
SELECT path_of(s(104));
SELECT allowed, reason, remaining, retry_after > now() AS retry_later, event_id IS NOT NULL AS kept
  FROM quota.consume(s(104), 'calls', 1, 'denied-key', '{"why": "full"}');
SELECT allowed, reason, remaining, replayed FROM quota.consume(s(104), 'calls', 1, 'denied-key');
SELECT kind, amount, from_allowance, used, allowance, remaining, reason, idempotency_key, metadata
  FROM quota.events WHERE subject = s(104) ORDER BY event_id;
SELECT count(*) AS audit_mismatches FROM quota.audit();
