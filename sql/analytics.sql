-- Usage analytics (docs/analytics.md): usage per hour/day/week/month in the limit's time
-- zone, top consumers, denial spikes against a subject's own baseline, rate limit hits, a
-- forecast of when a window runs out, plan distribution and active subjects.
--
-- Every function here is SECURITY INVOKER and reads the ledger through row level security
-- (sql/privileges.sql), so nothing here can show a caller a row the tables would not. On
-- top of that, the functions about other subjects or about all of them refuse, with 42501,
-- a caller to whom row level security applies and who has no quota_role (a plain
-- signed-in user, or a backend role without BYPASSRLS): such a caller would only ever see
-- zeros, never the answer it asked for. The my_ forms are the caller's own.

-- The ledger as usage: one row per event, with the units it moved and the instant it
-- counts at. units: what a call consumed (allowance + grants + overage) for consume,
-- record, settle and allocate (a pool's part given to a member is usage of the pool's
-- window), minus what a give_back returned; 0 for the rest (reserve, release, denial,
-- reset). Grants given (quota.grant) are not events: they never count as usage.
-- counted_at is when the event was written (created_at, the transaction's start), except
-- for an event written after its window had ended (a late record(occurred_at => ...), a
-- settle after the window's end), which counts at the last instant of the window it
-- counted in: so a day's usage agrees with that day's window. It is never later than
-- created_at, so that "counted_at >= since" can be searched as "created_at >= since" too
-- (the BRIN index below).
CREATE VIEW quota.usage_events WITH (security_invoker = true) AS
SELECT e.subject, e.event_id, e.metric, e.kind::text AS kind, e.reason, e.created_at,
       least(e.created_at, e.window_end - interval '1 microsecond') AS counted_at,
       CASE WHEN e.kind::text IN ('consume', 'record', 'settle', 'allocate')
                THEN e.from_allowance + e.from_grants + e.overage
            WHEN e.kind::text = 'give_back' THEN -e.from_allowance
            ELSE 0 END::int8 AS units,
       CASE WHEN e.kind::text IN ('consume', 'record', 'settle') THEN e.from_grants ELSE 0 END::int8 AS from_grants,
       CASE WHEN e.kind::text IN ('consume', 'record', 'settle') THEN e.overage ELSE 0 END::int8 AS overage,
       e.window_start, e.window_end, e.pool
  FROM quota.events AS e;
COMMENT ON VIEW quota.usage_events IS 'pg_quota: the ledger as usage (units, counted_at); reads through row level security';

-- The ledger only grows, in created_at order: a BRIN index finds a period's pages for a few
-- kilobytes and almost nothing per insert (docs/benchmarks.md, "Analytics").
CREATE INDEX events_created_at ON quota.events USING brin (created_at) WITH (autosummarize = on);
-- Denials are few, and the abuse signals read only them: a partial index costs only a
-- denial's insert, and answers denial_spikes and rate_limit_hits from the index alone.
CREATE INDEX events_denials ON quota.events (created_at) INCLUDE (subject, metric, reason) WHERE kind = 'denial';

-- The caller's subject, or 42501 without a signed-in user (as my_usage() says it).
CREATE FUNCTION quota.signed_in_subject() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject constant uuid := quota.current_subject();
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION 'no signed-in user' USING ERRCODE = '42501',
            HINT = 'Call with a user''s JWT: request.jwt.claims has no uuid in sub.';
    END IF;
    RETURN subject;
END
$$;

-- 42501 for a caller to whom row level security applies (a signed-in user, a backend role
-- without BYPASSRLS) and who has no quota_role, unless `subject` is its own: through row
-- level security it would see nothing of what it asked for. Support and admins, the
-- service role, the table owner and roles with BYPASSRLS pass; row level security still
-- decides what each reads.
CREATE FUNCTION quota.analytics_reader(function_name text, subject uuid DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.row_security_active('quota.events'::regclass) AND quota.current_quota_role() IS NULL
       AND (subject IS NULL OR subject IS DISTINCT FROM quota.current_subject()) THEN
        RAISE EXCEPTION 'quota.% needs the support quota_role (called as %)', function_name, current_user
            USING ERRCODE = '42501',
                  HINT = 'Row level security shows this role only a signed-in user''s own rows: call as support or admin '
                         '(app_metadata.quota_role), as a role that bypasses row level security (service_role), '
                         'or use the my_ form.';
    END IF;
END
$$;

-- 22004/22023/42704 unless `metric` names a metric of a plan the caller can see.
CREATE FUNCTION quota.analytics_metric(metric text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF metric IS NULL THEN
        RAISE EXCEPTION 'metric must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF metric !~ '^[a-z][a-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid metric name "%"', metric USING ERRCODE = '22023',
            HINT = 'Metric names match ^[a-z][a-z0-9_.:-]{0,62}$.';
    END IF;
    IF NOT EXISTS (SELECT FROM quota.limits AS l WHERE l.metric = analytics_metric.metric) THEN
        RAISE EXCEPTION 'unknown metric "%"', metric USING ERRCODE = '42704',
            HINT = 'A metric exists once a plan has a limit for it: see quota.create_plan().';
    END IF;
END
$$;

-- 22004/22023 unless [since, until) is a finite, non-empty period.
CREATE FUNCTION quota.analytics_period(since timestamptz, until timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'since and until must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT (pg_catalog.isfinite(since) AND pg_catalog.isfinite(until)) OR since >= until THEN
        RAISE EXCEPTION 'invalid period from % to %: since must be before until, both finite', since, until
            USING ERRCODE = '22023', HINT = 'Pass since < until, e.g. since => now() - interval ''30 days''.';
    END IF;
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
CREATE FUNCTION quota.analytics_buckets(bucket text, since timestamptz, until timestamptz, time_zone text DEFAULT 'UTC')
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

-- A subject's usage of a metric per bucket of the time zone of its limit (its plan's, or
-- the default plan's for a subject not assigned yet; UTC when neither has the metric), one
-- row per bucket from the one containing since to the one containing until (empty buckets
-- included, each counted whole). used: units consumed (allowance + grants + overage, net
-- of give-backs), from_grants and overage: what of it grants paid and what passed the
-- allowance; denials: denied calls (rate_limited: by a rate rule).
CREATE FUNCTION quota.usage_history(subject uuid, metric text, bucket text, since timestamptz,
                                    until timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, used bigint, from_grants bigint,
               overage bigint, denials bigint, rate_limited bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    zone text;
    first_start timestamptz;
    last_end timestamptz;
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION 'subject must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM quota.analytics_reader('usage_history', subject);
    PERFORM quota.analytics_metric(metric);
    SELECT l.time_zone INTO zone
      FROM quota.limits AS l
     WHERE l.metric = usage_history.metric
       AND l.plan = coalesce((SELECT a.plan FROM quota.assignments AS a WHERE a.subject = usage_history.subject),
                             (SELECT p.plan FROM quota.plans AS p WHERE p.is_default));
    zone := coalesce(zone, 'UTC');
    -- The bounds as values, so that the ledger's scan is planned for them.
    SELECT min(b.bucket_start), max(b.bucket_end) INTO first_start, last_end
      FROM quota.analytics_buckets(usage_history.bucket, since, until, zone) AS b;
    RETURN QUERY
    WITH buckets AS (
        SELECT b.bucket_start, b.bucket_end FROM quota.analytics_buckets(usage_history.bucket, since, until, zone) AS b
    ), per_bucket AS (
        SELECT pg_catalog.date_trunc(usage_history.bucket, u.counted_at, zone) AS bucket_start,
               sum(u.units) AS used, sum(u.from_grants) AS from_grants, sum(u.overage) AS overage,
               count(*) FILTER (WHERE u.kind = 'denial') AS denials,
               count(*) FILTER (WHERE u.kind = 'denial' AND u.reason = 'rate_limited') AS rate_limited
          FROM quota.usage_events AS u
         WHERE u.subject = usage_history.subject AND u.metric = usage_history.metric
           AND u.created_at >= first_start AND u.counted_at >= first_start AND u.counted_at < last_end
         GROUP BY 1
    )
    SELECT b.bucket_start, b.bucket_end, coalesce(p.used, 0)::int8, coalesce(p.from_grants, 0)::int8,
           coalesce(p.overage, 0)::int8, coalesce(p.denials, 0)::int8, coalesce(p.rate_limited, 0)::int8
      FROM buckets AS b LEFT JOIN per_bucket AS p ON p.bucket_start = b.bucket_start
     ORDER BY b.bucket_start;
END
$$;

-- quota.usage_history() of the caller.
CREATE FUNCTION quota.my_usage_history(metric text, bucket text, since timestamptz,
                                       until timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, used bigint, from_grants bigint,
               overage bigint, denials bigint, rate_limited bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM quota.usage_history(quota.signed_in_subject(), metric, bucket, since, until)
$$;

-- The subjects that used the most of a metric in [since, until) (events by counted_at),
-- most first: their plan now, the units they used, their share of all units used (percent),
-- and their denials of the metric in the period.
CREATE FUNCTION quota.top_consumers(metric text, since timestamptz, until timestamptz DEFAULT pg_catalog.now(),
                                    max_rows integer DEFAULT 10)
RETURNS TABLE (rank bigint, subject uuid, plan text, used bigint, share numeric, denials bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM quota.analytics_reader('top_consumers');
    PERFORM quota.analytics_metric(metric);
    PERFORM quota.analytics_period(since, until);
    IF max_rows IS NULL THEN
        RAISE EXCEPTION 'max_rows must not be NULL' USING ERRCODE = '22004';
    ELSIF max_rows <= 0 THEN
        RAISE EXCEPTION 'max_rows must be positive, got %', max_rows USING ERRCODE = '22023',
            HINT = 'Ask for at least one row, e.g. max_rows => 10.';
    END IF;
    RETURN QUERY
    WITH per_subject AS (
        SELECT u.subject, sum(u.units) AS used, count(*) FILTER (WHERE u.kind = 'denial') AS denials
          FROM quota.usage_events AS u
         WHERE u.metric = top_consumers.metric
           AND u.created_at >= since AND u.counted_at >= since AND u.counted_at < until
         GROUP BY u.subject
    ), ranked AS (
        SELECT p.subject, p.used, p.denials, sum(p.used) OVER () AS total,
               pg_catalog.row_number() OVER (ORDER BY p.used DESC, p.subject) AS rank
          FROM per_subject AS p
         WHERE p.used > 0
    )
    SELECT r.rank, r.subject, a.plan, r.used::int8, round(100 * r.used / r.total, 2), r.denials
      FROM ranked AS r LEFT JOIN quota.assignments AS a ON a.subject = r.subject
     WHERE r.rank <= max_rows
     ORDER BY r.rank;
END
$$;

-- An abuse signal: the (subject, UTC hour)s of [since, until) with at least min_denials
-- denials and at least min_ratio times the subject's own baseline, the hourly average of
-- its denials over the 7 days (168 hours) before that hour. A subject with no denials in
-- those 7 days has a baseline of one denial a week for the ratio (baseline_per_hour still
-- says 0), so that a first burst ranks high rather than dividing by zero. rate_limited: how
-- many of the hour's denials a rate rule made. Most anomalous first.
CREATE FUNCTION quota.denial_spikes(since timestamptz DEFAULT pg_catalog.now() - interval '1 day',
                                    until timestamptz DEFAULT pg_catalog.now(),
                                    min_ratio numeric DEFAULT 3, min_denials bigint DEFAULT 10)
RETURNS TABLE (subject uuid, hour timestamptz, denials bigint, rate_limited bigint,
               baseline_per_hour numeric, ratio numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    first_hour timestamptz;
BEGIN
    PERFORM quota.analytics_reader('denial_spikes');
    PERFORM quota.analytics_period(since, until);
    IF min_ratio IS NULL OR min_denials IS NULL THEN
        RAISE EXCEPTION 'min_ratio and min_denials must not be NULL' USING ERRCODE = '22004';
    ELSIF min_ratio < 0 OR min_ratio = 'NaN' OR min_denials < 1 THEN
        RAISE EXCEPTION 'invalid thresholds: min_ratio % must be at least 0, min_denials % at least 1', min_ratio, min_denials
            USING ERRCODE = '22023', HINT = 'E.g. min_ratio => 3, min_denials => 10: ten denials in an hour, three times the usual.';
    END IF;
    first_hour := pg_catalog.date_trunc('hour', since, 'UTC');
    RETURN QUERY
    WITH hourly AS (
        SELECT e.subject, pg_catalog.date_trunc('hour', e.created_at, 'UTC') AS hour, count(*) AS denials,
               count(*) FILTER (WHERE e.reason = 'rate_limited') AS rate_limited
          FROM quota.events AS e
         WHERE e.kind = 'denial' AND e.created_at >= first_hour - interval '7 days' AND e.created_at < until
         GROUP BY 1, 2
    ), with_baseline AS (
        SELECT h.subject, h.hour, h.denials, h.rate_limited,
               coalesce(sum(h.denials) OVER (PARTITION BY h.subject ORDER BY h.hour
                                             RANGE BETWEEN interval '168 hours' PRECEDING AND interval '1 hour' PRECEDING), 0)
                   AS prior_week
          FROM hourly AS h
    )
    SELECT w.subject, w.hour, w.denials, w.rate_limited, round(w.prior_week / 168.0, 3),
           round(w.denials * 168.0 / greatest(w.prior_week, 1), 2)
      FROM with_baseline AS w
     WHERE w.hour >= first_hour AND w.denials >= min_denials
       AND w.denials * 168.0 / greatest(w.prior_week, 1) >= min_ratio
     ORDER BY 6 DESC, w.denials DESC, w.subject, w.hour;
END
$$;

-- Rate limit hits (denials by a rate rule) per subject and metric in [since, until), most
-- first, with the first and last hit; only_metric NULL: every metric.
CREATE FUNCTION quota.rate_limit_hits(since timestamptz DEFAULT pg_catalog.now() - interval '1 day',
                                      until timestamptz DEFAULT pg_catalog.now(),
                                      only_metric text DEFAULT NULL, max_rows integer DEFAULT 100)
RETURNS TABLE (subject uuid, metric text, plan text, hits bigint, first_hit timestamptz, last_hit timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM quota.analytics_reader('rate_limit_hits');
    PERFORM quota.analytics_period(since, until);
    IF only_metric IS NOT NULL THEN
        PERFORM quota.analytics_metric(only_metric);
    END IF;
    IF max_rows IS NULL THEN
        RAISE EXCEPTION 'max_rows must not be NULL' USING ERRCODE = '22004';
    ELSIF max_rows <= 0 THEN
        RAISE EXCEPTION 'max_rows must be positive, got %', max_rows USING ERRCODE = '22023',
            HINT = 'Ask for at least one row, e.g. max_rows => 100.';
    END IF;
    RETURN QUERY
    SELECT h.subject, h.metric, a.plan, h.hits, h.first_hit, h.last_hit
      FROM (SELECT e.subject, e.metric, count(*) AS hits, min(e.created_at) AS first_hit, max(e.created_at) AS last_hit
              FROM quota.events AS e
             WHERE e.kind = 'denial' AND e.reason = 'rate_limited' AND e.created_at >= since AND e.created_at < until
               AND (only_metric IS NULL OR e.metric = only_metric)
             GROUP BY e.subject, e.metric
             ORDER BY hits DESC, e.subject, e.metric
             LIMIT max_rows) AS h
      LEFT JOIN quota.assignments AS a ON a.subject = h.subject
     ORDER BY h.hits DESC, h.subject, h.metric;
END
$$;

-- When the subject's current window of `metric` runs out at the burn rate of the window so
-- far: burned (units consumed in the window: allowance + grants + overage, net of
-- give-backs; grants given are not burn) over the time elapsed since the window started
-- (a lifetime window never reset: since its first usage). remaining is quota.usage()'s
-- (allowance left + usable grants - holds). status says why exhausts_at is what it is:
--   forecast   exhausts_at = now() + remaining / burn rate (may lie past resets_at:
--              exhausts_before_reset says whether the window runs out before it resets)
--   exhausted  nothing remains: exhausts_at = now()
--   unlimited  an unlimited allowance: NULL
--   too_short  fewer than 3 usage events in the window, or less than a tenth of the window
--              elapsed (a lifetime window: less than a day): NULL
--   no_burn    nothing burned (net) so far: NULL
--   beyond_100_years  the rate would take longer than 100 years: NULL
-- Usage is read through quota.my_usage() for the caller's own subject, else quota.usage()
-- (support and admins, trusted roles).
CREATE FUNCTION quota.forecast(subject uuid, metric text)
RETURNS TABLE (window_start timestamptz, resets_at timestamptz, used bigint, remaining bigint,
               burned bigint, burn_per_hour numeric, status text, exhausts_at timestamptz, exhausts_before_reset boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    now_at constant timestamptz := pg_catalog.now();
    window_usage quota.usage_row;
    event_count bigint;
    burned_units bigint;
    first_usage timestamptz;
    since timestamptz;
    elapsed_seconds numeric;
    seconds_left numeric;
    rate numeric;
    verdict text;
    exhausts timestamptz;
BEGIN
    IF subject IS NULL THEN
        RAISE EXCEPTION 'subject must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM quota.analytics_reader('forecast', subject);
    PERFORM quota.analytics_metric(metric);
    IF subject = quota.current_subject() THEN
        SELECT * INTO window_usage FROM quota.my_usage() AS u WHERE u.metric = forecast.metric;
    ELSE
        SELECT * INTO window_usage FROM quota.usage(subject) AS u WHERE u.metric = forecast.metric;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subject % has no limit for metric "%"', subject, metric USING ERRCODE = '42704',
            HINT = 'quota.usage(subject) lists the metrics of the subject''s plan.';
    END IF;
    SELECT count(*) FILTER (WHERE u.units <> 0), coalesce(sum(u.units), 0), min(u.counted_at) FILTER (WHERE u.units <> 0)
      INTO event_count, burned_units, first_usage
      FROM quota.usage_events AS u
     WHERE u.subject = forecast.subject AND u.metric = forecast.metric
       AND u.window_start = coalesce(window_usage.window_start, '-infinity')
       -- Written in the window, or at most 5 minutes before it (quota.record's tolerance for
       -- clocks ahead): lets the scan skip the ledger's older pages.
       AND u.created_at >= coalesce(window_usage.window_start, '-infinity') - interval '5 minutes';
    since := coalesce(window_usage.window_start, first_usage, now_at);
    elapsed_seconds := extract(epoch FROM now_at - since);
    rate := CASE WHEN elapsed_seconds > 0 THEN burned_units / elapsed_seconds END;
    seconds_left := CASE WHEN rate > 0 THEN window_usage.remaining / rate END;
    verdict := CASE
        WHEN window_usage.remaining IS NULL THEN 'unlimited'
        WHEN window_usage.remaining = 0 THEN 'exhausted'
        WHEN event_count < 3
          OR elapsed_seconds < CASE WHEN window_usage.resets_at IS NULL THEN 86400
                                    ELSE extract(epoch FROM window_usage.resets_at - since) / 10 END THEN 'too_short'
        WHEN NOT rate > 0 THEN 'no_burn'
        WHEN seconds_left > 100 * 365.25 * 86400 THEN 'beyond_100_years'
        ELSE 'forecast' END;
    exhausts := CASE verdict WHEN 'exhausted' THEN now_at
                             WHEN 'forecast' THEN now_at + pg_catalog.make_interval(secs => seconds_left::float8) END;
    RETURN QUERY SELECT window_usage.window_start, window_usage.resets_at, window_usage.used, window_usage.remaining,
                        burned_units, round(rate * 3600, 3), verdict, exhausts,
                        CASE WHEN exhausts IS NOT NULL THEN window_usage.resets_at IS NULL OR exhausts < window_usage.resets_at END;
END
$$;

-- quota.forecast() of the caller.
CREATE FUNCTION quota.my_forecast(metric text)
RETURNS TABLE (window_start timestamptz, resets_at timestamptz, used bigint, remaining bigint,
               burned bigint, burn_per_hour numeric, status text, exhausts_at timestamptz, exhausts_before_reset boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM quota.forecast(quota.signed_in_subject(), metric)
$$;

-- Subjects per plan (assigned: a subject not assigned yet gets the default plan on first
-- use), how many of them were active (a call of theirs in the ledger, any kind but an
-- administrator's reset) in the last active_within, and each plan's share of all subjects
-- (percent). Every plan, also those with no subject.
CREATE FUNCTION quota.plan_distribution(active_within interval DEFAULT '30 days')
RETURNS TABLE (plan text, is_default boolean, subjects bigint, active_subjects bigint, share numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM quota.analytics_reader('plan_distribution');
    IF active_within IS NULL THEN
        RAISE EXCEPTION 'active_within must not be NULL' USING ERRCODE = '22004';
    ELSIF active_within <= interval '0' THEN
        RAISE EXCEPTION 'active_within must be a positive interval, got %', active_within USING ERRCODE = '22023',
            HINT = 'E.g. active_within => ''30 days''.';
    END IF;
    RETURN QUERY
    -- MATERIALIZED: read the ledger once, not once per plan.
    WITH active AS MATERIALIZED (
        SELECT DISTINCT e.subject FROM quota.events AS e
         WHERE e.created_at >= pg_catalog.now() - active_within AND e.kind <> 'reset'
    ), per_plan AS (
        SELECT a.plan, count(*) AS subjects, count(act.subject) AS active_subjects
          FROM quota.assignments AS a LEFT JOIN active AS act ON act.subject = a.subject
         GROUP BY a.plan
    )
    SELECT p.plan, p.is_default, coalesce(d.subjects, 0), coalesce(d.active_subjects, 0),
           round(100.0 * coalesce(d.subjects, 0) / nullif(sum(d.subjects) OVER (), 0), 2)
      FROM quota.plans AS p LEFT JOIN per_plan AS d ON d.plan = p.plan
     ORDER BY 3 DESC, p.plan;
END
$$;

-- Active subjects per bucket of `time_zone` (DAU with 'day', MAU with 'month'): subjects
-- with a call of theirs in the ledger in that bucket (any kind but an administrator's
-- reset, by created_at: when the call was made), one row per bucket as usage_history's.
CREATE FUNCTION quota.active_subjects(bucket text, since timestamptz, until timestamptz DEFAULT pg_catalog.now(),
                                      time_zone text DEFAULT 'UTC')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, active_subjects bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    first_start timestamptz;
    last_end timestamptz;
BEGIN
    PERFORM quota.analytics_reader('active_subjects');
    SELECT min(b.bucket_start), max(b.bucket_end) INTO first_start, last_end
      FROM quota.analytics_buckets(bucket, since, until, time_zone) AS b;
    RETURN QUERY
    WITH buckets AS (
        SELECT b.bucket_start, b.bucket_end FROM quota.analytics_buckets(bucket, since, until, time_zone) AS b
    ), per_bucket AS (
        -- Distinct (bucket, subject) pairs first: hashed, where count(DISTINCT) would sort every row.
        SELECT pairs.bucket_start, count(*) AS active
          FROM (SELECT DISTINCT pg_catalog.date_trunc(active_subjects.bucket, e.created_at, active_subjects.time_zone) AS bucket_start,
                                e.subject
                  FROM quota.events AS e
                 WHERE e.created_at >= first_start AND e.created_at < last_end AND e.kind <> 'reset') AS pairs
         GROUP BY pairs.bucket_start
    )
    SELECT b.bucket_start, b.bucket_end, coalesce(p.active, 0)::int8
      FROM buckets AS b LEFT JOIN per_bucket AS p ON p.bucket_start = b.bucket_start
     ORDER BY b.bucket_start;
END
$$;
