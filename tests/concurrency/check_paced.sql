-- Every call is autocommit and sent with the simple protocol (paced.pgbench), so a ledger
-- row's created_at is the instant its rule decided at. Over every interval [a, b] of
-- admitted instants at most 10 + 10 * (b - a) seconds were admitted (burst plus refill),
-- and demand never stopped, so the rule admitted about that.
DO $$
DECLARE
    admitted bigint := (SELECT count(*) FROM quota.events WHERE subject = s(7200) AND kind = 'consume');
    denied bigint := (SELECT count(*) FROM quota.events WHERE subject = s(7200) AND kind = 'denial' AND reason = 'rate_limited');
    counter bigint := (SELECT used FROM quota.counters WHERE subject = s(7200) AND metric = 'paced');
    span_s numeric := (SELECT extract(epoch FROM max(created_at) - min(created_at))
                         FROM quota.events WHERE subject = s(7200) AND kind = 'consume');
    worst record;
BEGIN
    IF admitted + denied <> current_setting('pgq.calls')::bigint THEN
        RAISE EXCEPTION 'ledger has % rows for % calls', admitted + denied, current_setting('pgq.calls');
    END IF;
    IF counter <> admitted THEN RAISE EXCEPTION 'counter % <> ledger %', counter, admitted; END IF;
    IF span_s < 1 THEN RAISE EXCEPTION 'the run lasted %s: too short to test the rule', span_s; END IF;
    WITH allowed AS (SELECT created_at, row_number() OVER (ORDER BY created_at, event_id) AS n
                       FROM quota.events WHERE subject = s(7200) AND kind = 'consume')
    SELECT a.created_at AS from_at, b.created_at AS to_at, b.n - a.n + 1 AS units,
           10 + 10 * extract(epoch FROM b.created_at - a.created_at) AS bound
      INTO worst
      FROM allowed AS a JOIN allowed AS b ON b.n >= a.n
     ORDER BY (b.n - a.n + 1) - (10 + 10 * extract(epoch FROM b.created_at - a.created_at)) DESC
     LIMIT 1;
    IF worst.units > worst.bound THEN
        RAISE EXCEPTION 'rate rule overspent: % units in [%, %], at most % allowed', worst.units, worst.from_at, worst.to_at, worst.bound;
    END IF;
    -- Continuous demand: every unit that came back was taken (less one per session in flight).
    IF admitted < 10 * span_s - 32 THEN
        RAISE EXCEPTION 'under-admitted: % units in %s at 10 per second', admitted, span_s;
    END IF;
    IF EXISTS (SELECT FROM quota.audit()) THEN RAISE EXCEPTION 'audit found mismatches'; END IF;
    RAISE NOTICE 'paced: % admitted, % rate_limited over %s; the fullest interval held % of %',
        admitted, denied, round(span_s, 2), worst.units, round(worst.bound, 1);
END $$;
