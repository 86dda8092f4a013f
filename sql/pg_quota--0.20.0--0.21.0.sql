-- pg_quota 0.20.0 -> 0.21.0: a raised denial's words come from its decision.
--
-- quota.raise_denied worded a quota denial with quota.explain_denial, which read what governs
-- the subject again (the plan, its limit, the grants) to say how much the grants hold: about
-- half of a raised denial's cost. explain_denial now also takes the decision's `remaining`,
-- which tells the grants that decision counted whenever anything is left or nothing is held;
-- only where it cannot tell are they read. The form without it is kept as it was.
CREATE FUNCTION quota.explain_denial(
	"subject" uuid,
	"metric" TEXT,
	"requested" bigint,
	"used" bigint,
	"reserved" bigint,
	"allowance" bigint,
	"resets_at" timestamp with time zone,
	"remaining" bigint
) RETURNS TABLE (
	"message" TEXT,
	"detail" TEXT,
	"hint" TEXT
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'explain_decided_denial_wrapper';
REVOKE EXECUTE ON FUNCTION quota.explain_denial(uuid, text, bigint, bigint, bigint, bigint, timestamptz, bigint) FROM PUBLIC;

-- quota.raise_denied passes the decision's remaining.
CREATE OR REPLACE FUNCTION quota.raise_denied(subject uuid, metric text, reason text, requested bigint, used bigint,
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
