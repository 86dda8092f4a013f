-- The raising functions: consume, consume_many and reserve that raise PT429 when denied
-- (PostgREST answers HTTP 429). A custom SQLSTATE cannot be raised from Rust, so they are
-- thin PL/pgSQL; what a denial says is made in one place, quota.explain_denial()
-- (src/denials.rs). Raising rolls the transaction back, so the denial row is not kept.

-- Raises the denial of `requested` units of `metric`, with the window's figures.
CREATE FUNCTION quota.raise_denied(subject uuid, metric text, reason text, requested bigint, used bigint,
                                   reserved bigint, allowance bigint, resets_at timestamptz) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    denial record;
BEGIN
    IF reason = 'no_plan' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PT429',
            MESSAGE = format('quota exceeded for "%s": subject %s has no plan and there is no default plan',
                             metric, subject),
            DETAIL  = json_build_object('metric', metric, 'reason', reason, 'requested', requested)::text,
            HINT    = 'Assign a plan with quota.assign_plan() or create a default plan with quota.create_plan(..., is_default => true).';
    END IF;
    SELECT * INTO denial FROM quota.explain_denial(subject, metric, requested, used, reserved, allowance, resets_at);
    RAISE EXCEPTION USING ERRCODE = 'PT429', MESSAGE = denial.message, DETAIL = denial.detail, HINT = denial.hint;
END
$$;

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
BEGIN
    IF NOT d.allowed THEN
        PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.resets_at);
    END IF;
    RETURN d;
END
$$;

-- consume_many() that raises when a metric is denied, naming the first denied metric (in
-- the bundle's order); nothing of the bundle is consumed.
CREATE FUNCTION quota.require_many(
    subject uuid,
    amounts jsonb,
    idempotency_key text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
) RETURNS SETOF quota.decision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    decisions quota.decision[] := ARRAY(SELECT d FROM quota.consume_many(subject, amounts, idempotency_key, metadata) AS d);
    d quota.decision;
BEGIN
    FOREACH d IN ARRAY decisions LOOP
        IF NOT d.allowed AND d.reason <> 'bundle_denied' THEN
            PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.resets_at);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM pg_catalog.unnest(decisions);
END
$$;

-- reserve() that raises when the hold is denied: a browser-facing RPC reserves before an
-- AI call and the client gets HTTP 429, with no wrapper of its own.
CREATE FUNCTION quota.require_reservation(
    subject uuid,
    metric text,
    amount bigint,
    ttl interval DEFAULT '15 minutes',
    idempotency_key text DEFAULT NULL
) RETURNS quota.reservation
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r quota.reservation := quota.reserve(subject, metric, amount, ttl, idempotency_key);
BEGIN
    IF NOT r.allowed THEN
        PERFORM quota.raise_denied(subject, r.metric, r.reason, r.amount, r.used, r.reserved, r.allowance, r.resets_at);
    END IF;
    RETURN r;
END
$$;
