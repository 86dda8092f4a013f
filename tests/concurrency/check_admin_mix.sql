-- consume against resets, plan changes, overrides, grants, give-backs and holds in flight
-- (the mix that corrupted the ledger in 0.5.0): counters equal the ledger, at most one
-- window is marked for the fast path, and no allowed consume went past its allowance.
DO $$
DECLARE
    marked bigint := (SELECT count(*) FROM quota.counters WHERE subject = s(7000) AND fast);
    -- (A consume paid by grants alone may leave used above an allowance lowered meanwhile.)
    past bigint := (SELECT count(*) FROM quota.events WHERE subject = s(7000) AND kind = 'consume'
                     AND from_allowance > 0 AND allowance IS NOT NULL AND used > allowance);
    consumes bigint := (SELECT count(*) FROM quota.events WHERE subject = s(7000) AND kind = 'consume');
    resets bigint := (SELECT count(*) FROM quota.events WHERE subject = s(7000) AND kind = 'reset');
BEGIN
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit found mismatches: %', (SELECT array_agg(a) FROM quota.audit() AS a);
    END IF;
    IF marked > 1 THEN RAISE EXCEPTION '% windows marked for the fast path', marked; END IF;
    IF past > 0 THEN RAISE EXCEPTION '% consumes went past their allowance', past; END IF;
    IF consumes < 500 OR resets < 50 THEN
        RAISE EXCEPTION 'only % consumes and % resets; the workload is too small to prove anything', consumes, resets;
    END IF;
    RAISE NOTICE 'admin mix: % calls, % allowed consumes across % resets, ledger and counters agree',
        current_setting('pgq.calls'), consumes, resets;
END $$;
