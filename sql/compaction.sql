-- Retention (README, "Keeping the ledger small"): ledger rows of windows that closed more
-- than a retention period ago are folded into per-day rollups and deleted, in short
-- transactions; then the counters of those windows are deleted too, once their rollups
-- account for every unit they counted. quota.audit() counts the rollups, so it stays exact
-- through and after compaction.

-- What compaction folded: per subject, metric and UTC day (the day usage_events.counted_at
-- falls on), and the window that counted the rows (counted_in: the pool for a member's
-- pooled call, else the subject). counted and drawn are what audit() adds into that
-- window's counter and into the member's draws from its pool. Once the window's counter is
-- compacted too, its rollups are closed: audit() no longer checks them against a counter,
-- and no usage is counted into that window again (a late record into it is refused:
-- counters::refuse_closed_window in src/store/counters.rs).
CREATE TABLE quota.ledger_rollups (
    subject                uuid NOT NULL,
    metric                 text NOT NULL,
    day                    date NOT NULL,
    window_start           timestamptz NOT NULL,
    counted_in             uuid NOT NULL,
    window_closed          boolean NOT NULL DEFAULT false,
    events                 bigint NOT NULL DEFAULT 0,
    calls                  bigint NOT NULL DEFAULT 0,
    denials                bigint NOT NULL DEFAULT 0,
    units                  bigint NOT NULL DEFAULT 0,
    from_grants            bigint NOT NULL DEFAULT 0,
    overage                bigint NOT NULL DEFAULT 0,
    counted                bigint NOT NULL DEFAULT 0,
    drawn                  bigint NOT NULL DEFAULT 0,
    counted_without_ledger bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (counted_in, metric, window_start, subject, day, window_closed)
);
-- The rollups of windows not closed yet: where compaction looks for windows to close.
CREATE INDEX ledger_rollups_open ON quota.ledger_rollups (counted_in, metric, window_start) WHERE NOT window_closed;
ALTER TABLE quota.ledger_rollups ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE quota.ledger_rollups IS 'pg_quota: compacted ledger rows, per subject, metric, UTC day and window (quota.compact)';

-- What compacted ledger rows had paid from each grant: audit() checks a grant's remaining
-- against its event_grants plus this.
CREATE TABLE quota.grant_rollups (
    grant_id uuid PRIMARY KEY,
    subject  uuid NOT NULL,
    paid     bigint NOT NULL
);
ALTER TABLE quota.grant_rollups ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE quota.grant_rollups IS 'pg_quota: what compacted ledger rows paid from each grant (quota.compact)';

