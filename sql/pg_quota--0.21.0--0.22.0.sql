-- pg_quota 0.21.0 -> 0.22.0: what reviews of the enforce trigger and of the surface signed-in
-- users reach found.
--
-- quota.enforce_on attached the trigger to UPDATE OF its columns, which PostgreSQL fires only
-- for updates that name them: a table's own BEFORE trigger that set the amount or the subject
-- (size_mb := length(content)) grew or moved a row uncharged. It now fires on every UPDATE
-- and returns at once when neither column changed. enforce_on also refuses a virtual
-- generated column (PostgreSQL 18), which has no value in a trigger's row.
-- The analytics' buckets are at most about 10,000 (a signed-in user's my_usage_history by the
-- hour since the year 1 ran out of time or memory: HTTP 500 through PostgREST), and a pool's
-- member no longer reads the other members' holds on the pool. limit_request takes the
-- anonymous client's address from the right of X-Forwarded-For past the proxies the setting
-- quota.trusted_proxies names (a proxy that appends leaves the first entries to the client).

-- Attaches quota.enforce() to a table, checking its arguments first: the subject column
-- exists and is a uuid, the metric exists, the amount is a number or an integer or numeric
-- column; neither column is a virtual generated column (PostgreSQL 18), which a trigger's
-- row has no value for. Runs as the caller, who must own the table (and have EXECUTE on quota.enforce).
CREATE OR REPLACE FUNCTION quota.enforce_on(target regclass, metric text, subject_column text DEFAULT 'user_id',
                                 amount text DEFAULT '1') RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject_type regtype;
    amount_type regtype;
    is_virtual boolean;
BEGIN
    IF target IS NULL OR metric IS NULL OR subject_column IS NULL OR amount IS NULL THEN
        RAISE EXCEPTION 'quota.enforce_on: arguments must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT quota.known_metric(metric) THEN
        RAISE EXCEPTION 'unknown metric "%"', metric
            USING ERRCODE = '42704', HINT = 'A metric exists once a plan has a limit for it: see quota.create_plan().';
    END IF;
    SELECT a.atttypid, a.attgenerated = 'v' INTO subject_type, is_virtual FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = target AND a.attname = subject_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF subject_type IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', target, subject_column USING ERRCODE = '42703';
    ELSIF subject_type <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'column %.% is %, not uuid', target, subject_column, subject_type USING ERRCODE = '42804';
    ELSIF is_virtual THEN
        RAISE EXCEPTION 'column %.% is a virtual generated column, which a trigger cannot read', target, subject_column
            USING ERRCODE = '0A000', HINT = 'Declare it GENERATED ALWAYS AS (...) STORED, or charge a column it is computed from.';
    END IF;
    IF amount !~ '^[0-9]+$' THEN
        SELECT a.atttypid, a.attgenerated = 'v' INTO amount_type, is_virtual FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = target AND a.attname = amount AND a.attnum > 0 AND NOT a.attisdropped;
        IF amount_type IS NULL THEN
            RAISE EXCEPTION 'amount % is neither a number nor a column of table %', amount, target USING ERRCODE = '42703';
        ELSIF amount_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN
            RAISE EXCEPTION 'column %.% is %, not an integer or numeric type', target, amount, amount_type USING ERRCODE = '42804';
        ELSIF is_virtual THEN
            RAISE EXCEPTION 'column %.% is a virtual generated column, which a trigger cannot read', target, amount
                USING ERRCODE = '0A000', HINT = 'Declare it GENERATED ALWAYS AS (...) STORED, or charge a column it is computed from.';
        END IF;
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION quota.enforce(%L, %L, %L)',
                   'quota_enforce_' || metric, target, metric, subject_column, amount);
END
$$;

-- Every trigger of quota.enforce that fires only on UPDATE OF its columns, as enforce_on
-- attached them until now, becomes the same trigger (name, arguments, enabled state) on
-- every UPDATE; one on a partitioned table is replaced there, and its partitions' copies
-- follow. One with a WHEN condition, or on a table this role cannot alter, is left as it was,
-- with a WARNING saying how to replace it.
DO $$
DECLARE
    t record;
    nul constant bytea := pg_catalog.decode('00', 'hex');
    rest bytea;
    cut integer;
    args text[];
