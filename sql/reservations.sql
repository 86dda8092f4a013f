-- Optional maintenance: marks every expired hold as such and frees it in its counter.
-- Nothing depends on it running (readers ignore expired holds). A window whose holds have all
-- expired takes the fast path again at once; one with holds left does after its next call on
-- the slow path, which sets the bound on their expiry again (quota.counters.holds_expire_at).
-- The holds are locked before their counters, as a settle or release locks them; a hold such
-- a call has locked is skipped (that call frees it), and a call under a counter's lock skips
-- the holds locked here, so it cannot deadlock with them.
CREATE FUNCTION quota.expire_reservations() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holds uuid[];
    expired bigint;
BEGIN
    SELECT pg_catalog.array_agg(h.reservation_id) INTO holds
      FROM (SELECT r.reservation_id FROM quota.reservations AS r
             WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now()
             ORDER BY r.reservation_id
               FOR UPDATE SKIP LOCKED) AS h;
    IF holds IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM FROM quota.counters AS c
     WHERE (c.subject, c.metric, c.window_start) IN
           (SELECT r.subject, r.metric, r.window_start FROM quota.reservations AS r WHERE r.reservation_id = ANY (holds))
     ORDER BY c.subject, c.metric, c.window_start
       FOR UPDATE;
    WITH done AS (
        UPDATE quota.reservations SET status = 'expired'
         WHERE reservation_id = ANY (holds) AND status = 'held'
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
