DO $$
DECLARE
    counter bigint := (SELECT used FROM quota.counters WHERE subject = s(8000) AND metric = 'tokens');
    held bigint := (SELECT held FROM quota.counters WHERE subject = s(8000) AND metric = 'tokens');
    settled numeric := (SELECT coalesce(sum(amount), 0) FROM quota.events WHERE subject = s(8000) AND kind = 'settle');
    consumed numeric := (SELECT coalesce(sum(amount), 0) FROM quota.events WHERE subject = s(8000) AND kind = 'consume');
    overage numeric := (SELECT coalesce(sum(overage), 0) FROM quota.events WHERE subject = s(8000));
    still_held bigint := (SELECT count(*) FROM quota.reservations WHERE subject = s(8000) AND status = 'held');
    reserves bigint := (SELECT count(*) FROM quota.events WHERE subject = s(8000) AND kind = 'reserve');
    wrong_denials bigint := (SELECT count(*) FROM quota.events
                              WHERE subject = s(8000) AND kind = 'denial' AND amount <= remaining);
BEGIN
    IF counter > 1000 THEN RAISE EXCEPTION 'overspent: % of 1000', counter; END IF;
    IF counter <> settled + consumed THEN
        RAISE EXCEPTION 'counter % <> settled % + consumed %', counter, settled, consumed;
    END IF;
    IF overage <> 0 THEN RAISE EXCEPTION 'overage % although no settle exceeded its hold', overage; END IF;
    IF still_held <> 0 OR held <> 0 THEN RAISE EXCEPTION '% holds (% units) left although every one was settled or released', still_held, held; END IF;
    IF wrong_denials > 0 THEN RAISE EXCEPTION '% denials had room for their amount', wrong_denials; END IF;
    IF reserves = 0 THEN RAISE EXCEPTION 'no reservation was ever granted'; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'reservations: % holds, % settled + % consumed = % of 1000, no hold left behind',
        reserves, settled, consumed, counter;
END $$;
