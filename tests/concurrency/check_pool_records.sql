-- Every (member, key) recorded once, counted once in the pool's window and the member's
-- draws (quota.audit()), whatever the race.
DO $$
DECLARE
    keys bigint := (SELECT count(DISTINCT (subject, idempotency_key)) FROM quota.events
                     WHERE subject BETWEEN s(7311) AND s(7314) AND kind = 'record');
    rows bigint := (SELECT count(*) FROM quota.events WHERE subject BETWEEN s(7311) AND s(7314) AND kind = 'record');
    expected numeric := (SELECT sum(k % 5 + 1) * 4 FROM generate_series(1, 40) AS k);
    counted numeric := (SELECT sum(used) FROM quota.counters WHERE subject = s(7310) AND metric = 'ai');
    drawn numeric := (SELECT sum(drawn) FROM quota.pool_draws WHERE pool = s(7310));
BEGIN
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit found mismatches: %', (SELECT array_agg(a) FROM quota.audit() AS a);
    END IF;
    IF rows <> keys THEN RAISE EXCEPTION '% record rows for % keys', rows, keys; END IF;
    IF keys <> 160 THEN RAISE EXCEPTION 'only % of the 160 keys were recorded', keys; END IF;
    IF counted <> expected OR drawn <> expected THEN
        RAISE EXCEPTION 'the pool counted % and the members drew % of the % recorded', counted, drawn, expected;
    END IF;
    RAISE NOTICE 'pool records: % calls over 160 keys, each counted once (% units in the pool, as drawn)',
        current_setting('pgq.calls'), counted;
END $$;
