-- pg_quota 0.6.0 -> 0.7.0: what new users tripped over.
-- * Idempotency keys are scoped to (subject, metric): one request id may pay for a request
--   and its tokens. Both key indexes lead with (subject, idempotency_key), then the metric.
-- * assign_plan() without an anchor keeps the subject's anchor (a mid-cycle upgrade keeps
--   its month); an explicit anchor restarts the cycle.
-- * consume_many() / require_many(): many metrics, one decision; require_reservation(): a
--   reserve that raises; every raised denial says what is available (explain_denial()).
-- * A plan change locks the subject's marked counters in the order bundles lock them.
-- * Supabase: in-app admins and support through app_metadata.quota_role, the audit trail
--   quota.admin_changes, a sign-up trigger that never waits on a lock, teardown_supabase().
--   Run quota.setup_supabase() again to grant the in-app admin functions to authenticated.
-- * quota.subject_for(key): the subject uuid of an IP address, an API key, a device.
-- * Rate rules beside the quota (the end of this script).
-- quota.check() reports the window as it is now; its signature is unchanged.

DROP INDEX quota.events_idempotency_key;
-- Only committed, allowed consumption holds an idempotency key (reservations keep theirs
-- in quota.reservations). A key is scoped to (subject, metric): one request id may pay for
-- a request and its tokens. The key leads the metric so that a bundle's retry
-- (quota.consume_many()) finds every metric of its key in one range.
CREATE UNIQUE INDEX events_idempotency_key ON quota.events (subject, idempotency_key, metric)
    WHERE idempotency_key IS NOT NULL AND kind IN ('consume', 'record');
DROP INDEX quota.reservations_idempotency_key;
-- Idempotency keys are scoped to (subject, metric), as in quota.events.
CREATE UNIQUE INDEX reservations_idempotency_key ON quota.reservations (subject, idempotency_key, metric)
    WHERE idempotency_key IS NOT NULL;

CREATE OR REPLACE FUNCTION quota."assign_plan"(
	"subject" uuid,
	"plan" TEXT,
	"anchor" timestamp with time zone DEFAULT NULL
) RETURNS VOID
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'assign_plan_wrapper';

CREATE FUNCTION quota."consume_many"(
	"subject" uuid,
	"amounts" jsonb,
	"idempotency_key" TEXT DEFAULT NULL,
	"metadata" jsonb DEFAULT NULL
) RETURNS SETOF quota.decision
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'consume_many_wrapper';

CREATE FUNCTION quota."explain_denial"(
	"subject" uuid,
	"metric" TEXT,
	"requested" bigint,
	"used" bigint,
	"reserved" bigint,
	"allowance" bigint,
	"resets_at" timestamp with time zone
) RETURNS TABLE (
	"message" TEXT,
	"detail" TEXT,
	"hint" TEXT
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'explain_denial_wrapper';

-- Raises the denial of `requested` units of `metric`, with the window's figures. Through
-- PostgREST (which sets request.method for each request) it is RAISE SQLSTATE 'PGRST', the
-- one error PostgREST takes its status and headers from: HTTP 429 with Retry-After (whole
-- seconds, rounded up) when the call fits again at retry_after, and the body PostgREST
-- always sends, {"code": "PT429", "message", "details", "hint"}. Anywhere else it is
-- SQLSTATE PT429 with the same message, detail and hint.
CREATE FUNCTION quota.raise_denied(subject uuid, metric text, reason text, requested bigint, used bigint,
                                   reserved bigint, allowance bigint, resets_at timestamptz,
                                   retry_after timestamptz) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message text;
    detail text;
    hint text;
BEGIN
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
        PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.resets_at,
                                       d.retry_after);
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
            PERFORM quota.raise_denied(subject, d.metric, d.reason, d.amount, d.used, d.reserved, d.allowance, d.resets_at,
                                       d.retry_after);
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
        PERFORM quota.raise_denied(subject, r.metric, r.reason, r.amount, r.used, r.reserved, r.allowance, r.resets_at,
                                   r.retry_after);
    END IF;
    RETURN r;
END
$$;


-- Locks the marked rows in the order a bundle locks its counters in (sql/fast_path.sql).
CREATE OR REPLACE FUNCTION quota.forget_fast_path_of_subject(subject uuid, metric text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(forget_fast_path_of_subject.subject::text, 1903127));
    UPDATE quota.counters AS c SET fast = false
      FROM (SELECT k.metric, k.window_start FROM quota.counters AS k
             WHERE k.subject = forget_fast_path_of_subject.subject AND k.fast
               AND (forget_fast_path_of_subject.metric IS NULL OR k.metric = forget_fast_path_of_subject.metric)
             ORDER BY k.metric COLLATE "C"
               FOR UPDATE) AS marked
     WHERE c.subject = forget_fast_path_of_subject.subject AND c.metric = marked.metric
       AND c.window_start = marked.window_start;
