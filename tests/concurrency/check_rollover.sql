-- Each carry made once, of what its day left (the day's counter, independently of how the
-- carry was computed), and today never spent past the allowance and the carries.
DO $$
DECLARE
    wrong_carries bigint;
    overspent bigint;
    unspent bigint;
    carries_total bigint;
BEGIN
    WITH days AS (
        SELECT s.subject, d AS days_ago, date_trunc('day', now(), 'UTC') - make_interval(days => d) AS day_start
          FROM (SELECT s(n) AS subject FROM generate_series(7501, 7564) AS n) AS s, generate_series(1, 3) AS d),
    expected AS (
        SELECT d.subject, d.day_start, least(15, greatest(0, 20 - coalesce(c.used, 0))) AS carry
          FROM days AS d LEFT JOIN quota.counters AS c
            ON c.subject = d.subject AND c.metric = 'calls' AND c.window_start = d.day_start),
    made AS (SELECT subject, rollover_of, amount FROM quota.grants WHERE rollover_of IS NOT NULL AND metric = 'calls')
    SELECT count(*) FILTER (WHERE e.carry <> coalesce(m.amount, 0) OR (e.carry = 0) <> (m.amount IS NULL)),
           sum(e.carry)
      INTO wrong_carries, carries_total
      FROM expected AS e FULL JOIN made AS m ON m.subject = e.subject AND m.rollover_of = e.day_start;
    IF wrong_carries > 0 THEN RAISE EXCEPTION '% carries missing, made twice or of the wrong amount', wrong_carries; END IF;
    SELECT count(*) FILTER (WHERE today.used > 20 OR spent.from_carries > carried.total),
           sum(20 - today.used) + sum(carried.total - spent.from_carries)
      INTO overspent, unspent
      FROM (SELECT s(n) AS subject FROM generate_series(7501, 7564) AS n) AS s
      CROSS JOIN LATERAL (SELECT coalesce(sum(used), 0) AS used FROM quota.counters AS c
                           WHERE c.subject = s.subject AND c.metric = 'calls' AND c.window_start = date_trunc('day', now(), 'UTC')) AS today
      CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS total FROM quota.grants AS g
                           WHERE g.subject = s.subject AND g.rollover_of IS NOT NULL) AS carried
      CROSS JOIN LATERAL (SELECT coalesce(sum(g.amount - g.remaining), 0) AS from_carries FROM quota.grants AS g
                           WHERE g.subject = s.subject AND g.rollover_of IS NOT NULL) AS spent;
    IF overspent > 0 THEN RAISE EXCEPTION '% subjects spent past their allowance or carries', overspent; END IF;
    -- 32 x 150 calls ask for far more than 64 x (20 + carries): little may be left unspent.
    IF unspent > 64 * 4 THEN RAISE EXCEPTION 'under-spent: % units left although demand exceeded supply', unspent; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'rollover: % units carried by 64 subjects, each carry made once; % left unspent', carries_total, unspent;
END $$;
