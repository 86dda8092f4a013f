DO $$
DECLARE
    overspent bigint := (SELECT count(*) FROM quota.counters
                          WHERE metric = 'units' AND used > 20 AND subject IN (SELECT s(n) FROM generate_series(2, 1001) AS n));
    unassigned bigint := (SELECT count(DISTINCT e.subject) FROM quota.events e
                           LEFT JOIN quota.assignments a USING (subject)
                          WHERE a.subject IS NULL AND e.subject IN (SELECT s(n) FROM generate_series(2, 1001) AS n));
    rows bigint := (SELECT count(*) FROM quota.events WHERE subject IN (SELECT s(n) FROM generate_series(2, 1001) AS n));
    wrong_denials bigint := (SELECT count(*) FROM quota.events
                              WHERE subject IN (SELECT s(n) FROM generate_series(2, 1001) AS n) AND kind = 'denial' AND used + amount <= allowance);
    denials bigint := (SELECT count(*) FROM quota.events WHERE subject IN (SELECT s(n) FROM generate_series(2, 1001) AS n) AND kind = 'denial');
BEGIN
    IF overspent > 0 THEN RAISE EXCEPTION '% subjects overspent their 20 units', overspent; END IF;
    IF unassigned > 0 THEN RAISE EXCEPTION '% subjects consumed without a plan assignment', unassigned; END IF;
    IF rows <> current_setting('pgq.calls')::bigint THEN
        RAISE EXCEPTION 'ledger has % rows for % calls', rows, current_setting('pgq.calls');
    END IF;
    IF wrong_denials > 0 THEN RAISE EXCEPTION '% denials had room for their amount', wrong_denials; END IF;
    IF denials = 0 THEN RAISE EXCEPTION 'no denials: the workload did not reach the limit'; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'many subjects: % calls, % denials, no subject above 20', rows, denials;
END $$;
