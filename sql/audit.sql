-- Recomputes every counter and every grant balance from the ledger (with what compaction
-- folded into quota.ledger_rollups and quota.grant_rollups, sql/compaction.sql) and returns what
-- disagrees: a window whose counter is not the sum of its consume/record/settle/allocate
-- events (from_allowance + overage; a pooled member's count in its pool's window) less its
-- give_back events, plus what the window counted without ledger rows (a limit's "ledger":
-- "counters", counted_without_ledger: quota.audit(true) lists it), a member's draws from its pool that are not the sum of its events paid
-- by the pool, a window whose held is not the sum of its held
-- reservations, a grant whose remaining is not its amount less what event_grants says it
-- paid, an event whose from_grants is not what event_grants lists, or a counter marked for
-- the fast path whose cached allowance is not the effective one (or that another marked row,
-- a usable grant (unless marked as a wallet) or a later reset should have unmarked). Returns no rows on a healthy
-- database.
CREATE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, 'window ' || window_start, c.used, coalesce(e.used, 0) + coalesce(c.counted_without_ledger, 0)
    FROM quota.counters AS c
    FULL JOIN (SELECT subject, metric, window_start, sum(used) AS used
               FROM (SELECT coalesce(pool, subject) AS subject, metric, window_start,
                            CASE kind WHEN 'give_back' THEN -from_allowance ELSE from_allowance + overage END AS used
                       FROM quota.events
                      WHERE kind IN ('consume', 'record', 'settle', 'give_back', 'allocate')
                     UNION ALL
                     SELECT counted_in, metric, window_start, counted
                       FROM quota.ledger_rollups WHERE NOT window_closed) AS counted
               GROUP BY subject, metric, window_start) AS e
         USING (subject, metric, window_start)
    WHERE coalesce(c.used, 0) <> coalesce(e.used, 0) + coalesce(c.counted_without_ledger, 0)
    UNION ALL
    SELECT member, metric, 'drawn from ' || pool || ' ' || window_start, d.drawn, e.drawn
    FROM quota.pool_draws AS d
    FULL JOIN (SELECT pool, member, metric, window_start, sum(drawn) AS drawn
               FROM (SELECT pool, subject AS member, metric, window_start,
                            CASE kind WHEN 'give_back' THEN -from_allowance ELSE from_allowance + from_grants + overage END AS drawn
                       FROM quota.events
                      WHERE pool IS NOT NULL AND kind IN ('consume', 'record', 'settle', 'give_back')
                     UNION ALL
                     SELECT counted_in, subject, metric, window_start, drawn
                       FROM quota.ledger_rollups WHERE counted_in <> subject AND NOT window_closed) AS drawn
               GROUP BY pool, member, metric, window_start) AS e
         USING (pool, member, metric, window_start)
    WHERE coalesce(d.drawn, 0) <> coalesce(e.drawn, 0)
    UNION ALL
    SELECT c.subject, c.metric, 'holds ' || c.window_start, c.held, coalesce(sum(r.amount), 0)
    FROM quota.counters AS c
    LEFT JOIN quota.reservations AS r
           ON r.subject = c.subject AND r.metric = c.metric AND r.window_start = c.window_start
          AND r.status = 'held'
    GROUP BY c.subject, c.metric, c.window_start, c.held
    HAVING c.held <> coalesce(sum(r.amount), 0)
    UNION ALL
    SELECT g.subject, g.metric, 'grant ' || g.grant_id, g.remaining, g.amount - coalesce(p.paid, 0)
    FROM quota.grants AS g
    LEFT JOIN (SELECT grant_id, sum(paid) AS paid
                 FROM (SELECT grant_id, amount AS paid FROM quota.event_grants
                       UNION ALL
                       SELECT grant_id, paid FROM quota.grant_rollups) AS all_paid
                GROUP BY grant_id) AS p
           USING (grant_id)
    WHERE g.remaining <> g.amount - coalesce(p.paid, 0)
    UNION ALL
    SELECT e.subject, e.metric, 'event ' || e.event_id, e.from_grants, coalesce(sum(p.amount), 0)
    FROM quota.events AS e
    LEFT JOIN quota.event_grants AS p USING (subject, event_id)
    WHERE e.from_grants > 0 OR p.event_id IS NOT NULL
    GROUP BY e.subject, e.metric, e.event_id, e.from_grants
    HAVING e.from_grants <> coalesce(sum(p.amount), 0)
    UNION ALL
    SELECT c.subject, c.metric, 'fast ' || c.window_start, c.allowance, effective.allowance
    FROM quota.counters AS c
    LEFT JOIN quota.assignments AS a USING (subject)
    LEFT JOIN quota.limits AS l ON l.plan = a.plan AND l.metric = c.metric
    LEFT JOIN quota.overrides AS o ON o.subject = c.subject AND o.metric = c.metric
    CROSS JOIN LATERAL (SELECT CASE WHEN o.subject IS NOT NULL THEN o.allowance
                                    WHEN l.plan IS NOT NULL THEN l.allowance
                                    ELSE 0 END AS allowance) AS effective
    WHERE c.fast
      AND (a.subject IS NULL OR c.allowance IS DISTINCT FROM effective.allowance
           OR EXISTS (SELECT FROM quota.counters AS other
                       WHERE other.subject = c.subject AND other.metric = c.metric AND other.fast
                         AND other.window_start <> c.window_start)
           OR EXISTS (SELECT FROM quota.grants AS g
                       WHERE NOT c.wallet AND g.subject = c.subject AND g.metric = c.metric AND g.remaining > 0
                         AND g.revoked_at IS NULL AND NOT g.spent AND (g.expires_at IS NULL OR g.expires_at > now()))
           OR EXISTS (SELECT FROM quota.resets AS r
                       WHERE r.subject = c.subject AND r.metric = c.metric
                         AND r.reset_at > c.window_start AND r.reset_at <= now()))
    ORDER BY 1, 2, 3
$$;

-- quota.audit(), and with include_unverified what it cannot verify: one row per window that
-- counted units without ledger rows (a limit's "ledger": "counters"): item 'without ledger
-- rows <window_start>', stored the units so counted, from_ledger NULL. Their total is checked
-- (a window's counter is its events plus these units); which calls they came from is not kept.
CREATE FUNCTION quota.audit(include_unverified boolean)
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF include_unverified IS NULL THEN
        RAISE EXCEPTION 'include_unverified must not be NULL' USING ERRCODE = '22004',
            HINT = 'quota.audit(true) also lists the units windows counted without ledger rows.';
    END IF;
    RETURN QUERY
        SELECT * FROM quota.audit() AS a
        UNION ALL
        SELECT c.subject, c.metric, 'without ledger rows ' || c.window_start, c.counted_without_ledger::numeric, NULL::numeric
        FROM quota.counters AS c
        WHERE include_unverified AND c.counted_without_ledger > 0
        ORDER BY 1, 2, 3;
END
$$;
