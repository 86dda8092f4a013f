DO $$
DECLARE
    overdrawn bigint := (SELECT count(*) FROM quota.grants WHERE subject = s(6000) AND (remaining < 0 OR remaining > amount));
    credits_paid numeric := (SELECT sum(from_grants) FROM quota.events WHERE subject = s(6000) AND metric = 'credits' AND kind = 'consume');
    credits_left bigint := (SELECT sum(remaining) FROM quota.grants WHERE subject = s(6000) AND metric = 'credits');
    units_used bigint := (SELECT used FROM quota.counters WHERE subject = s(6000) AND metric = 'units');
    units_from_grants numeric := (SELECT sum(from_grants) FROM quota.events WHERE subject = s(6000) AND metric = 'units' AND kind = 'consume');
    wrong_denials bigint := (SELECT count(*) FROM quota.events
                              WHERE subject = s(6000) AND kind = 'denial' AND amount <= remaining);
BEGIN
    IF overdrawn > 0 THEN RAISE EXCEPTION '% grants overdrawn', overdrawn; END IF;
    IF credits_paid > 900 THEN RAISE EXCEPTION 'credits overspent: % of 900', credits_paid; END IF;
    IF credits_paid + credits_left <> 900 THEN RAISE EXCEPTION 'credits paid % + left % <> 900', credits_paid, credits_left; END IF;
    IF credits_left >= 10 THEN RAISE EXCEPTION 'under-spent: % credits left although demand exceeded supply', credits_left; END IF;
    IF units_used > 50 THEN RAISE EXCEPTION 'allowance overspent: % of 50', units_used; END IF;
    IF units_from_grants > 200 THEN RAISE EXCEPTION 'units grant overspent: % of 200', units_from_grants; END IF;
    IF wrong_denials > 0 THEN RAISE EXCEPTION '% denials had room for their amount', wrong_denials; END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'shared grants: % of 900 credits spent by concurrent sessions, allowance %/50 then grant %/200',
        credits_paid, units_used, units_from_grants;
END $$;