BEGIN
    FOR t IN SELECT tg.tgrelid::regclass AS target, tg.tgname, tg.tgenabled, tg.tgqual IS NOT NULL AS has_when,
                    tg.tgargs, tg.tgnargs
               FROM pg_catalog.pg_trigger AS tg
              WHERE tg.tgfoid = 'quota.enforce()'::regprocedure AND tg.tgparentid = 0
                AND pg_catalog.array_length(tg.tgattr::int2[], 1) > 0
              ORDER BY tg.oid
    LOOP
        -- The arguments, each ended by a zero byte.
        rest := t.tgargs;
        args := '{}';
        FOR i IN 1 .. t.tgnargs LOOP
            cut := pg_catalog.position(rest, nul);
            args := args || pg_catalog.convert_from(pg_catalog.substr(rest, 1, cut - 1), pg_catalog.getdatabaseencoding());
            rest := pg_catalog.substr(rest, cut + 1);
        END LOOP;
        IF t.has_when THEN
            RAISE WARNING 'trigger % on % has a WHEN condition and still fires only on updates of its columns', t.tgname, t.target
                USING HINT = 'Recreate it AFTER INSERT OR UPDATE OR DELETE, without UPDATE OF.';
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION quota.enforce(%s)',
                           t.tgname, t.target, (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(a), ', ' ORDER BY n)
                                                  FROM pg_catalog.unnest(args) WITH ORDINALITY AS x (a, n)));
            -- CREATE OR REPLACE enables the trigger: a disabled one stays disabled.
            IF t.tgenabled <> 'O' THEN
                EXECUTE format('ALTER TABLE %s %s TRIGGER %I', t.target,
                               CASE t.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END, t.tgname);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'trigger % on % still fires only on updates of its columns: %', t.tgname, t.target, SQLERRM
                USING HINT = 'As the table''s owner, recreate it AFTER INSERT OR UPDATE OR DELETE, without UPDATE OF (quota.enforce_on() does, for the triggers it attached).';
        END;
    END LOOP;
END
$$;

-- The buckets that cover [since, until): whole hours, days, ISO weeks (from Monday) or
-- months of `time_zone`, the first one starting at or before since, the last one ending
-- at or after until. Days and months follow the zone's calendar (a day of a DST change is
-- 23 or 25 hours); hours are exact hours on the zone's hour boundaries (the repeated hour
-- of an autumn change is two buckets). An event belongs to the bucket
-- pg_catalog.date_trunc(bucket, instant, time_zone). At most about 10,000 buckets (a month
-- counted as 28 days): more is a client's mistake (an hour's buckets since the year 1 are
-- 17.7 million rows), refused before it takes the server's time and memory.
CREATE OR REPLACE FUNCTION quota.analytics_buckets(bucket text, since timestamptz, until timestamptz, time_zone text DEFAULT 'UTC')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step interval;
BEGIN
    IF bucket IS NULL OR time_zone IS NULL THEN
        RAISE EXCEPTION 'bucket and time_zone must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF bucket NOT IN ('hour', 'day', 'week', 'month') THEN
        RAISE EXCEPTION 'unknown bucket "%"', bucket USING ERRCODE = '22023',
            HINT = 'A bucket is ''hour'', ''day'', ''week'' or ''month''.';
    END IF;
    PERFORM quota.analytics_period(since, until);
    BEGIN
        PERFORM pg_catalog.now() AT TIME ZONE time_zone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'unknown time zone "%"', time_zone USING ERRCODE = '22023',
            HINT = 'Name an IANA time zone such as ''Europe/Paris'' (see pg_timezone_names), or ''UTC''.';
    END;
    step := ('1 ' || bucket)::interval;
    IF pg_catalog.date_part('epoch', until - since)
       > 10000 * pg_catalog.date_part('epoch', CASE WHEN bucket = 'month' THEN interval '28 days' ELSE step END) THEN
        RAISE EXCEPTION 'the period from % to % has more than 10,000 % buckets', since, until, bucket USING ERRCODE = '22023',
            HINT = 'Ask for a shorter period or a larger bucket (''day'', ''week'' or ''month'').';
    END IF;
    IF bucket = 'hour' THEN
        -- Exact hours (an hour's interval is elapsed time whatever the session's TimeZone).
        RETURN QUERY
        SELECT b, b + step
          FROM pg_catalog.generate_series(pg_catalog.date_trunc('hour', since, time_zone),
                                          until - interval '1 microsecond', step) AS b;
    ELSE
        -- Local calendar time, stepped without a time zone, then placed in the zone.
        RETURN QUERY
        SELECT b AT TIME ZONE time_zone, (b + step) AT TIME ZONE time_zone
          FROM pg_catalog.generate_series(pg_catalog.date_trunc(bucket, since AT TIME ZONE time_zone),
                                          (until - interval '1 microsecond') AT TIME ZONE time_zone, step) AS b;
    END IF;
