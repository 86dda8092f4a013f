-- Usage alerts (docs/alerts.md): the outbox's wake-up, its payload, and the consumer API.
-- The tables are in sql/schema.sql (quota.alerts, quota.alert_overrides, quota.counters'
-- alerted and alert_at); what fires an alert is Rust (src/alerts.rs), in the transaction of
-- the usage that fired it. Runs after the schema and the fast path's triggers.

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
