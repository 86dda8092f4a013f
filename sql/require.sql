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
