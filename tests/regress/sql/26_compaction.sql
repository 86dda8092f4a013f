-- Retention (0.13.0): quota.compact() folds ledger rows of windows closed longer ago than
-- the retention into per-day rollups and deletes them, then the windows' counters; audit()
-- stays clean; keyed calls replay until their rows are folded; a window whose counter
-- disagrees with its ledger, a rollover limit's windows, a depletion awaiting its recovery
-- alert and held reservations are kept. Subjects 260001...
SELECT quota.create_plan('compact26', '{"calls": {"limit": 10, "per": "day"},
                                        "pings": {"limit": 100, "per": "day", "ledger": "counters"},
                                        "carried": {"limit": 10, "per": "day", "rollover": {"max": 5}},
                                        "watched": {"limit": 2, "per": "day", "alerts": ["depleted"]},
                                        "shared": {"limit": 0, "per": "day"}}');
SELECT quota.create_plan('pool26', '{"shared": {"limit": 20, "per": "day"}}');
SELECT quota.assign_plan(s(n), 'compact26') FROM generate_series(260001, 260009) AS n;
SELECT quota.assign_plan(s(260010), 'pool26');
SELECT quota.join_pool(s(260010), s(260011));
SELECT quota.assign_plan(s(260011), 'compact26');

-- Moves a subject's activity back by whole days, as if it had happened then: its windows,
-- ledger, holds and draws (daily windows in UTC stay windows).
CREATE FUNCTION public.age26(subject uuid, days integer) RETURNS void LANGUAGE sql AS $$
    UPDATE quota.counters SET window_start = window_start - days * interval '1 day',
                              window_end = window_end - days * interval '1 day', fast = false
     WHERE counters.subject = age26.subject;
    UPDATE quota.events SET created_at = created_at - days * interval '1 day',
                            window_start = window_start - days * interval '1 day',
                            window_end = window_end - days * interval '1 day'
     WHERE events.subject = age26.subject;
    UPDATE quota.reservations SET created_at = created_at - days * interval '1 day',
                                  expires_at = expires_at - days * interval '1 day',
                                  window_start = window_start - days * interval '1 day',
                                  window_end = window_end - days * interval '1 day'
     WHERE reservations.subject = age26.subject;
    UPDATE quota.pool_draws SET window_start = window_start - days * interval '1 day',
                                window_end = window_end - days * interval '1 day'
     WHERE pool_draws.pool = age26.subject;
$$;
-- quota.compact() until it has nothing left to do (a cron job would call it again and again).
CREATE FUNCTION public.compact26(older_than interval, max_rows integer DEFAULT 10000) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    done record;
BEGIN
    LOOP
        SELECT * INTO done FROM quota.compact(older_than, max_rows);
        EXIT WHEN done.events_folded = 0 AND done.windows_closed = 0;
    END LOOP;
END $$;
-- What is left of subjects first..last: ledger rows, counters, rollups (open/closed), and
-- what the audit says about them.
CREATE FUNCTION public.left26(first integer, last integer)
RETURNS TABLE (events bigint, counters bigint, open_rollups bigint, closed_rollups bigint, audit_rows bigint)
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM quota.events WHERE subject BETWEEN s(first) AND s(last)),
           (SELECT count(*) FROM quota.counters WHERE subject BETWEEN s(first) AND s(last)),
           (SELECT count(*) FROM quota.ledger_rollups WHERE subject BETWEEN s(first) AND s(last) AND NOT window_closed),
           (SELECT count(*) FROM quota.ledger_rollups WHERE subject BETWEEN s(first) AND s(last) AND window_closed),
           (SELECT count(*) FROM quota.audit() AS a WHERE a.subject BETWEEN s(first) AND s(last))
$$;