END
$$;

-- A member reads its own holds on the pool, not the other members' (their ids and keys).
ALTER POLICY own_rows ON quota.reservations USING (subject = (SELECT quota.current_subject())
                                                   OR (subject = (SELECT quota.my_pool()) AND member = (SELECT quota.current_subject()))
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);

-- The PostgREST pre-request function: a rate rule per request, applied before PostgREST
-- runs the request. Configure it on PostgREST's authenticator role:
--   ALTER ROLE authenticator SET pgrst.db_pre_request = 'quota.limit_request';
--   ALTER ROLE authenticator SET quota.request_metric = 'api_requests';   -- the default
-- Each request is one unit of that metric for its subject: the JWT's sub when signed in,
-- else quota.subject_for('ip:' || the client address) from the X-Forwarded-For header
-- PostgREST passes on ('ip:unknown' without one): its first entry, or, with the setting
-- quota.trusted_proxies = N (proxies in front of PostgREST that each append the address
-- they were called from), the N-th from the right, the one no client can write. Over a rate rule
-- or the quota, the request is HTTP 429 with Retry-After (quota.raise_denied()).
-- PostgREST runs GET and HEAD in read-only transactions, where no table can be written.
-- When pg_quota is preloaded (shared_preload_libraries), a GET takes its unit from the
-- metric's rate rules in shared memory (quota.limit_in_memory(): no write, so replicas
-- count too), a bucket of its own beside the one writes take from the table. Either way it
-- then checks (quota.check()): a bucket or quota that writes emptied turns GETs away too.
-- A GET is never an error of its own (no HTTP 5xx). A subject without a plan (and no
-- default plan) is let through.
CREATE OR REPLACE FUNCTION quota.limit_request(metric text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request_metric constant text := coalesce(metric, nullif(current_setting('quota.request_metric', true), ''), 'api_requests');
    caller uuid := quota.current_subject();
    client_address text;
    addresses text[];
    proxies constant text := nullif(current_setting('quota.trusted_proxies', true), '');
    in_memory record;
    d quota.decision;
BEGIN
    IF caller IS NULL THEN
        IF proxies !~ '^[0-9]{1,3}$' THEN
            RAISE EXCEPTION 'quota.trusted_proxies must be a whole number of proxies, not "%"', proxies USING ERRCODE = '22023',
                HINT = 'ALTER ROLE authenticator SET quota.trusted_proxies = 1 (one proxy that appends to X-Forwarded-For), or RESET it.';
        END IF;
        addresses := pg_catalog.string_to_array(
            coalesce(nullif(current_setting('request.headers', true), ''), '{}')::json ->> 'x-forwarded-for', ',');
        client_address := left(btrim(CASE WHEN coalesce(proxies::int, 0) = 0 THEN addresses[1]
                                          ELSE addresses[greatest(pg_catalog.cardinality(addresses) - proxies::int + 1, 1)] END), 200);
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
