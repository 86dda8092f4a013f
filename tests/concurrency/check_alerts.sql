-- 32 sessions crossing the same thresholds: in every window each rule fired at most once;
-- each percentage fired exactly when the window's usage reached it (no usage is ever given
-- back here, so a window's last usage is its highest), with the numbers of the committed
-- ledger row that first reached it (a rolled-back call left nothing); `recovered` answered a
-- depletion each time, never more often than depletions happened; audit clean.
DO $$
DECLARE
    twice bigint := (SELECT count(*) FROM (SELECT FROM quota.alerts WHERE subject BETWEEN s(7401) AND s(7408) AND rule <> 'recovered'
                                            GROUP BY subject, window_start, rule HAVING count(*) > 1) AS t);
    -- Each window and percentage: whether usage reached it, and whether it fired.
    mismatched bigint := (SELECT count(*) FROM quota.counters AS c
                            CROSS JOIN (VALUES ('50%', 50), ('80%', 80), ('100%', 100), ('150%', 150)) AS r(rule, percent)
                           WHERE c.subject BETWEEN s(7401) AND s(7408)
                             AND (c.used * 100 >= r.percent * 100)
                                 <> EXISTS (SELECT FROM quota.alerts AS a WHERE a.subject = c.subject AND a.window_start = c.window_start
                                                                            AND a.rule = r.rule));
    unbacked bigint := (SELECT count(*) FROM quota.alerts AS a
                         WHERE a.subject BETWEEN s(7401) AND s(7408) AND a.rule <> 'recovered'
                           AND NOT EXISTS (SELECT FROM quota.events AS e WHERE e.subject = a.subject AND e.event_id = a.event_id
                                                                           AND e.used = a.used AND e.window_start = a.window_start));
    -- The call that fired a percentage is the first to reach it: usage only grows in a
    -- window here, so no ledger row of the window reached it with less.
    late bigint := (SELECT count(*) FROM quota.alerts AS a
                     WHERE a.subject BETWEEN s(7401) AND s(7408) AND a.rule LIKE '%\%'
                       AND (a.used * 100 < rtrim(a.rule, '%')::int * 100
                            OR EXISTS (SELECT FROM quota.events AS e
                                        WHERE e.subject = a.subject AND e.window_start = a.window_start
                                          AND e.kind IN ('consume', 'record', 'settle') AND e.used < a.used
                                          AND e.used * 100 >= rtrim(a.rule, '%')::int * 100)));
    depleted bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(7401) AND s(7408) AND rule = 'depleted');
    recovered bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(7401) AND s(7408) AND rule = 'recovered');
    overanswered bigint := (SELECT count(*) FROM generate_series(7401, 7408) AS n
                             WHERE (SELECT count(*) FROM quota.alerts WHERE subject = s(n) AND rule = 'recovered')
                                 > (SELECT count(*) FROM quota.alerts WHERE subject = s(n) AND rule = 'depleted'));
    crossings bigint := (SELECT count(*) FROM quota.alerts WHERE subject BETWEEN s(7401) AND s(7408));
    windows bigint := (SELECT count(*) FROM quota.counters WHERE subject BETWEEN s(7401) AND s(7408));
BEGIN
    IF EXISTS (SELECT FROM quota.audit()) THEN
        RAISE EXCEPTION 'audit found mismatches: %', (SELECT array_agg(a) FROM quota.audit() AS a);
    END IF;
    IF twice > 0 THEN RAISE EXCEPTION '% rules fired twice in one window', twice; END IF;
    IF mismatched > 0 THEN RAISE EXCEPTION '% (window, percentage) pairs where usage and alerts disagree', mismatched; END IF;
    IF unbacked > 0 THEN RAISE EXCEPTION '% alerts without the committed ledger row that crossed them', unbacked; END IF;
    IF late > 0 THEN RAISE EXCEPTION '% alerts fired by another call than the first to reach their percentage', late; END IF;
    IF overanswered > 0 THEN RAISE EXCEPTION '% subjects recovered more often than they were depleted', overanswered; END IF;
    IF crossings < 40 OR windows < 16 OR depleted < 8 OR recovered < 4 THEN
        RAISE EXCEPTION 'only % alerts in % windows, % depleted, % recovered: too small to prove anything', crossings, windows, depleted, recovered;
    END IF;
    RAISE NOTICE 'alerts: % calls, % alerts in % windows (% depleted, % recovered); each rule once per window, each percentage exactly when reached',
        current_setting('pgq.calls'), crossings, windows, depleted, recovered;
END $$;
