-- Benchmark database: pg_quota and the hand-written baselines it is measured against, on
-- the same subjects. s(0) is the hot subject, s(1..10000) the uniform ones, and
-- s(20001..30000) are at their limit of 10 a day (every call is denied).
CREATE EXTENSION pg_quota;
CREATE FUNCTION public.s(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid $$;

-- pg_quota ("pings" is "calls" in the ledger mode "counters": no row per allowed call)
SELECT quota.create_plan('bench', '{"calls": {"limit": 1000000000000, "per": "day"},
                                   "pings": {"limit": 1000000000000, "per": "day", "ledger": "counters"},
                                   "credits": {"limit": 0, "per": "lifetime"},
                                   "items": {"limit": 1000000000000, "per": "lifetime"}}', is_default => true);
SELECT quota.create_plan('tight', '{"calls": {"limit": 10, "per": "day"},
                                   "pings": {"limit": 10, "per": "day", "ledger": "counters"},
                                   "credits": {"limit": 0, "per": "lifetime"},
                                   "items": {"limit": 10, "per": "lifetime"}}');
-- Rate rules (rated: one rule beside the same quota as calls; paced: a rule alone), set so
-- that they never deny here: 1,000,000 units come back per second, a burst of 10^9.
SELECT quota.set_limits(plan, format('{"rated": {"limit": %s, "per": "day", "rate": [{"limit": 1000000, "per": "1 second", "burst": 1000000000}]},
                                       "paced": {"rate": [{"limit": 1000000, "per": "1 second", "burst": 1000000000}]}}', allowance)::jsonb)
  FROM (VALUES ('bench', 1000000000000), ('tight', 10)) AS p (plan, allowance);
SELECT count(quota.assign_plan(s(n), 'bench')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.assign_plan(s(n), 'tight')) FROM generate_series(20001, 30000) AS n;
SELECT count(quota.consume(s(n), 'calls')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.consume(s(n), 'calls', 10)) FROM generate_series(20001, 30000) AS n;
SELECT count(quota.consume(s(n), 'pings')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.consume(s(n), 'pings', 10)) FROM generate_series(20001, 30000) AS n;
SELECT count(quota.consume(s(n), 'rated')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.consume(s(n), 'rated', 10)) FROM generate_series(20001, 30000) AS n;
-- One transaction per 10,000 subjects: each first consume of a subject marks its window for
-- the fast path under an advisory lock held until commit.
SELECT count(quota.consume(s(n), 'paced')) FROM generate_series(0, 10000) AS n;
SELECT count(quota.consume(s(n), 'paced')) FROM generate_series(10001, 20000) AS n;
SELECT count(quota.consume(s(n), 'paced')) FROM generate_series(20001, 30000) AS n;
-- Feature variants: a credit wallet paid by a grant; an app table under quota.enforce.
SELECT count(quota.grant(s(n), 'credits', 1000000000000)) FROM generate_series(0, 10000) AS n;
-- A wallet with a history (pg_quota_grants_history): s(40001..42000) each spent 20 grants of
-- one credit before the one that pays now, as a wallet that was topped up 20 times has.
SELECT count(quota.grant(s(n), 'credits', 1)) FROM generate_series(40001, 42000) AS n, generate_series(1, 20) AS k;
SELECT count(quota.consume(s(n), 'credits')) FROM generate_series(40001, 42000) AS n, generate_series(1, 20) AS k;
SELECT count(quota.grant(s(n), 'credits', 1000000000000)) FROM generate_series(40001, 42000) AS n;
CREATE TABLE bench_items (id bigserial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('bench_items', 'items');
SELECT count(quota.consume(s(n), 'items', 10)) FROM generate_series(20001, 30000) AS n;
-- A denial raises PT429 in the trigger; pgbench would abort the client, so it is caught.
CREATE FUNCTION bench_insert_item(subject uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_items (user_id) VALUES (subject);
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END $$;
-- What quota.enforce is measured against: the same insert and quota.consume written by hand
-- in the same transaction, a denial undoing the insert as the trigger's does.
CREATE TABLE bench_items_by_hand (id bigserial PRIMARY KEY, user_id uuid NOT NULL);
CREATE FUNCTION bench_insert_item_by_hand(subject uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_items_by_hand (user_id) VALUES (subject);
    IF NOT (quota.consume(subject, 'items')).allowed THEN
        RAISE EXCEPTION 'items: quota exceeded' USING ERRCODE = 'PT429';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END $$;

-- A raised denial (quota.require, as every raising function and limit_request raise) against
-- consume and a bare RAISE written by hand: near the limit every call is one, uniform none.
CREATE FUNCTION bench_require(subject uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM quota.require(subject, 'calls');
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END $$;
CREATE FUNCTION bench_require_by_hand(subject uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (quota.consume(subject, 'calls')).allowed THEN
        RAISE EXCEPTION 'calls: quota exceeded' USING ERRCODE = 'PT429';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END $$;

-- Pools: member s(m) draws from pool s(200000 + m / 10) (ten members a pool), its own plan
-- lacking "calls", with a cap that never binds: s(100000..110000) from pools on 'bench' (a
-- pooled consume, measured against the plain one of s(m - 100000)), s(120001..130000) from
-- pools on 'tight' that used their 10 (every call denied).
SELECT quota.create_plan('member', '{"notes": {"limit": 1, "per": "day"}}');
SELECT count(quota.assign_plan(s(n), 'bench')) FROM generate_series(210000, 211000) AS n;
SELECT count(quota.assign_plan(s(n), 'tight')) FROM generate_series(212000, 213000) AS n;
SELECT count(quota.set_pool_cap(s(n), 'calls', 1000000000000)) FROM generate_series(210000, 213000) AS n;
SELECT count(quota.assign_plan(s(n), 'member')) FROM generate_series(100000, 110000) AS n;
SELECT count(quota.assign_plan(s(n), 'member')) FROM generate_series(120001, 130000) AS n;
SELECT count(quota.join_pool(s(200000 + n / 10), s(n))) FROM generate_series(100000, 110000) AS n;
SELECT count(quota.join_pool(s(200000 + n / 10), s(n))) FROM generate_series(120001, 130000) AS n;
SELECT count(quota.consume(s(n), 'calls', 10)) FROM generate_series(212000, 213000) AS n;
SELECT count(quota.consume(s(n), 'calls')) FROM generate_series(100000, 110000) AS n;

-- floor: the bare statements that do the same durable work as one consume: a conditional
-- counter update and a ledger insert, in one statement.
CREATE TABLE floor_counters (subject uuid, metric text, window_start timestamptz, used bigint NOT NULL,
                             allowance bigint NOT NULL, PRIMARY KEY (subject, metric, window_start))
    WITH (fillfactor = 80);
CREATE TABLE floor_events (subject uuid, event_id bigint GENERATED ALWAYS AS IDENTITY (CACHE 64), metric text,
                           amount bigint, allowed boolean, used bigint, created_at timestamptz DEFAULT now(),
                           PRIMARY KEY (subject, event_id));
INSERT INTO floor_counters SELECT s(n), 'calls', date_trunc('day', now()), 0, 1000000000000 FROM generate_series(0, 10000) AS n;
INSERT INTO floor_counters SELECT s(n), 'calls', date_trunc('day', now()), 10, 10 FROM generate_series(20001, 30000) AS n;
-- floor_counters: the conditional update alone, on a copy of the floor's counters (no ledger
-- row: what a counters-only ledger mode is measured against).
CREATE TABLE floor_bare_counters (LIKE floor_counters INCLUDING ALL) WITH (fillfactor = 80);
INSERT INTO floor_bare_counters SELECT * FROM floor_counters;

-- floor_function, floor_counters_function: the floor's statements inside the least function
-- an API can be (PL/pgSQL, SECURITY DEFINER with a pinned search_path, as every pg_quota
-- function is, returning only whether the call was allowed): what calling a function
-- costs on top of its statement, which no function-call API can avoid.
CREATE FUNCTION floor_function(p_subject uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed boolean;
BEGIN
    WITH c AS (UPDATE public.floor_counters SET used = used + 1
                WHERE subject = p_subject AND metric = 'calls' AND window_start = date_trunc('day', now())
                  AND used + 1 <= allowance
               RETURNING used)
    INSERT INTO public.floor_events (subject, metric, amount, allowed, used)
    SELECT p_subject, 'calls', 1, c.used IS NOT NULL, c.used FROM (SELECT) AS one LEFT JOIN c ON true
    RETURNING floor_events.allowed INTO allowed;
    RETURN allowed;
END $$;
CREATE FUNCTION floor_counters_function(p_subject uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE public.floor_bare_counters SET used = used + 1
     WHERE subject = p_subject AND metric = 'calls' AND window_start = date_trunc('day', now())
       AND used + 1 <= allowance;
    RETURN FOUND;
END $$;

-- plpgsql: the check-and-consume function users write today: plan lookup, conditional
-- upsert of the counter, event insert.
CREATE TABLE plp_limits (plan text, metric text, allowance bigint, PRIMARY KEY (plan, metric));
CREATE TABLE plp_subscriptions (subject uuid PRIMARY KEY, plan text NOT NULL);
CREATE TABLE plp_usage (subject uuid, metric text, period_start date, used bigint NOT NULL,
                        PRIMARY KEY (subject, metric, period_start)) WITH (fillfactor = 80);
CREATE TABLE plp_events (id bigserial PRIMARY KEY, subject uuid, metric text, amount bigint, allowed boolean,
                         created_at timestamptz DEFAULT now());
INSERT INTO plp_limits VALUES ('bench', 'calls', 1000000000000), ('tight', 'calls', 10);
INSERT INTO plp_subscriptions SELECT s(n), 'bench' FROM generate_series(0, 10000) AS n;
INSERT INTO plp_subscriptions SELECT s(n), 'tight' FROM generate_series(20001, 30000) AS n;
INSERT INTO plp_usage SELECT s(n), 'calls', current_date, 0 FROM generate_series(0, 10000) AS n;
INSERT INTO plp_usage SELECT s(n), 'calls', current_date, 10 FROM generate_series(20001, 30000) AS n;
CREATE FUNCTION plp_consume(p_subject uuid, p_metric text, p_amount bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_allowance bigint;
    v_used bigint;
BEGIN
    SELECT l.allowance INTO v_allowance
      FROM plp_subscriptions s JOIN plp_limits l ON l.plan = s.plan AND l.metric = p_metric
     WHERE s.subject = p_subject;
    IF v_allowance IS NOT NULL THEN
        INSERT INTO plp_usage AS u VALUES (p_subject, p_metric, current_date, p_amount)
        ON CONFLICT (subject, metric, period_start)
        DO UPDATE SET used = u.used + excluded.used WHERE u.used + excluded.used <= v_allowance
        RETURNING used INTO v_used;
    END IF;
    INSERT INTO plp_events (subject, metric, amount, allowed) VALUES (p_subject, p_metric, p_amount, v_used IS NOT NULL);
    RETURN v_used IS NOT NULL;
END $$;

-- check-then-act: the racy two-step version, on its own counter of 1,000.
CREATE TABLE cta_counters (subject uuid PRIMARY KEY, used bigint NOT NULL, allowance bigint NOT NULL);
INSERT INTO cta_counters VALUES (s(0), 0, 1000);
VACUUM ANALYZE;

-- gcra: the hand-written single-statement rate limiter a rate-only metric is measured
-- against: one conditional UPDATE of a GCRA timestamp (µs since 1970), the same rule as
-- "paced" (1 µs per unit, at most 10^9 µs ahead).
CREATE TABLE gcra_state (subject uuid PRIMARY KEY, tat_us bigint NOT NULL) WITH (fillfactor = 80);
INSERT INTO gcra_state SELECT s(n), 0 FROM generate_series(0, 30000) AS n;
