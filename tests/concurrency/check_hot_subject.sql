DO $$
DECLARE
    counter bigint := (SELECT used FROM quota.counters WHERE subject = s(1) AND metric = 'units');
    ledger  numeric := (SELECT sum(amount) FROM quota.events WHERE subject = s(1) AND kind = 'consume');
    rows    bigint := (SELECT count(*) FROM quota.events WHERE subject = s(1));
    wrong_denials bigint := (SELECT count(*) FROM quota.events
                              WHERE subject = s(1) AND kind = 'denial' AND used + amount <= allowance);
BEGIN
    IF counter > 1000 THEN RAISE EXCEPTION 'overspent: % units granted of 1000', counter; END IF;
    IF counter <> ledger THEN RAISE EXCEPTION 'counter % <> ledger %', counter, ledger; END IF;
    IF rows <> current_setting('pgq.calls')::bigint THEN
        RAISE EXCEPTION 'ledger has % rows for % calls: a call or a denial is missing', rows, current_setting('pgq.calls');
    END IF;
    IF wrong_denials > 0 THEN RAISE EXCEPTION '% denials had room for their amount', wrong_denials; END IF;
    -- Amounts are at most 10 and demand far exceeds the limit: anything below 991 would
    -- mean calls were denied that fit.
    IF counter < 991 THEN RAISE EXCEPTION 'under-consumed: % of 1000', counter; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'hot subject: % units granted of 1000 in % calls, every denial in the ledger', counter, rows;
END $$;
