-- 32 sessions across 8 members of one pool: no window of the pool passed 100, no member
-- drew more than its cap of 20 in any of them, nothing was overage, every hold was settled
-- or released, every bundle all or nothing, counters and draws equal to the ledger.
DO $$
DECLARE
    pool_past bigint := (SELECT count(*) FROM quota.counters WHERE subject = s(7300) AND metric = 'ai' AND used > 100);
    cap_past bigint := (SELECT count(*) FROM quota.pool_draws WHERE pool = s(7300) AND drawn > 20);
    overage numeric := (SELECT coalesce(sum(overage), 0) FROM quota.events WHERE subject BETWEEN s(7300) AND s(7308));
    held bigint := (SELECT coalesce(sum(held), 0) FROM quota.counters WHERE subject = s(7300));
    partial bigint := (SELECT count(*) FROM (
        SELECT metadata->>'bundle' FROM quota.events
         WHERE subject BETWEEN s(7301) AND s(7308) AND kind = 'consume' AND metadata ? 'bundle'
         GROUP BY metadata->>'bundle' HAVING count(*) <> 2) AS t);
    pooled bigint := (SELECT count(*) FROM quota.events WHERE pool = s(7300) AND kind IN ('consume', 'settle'));
    capped bigint := (SELECT count(*) FROM quota.events WHERE subject BETWEEN s(7301) AND s(7308) AND reason = 'cap_reached');
    exhausted bigint := (SELECT count(*) FROM quota.events WHERE pool = s(7300) AND reason = 'quota_exceeded');
    allocated bigint := (SELECT count(*) FROM quota.allocations WHERE pool = s(7300));
    windows bigint := (SELECT count(*) FROM quota.counters WHERE subject = s(7300) AND metric = 'ai');
BEGIN
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit found mismatches: %', (SELECT array_agg(a) FROM quota.audit() AS a);
    END IF;
    IF pool_past > 0 THEN RAISE EXCEPTION '% windows of the pool passed 100', pool_past; END IF;
    IF cap_past > 0 THEN RAISE EXCEPTION '% members drew past their cap of 20 in a window', cap_past; END IF;
    IF overage <> 0 THEN RAISE EXCEPTION 'overage % although nothing recorded or settled past its hold', overage; END IF;
    IF held <> 0 THEN RAISE EXCEPTION '% units still held although every hold was settled or released', held; END IF;
    IF partial > 0 THEN RAISE EXCEPTION '% bundles were consumed in part', partial; END IF;
    IF pooled < 200 OR capped < 20 OR exhausted < 20 OR allocated < 10 OR windows < 3 THEN
        RAISE EXCEPTION 'only % pooled calls, % cap denials, % pool denials, % allocations, % windows: too small to prove anything',
            pooled, capped, exhausted, allocated, windows;
    END IF;
    RAISE NOTICE 'pools: % calls, % paid by the pool in % windows, % denied at a cap, % with the pool empty, % allocations; no window past 100, no member past 20',
        current_setting('pgq.calls'), pooled, windows, capped, exhausted, allocated;
END $$;
