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

-- Recomputes every counter from the ledger and returns the windows where they disagree.
-- Returns no rows on a healthy database.
CREATE FUNCTION quota.audit()
RETURNS TABLE (subject uuid, metric text, window_start timestamptz, counter_used bigint, ledger_used numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT subject, metric, window_start, c.used, e.used
    FROM quota.counters AS c
    FULL JOIN (SELECT subject, metric, window_start, sum(from_allowance) AS used
               FROM quota.events
               WHERE kind = 'consume'
               GROUP BY subject, metric, window_start) AS e
         USING (subject, metric, window_start)
    WHERE coalesce(c.used, 0) <> coalesce(e.used, 0)
    ORDER BY subject, metric, window_start
$$;

-- Nothing is executable or readable by PUBLIC: the README shows the grants for
-- Supabase's service_role and for a plain backend role.
REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA quota FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA quota FROM PUBLIC;