-- Subject 260001: keyed calls, a grant-paid call, a denial, a reservation settled and one
-- released, a give-back; then all of it three days old.
SELECT quota.grant(s(260001), 'calls', 8) IS NOT NULL AS granted;
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(260001), 'calls', 4, 'order-1');
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(260001), 'calls', 9, 'order-2');
SELECT allowed, reason FROM quota.consume(s(260001), 'calls', 50);
SELECT allowed FROM quota.settle((quota.reserve(s(260001), 'calls', 2)).reservation_id, 1);
SELECT quota.release((quota.reserve(s(260001), 'calls', 1)).reservation_id);
SELECT used FROM quota.give_back(s(260001), 'calls', 1);
SELECT age26(s(260001), 3);
SELECT * FROM left26(260001, 260001);

-- Within the retention nothing is folded, and a keyed retry still replays.
SELECT compact26('4 days');
SELECT * FROM left26(260001, 260001);
SELECT allowed, replayed, from_grants FROM quota.consume(s(260001), 'calls', 9, 'order-2');

-- Past it: the rows are folded into one rollup per day, the window's counter, reservations
-- and ledger rows are gone, the audit (which counts rollups) is clean, and the grant's
-- audit holds with what the folded rows paid from it.
-- (in batches of 3 rows)
SELECT compact26('2 days', 3);
SELECT * FROM left26(260001, 260001);
SELECT events, calls, denials, units, from_grants, counted FROM quota.ledger_rollups WHERE subject = s(260001);
SELECT paid FROM quota.grant_rollups WHERE subject = s(260001);
SELECT remaining FROM quota.grants WHERE subject = s(260001);
SELECT count(*) AS reservations_left FROM quota.reservations WHERE subject = s(260001);
-- After the retention a retry is a new call, counted in today's window.
SELECT allowed, replayed, used FROM quota.consume(s(260001), 'calls', 4, 'order-1');

-- A window whose counter disagrees with its ledger: its rows are folded, the counter is
-- kept, and the audit still shows the difference.
SELECT allowed FROM quota.consume(s(260002), 'calls', 3);
SELECT age26(s(260002), 3);
UPDATE quota.counters SET used = used + 1 WHERE subject = s(260002);
SELECT compact26('2 days');
SELECT * FROM left26(260002, 260002);
SELECT item LIKE 'window %' AS window_item, stored, from_ledger FROM quota.audit() WHERE subject = s(260002);
UPDATE quota.counters SET used = used - 1 WHERE subject = s(260002);
SELECT compact26('2 days');
SELECT * FROM left26(260002, 260002);

-- A rollover limit's windows are kept (carries are computed from past counters); a window
-- that ended depleted keeps its counter until its recovery alert is out.
SELECT allowed FROM quota.consume(s(260003), 'carried', 3);
SELECT allowed FROM quota.consume(s(260004), 'watched', 2);
SELECT 'depleted' = ANY (alerted) AS depleted FROM quota.counters WHERE subject = s(260004) AND metric = 'watched';
SELECT age26(s(n), 3) FROM generate_series(260003, 260004) AS n;
SELECT compact26('2 days');
SELECT * FROM left26(260003, 260004);
SELECT quota.emit_due_recoveries() >= 1 AS recovered;
SELECT compact26('2 days');
SELECT * FROM left26(260004, 260004);

-- A limit that keeps no ledger row for fast allowed calls: what the window counted without
-- rows goes into its closed rollup.
SELECT allowed FROM quota.consume(s(260005), 'pings', 2);
SELECT allowed, event_id IS NULL AS without_row FROM quota.consume(s(260005), 'pings', 2);
SELECT allowed, event_id IS NULL AS without_row FROM quota.consume(s(260005), 'pings', 2);
SELECT counted_without_ledger > 0 AS counted_without_rows FROM quota.counters WHERE subject = s(260005);
SELECT age26(s(260005), 3);
SELECT compact26('2 days');
SELECT * FROM left26(260005, 260005);
SELECT sum(counted) + sum(counted_without_ledger) AS total FROM quota.ledger_rollups WHERE subject = s(260005);

