DO $$
DECLARE
    charged_twice bigint := (SELECT count(*) FROM (SELECT idempotency_key FROM quota.events
                              WHERE subject = s(5000) AND kind = 'consume'
                              GROUP BY idempotency_key HAVING count(*) > 1) AS twice);
    keys bigint := (SELECT count(*) FROM quota.events WHERE subject = s(5000) AND kind = 'consume');
    counter bigint := (SELECT used FROM quota.counters WHERE subject = s(5000));
    expected numeric := (SELECT sum(substr(idempotency_key, 5)::int % 10 + 1) FROM quota.events
                          WHERE subject = s(5000) AND kind = 'consume');
BEGIN
    IF charged_twice > 0 THEN RAISE EXCEPTION '% keys were charged more than once', charged_twice; END IF;
    IF counter <> expected THEN RAISE EXCEPTION 'counter % <> sum of distinct keys %', counter, expected; END IF;
    IF keys < 150 THEN RAISE EXCEPTION 'only % distinct keys charged; the workload is too small to prove anything', keys; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'idempotent retries: % calls over % keys, each key charged once', current_setting('pgq.calls'), keys;
END $$;
