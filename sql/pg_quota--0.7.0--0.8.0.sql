-- 0.7.0 -> 0.8.0: the shared-memory tier of a preloaded library (issue 20): the memory-only
-- rate limiter, the denial journal (its progress table, quota.journal_denial() called by
-- quota.raise_denied() before every raised denial, which now says what raised it), and the
-- functions that report them; quota.limit_request() takes a GET's unit from the limiter
-- when the library is preloaded. Function bodies are those of a fresh install; OR REPLACE
-- keeps the grants quota.setup_supabase() gave.

-- The denial journal's progress (src/shared/journal.rs): the last record of a server start
-- (epoch, µs) that its background worker has written to quota.events. Updated in the same
-- transaction as the rows, so that a worker killed before it frees a batch in shared memory
-- skips what it wrote when it starts again. One row, made here.
CREATE TABLE quota.journal_progress (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch            bigint NOT NULL,
    written_through  bigint NOT NULL
);
INSERT INTO quota.journal_progress (epoch, written_through) VALUES (0, 0);
ALTER TABLE quota.journal_progress ENABLE ROW LEVEL SECURITY;

-- Marked windows say whether rate rules are cached beside them; a window marked by 0.7.0
-- with rules beside it is rated.
ALTER TABLE quota.counters ADD COLUMN rated boolean NOT NULL DEFAULT false;
UPDATE quota.counters AS c SET rated = true
 WHERE c.fast AND EXISTS (SELECT FROM quota.rate_state AS r WHERE r.subject = c.subject AND r.metric = c.metric AND r.fast);

CREATE FUNCTION quota."limit_in_memory"(
	"subject" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"amount" bigint DEFAULT 1 /* Option < i64 > */
) RETURNS TABLE (
	"allowed" bool,  /* bool */
	"reason" TEXT,  /* String */
	"remaining" bigint,  /* Option < i64 > */
	"retry_after" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'limit_in_memory_wrapper';

CREATE FUNCTION quota."memory_limiter_state"() RETURNS TABLE (
	"preloaded" bool,  /* bool */
	"capacity_keys" bigint,  /* i64 */
	"keys_owing" bigint,  /* i64 */
	"admitted" bigint,  /* i64 */
	"limited" bigint,  /* i64 */
	"lossy_evictions" bigint,  /* i64 */
	"shared_bytes" bigint  /* i64 */
)
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memory_limiter_state_wrapper';

CREATE FUNCTION quota."preloaded"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'preloaded_sql_wrapper';

CREATE FUNCTION quota."configuration_changed"() RETURNS void
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'configuration_changed_wrapper';

CREATE FUNCTION quota."journal_denial"(
	"subject" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"reason" TEXT, /* Option < & str > */
	"requested" bigint, /* Option < i64 > */
	"used" bigint, /* Option < i64 > */
	"reserved" bigint, /* Option < i64 > */
	"allowance" bigint, /* Option < i64 > */
	"remaining" bigint, /* Option < i64 > */
	"window_start" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"window_end" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"retry_after" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"raised_by" TEXT, /* Option < & str > */
	"source_table" TEXT /* Option < & str > */
) RETURNS bool /* Result < bool, ErrorReport > */
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'journal_denial_wrapper';

CREATE FUNCTION quota."denial_journal_state"() RETURNS TABLE (
	"preloaded" bool,  /* bool */
	"database" TEXT,  /* Option < String > */
	"capacity" bigint,  /* i64 */
	"queued" bigint,  /* i64 */
	"written" bigint,  /* i64 */
	"dropped" bigint,  /* i64 */
	"other_database" bigint,  /* i64 */
	"worker_pid" INT  /* Option < i32 > */
)
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'denial_journal_state_wrapper';

-- The shared-memory limiter keeps each backend's rules in force per (subject, metric)
-- (src/shared/memory_rates.rs). What decides them is a subject's assignment, the default
-- plan, the plans' limits and the subject's rate overrides: a committed change to any of
-- them moves a generation counter in shared memory, and every backend resolves again.
-- Statement triggers: one call per statement, however many rows it changes. Without the
-- preload, quota.configuration_changed() does nothing.
CREATE FUNCTION quota.note_configuration_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM quota.configuration_changed();
    RETURN NULL;
END
$$;

CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.plans
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.limits
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.assignments
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();
CREATE TRIGGER note_configuration_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON quota.rate_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION quota.note_configuration_change();

DROP FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, timestamptz, timestamptz);
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
    ELSE
        SELECT d.message, d.detail, d.hint INTO message, detail, hint
          FROM quota.explain_denial(subject, metric, requested, used, reserved, allowance, resets_at) AS d;
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

CREATE OR REPLACE FUNCTION quota.require(
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

CREATE OR REPLACE FUNCTION quota.require_many(
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

CREATE OR REPLACE FUNCTION quota.require_reservation(
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

CREATE OR REPLACE FUNCTION quota.limit_request(metric text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request_metric constant text := coalesce(metric, nullif(current_setting('quota.request_metric', true), ''), 'api_requests');
    caller uuid := quota.current_subject();
    client_address text;
    in_memory record;
    d quota.decision;
BEGIN
    IF caller IS NULL THEN
        client_address := left(btrim(split_part(
            coalesce(nullif(current_setting('request.headers', true), ''), '{}')::json ->> 'x-forwarded-for', ',', 1)), 200);
        caller := quota.subject_for('ip:' || coalesce(nullif(client_address, ''), 'unknown'));
    END IF;
    IF current_setting('transaction_read_only') = 'on' THEN
        IF quota.preloaded() THEN
            SELECT m.allowed, m.retry_after INTO in_memory FROM quota.limit_in_memory(caller, request_metric) AS m;
            IF NOT in_memory.allowed THEN
                PERFORM quota.raise_denied(caller, request_metric, 'rate_limited', 1, 0, 0, NULL, 0, NULL, NULL,
                                           in_memory.retry_after, 'limit_request');
            END IF;
        END IF;
        d := quota.check(caller, request_metric);
    ELSE
        d := quota.consume(caller, request_metric);
    END IF;
    IF NOT d.allowed AND d.reason IN ('rate_limited', 'quota_exceeded') THEN
        PERFORM quota.raise_denied(caller, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.remaining,
                                   d.window_start, d.resets_at, d.retry_after, 'limit_request');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION quota.enforce_charge(enforced_table regclass, subject uuid, metric text, amount bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    d quota.decision;
BEGIN
    INSERT INTO quota.enforced_charges AS c (subject, metric, enforced_table, units)
    VALUES (enforce_charge.subject, enforce_charge.metric, enforce_charge.enforced_table, enforce_charge.amount)
    ON CONFLICT (subject, metric, enforced_table) DO UPDATE SET units = c.units + excluded.units;
    d := quota.consume(enforce_charge.subject, enforce_charge.metric, enforce_charge.amount);
    IF NOT d.allowed THEN
        PERFORM quota.raise_denied(enforce_charge.subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance,
                                   d.remaining, d.window_start, d.resets_at, d.retry_after, 'enforce',
                                   enforce_charge.enforced_table::text);
    END IF;
END
$$;

REVOKE ALL ON quota.journal_progress FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.limit_in_memory(uuid, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.memory_limiter_state() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.preloaded() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.journal_denial(uuid, text, text, bigint, bigint, bigint, bigint, bigint, timestamptz, timestamptz, timestamptz, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.denial_journal_state() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.configuration_changed() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.note_configuration_change() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, bigint, timestamptz, timestamptz, timestamptz, text, text) FROM PUBLIC;
