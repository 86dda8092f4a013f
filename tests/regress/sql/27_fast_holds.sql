-- Reservations' fast path: on a window marked for consume's fast path, without rate rules
-- or grants, whose holds are all active, reserve and settle each decide in one statement.
-- The same calls on a subject whose window is unmarked before each call (so the slow path
-- decides every one) must give the same decisions and leave the same rows: ledger,
-- reservations, counters, alerts. Subjects 270001 (fast where it can) and 270002 (always
-- slow).
SELECT quota.create_plan('holds27', '{"calls": {"limit": 10, "per": "day", "alerts": ["80%"]}}');
SELECT quota.assign_plan(s(n), 'holds27') FROM generate_series(270001, 270002) AS n;
CREATE TABLE public.holds27 (subject uuid, seq integer, reservation_id uuid);

-- One reserve or settle, with the path it took: the slow path resolves the subject's plan
-- (a scan of quota.assignments), the fast path reads only the marked counter and the
-- reservation. `unmark`: the subject's windows are unmarked first.
CREATE FUNCTION public.step27(subject uuid, unmark boolean, op text, amount bigint, seq integer,
                               ttl interval DEFAULT '15 minutes') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    scans_before bigint;
    held quota.reservation;
    settled quota.decision;
    path text;
BEGIN
    IF unmark THEN
        UPDATE quota.counters SET fast = false WHERE counters.subject = step27.subject;
    END IF;
    scans_before := public.assignment_scans();
    IF op = 'reserve' THEN
        held := quota.reserve(subject, 'calls', amount, ttl);
        INSERT INTO public.holds27 VALUES (subject, seq, held.reservation_id);
    ELSIF op = 'consume' THEN
        settled := quota.consume(subject, 'calls', amount);
    ELSE
        settled := quota.settle((SELECT h.reservation_id FROM public.holds27 AS h WHERE h.subject = step27.subject AND h.seq = step27.seq), amount);
    END IF;
    path := CASE WHEN public.assignment_scans() > scans_before
                 THEN 'slow' ELSE 'fast' END;
    IF op = 'reserve' THEN
        RETURN format('%s: held=%s used=%s reserved=%s remaining=%s reason=%s',
                      path, held.reservation_id IS NOT NULL, held.used, held.reserved, held.remaining, held.reason);
    END IF;
    RETURN format('%s: from_allowance=%s overage=%s used=%s reserved=%s remaining=%s reason=%s',
                  path, settled.from_allowance, settled.overage, settled.used, settled.reserved, settled.remaining, settled.reason);
END $$;

-- The first reserve marks the window (slow); its settle and the next reserve and settle take
-- the fast path, and so does a second hold while one is held (0.17.0). Settling into 80%
-- fires the alert (slow: the fast statement never crosses an alert). A hold that does not
-- fit is denied (slow), and a settle past the allowance is charged as overage (slow).
SELECT step27(s(270001), false, 'reserve', 3, 1) AS fast_where_it_can, step27(s(270002), true, 'reserve', 3, 1) AS always_slow;
SELECT step27(s(270001), false, 'settle', NULL, 1), step27(s(270002), true, 'settle', NULL, 1);
SELECT step27(s(270001), false, 'reserve', 2, 2), step27(s(270002), true, 'reserve', 2, 2);
SELECT step27(s(270001), false, 'settle', 1, 2), step27(s(270002), true, 'settle', 1, 2);
SELECT step27(s(270001), false, 'reserve', 4, 3), step27(s(270002), true, 'reserve', 4, 3);
SELECT step27(s(270001), false, 'reserve', 1, 4), step27(s(270002), true, 'reserve', 1, 4);
SELECT step27(s(270001), false, 'settle', 4, 3), step27(s(270002), true, 'settle', 4, 3);
SELECT step27(s(270001), false, 'settle', 0, 4), step27(s(270002), true, 'settle', 0, 4);
SELECT step27(s(270001), false, 'reserve', 3, 5), step27(s(270002), true, 'reserve', 3, 5);
SELECT step27(s(270001), false, 'reserve', 1, 6), step27(s(270002), true, 'reserve', 1, 6);
SELECT step27(s(270001), false, 'settle', 3, 6), step27(s(270002), true, 'settle', 3, 6);

