-- After every benchmark run: no counter above its limit and every counter equal to its
-- ledger, for each variant (check-then-act is measured separately, for its overspend).
DO $$
BEGIN
    IF EXISTS (SELECT FROM floor_counters WHERE used > allowance) THEN
        RAISE EXCEPTION 'floor: a counter is above its limit';
    END IF;
    IF EXISTS (SELECT FROM floor_bare_counters WHERE used > allowance) THEN
        RAISE EXCEPTION 'floor_counters: a counter is above its limit';
    END IF;
    IF (SELECT sum(used) FROM floor_counters) <> (SELECT count(*) FILTER (WHERE allowed) FROM floor_events) + 10 * 10000 THEN
        RAISE EXCEPTION 'floor: counters differ from the ledger';
    END IF;
    IF EXISTS (SELECT FROM plp_usage u JOIN plp_subscriptions s USING (subject) JOIN plp_limits l USING (plan, metric)
                WHERE u.used > l.allowance) THEN
        RAISE EXCEPTION 'plpgsql: a counter is above its limit';
    END IF;
    IF (SELECT sum(used) FROM plp_usage) <> (SELECT count(*) FILTER (WHERE allowed) FROM plp_events) + 10 * 10000 THEN
        RAISE EXCEPTION 'plpgsql: counters differ from the ledger';
    END IF;
    IF EXISTS (SELECT FROM quota.counters c JOIN quota.assignments a USING (subject)
                 JOIN quota.limits l ON l.plan = a.plan AND l.metric = c.metric
                WHERE c.used > l.allowance) THEN
        RAISE EXCEPTION 'pg_quota: a counter is above its limit';
    END IF;
    IF EXISTS (SELECT FROM quota.counters c JOIN quota.assignments a USING (subject)
                WHERE a.plan = 'tight' AND c.metric = 'items' AND c.used > 10) THEN
        RAISE EXCEPTION 'pg_quota enforce: a counter is above its limit';
    END IF;
    IF (SELECT count(*) FROM bench_items) + (SELECT count(*) FROM bench_items_by_hand)
       <> (SELECT coalesce(sum(used), 0) FROM quota.counters WHERE metric = 'items') - 10 * 10000 THEN
        RAISE EXCEPTION 'pg_quota enforce and by hand: rows differ from the counters';
    END IF;
    IF EXISTS (SELECT FROM quota.reservations WHERE status = 'held') THEN
        RAISE EXCEPTION 'pg_quota reserve: a hold was left behind';
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'pg_quota: quota.audit() found counters that differ from the ledger';
    END IF;
END $$;
