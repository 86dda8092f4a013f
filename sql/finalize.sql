-- Hand-written functions and privileges. Runs last in the install script (finalize),
-- after the Rust functions exist.

-- consume() that raises when denied. A custom SQLSTATE cannot be raised from Rust, and
-- PostgREST turns PT429 into HTTP 429, so this thin wrapper is PL/pgSQL.
-- Raising rolls the transaction back, so unlike consume() the denial row is not kept.
CREATE FUNCTION quota.require(
    subject uuid,
    metric text,
    amount bigint DEFAULT 1,
    idempotency_key text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
) RETURNS quota.decision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d quota.decision := quota.consume(subject, metric, amount, idempotency_key, metadata);
    resets text := coalesce(to_char(d.resets_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'never');
BEGIN
    IF d.allowed THEN
        RETURN d;
    END IF;
    IF d.reason = 'no_plan' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PT429',
            MESSAGE = format('quota exceeded for "%s": subject %s has no plan and there is no default plan',
                             d.metric, subject),
            DETAIL  = json_build_object('metric', d.metric, 'reason', d.reason, 'requested', d.amount)::text,
            HINT    = 'Assign a plan with quota.assign_plan() or create a default plan with quota.create_plan(..., is_default => true).';
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'PT429',
        MESSAGE = format('quota exceeded for "%s": requested %s, used %s of %s, resets at %s',
                         d.metric, d.amount, d.used, coalesce(d.allowance::text, 'unlimited'), resets),
        DETAIL  = json_build_object('metric', d.metric, 'reason', d.reason, 'requested', d.amount,
                                    'used', d.used, 'allowance', d.allowance, 'remaining', d.remaining,
                                    'resets_at', d.resets_at)::text,
        HINT    = CASE WHEN d.resets_at IS NULL
                       THEN 'This limit does not reset: raise the allowance or grant more units.'
                       ELSE 'Retry after the window resets, or raise the allowance.' END;
END
$$;

-- Recomputes every counter and every grant balance from the ledger and returns what
-- disagrees: a window whose counter is not the sum of its consume/record/settle events
-- (from_allowance + overage), a window whose held is not the sum of its held
-- reservations, a grant whose remaining is not its amount less what event_grants says it
-- paid, or an event whose from_grants is not what event_grants lists. Returns no rows on a
-- healthy database.
CREATE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, item text, stored numeric, from_ledger numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, 'window ' || window_start, c.used, e.used
    FROM quota.counters AS c
    FULL JOIN (SELECT subject, metric, window_start, sum(from_allowance + overage) AS used
               FROM quota.events
               WHERE kind IN ('consume', 'record', 'settle')
               GROUP BY subject, metric, window_start) AS e
         USING (subject, metric, window_start)
    WHERE coalesce(c.used, 0) <> coalesce(e.used, 0)
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
    LEFT JOIN (SELECT grant_id, sum(amount) AS paid FROM quota.event_grants GROUP BY grant_id) AS p
           USING (grant_id)
    WHERE g.remaining <> g.amount - coalesce(p.paid, 0)
    UNION ALL
    SELECT e.subject, e.metric, 'event ' || e.event_id, e.from_grants, coalesce(sum(p.amount), 0)
    FROM quota.events AS e
    LEFT JOIN quota.event_grants AS p USING (subject, event_id)
    WHERE e.from_grants > 0 OR p.event_id IS NOT NULL
    GROUP BY e.subject, e.metric, e.event_id, e.from_grants
    HAVING e.from_grants <> coalesce(sum(p.amount), 0)
    ORDER BY 1, 2, 3
$$;

-- Optional maintenance: marks every expired hold as such and frees it in its counter.
-- Nothing depends on it running (readers ignore expired holds); it keeps windows with old
-- holds on consume's fast path. Counters are locked before reservations, the same order
-- every writer uses, so it cannot deadlock with them.
CREATE FUNCTION quota.expire_reservations() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expired bigint;
BEGIN
    PERFORM FROM quota.counters AS c
     WHERE (c.subject, c.metric, c.window_start) IN
           (SELECT r.subject, r.metric, r.window_start FROM quota.reservations AS r
             WHERE r.status = 'held' AND r.expires_at <= now())
     ORDER BY c.subject, c.metric, c.window_start
       FOR UPDATE;
    WITH done AS (
        UPDATE quota.reservations SET status = 'expired'
         WHERE status = 'held' AND expires_at <= now()
        RETURNING subject, metric, window_start, amount
    ), per_window AS (
        SELECT subject, metric, window_start, sum(amount) AS amount FROM done GROUP BY subject, metric, window_start
    ), freed AS (
        UPDATE quota.counters AS c SET held = c.held - p.amount
          FROM per_window AS p
         WHERE (c.subject, c.metric, c.window_start) = (p.subject, p.metric, p.window_start)
        RETURNING 1
    )
    SELECT count(*) INTO expired FROM done;
    RETURN expired;
END
$$;

-- Nothing is executable or readable by PUBLIC: the README shows the grants for
-- Supabase's service_role and for a plain backend role.
REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA quota FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA quota FROM PUBLIC;
