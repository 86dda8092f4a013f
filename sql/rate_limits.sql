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
CREATE FUNCTION quota.limit_request(metric text DEFAULT NULL) RETURNS void
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