-- One batch, in the caller's transaction: folds at most max_rows ledger rows, then closes
-- at most max_rows windows; returns how many of each (both 0: nothing is left to compact).
-- Each call is one short transaction that consumers never wait for: run it from cron, or
-- until it returns zeros (README, "Keeping the ledger small"). older_than is also how long
-- idempotency keys are honoured: a keyed call replays until its row is folded.
-- A ledger row is folded when it was written, and its window ended, before
-- now() - older_than, and it is not the reserve row of a reservation still held. A window
-- is closed (its counter and its pool draws deleted) when it
-- ended before now() - older_than, holds nothing, its rollups and what it counted without
-- ledger rows add up to its counter and draws exactly (any unfolded row that counts keeps
-- it; a window without any ledger row is never closed), and nothing still needs it: not a limit with rollover (carries are computed from past
-- counters), not a depletion whose recovery alert is not out yet. Rows, counters and pool
-- draws locked by a running call are skipped, never waited for.
CREATE FUNCTION quota.compact(older_than interval DEFAULT '32 days', max_rows integer DEFAULT 10000)
RETURNS TABLE (events_folded bigint, windows_closed bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz;
BEGIN
    IF older_than IS NULL OR max_rows IS NULL THEN
        RAISE EXCEPTION 'older_than and max_rows must not be NULL' USING ERRCODE = '22004';
    ELSIF older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'older_than must be at least 1 hour, got %', older_than USING ERRCODE = '22023',
            HINT = 'It is also how long idempotency keys are honoured after their call: e.g. interval ''32 days''.';
    ELSIF max_rows <= 0 THEN
        RAISE EXCEPTION 'max_rows must be positive, got %', max_rows USING ERRCODE = '22023';
    END IF;
    cutoff := pg_catalog.now() - older_than;
    -- One compaction at a time: two would lock the same rollup rows in different orders.
    -- COMPACTION_LOCK_SEED = 1903129 (crates/quota-rules/src/locks.rs)
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('pg_quota compaction', 1903129)) THEN
        events_folded := 0;
        windows_closed := 0;
        RETURN NEXT;
        RETURN;
    END IF;

    -- An allocation's event is kept while the allocation is (revoking it, leaving the pool
    -- and a keyed replay read it); a finished reservation goes with its rows (a replay of it
    -- is then 42704, as for any unknown reservation).
    WITH picked AS MATERIALIZED (
        SELECT e.subject, e.event_id FROM quota.events AS e
         WHERE e.created_at < cutoff AND e.window_end <= cutoff
           AND (e.reservation_id IS NULL
                OR NOT EXISTS (SELECT FROM quota.reservations AS r
                                WHERE r.reservation_id = e.reservation_id AND r.status = 'held'))
           AND (e.kind::text <> 'allocate'
                OR NOT EXISTS (SELECT FROM quota.allocations AS a WHERE a.pool = e.subject AND a.event_id = e.event_id))
           -- A row whose grants disagree with it stays, for the audit to keep showing it.
           AND (e.from_grants = 0
                OR e.from_grants = (SELECT coalesce(sum(g.amount), 0) FROM quota.event_grants AS g
                                     WHERE g.subject = e.subject AND g.event_id = e.event_id))
         LIMIT max_rows
           FOR UPDATE SKIP LOCKED
    ), folded AS (
        DELETE FROM quota.events AS e USING picked AS p
         WHERE e.subject = p.subject AND e.event_id = p.event_id
        RETURNING e.*
    ), paid AS (
        DELETE FROM quota.event_grants AS g USING folded AS f
         WHERE g.subject = f.subject AND g.event_id = f.event_id
        RETURNING g.grant_id, g.subject, g.amount
    ), paid_per_grant AS (
        -- Per grant, owned by the grant's subject (a pool's grant pays its members' rows).
        INSERT INTO quota.grant_rollups AS r (grant_id, subject, paid)
        SELECT p.grant_id, g.subject, sum(p.amount)
          FROM paid AS p JOIN quota.grants AS g ON g.grant_id = p.grant_id
         GROUP BY p.grant_id, g.subject
            ON CONFLICT (grant_id) DO UPDATE SET paid = r.paid + excluded.paid
    ), finished AS (
        DELETE FROM quota.reservations AS h USING folded AS f
         WHERE h.reservation_id = f.reservation_id AND h.status <> 'held'
    ), rolled AS (
        INSERT INTO quota.ledger_rollups AS r
               (subject, metric, day, window_start, counted_in, events, calls, denials, units, from_grants, overage,
                counted, drawn)
        SELECT f.subject, f.metric,
               (least(f.created_at, f.window_end - interval '1 microsecond') AT TIME ZONE 'UTC')::date,
               f.window_start, coalesce(f.pool, f.subject), count(*),
               count(*) FILTER (WHERE f.kind::text IN ('consume', 'record', 'settle')),
               count(*) FILTER (WHERE f.kind::text = 'denial'),
               -- usage_events.units, .from_grants, .overage (sql/analytics.sql). What grants paid
               -- has no bound but bigint's per row (a grant of 9223372036854775807 as "unlimited
               -- credits"): its sums saturate, so that one window cannot stop every compaction.
               LEAST(sum(CASE WHEN f.kind::text IN ('consume', 'record', 'settle', 'allocate')
                                  THEN f.from_allowance + f.from_grants + f.overage
                              WHEN f.kind::text = 'give_back' THEN -f.from_allowance ELSE 0 END), 9223372036854775807),
               LEAST(sum(CASE WHEN f.kind::text IN ('consume', 'record', 'settle') THEN f.from_grants ELSE 0 END), 9223372036854775807),
               sum(CASE WHEN f.kind::text IN ('consume', 'record', 'settle') THEN f.overage ELSE 0 END),
               -- audit()'s window and draws sums (sql/audit.sql)
               sum(CASE WHEN f.kind::text = 'give_back' THEN -f.from_allowance
                        WHEN f.kind::text IN ('consume', 'record', 'settle', 'allocate') THEN f.from_allowance + f.overage
                        ELSE 0 END),
               sum(CASE WHEN f.pool IS NULL THEN 0
                        WHEN f.kind::text = 'give_back' THEN -f.from_allowance
                        WHEN f.kind::text IN ('consume', 'record', 'settle') THEN f.from_allowance + f.from_grants + f.overage
                        ELSE 0 END)
          FROM folded AS f
         GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (counted_in, metric, window_start, subject, day, window_closed) DO UPDATE
           SET events = r.events + excluded.events, calls = r.calls + excluded.calls,
               denials = r.denials + excluded.denials,
               units = LEAST(r.units::numeric + excluded.units, 9223372036854775807),
               from_grants = LEAST(r.from_grants::numeric + excluded.from_grants, 9223372036854775807),
               overage = r.overage + excluded.overage,
               counted = r.counted + excluded.counted, drawn = r.drawn + excluded.drawn
    )
    SELECT count(*) INTO events_folded FROM folded;

    -- The windows with open rollups are the ones folding has reached (a window without any
    -- ledger row is left as it is): not every old counter, most of which are not folded yet.
    WITH candidates AS MATERIALIZED (
        SELECT c.subject, c.metric, c.window_start, c.used, c.counted_without_ledger
          FROM (SELECT DISTINCT r.counted_in, r.metric, r.window_start
                  FROM quota.ledger_rollups AS r WHERE NOT r.window_closed) AS folded
          JOIN quota.counters AS c
            ON c.subject = folded.counted_in AND c.metric = folded.metric AND c.window_start = folded.window_start
         WHERE c.window_end <= cutoff AND c.held = 0
           AND NOT ('depleted' = ANY (c.alerted) AND NOT 'recovered' = ANY (c.alerted))
           AND NOT EXISTS (SELECT FROM quota.assignments AS a
                             JOIN quota.limits AS l ON l.plan = a.plan AND l.metric = c.metric
                            WHERE a.subject = c.subject AND (l.rollover_max IS NOT NULL OR l.rollover_windows IS NOT NULL))
           AND c.used = c.counted_without_ledger
                        + coalesce((SELECT sum(r.counted) FROM quota.ledger_rollups AS r
                                     WHERE r.counted_in = c.subject AND r.metric = c.metric
                                       AND r.window_start = c.window_start AND NOT r.window_closed), 0)
           AND NOT EXISTS (SELECT FROM quota.pool_draws AS d
                            WHERE d.pool = c.subject AND d.metric = c.metric AND d.window_start = c.window_start
                              AND d.drawn <> coalesce((SELECT sum(r.drawn) FROM quota.ledger_rollups AS r
                                                        WHERE r.counted_in = d.pool AND r.subject = d.member
                                                          AND r.metric = d.metric AND r.window_start = d.window_start
                                                          AND NOT r.window_closed), 0))
           AND NOT EXISTS (SELECT FROM quota.ledger_rollups AS r
                            WHERE r.counted_in = c.subject AND r.metric = c.metric AND r.window_start = c.window_start
                              AND NOT r.window_closed AND r.counted_in <> r.subject AND r.drawn <> 0
                              AND NOT EXISTS (SELECT FROM quota.pool_draws AS d
                                               WHERE d.pool = r.counted_in AND d.member = r.subject
                                                 AND d.metric = r.metric AND d.window_start = r.window_start))
         LIMIT max_rows
           FOR UPDATE OF c SKIP LOCKED
    ), draws_free AS MATERIALIZED (
        SELECT d.pool, d.metric, d.window_start FROM quota.pool_draws AS d
          JOIN candidates AS w ON d.pool = w.subject AND d.metric = w.metric AND d.window_start = w.window_start
           FOR UPDATE OF d SKIP LOCKED
    ), closable AS (
        -- A member's call locks its draws before its pool's counter: a window whose draws a
        -- call holds is skipped, as a locked counter is (waiting for them here, while that call
        -- waits for the counter this holds, would deadlock).
        SELECT w.* FROM candidates AS w
         WHERE (SELECT count(*) FROM quota.pool_draws AS d
                 WHERE d.pool = w.subject AND d.metric = w.metric AND d.window_start = w.window_start)
             = (SELECT count(*) FROM draws_free AS f
                 WHERE f.pool = w.subject AND f.metric = w.metric AND f.window_start = w.window_start)
    ), closed AS (
        DELETE FROM quota.counters AS c USING closable AS w
         WHERE c.subject = w.subject AND c.metric = w.metric AND c.window_start = w.window_start
        RETURNING c.subject, c.metric, c.window_start, c.counted_without_ledger
    ), draws AS (
        DELETE FROM quota.pool_draws AS d USING closed AS w
         WHERE d.pool = w.subject AND d.metric = w.metric AND d.window_start = w.window_start
    ), reopened AS (
        DELETE FROM quota.ledger_rollups AS r USING closed AS w
         WHERE r.counted_in = w.subject AND r.metric = w.metric AND r.window_start = w.window_start
           AND NOT r.window_closed
        RETURNING r.*
    ), moved AS (
        -- The window's open rollups become closed ones, with what it counted without rows.
        INSERT INTO quota.ledger_rollups AS r
               (subject, metric, day, window_start, counted_in, window_closed, events, calls, denials, units,
                from_grants, overage, counted, drawn, counted_without_ledger)
        SELECT subject, metric, day, window_start, counted_in, true, sum(events), sum(calls), sum(denials),
               LEAST(sum(units), 9223372036854775807), LEAST(sum(from_grants), 9223372036854775807), sum(overage),
               sum(counted), sum(drawn), sum(counted_without_ledger)
          FROM (SELECT o.subject, o.metric, o.day, o.window_start, o.counted_in, o.events, o.calls, o.denials, o.units,
                       o.from_grants, o.overage, o.counted, o.drawn, 0::bigint AS counted_without_ledger
                  FROM reopened AS o
                UNION ALL
                SELECT w.subject, w.metric, (w.window_start AT TIME ZONE 'UTC')::date, w.window_start, w.subject,
                       0, 0, 0, 0, 0, 0, 0, 0, w.counted_without_ledger
                  FROM closed AS w WHERE w.counted_without_ledger > 0) AS everything
         GROUP BY subject, metric, day, window_start, counted_in
            ON CONFLICT (counted_in, metric, window_start, subject, day, window_closed) DO UPDATE
           SET events = r.events + excluded.events, calls = r.calls + excluded.calls,
               denials = r.denials + excluded.denials,
               units = LEAST(r.units::numeric + excluded.units, 9223372036854775807),
               from_grants = LEAST(r.from_grants::numeric + excluded.from_grants, 9223372036854775807),
               overage = r.overage + excluded.overage,
               counted = r.counted + excluded.counted, drawn = r.drawn + excluded.drawn,
               counted_without_ledger = r.counted_without_ledger + excluded.counted_without_ledger
    )
    SELECT count(*) INTO windows_closed FROM closed;
    RETURN NEXT;
END
$$;

SELECT pg_catalog.pg_extension_config_dump('quota.ledger_rollups', '');
SELECT pg_catalog.pg_extension_config_dump('quota.grant_rollups', '');
