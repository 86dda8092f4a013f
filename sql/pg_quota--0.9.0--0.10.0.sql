-- 0.9.0 -> 0.10.0: soft limits (issue 23: quota.limits' soft and overage_max) and usage
-- alerts (issue 22, docs/alerts.md): alert rules per plan metric
-- (quota.limits' alerts) and per subject (quota.alert_overrides), what fired in each window
-- (quota.counters' alerted, and alert_at for the fast path), the outbox quota.alerts with its
-- consumer API (sql/alerts.sql), set_alerts / clear_alerts / emit_due_recoveries. Columns are
-- added with constant defaults: no table is rewritten. Function bodies are those of a fresh
-- install.

ALTER TABLE quota.limits ADD COLUMN alerts text[] NOT NULL DEFAULT '{}';
ALTER TABLE quota.limits ADD COLUMN soft boolean NOT NULL DEFAULT false,
    ADD COLUMN overage_max bigint CHECK (overage_max >= 0),
    ADD CONSTRAINT limits_overage_of_a_soft_limit CHECK (soft OR overage_max IS NULL);
ALTER TABLE quota.counters ADD COLUMN alerted text[] NOT NULL DEFAULT '{}', ADD COLUMN alert_at bigint;
-- Windows whose depletion no `recovered` has answered yet (sql/alerts.sql): few rows.
CREATE INDEX counters_awaiting_recovery ON quota.counters (subject, metric, window_end)
    WHERE 'depleted' = ANY (alerted) AND NOT ('recovered' = ANY (alerted));

-- A subject's own usage alert rules for a metric: they replace its plan's (an empty list
-- silences them). Written by quota.set_alerts() / quota.clear_alerts().
CREATE TABLE quota.alert_overrides (
    subject     uuid NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    alerts      text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subject, metric)
);

-- The outbox of usage alerts (docs/alerts.md): one row per (subject, metric, window, rule)
-- that fired, written in the transaction whose usage fired it; `recovered` once per
-- depletion it answers, with the window usable now. The numbers are the window's after that
-- usage; event_id is its ledger row (NULL when a change or the end of a window answered a
-- depletion), cause what it was (consume, record, settle, allocate, grant, reset,
-- plan_change, override, give_back, release, window_end).
-- Delivery (the consumer API in sql/alerts.sql): attempts counts claims; a claim makes the
-- row invisible to others until claimed_until; retry_alert() defers it to available_at;
-- delivered_at once acknowledged; dead_at once it had max_attempts claims.
CREATE TABLE quota.alerts (
    subject       uuid NOT NULL,
    alert_id      bigint GENERATED ALWAYS AS IDENTITY,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    metric        text NOT NULL,
    rule          text NOT NULL,
    window_start  timestamptz NOT NULL,   -- '-infinity': a lifetime window never reset
    resets_at     timestamptz,
    used          bigint NOT NULL,
    allowance     bigint,
    remaining     bigint,
    event_id      bigint,
    cause         text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_by    text,
    claimed_until timestamptz,
    delivered_at  timestamptz,
    dead_at       timestamptz,
    last_error    text,
    PRIMARY KEY (subject, alert_id)
);
CREATE UNIQUE INDEX alerts_alert_id ON quota.alerts (alert_id);
-- What consumers claim from, in order.
CREATE INDEX alerts_pending ON quota.alerts (alert_id) WHERE delivered_at IS NULL AND dead_at IS NULL;

SELECT pg_catalog.pg_extension_config_dump('quota.alert_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('quota.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('quota.alerts_alert_id_seq', '');
ALTER TABLE quota.alert_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.alerts       ENABLE ROW LEVEL SECURITY;

-- A subject's own alert rules change what its marked windows watch (alert_at).
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.alert_overrides
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();

-- An instant as the payload writes it: ISO 8601 in UTC, whatever the session's TimeZone.
CREATE FUNCTION quota.utc_text(instant timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.to_char(instant AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
     WHERE pg_catalog.isfinite(instant)
$$;

-- What a webhook carries: the alert, its window's numbers after the usage that fired it, and
-- what fired it. `id` is the same on every delivery of one alert (deduplicate on it).
CREATE FUNCTION quota.alert_payload(alert quota.alerts) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', alert.alert_id,
        'type', 'quota.alert',
        'created_at', quota.utc_text(alert.created_at),
        'subject', alert.subject,
        'metric', alert.metric,
        'rule', alert.rule,
        'used', alert.used,
        'allowance', alert.allowance,
        'remaining', alert.remaining,
        'window_start', quota.utc_text(alert.window_start),
        'resets_at', quota.utc_text(alert.resets_at),
        'event_id', alert.event_id,
        'cause', alert.cause)
$$;

-- A wake-up for consumers that LISTEN pg_quota_alerts, sent when the transaction commits
-- (never for one that rolls back). The payload is empty: consumers claim from the table.
-- Per row, so that a statement that writes no alert sends nothing; PostgreSQL folds a
-- transaction's identical notifications into one.
CREATE FUNCTION quota.notify_alerts() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('pg_quota_alerts', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER notify_alerts AFTER INSERT ON quota.alerts
    FOR EACH ROW EXECUTE FUNCTION quota.notify_alerts();

-- Claims up to max_alerts alerts for `consumer`, oldest first: each is invisible to other
-- claims for `visibility`, then claimable again unless acknowledged (at-least-once). An
-- alert that already had max_attempts claims goes to the dead letter instead (dead_at).
-- Consumers on several machines never receive one alert twice within its visibility
-- (FOR UPDATE SKIP LOCKED, then claimed_until).
CREATE FUNCTION quota.claim_alerts(consumer text, max_alerts integer DEFAULT 100,
                                   visibility interval DEFAULT '30 seconds', max_attempts integer DEFAULT 10)
RETURNS TABLE (alert_id bigint, attempt integer, payload jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    now_at timestamptz := pg_catalog.clock_timestamp();
BEGIN
    IF consumer IS NULL OR max_alerts IS NULL OR visibility IS NULL OR max_attempts IS NULL THEN
        RAISE EXCEPTION 'consumer, max_alerts, visibility and max_attempts must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF consumer = '' OR max_alerts NOT BETWEEN 1 AND 10000 OR visibility <= interval '0' OR NOT pg_catalog.isfinite(visibility)
       OR max_attempts < 1 THEN
        RAISE EXCEPTION 'invalid claim: consumer %, max_alerts %, visibility %, max_attempts %',
                        pg_catalog.quote_literal(consumer), max_alerts, visibility, max_attempts
            USING ERRCODE = '22023',
                  HINT = 'Name the consumer; claim 1 to 10000 alerts, for a positive finite visibility, with max_attempts of at least 1.';
    END IF;
    UPDATE quota.alerts AS a SET dead_at = now_at, claimed_by = NULL, claimed_until = NULL
      FROM (SELECT s.subject, s.alert_id FROM quota.alerts AS s
             WHERE s.delivered_at IS NULL AND s.dead_at IS NULL AND s.attempts >= max_attempts
               AND (s.claimed_until IS NULL OR s.claimed_until <= now_at)
               FOR UPDATE SKIP LOCKED) AS spent
     WHERE a.subject = spent.subject AND a.alert_id = spent.alert_id;
    RETURN QUERY
    WITH due AS (
        SELECT d.subject, d.alert_id FROM quota.alerts AS d
         WHERE d.delivered_at IS NULL AND d.dead_at IS NULL AND d.available_at <= now_at
           AND (d.claimed_until IS NULL OR d.claimed_until <= now_at) AND d.attempts < max_attempts
         ORDER BY d.alert_id
         LIMIT max_alerts
           FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE quota.alerts AS a SET attempts = a.attempts + 1, claimed_by = consumer, claimed_until = now_at + visibility
          FROM due
         WHERE a.subject = due.subject AND a.alert_id = due.alert_id
        RETURNING a.*)
    SELECT c.alert_id, c.attempts, quota.alert_payload(c::quota.alerts) FROM claimed AS c ORDER BY c.alert_id;
END
$$;

-- Acknowledges delivered alerts (idempotent, whoever claimed them); returns how many were
-- newly acknowledged. A dead alert delivered late is acknowledged too.
CREATE FUNCTION quota.ack_alerts(alert_ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acknowledged integer;
BEGIN
    IF alert_ids IS NULL THEN
        RAISE EXCEPTION 'alert_ids must not be NULL' USING ERRCODE = '22004';
    END IF;
    UPDATE quota.alerts SET delivered_at = pg_catalog.clock_timestamp(), dead_at = NULL, claimed_until = NULL
     WHERE alert_id = ANY (alert_ids) AND delivered_at IS NULL;
    GET DIAGNOSTICS acknowledged = ROW_COUNT;
    RETURN acknowledged;
END
$$;

-- Gives up a claim that failed: the alert is claimable again at retry_at (the consumer's
-- backoff), with `error` kept. `attempt` is the claim's (claim_alerts returned it): a claim
-- that expired and was claimed again by another consumer is not given up by its first
-- holder, and an alert acknowledged meanwhile stays acknowledged. Whether it was given up.
CREATE FUNCTION quota.retry_alert(alert_id bigint, attempt integer, error text, retry_at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    given_up integer;
BEGIN
    IF alert_id IS NULL OR attempt IS NULL OR retry_at IS NULL THEN
        RAISE EXCEPTION 'alert_id, attempt and retry_at must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT pg_catalog.isfinite(retry_at) THEN
        RAISE EXCEPTION 'retry_at must be a finite timestamp' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM quota.alerts AS a WHERE a.alert_id = retry_alert.alert_id) THEN
        RAISE EXCEPTION 'alert % does not exist', alert_id USING ERRCODE = '22023';
    END IF;
    UPDATE quota.alerts AS a
       SET claimed_by = NULL, claimed_until = NULL, available_at = retry_at,
           last_error = pg_catalog.left(error, 1000)
     WHERE a.alert_id = retry_alert.alert_id AND a.attempts = retry_alert.attempt AND a.delivered_at IS NULL;
    GET DIAGNOSTICS given_up = ROW_COUNT;
    RETURN given_up = 1;
END
$$;

-- Puts dead alerts back in the queue with a fresh count of attempts; returns how many.
CREATE FUNCTION quota.requeue_dead_alerts(alert_ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    requeued integer;
BEGIN
    IF alert_ids IS NULL THEN
        RAISE EXCEPTION 'alert_ids must not be NULL' USING ERRCODE = '22004';
    END IF;
    UPDATE quota.alerts SET dead_at = NULL, attempts = 0, available_at = pg_catalog.clock_timestamp()
     WHERE alert_id = ANY (alert_ids) AND dead_at IS NOT NULL AND delivered_at IS NULL;
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;

-- Deletes acknowledged and dead alerts older than `older_than`; returns how many. What
-- fired in a window is kept in its counter, so purging never lets an alert fire twice.
CREATE FUNCTION quota.purge_alerts(older_than interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    purged bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval' USING ERRCODE = '22023';
    END IF;
    DELETE FROM quota.alerts
     WHERE coalesce(delivered_at, dead_at) < pg_catalog.clock_timestamp() - older_than;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;

CREATE FUNCTION quota."set_alerts"(
	"subject" uuid, /* Option < Uuid > */
	"metric" TEXT, /* Option < & str > */
	"alerts" TEXT[] /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS TEXT[] /* Result < Vec < String > , ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_alerts_wrapper';

CREATE FUNCTION quota."clear_alerts"(
	"subject" uuid, /* Option < Uuid > */
	"metric" TEXT /* Option < & str > */
) RETURNS bool /* Result < bool, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clear_alerts_wrapper';

CREATE FUNCTION quota."emit_due_recoveries"(
	"max_subjects" INT DEFAULT 1000 /* Option < i32 > */
) RETURNS INT /* Result < i32, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'emit_due_recoveries_wrapper';

-- set_alerts and clear_alerts are in-app admin functions (granted to authenticated).
CREATE OR REPLACE FUNCTION quota.setup_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- my_pool and administered_* are what row level security asks of pools (sql/pools.sql).
    end_user constant text[] := ARRAY['current_subject', 'current_quota_role', 'my_usage', 'my_check', 'limit_request',
                                      'my_pool', 'administered_pools', 'administered_subjects', 'pool_usage'];
    -- Callable by every signed-in user, allowed only to those whose claims carry the
    -- quota_role they need (support: usage; admin: the rest), or, for a pool's functions,
    -- to the pool and its admins (a member may leave); src/callers.rs.
    in_app_admin constant text[] := ARRAY['usage', 'assign_plan', 'set_override', 'clear_override', 'reset',
                                          'grant', 'revoke_grant', 'join_pool', 'leave_pool', 'set_pool_cap',
                                          'clear_pool_cap', 'set_pool_admin', 'allocate', 'revoke_allocation',
                                          'set_alerts', 'clear_alerts'];
    fn regprocedure;
BEGIN
    step := 'sign-up trigger quota_on_signup on auth.users';
    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        outcome := 'skipped: there is no table auth.users';
    ELSE
        CREATE OR REPLACE TRIGGER quota_on_signup AFTER INSERT ON auth.users
            FOR EACH ROW EXECUTE FUNCTION quota.on_signup();
        outcome := 'created';
    END IF;
    RETURN NEXT;

    step := 'service_role: the privileged functions, read access to every table';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        outcome := 'skipped: there is no role service_role';
    ELSE
        GRANT USAGE ON SCHEMA quota TO service_role;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace
                     AND p.proname NOT IN ('setup_supabase', 'teardown_supabase') AND p.prorettype <> 'trigger'::regtype
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO service_role;
        outcome := 'granted';
    END IF;
    RETURN NEXT;

    step := 'authenticated: ' || array_to_string(end_user, ', ') || ', and its own rows; for its admins '
            || array_to_string(in_app_admin, ', ');
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        outcome := 'skipped: there is no role authenticated';
    ELSE
        GRANT USAGE ON SCHEMA quota TO authenticated;
        FOR fn IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
                   WHERE p.pronamespace = 'quota'::regnamespace AND p.proname = ANY (end_user || in_app_admin)
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated', fn);
        END LOOP;
        GRANT SELECT ON ALL TABLES IN SCHEMA quota TO authenticated;
        outcome := 'granted (row level security limits it to the user''s own rows, the functions to admins)';
    END IF;
    RETURN NEXT;

    -- PostgREST runs the pre-request function as the request's role, anon included.
    step := 'anon: limit_request only';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        outcome := 'skipped: there is no role anon';
    ELSE
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM anon;
        REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM anon;
        GRANT USAGE ON SCHEMA quota TO anon;
        GRANT EXECUTE ON FUNCTION quota.limit_request(text) TO anon;
        outcome := 'granted (no table, no other function)';
    END IF;
    RETURN NEXT;
END
$$;

CREATE POLICY own_rows ON quota.alert_overrides FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
-- A user's alerts, for an in-app notification list: its own, its pool's admins', support's.
CREATE POLICY own_rows ON quota.alerts       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);

REVOKE ALL ON quota.alert_overrides, quota.alerts FROM PUBLIC;
REVOKE ALL ON SEQUENCE quota.alerts_alert_id_seq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.utc_text(timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.alert_payload(quota.alerts) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.notify_alerts() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.claim_alerts(text, integer, interval, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.ack_alerts(bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.retry_alert(bigint, integer, text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.requeue_dead_alerts(bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.purge_alerts(interval) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.set_alerts(uuid, text, text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.clear_alerts(uuid, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.emit_due_recoveries(integer) FROM PUBLIC;