-- Both subjects' rows agree, column by column (the subject, ids and times aside).
CREATE VIEW public.ledger27 AS
    SELECT e.subject, (to_jsonb(e) - '{subject,event_id,created_at,reservation_id}'::text[]) || jsonb_build_object('seq', h.seq) AS kept
      FROM quota.events AS e LEFT JOIN public.holds27 AS h USING (reservation_id);
CREATE FUNCTION public.ledger_rows_differing27(fast uuid, slow uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM ((SELECT kept FROM public.ledger27 WHERE subject = fast
                           EXCEPT ALL SELECT kept FROM public.ledger27 WHERE subject = slow)
                          UNION ALL
                          (SELECT kept FROM public.ledger27 WHERE subject = slow
                           EXCEPT ALL SELECT kept FROM public.ledger27 WHERE subject = fast)) AS d
$$;
SELECT public.ledger_rows_differing27(s(270001), s(270002)) AS ledger_rows_differing;
SELECT h.seq, r.subject = s(270001) AS fast_subject, r.amount, r.window_start = date_trunc('day', now(), 'UTC') AS today,
       r.expires_at - r.created_at AS ttl, r.status, r.idempotency_key, r.member
  FROM quota.reservations AS r JOIN public.holds27 AS h USING (reservation_id)
 ORDER BY h.seq, fast_subject;
SELECT subject = s(270001) AS fast_subject, used, held, counted_without_ledger FROM quota.counters
 WHERE subject IN (s(270001), s(270002)) ORDER BY 1;
SELECT subject = s(270001) AS fast_subject, rule, used, remaining FROM quota.alerts
 WHERE subject IN (s(270001), s(270002)) ORDER BY 1, alert_id;
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject IN (s(270001), s(270002));

-- A keyed reserve never takes the fast path (its key is kept, so that a retry replays it);
-- a settle of a settled reservation replays it.
SELECT quota.assign_plan(s(270003), 'holds27');
SELECT allowed FROM quota.consume(s(270003), 'calls', 1);
SELECT allowed, replayed, reserved FROM quota.reserve(s(270003), 'calls', 2, idempotency_key => 'job-27');
SELECT allowed, replayed, reserved FROM quota.reserve(s(270003), 'calls', 2, idempotency_key => 'job-27');
SELECT count(*) AS holds, min(idempotency_key) AS key FROM quota.reservations WHERE subject = s(270003);
SELECT allowed, replayed, from_allowance, overage
  FROM quota.settle((SELECT reservation_id FROM public.holds27 WHERE subject = s(270001) AND seq = 6), 3);

-- Beside holds (0.17.0): while the counter's bound on its holds' expiry lies ahead, reserve,
-- settle and consume beside other holds take the fast path, counting them: a settle of more
-- than was held when it fits beside the others, a consume's denial for want of room beside
-- them. A consume that would reach the usage at which the "2 left" alert fires, counting the
-- holds as usage, goes slow and fires it (what remains is 2); the crossing unmarks the
-- window, so the next settle goes slow too. 270005 fast where it can, 270006 always slow.
SELECT quota.create_plan('holds27b', '{"calls": {"limit": 10, "per": "day", "alerts": ["2 left"]}}');
SELECT quota.assign_plan(s(n), 'holds27b') FROM generate_series(270005, 270006) AS n;
SELECT step27(s(270005), false, 'reserve', 2, 11) AS fast_where_it_can, step27(s(270006), true, 'reserve', 2, 11) AS always_slow;
SELECT step27(s(270005), false, 'reserve', 1, 12), step27(s(270006), true, 'reserve', 1, 12);
SELECT step27(s(270005), false, 'consume', 1, NULL), step27(s(270006), true, 'consume', 1, NULL);
SELECT step27(s(270005), false, 'settle', 3, 11), step27(s(270006), true, 'settle', 3, 11);
SELECT step27(s(270005), false, 'consume', 6, NULL), step27(s(270006), true, 'consume', 6, NULL);
SELECT step27(s(270005), false, 'consume', 2, NULL), step27(s(270006), true, 'consume', 2, NULL);
SELECT step27(s(270005), false, 'consume', 1, NULL), step27(s(270006), true, 'consume', 1, NULL);
SELECT step27(s(270005), false, 'settle', 1, 12), step27(s(270006), true, 'settle', 1, 12);
SELECT step27(s(270005), false, 'reserve', 2, 13), step27(s(270006), true, 'reserve', 2, 13);
SELECT public.ledger_rows_differing27(s(270005), s(270006)) AS ledger_rows_differing;
SELECT subject = s(270005) AS fast_subject, used, held FROM quota.counters
 WHERE subject IN (s(270005), s(270006)) ORDER BY 1;
SELECT subject = s(270005) AS fast_subject, rule, used, remaining FROM quota.alerts
 WHERE subject IN (s(270005), s(270006)) ORDER BY 1, alert_id;
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject IN (s(270005), s(270006));

-- The counter's bound on its holds' expiry (0.15.0): a call under the counter's lock reads
-- the holds only once one may have expired. Two holds, one expiring in a second (the second
-- hold takes the fast path beside the first): the bound is the first's expiry; once it has
-- passed, a reserve goes slow, reads the holds, marks that one expired and counts only the
-- others, and the bound moves to the second's expiry (the new hold's is later).
SELECT quota.assign_plan(s(270004), 'holds27');
SELECT allowed FROM quota.consume(s(270004), 'calls', 1);
SELECT step27(s(270004), false, 'reserve', 2, 41, '1 second');
SELECT step27(s(270004), false, 'reserve', 3, 42, '1 hour');
SELECT held, holds_expire_at < now() + interval '2 seconds' AS bound_is_the_first FROM quota.counters WHERE subject = s(270004);
SELECT pg_sleep(1.1);
SELECT step27(s(270004), false, 'reserve', 1, 43, '2 hours');
SELECT allowed, used, reserved FROM quota.consume(s(270004), 'calls', 1);
SELECT held, holds_expire_at > now() + interval '59 minutes' AS bound_is_the_second FROM quota.counters WHERE subject = s(270004);
SELECT amount, status FROM quota.reservations WHERE subject = s(270004) ORDER BY amount;

