-- 0.7.0 -> 0.8.0: the shared-memory tier of a preloaded library (issue 20): the memory-only
-- rate limiter and the functions that report it; quota.limit_request() takes a GET's unit
-- from it when the library is preloaded. Function bodies are those of a fresh install.

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

-- OR REPLACE keeps the grants quota.setup_supabase() gave anon and authenticated.
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
                PERFORM quota.raise_denied(caller, request_metric, 'rate_limited', 1, 0, 0, NULL, NULL, in_memory.retry_after);
            END IF;
        END IF;
        d := quota.check(caller, request_metric);
    ELSE
        d := quota.consume(caller, request_metric);
    END IF;
    IF NOT d.allowed AND d.reason IN ('rate_limited', 'quota_exceeded') THEN
        PERFORM quota.raise_denied(caller, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.resets_at,
                                   d.retry_after);
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION quota.limit_in_memory(uuid, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.memory_limiter_state() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.preloaded() FROM PUBLIC;
