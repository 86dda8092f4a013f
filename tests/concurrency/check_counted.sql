DO $$
DECLARE
    over bigint := (SELECT count(*) FROM quota.counters AS c
                     WHERE c.metric = 'pings' AND c.used > CASE WHEN c.subject = s(7601) THEN 1000 ELSE 100 END);
    hot bigint := (SELECT used FROM quota.counters WHERE subject = s(7601) AND metric = 'pings');
    without_rows bigint := (SELECT sum(counted_without_ledger) FROM quota.counters WHERE metric = 'pings');
    wrong_denials bigint := (SELECT count(*) FROM quota.events
                              WHERE metric = 'pings' AND kind = 'denial' AND used + amount <= allowance);
    replayed_twice bigint := (SELECT count(*) FROM (SELECT FROM quota.events WHERE metric = 'pings' AND idempotency_key IS NOT NULL
                                                     AND kind = 'consume' GROUP BY subject, idempotency_key HAVING count(*) > 1) AS t);
BEGIN
    IF over > 0 THEN RAISE EXCEPTION '% windows overspent', over; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches (counters against events plus counted_without_ledger)'; END IF;
    IF wrong_denials > 0 THEN RAISE EXCEPTION '% denials had room for their amount', wrong_denials; END IF;
    IF replayed_twice > 0 THEN RAISE EXCEPTION '% keys counted twice', replayed_twice; END IF;
    -- Demand far exceeds the limits (amounts at most 10).
    IF hot < 991 THEN RAISE EXCEPTION 'under-consumed: % of 1000', hot; END IF;
    IF coalesce(without_rows, 0) = 0 THEN RAISE EXCEPTION 'no call was counted without a ledger row'; END IF;
    RAISE NOTICE 'counted: hot subject % of 1000, % units without ledger rows, audit agrees', hot, without_rows;
END $$;