-- Usage near bigint's maximum beside a hold (overage that a record counted, which leaves the
-- window marked): the fast statements sum usage and holds without overflowing, and decide
-- as the slow path does. 270007 fast where it can, 270008 always slow.
SELECT quota.create_plan('holds27c', '{"calls": {"limit": 100, "per": "day"}}');
SELECT quota.assign_plan(s(n), 'holds27c') FROM generate_series(270007, 270008) AS n;
SELECT step27(s(270007), false, 'consume', 1, NULL) AS fast_where_it_can, step27(s(270008), true, 'consume', 1, NULL) AS always_slow;
SELECT step27(s(270007), false, 'reserve', 10, 71), step27(s(270008), true, 'reserve', 10, 71);
SELECT count(quota.record(s(n), 'calls', 9223372036854775800)) FROM generate_series(270007, 270008) AS n;
SELECT step27(s(270007), false, 'consume', 1, NULL), step27(s(270008), true, 'consume', 1, NULL);
SELECT step27(s(270007), false, 'consume', 1, NULL), step27(s(270008), true, 'consume', 1, NULL);
SELECT step27(s(270007), false, 'reserve', 1, 72), step27(s(270008), true, 'reserve', 1, 72);
SELECT step27(s(270007), false, 'settle', 5, 71), step27(s(270008), true, 'settle', 5, 71);
SELECT public.ledger_rows_differing27(s(270007), s(270008)) AS ledger_rows_differing;
SELECT subject = s(270007) AS fast_subject, used, held FROM quota.counters
 WHERE subject IN (s(270007), s(270008)) ORDER BY 1;