-- A pool's member: its rows count in the pool's window and its draws; both close together.
SELECT allowed, pool IS NOT NULL AS pooled FROM quota.consume(s(260011), 'shared', 6) AS d, LATERAL (SELECT s(260010) AS pool) AS p;
SELECT age26(s(n), 3) FROM generate_series(260010, 260011) AS n;
SELECT compact26('2 days');
SELECT * FROM left26(260010, 260011);
SELECT count(*) AS draws_left FROM quota.pool_draws WHERE pool = s(260010);
SELECT subject = s(260011) AS member, counted_in = s(260010) AS in_pool, counted, drawn FROM quota.ledger_rollups WHERE counted_in = s(260010);

-- A late record into a closed window is refused (22023): counted again from zero, it would
-- be paid a second time (from the allowance, with the window's alerts firing again). So is
-- a batch with such an event (nothing of the batch is written), a pool member's record into
-- its pool's closed window (no draws row is left), and a keyed record retried after its row
-- was folded. A late record into an ended window that compaction kept still counts.
CREATE FUNCTION public.closed26(statement text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(try(statement), '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00', '<start>') $$;
SELECT closed26($$SELECT quota.record(s(260001), 'calls', 2, occurred_at => now() - interval '3 days')$$);
SELECT * FROM left26(260001, 260001);
SELECT closed26(format($$SELECT quota.record_batch(%L)$$, jsonb_build_array(
    jsonb_build_object('subject', s(260001), 'metric', 'calls', 'amount', 1),
    jsonb_build_object('subject', s(260001), 'metric', 'calls', 'amount', 1, 'occurred_at', now() - interval '3 days'))));
SELECT used AS used_today FROM quota.counters WHERE subject = s(260001) AND window_end > now();
SELECT closed26($$SELECT quota.record(s(260011), 'shared', 3, occurred_at => now() - interval '3 days')$$);
SELECT count(*) AS draws_left FROM quota.pool_draws WHERE pool = s(260010);
SELECT quota.assign_plan(s(260030), 'compact26');
SELECT allowed, used FROM quota.record(s(260030), 'calls', 4, 'sync-1');
SELECT age26(s(260030), 3);
SELECT compact26('2 days');
SELECT * FROM left26(260030, 260030);
SELECT closed26($$SELECT quota.record(s(260030), 'calls', 4, 'sync-1', occurred_at => now() - interval '3 days')$$);
SELECT allowed, used FROM quota.record(s(260030), 'calls', 2, occurred_at => now() - interval '1 day');
SELECT * FROM left26(260030, 260030);

-- One call is one batch: at most max_rows rows folded, then the windows whose rows are all
-- folded closed (everything older was compacted above, so these are subject 260006's).
SELECT allowed FROM quota.consume(s(260006), 'calls', 1);
SELECT allowed FROM quota.consume(s(260006), 'calls', 1);
SELECT allowed FROM quota.consume(s(260006), 'calls', 1);
SELECT age26(s(260006), 3);
SELECT * FROM quota.compact('2 days', 2);
SELECT * FROM quota.compact('2 days', 2);
SELECT * FROM quota.compact('2 days', 2);
SELECT * FROM left26(260006, 260006);

-- A pool's grant paying two members' calls, and the pool's allocation to one of them: one
-- batch folds both members' rows (each grant's rollup belongs to the grant's subject), and
-- the allocation's own row is kept while the allocation is, so it can still be revoked.
SELECT quota.create_plan('pool26w', '{"shared": {"limit": 0, "per": "day"}}');
SELECT quota.assign_plan(s(260020), 'pool26w');
SELECT quota.assign_plan(s(n), 'compact26') FROM generate_series(260021, 260022) AS n;
SELECT quota.join_pool(s(260020), s(n)) FROM generate_series(260021, 260022) AS n;
SELECT quota.grant(s(260020), 'shared', 20) IS NOT NULL AS granted;
SELECT allowed, from_grants FROM quota.consume(s(260021), 'shared', 2);
SELECT allowed, from_grants FROM quota.consume(s(260022), 'shared', 3);
SELECT allocation_id AS allocation26 FROM quota.allocate(s(260020), s(260021), 'shared', 4) \gset
SELECT age26(s(n), 3) FROM generate_series(260020, 260022) AS n;
SELECT compact26('2 days');
SELECT subject = s(260020) AS pool_owns_it, paid FROM quota.grant_rollups WHERE grant_id IN (SELECT grant_id FROM quota.grants WHERE subject = s(260020) AND reason IS NULL);
SELECT count(*) AS audit_rows FROM quota.audit() WHERE subject BETWEEN s(260020) AND s(260022);
-- Its window was closed: nothing goes back to it, and no counter of it is made again.
SELECT quota.revoke_allocation(:'allocation26') AS returned;
SELECT count(*) AS pool_counters FROM quota.counters WHERE subject = s(260020);

-- An unlimited rollover ("max": null) keeps its windows like any rollover; a reservation's
-- rows go when they are folded, and a replay of it is then an unknown reservation.
SELECT quota.create_plan('carry26', '{"carried": {"limit": 10, "per": "day", "rollover": {"max": null}}}');
SELECT quota.assign_plan(s(260007), 'carry26');
SELECT allowed FROM quota.consume(s(260007), 'carried', 4);
SELECT reservation_id AS held26 FROM quota.reserve(s(260008), 'calls', 2) \gset
SELECT allowed FROM quota.settle(:'held26', 2);
SELECT age26(s(n), 3) FROM generate_series(260007, 260008) AS n;
SELECT compact26('2 days');
SELECT * FROM left26(260007, 260007);
SELECT * FROM left26(260008, 260008);
SELECT left(try(format('SELECT quota.settle(%L, 2)', :'held26')), 26) AS replay;

-- A row whose grants disagree with it is not folded: the audit keeps showing it.
SELECT quota.grant(s(260009), 'calls', 5) IS NOT NULL AS granted;
SELECT allowed, from_grants FROM quota.consume(s(260009), 'calls', 12);
UPDATE quota.event_grants SET amount = amount + 1 WHERE subject = s(260009);
UPDATE quota.grants SET remaining = remaining - 1 WHERE subject = s(260009);
SELECT age26(s(260009), 3);
SELECT compact26('2 days');
SELECT * FROM left26(260009, 260009);
SELECT split_part(item, ' ', 1) AS item, stored, from_ledger FROM quota.audit() WHERE subject = s(260009);

-- Bad arguments, and who may compact.
SELECT try($$SELECT quota.compact(NULL)$$);
-- What grants paid has no bound but bigint's per row: a wallet with "unlimited" credits (a
-- grant of 9223372036854775807) paid more than bigint holds in one window, whose rollups'
-- sums saturate instead of failing this and every later compaction (22003).
SELECT quota.create_plan('compact26_unlimited', '{"credits": {"limit": 10, "per": "day"}}');
SELECT quota.assign_plan(s(260040), 'compact26_unlimited');
SELECT quota.grant(s(260040), 'credits', 9223372036854775807) IS NOT NULL AS granted;
SELECT from_allowance, from_grants FROM quota.record(s(260040), 'credits', 9223372036854775807);
SELECT from_grants, overage FROM quota.record(s(260040), 'credits', 100);
SELECT public.age26(s(260040), 40);
SELECT events_folded > 0 AS folded, windows_closed > 0 AS closed FROM quota.compact('32 days');
SELECT units, from_grants, overage, window_closed FROM quota.ledger_rollups WHERE subject = s(260040) ORDER BY window_closed;
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject = s(260040);

SELECT try($$SELECT quota.compact('10 minutes')$$);
SELECT try($$SELECT quota.compact('1 day', 0)$$);
SELECT try($$SELECT quota.compact('1 day', NULL)$$);
SELECT has_function_privilege('public', 'quota.compact(interval, integer)', 'EXECUTE') AS public_may_compact;
SELECT relname, relrowsecurity FROM pg_class WHERE oid IN ('quota.ledger_rollups'::regclass, 'quota.grant_rollups'::regclass) ORDER BY 1;