$$;

REVOKE EXECUTE ON FUNCTION quota.consume_many(uuid, jsonb, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.explain_denial(uuid, text, bigint, bigint, bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.require_many(uuid, jsonb, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.require_reservation(uuid, text, bigint, interval, text) FROM PUBLIC;

-- Supabase: in-app admins and support (app_metadata.quota_role), the audit trail of
-- administration, sign-ups that never wait, the uninstall path.
CREATE FUNCTION quota."current_quota_role"() RETURNS TEXT
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'current_quota_role_wrapper';

CREATE TABLE quota.admin_changes (
    change_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    action       text NOT NULL,
    db_role      text NOT NULL,
    jwt_subject  uuid,
    jwt_role     text,
    quota_role   text,
    subject      uuid,
    metric       text,
    plan         text,
    before       jsonb,
    after        jsonb
);
CREATE INDEX admin_changes_subject ON quota.admin_changes (subject, change_id) WHERE subject IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('quota.admin_changes', '');
SELECT pg_catalog.pg_extension_config_dump('quota.admin_changes_change_id_seq', '');
ALTER TABLE quota.admin_changes ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON quota.admin_changes FROM PUBLIC;
REVOKE ALL ON SEQUENCE quota.admin_changes_change_id_seq FROM PUBLIC;
CREATE POLICY admins ON quota.admin_changes  FOR SELECT USING ((SELECT quota.current_quota_role()) = 'admin');
ALTER POLICY own_rows ON quota.assignments USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.overrides USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.resets USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.counters USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.events USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.grants USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.event_grants USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.reservations USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_rows ON quota.enforced_charges USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
ALTER POLICY own_plan ON quota.plans USING (is_default OR plan IN (SELECT a.plan FROM quota.assignments AS a)
                                                         OR (SELECT quota.current_quota_role()) IS NOT NULL);

ALTER FUNCTION quota.on_signup() SET lock_timeout = '100ms';

CREATE FUNCTION quota.teardown_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grantee text;
BEGIN
    step := 'sign-up trigger quota_on_signup on auth.users';
    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        outcome := 'skipped: there is no table auth.users';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_trigger
                   WHERE tgrelid = 'auth.users'::regclass AND tgname = 'quota_on_signup') THEN
        DROP TRIGGER quota_on_signup ON auth.users;
        outcome := 'dropped';
    ELSE
        outcome := 'not there';
    END IF;
    RETURN NEXT;

    FOREACH grantee IN ARRAY ARRAY['service_role', 'authenticated', 'anon'] LOOP
        step := grantee || ': every privilege on schema quota';
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = grantee) THEN
            outcome := 'skipped: there is no role ' || grantee;
        ELSE
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON SCHEMA quota FROM %I', grantee);
            outcome := 'revoked';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION quota.setup_supabase()
RETURNS TABLE (step text, outcome text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    end_user constant text[] := ARRAY['current_subject', 'current_quota_role', 'my_usage', 'my_check', 'limit_request'];
    -- Callable by every signed-in user, allowed only to those whose claims carry the
    -- quota_role they need (support: usage; admin: the rest); src/callers.rs.
    in_app_admin constant text[] := ARRAY['usage', 'assign_plan', 'set_override', 'clear_override', 'reset',
                                          'grant', 'revoke_grant'];
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

REVOKE EXECUTE ON FUNCTION quota.current_quota_role() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.teardown_supabase() FROM PUBLIC;

-- Subjects that are not users: the subject uuid of a text key.
CREATE FUNCTION quota."subject_for"(
	"key" TEXT
) RETURNS uuid
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_for_wrapper';
REVOKE EXECUTE ON FUNCTION quota.subject_for(text) FROM PUBLIC;

-- Rate rules (issue 19): rules in plan limits ("rate"), per-subject rate overrides, the
-- state of each rule, retry_after in decisions and reservations, each rule's state in
-- usage(), Retry-After through PostgREST, and the pre-request function limit_request().
ALTER TABLE quota.limits ADD COLUMN rate jsonb NOT NULL DEFAULT '[]';

-- A per-subject rate rule: it replaces the plan's rule of the metric with the same per
-- (canonical text, e.g. '1 minute'), or adds one, until expires_at (NULL: until cleared).
-- An expired row is simply ignored; quota.clear_rate_override() removes it.
CREATE TABLE quota.rate_overrides (
    subject     uuid NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    per         text NOT NULL,
    rate_limit  bigint NOT NULL CHECK (rate_limit > 0),
    burst       bigint NOT NULL CHECK (burst > 0),
    expires_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subject, metric, per)
);

-- The state of each rate rule of each (subject, metric): GCRA's theoretical arrival time,
-- the instant the rule's bucket is full again, in microseconds since 1970-01-01 UTC. One row
-- per (subject, metric, per), written by the calls the rule admits; a tat in the past means
-- a full bucket, so nothing ever needs to delete rows.
-- fast marks the rows of the rules in force when the (subject, metric)'s counter is marked
-- fast too: consume's fast path then decides them in its one statement with the rule cached
-- here (rule_limit per rule_per_us, rule_burst), until rule_until (an override's expiry).
-- Marked with the counter, under its keys (src/store/fast_path.rs); a configuration change
-- unmarks the counter, which is enough.
CREATE TABLE quota.rate_state (
    subject     uuid NOT NULL,
    metric      text NOT NULL,
    per         text NOT NULL,
    tat_us      bigint NOT NULL,
    fast        boolean NOT NULL DEFAULT false,
    rule_limit  bigint,
    rule_per_us bigint,
    rule_burst  bigint,
    rule_until  timestamptz,
    PRIMARY KEY (subject, metric, per),
    CHECK (NOT fast OR (rule_limit > 0 AND rule_per_us > 0 AND rule_burst > 0))
) WITH (fillfactor = 80);
SELECT pg_catalog.pg_extension_config_dump('quota.rate_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('quota.rate_state', '');
ALTER TABLE quota.rate_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota.rate_state ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON quota.rate_overrides, quota.rate_state FROM PUBLIC;
CREATE POLICY own_rows ON quota.rate_overrides FOR SELECT USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.rate_state   FOR SELECT USING (subject = (SELECT quota.current_subject()) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE TRIGGER forget_fast_path AFTER INSERT OR UPDATE OR DELETE ON quota.rate_overrides
    FOR EACH ROW EXECUTE FUNCTION quota.forget_fast_path();

ALTER TYPE quota.decision ADD ATTRIBUTE retry_after timestamptz;
ALTER TYPE quota.reservation ADD ATTRIBUTE retry_after timestamptz;
ALTER TYPE quota.usage_row ADD ATTRIBUTE rates jsonb;

CREATE FUNCTION quota."set_rate_override"(
	"subject" uuid,
	"metric" TEXT,
	"per" TEXT,
	"rate_limit" bigint,
	"burst" bigint DEFAULT NULL,
	"expires_at" timestamp with time zone DEFAULT NULL
) RETURNS VOID
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_rate_override_wrapper';

CREATE FUNCTION quota."clear_rate_override"(
	"subject" uuid,
	"metric" TEXT,
	"per" TEXT
) RETURNS VOID
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'clear_rate_override_wrapper';

-- The PostgREST pre-request function: a rate rule per request, applied before PostgREST
-- runs the request. Configure it on PostgREST's authenticator role:
--   ALTER ROLE authenticator SET pgrst.db_pre_request = 'quota.limit_request';
--   ALTER ROLE authenticator SET quota.request_metric = 'api_requests';   -- the default
-- Each request is one unit of that metric for its subject: the JWT's sub when signed in,
-- else quota.subject_for('ip:' || the client address), the first entry of the
-- X-Forwarded-For header PostgREST passes on ('ip:unknown' without one). Over a rate rule
-- or the quota, the request is HTTP 429 with Retry-After (quota.raise_denied()).
-- PostgREST runs GET and HEAD in read-only transactions, where nothing can be written:
-- there the function only checks (quota.check()): a bucket that writes emptied turns GETs
-- away too, but a GET takes no unit and is never an error of its own (no HTTP 5xx).
-- A subject without a plan (and no default plan) is let through.
CREATE FUNCTION quota.limit_request(metric text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request_metric constant text := coalesce(metric, nullif(current_setting('quota.request_metric', true), ''), 'api_requests');
    caller uuid := quota.current_subject();
    client_address text;
    d quota.decision;
BEGIN
    IF caller IS NULL THEN
        client_address := left(btrim(split_part(
            coalesce(nullif(current_setting('request.headers', true), ''), '{}')::json ->> 'x-forwarded-for', ',', 1)), 200);
        caller := quota.subject_for('ip:' || coalesce(nullif(client_address, ''), 'unknown'));
    END IF;
    IF current_setting('transaction_read_only') = 'on' THEN
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

REVOKE EXECUTE ON FUNCTION quota.set_rate_override(uuid, text, text, bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.clear_rate_override(uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION quota.limit_request(text) FROM PUBLIC;
