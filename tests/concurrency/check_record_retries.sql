-- Keyed records take no advisory lock: concurrent batches that share keys wait at the
-- ledger's unique index, and the later one undoes its count and replays. Each key counted once.
DO $$
DECLARE
    charged_twice bigint := (SELECT count(*) FROM (SELECT idempotency_key FROM quota.events
                              WHERE subject = s(5001) AND kind = 'record'
                              GROUP BY idempotency_key HAVING count(*) > 1) AS twice);
    keys bigint := (SELECT count(*) FROM quota.events WHERE subject = s(5001) AND kind = 'record');
    counter bigint := (SELECT sum(used) FROM quota.counters WHERE subject = s(5001));
    expected numeric := (SELECT sum(substr(idempotency_key, 5)::int % 10 + 1) FROM quota.events
                          WHERE subject = s(5001) AND kind = 'record');
BEGIN
    IF charged_twice > 0 THEN RAISE EXCEPTION '% keys were recorded more than once', charged_twice; END IF;
    IF counter <> expected THEN RAISE EXCEPTION 'counter % <> sum of distinct keys %', counter, expected; END IF;
    IF keys < 150 THEN RAISE EXCEPTION 'only % distinct keys recorded; the workload is too small to prove anything', keys; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'record retries: % batches of 2 over % keys, each key counted once', current_setting('pgq.calls'), keys;
END $$;
