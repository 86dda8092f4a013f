-- The raising functions: consume, consume_many and reserve that raise PT429 when denied
-- (PostgREST answers HTTP 429, with Retry-After). pgrx turns a custom SQLSTATE that Rust
-- raises, or that passes through it, into one it knows, so they are thin PL/pgSQL (the
-- enforce trigger, src/enforce.rs, calls quota.raise_denied outside pgrx's guard); what a
-- denial says is made in one place, quota.explain_denial() (src/denials.rs). Raising rolls the transaction back, so the denial row is not kept; on a
-- server that preloads pg_quota the denial journal keeps it (quota.journal_denial()).

-- Raises the denial of `requested` units of `metric`, with the window's figures, after
-- queueing it in the denial journal (a no-op without the preload). `raised_by` names the
-- raising function, `source_table` the table of an enforce trigger. Through
-- PostgREST (which sets request.method for each request) it is RAISE SQLSTATE 'PGRST', the
-- one error PostgREST takes its status and headers from: HTTP 429 with Retry-After (whole
-- seconds, rounded up) when the call fits again at retry_after, and the body PostgREST
-- always sends, {"code": "PT429", "message", "details", "hint"}. Anywhere else it is
-- SQLSTATE PT429 with the same message, detail and hint.
CREATE FUNCTION quota.raise_denied(subject uuid, metric text, reason text, requested bigint, used bigint,
                                   reserved bigint, allowance bigint, remaining bigint, window_start timestamptz,
                                   resets_at timestamptz, retry_after timestamptz, raised_by text,
                                   source_table text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message text;
    detail text;
    hint text;
BEGIN
    PERFORM quota.journal_denial(subject, metric, reason, requested, used, reserved, allowance, remaining,
                                 window_start, resets_at, retry_after, raised_by, source_table);
    IF reason = 'no_plan' THEN
        message := format('quota exceeded for "%s": subject %s has no plan and there is no default plan', metric, subject);
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested)::text;
        hint := 'Assign a plan with quota.assign_plan() or create a default plan with quota.create_plan(..., is_default => true).';
    ELSIF reason = 'rate_limited' THEN
        message := CASE WHEN retry_after IS NULL
            THEN format('rate limit exceeded for "%s": requested %s, more than a rate rule of the metric admits at once', metric, requested)
            ELSE format('rate limit exceeded for "%s": requested %s, try again at %s', metric, requested, retry_after) END;
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested, 'retry_after', retry_after)::text;
        hint := CASE WHEN retry_after IS NULL
            THEN 'Ask for at most the smallest burst of the metric''s rate rules (quota.usage() shows them).'
            ELSE 'Slow down and retry after retry_after; quota.set_rate_override() raises a subject''s rule.' END;
    ELSIF reason = 'cap_reached' THEN
        -- A pool's member (sql/pools.sql): used is what it drew from the pool in the pool's
        -- window, reserved what its holds there keep, allowance its cap.
        message := format('cap reached for "%s": requested %s, %s of the cap of %s left in the pool''s window%s',
                          metric, requested, remaining, allowance,
                          CASE WHEN resets_at IS NULL THEN ''
                               ELSE ' (resets at ' || to_char(resets_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') || ')' END);
        detail := json_build_object('metric', metric, 'reason', reason, 'requested', requested, 'available', remaining,
                                    'cap', allowance, 'drawn', used, 'reserved', reserved, 'resets_at', resets_at)::text;
        hint := 'An admin of the pool can raise the cap (quota.set_pool_cap()) or allocate units (quota.allocate()).';
    ELSE
        SELECT d.message, d.detail, d.hint INTO message, detail, hint
          FROM quota.explain_denial(subject, metric, requested, used, reserved, allowance, resets_at, remaining) AS d;
    END IF;
    IF coalesce(current_setting('request.method', true), '') <> '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PGRST',
            MESSAGE = json_build_object('code', 'PT429', 'message', message, 'details', detail, 'hint', hint)::text,
            DETAIL  = json_build_object('status', 429, 'headers', CASE
                WHEN retry_after IS NULL THEN '{}'::json
                ELSE json_build_object('Retry-After',
                        greatest(ceil(extract(epoch FROM retry_after - statement_timestamp())), 0)::bigint::text)
                END)::text;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'PT429', MESSAGE = message, DETAIL = detail, HINT = hint;
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
        PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.remaining,
                                   d.window_start, d.resets_at, d.retry_after, 'require');
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
            PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.remaining,
                                       d.window_start, d.resets_at, d.retry_after, 'require_many');
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
        PERFORM quota.raise_denied(subject, r.metric, r.reason, r.amount, r.used, r.reserved, r.allowance, r.remaining,
                                   r.window_start, r.resets_at, r.retry_after, 'require_reservation');
    END IF;
    RETURN r;
END
$$;
