-- consume_many against single consumes and every kind of change in flight, in random JSON
-- orders: no deadlock (pgbench fails on one), every bundle all or nothing (each allowed
-- bundle has a consume row for every metric it named, and a denied one none), no allowance
-- exceeded, counters equal to the ledger.
DO $$
DECLARE
    partial bigint := (SELECT count(*) FROM (
        SELECT metadata->>'bundle' FROM quota.events
         WHERE subject IN (s(7100), s(7101)) AND kind = 'consume' AND metadata ? 'bundle'
         GROUP BY metadata->>'bundle', (metadata->>'size')::int HAVING count(*) <> (metadata->>'size')::int) AS t);
    denied_but_taken bigint := (SELECT count(*) FROM quota.events AS d
         WHERE d.subject IN (s(7100), s(7101)) AND d.kind = 'denial' AND d.metadata ? 'bundle'
           AND EXISTS (SELECT FROM quota.events AS c WHERE c.subject = d.subject AND c.kind = 'consume'
                        AND c.metadata->>'bundle' = d.metadata->>'bundle'));
    past bigint := (SELECT count(*) FROM quota.events WHERE subject IN (s(7100), s(7101)) AND kind = 'consume'
                     AND from_allowance > 0 AND allowance IS NOT NULL AND used > allowance);
    allowed_bundles bigint := (SELECT count(DISTINCT metadata->>'bundle') FROM quota.events
                                WHERE subject IN (s(7100), s(7101)) AND kind = 'consume' AND metadata ? 'bundle');
    denied_bundles bigint := (SELECT count(DISTINCT metadata->>'bundle') FROM quota.events
                               WHERE subject IN (s(7100), s(7101)) AND kind = 'denial' AND metadata ? 'bundle');
BEGIN
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit found mismatches: %', (SELECT array_agg(a) FROM quota.audit() AS a);
    END IF;
    IF partial > 0 THEN RAISE EXCEPTION '% bundles were consumed in part', partial; END IF;
    IF denied_but_taken > 0 THEN RAISE EXCEPTION '% denied bundles consumed something', denied_but_taken; END IF;
    IF past > 0 THEN RAISE EXCEPTION '% consumes went past their allowance', past; END IF;
    IF allowed_bundles < 300 OR denied_bundles < 50 THEN
        RAISE EXCEPTION 'only % allowed and % denied bundles; the workload is too small to prove anything',
            allowed_bundles, denied_bundles;
    END IF;
    RAISE NOTICE 'bundles: % calls, % bundles allowed whole and % denied whole, ledger and counters agree',
        current_setting('pgq.calls'), allowed_bundles, denied_bundles;
END $$;
