-- Optional maintenance: marks every expired hold as such and frees it in its counter.
-- Nothing depends on it running (readers ignore expired holds); it keeps windows with old
-- holds on consume's fast path. Counters are locked before reservations, the same order
-- every writer uses, so it cannot deadlock with them.
CREATE FUNCTION quota.expire_reservations() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expired bigint;
BEGIN
    PERFORM FROM quota.counters AS c
     WHERE (c.subject, c.metric, c.window_start) IN
           (SELECT r.subject, r.metric, r.window_start FROM quota.reservations AS r
             WHERE r.status = 'held' AND r.expires_at <= now())
     ORDER BY c.subject, c.metric, c.window_start
       FOR UPDATE;
    WITH done AS (
        UPDATE quota.reservations SET status = 'expired'
         WHERE status = 'held' AND expires_at <= now()
        RETURNING subject, metric, window_start, amount
    ), per_window AS (
        SELECT subject, metric, window_start, sum(amount) AS amount FROM done GROUP BY subject, metric, window_start
    ), freed AS (
        UPDATE quota.counters AS c SET held = c.held - p.amount
          FROM per_window AS p
         WHERE (c.subject, c.metric, c.window_start) = (p.subject, p.metric, p.window_start)
        RETURNING 1
    )
    SELECT count(*) INTO expired FROM done;
    RETURN expired;
END
$$;
