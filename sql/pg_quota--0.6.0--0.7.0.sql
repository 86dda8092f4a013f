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
REVOKE EXECUTE ON FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, timestamptz) FROM PUBLIC;
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
    end_user constant text[] := ARRAY['current_subject', 'current_quota_role', 'my_usage', 'my_check'];
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

    step := 'anon: nothing';
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        outcome := 'skipped: there is no role anon';
    ELSE
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA quota FROM anon;
        REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM anon;
        REVOKE ALL ON SCHEMA quota FROM anon;
        outcome := 'nothing granted';
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
