-- Every statement the library runs on a request's path reads through an index that leads to
-- the subject's own rows (or the one reservation, grant or pool it names): none scans a
-- table, none walks an index past them. A dropped index, or a statement that no longer
-- matches one, fails here rather than only slowing the benchmarks down (without
-- reservations_reservation_id, a settle walks the index of every subject's held
-- reservations). Sequential scans are disabled, so that the planner takes one only where no
-- index can serve, whatever the tables' sizes; since a full index scan could stand in for
-- one, each path must also read at most 100 rows of any relation while 2,000 other subjects
-- have rows in every table it reads. Both plan kinds: the library keeps its statements
-- prepared for the backend's life, where PostgreSQL may switch to a generic plan after five
-- calls. Reading past a subject's own spent grants is 29_spent_grants' test.
-- The counts are PostgreSQL's statistics of this backend, which it reports between
-- transactions: within one, they change only by what its statements read.
-- Subjects 300001..., 2,000 others 310001...312000.

-- From the first statement the backend prepares on: it keeps them, and their plans.
SET enable_seqscan = off;
SELECT quota.create_plan('indexed30', '{"calls": {"limit": 5, "per": "day"},
    "credits": {"limit": 0, "per": "lifetime"},
    "tokens": {"limit": 100, "per": "month"},
    "items": {"limit": 3, "per": "lifetime"},
    "paced": {"rate": [{"limit": 2, "per": "1 minute"}]},
    "ai": {"limit": 10, "per": "month"}}');
CREATE TABLE public.items30 (id bigserial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('items30', 'items');

-- The others: a counter and ledger rows in each window kind, a grant spent in part, a hold,
-- an enforced row, a pool with a member, alert rules that fired.
SELECT count(quota.assign_plan(s(n), 'indexed30')) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.consume(s(n), 'calls')) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.grant(s(n), 'credits', 10)) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.consume(s(n), 'credits', 2)) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.reserve(s(n), 'tokens', 5)) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.record(s(n), 'tokens', 1, 'r30-' || n)) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.consume(s(n), 'paced')) FROM generate_series(310001, 312000) AS n;
INSERT INTO items30 (user_id) SELECT s(n) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.join_pool(s(310000), s(n))) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.set_alerts(s(n), 'tokens', ARRAY['5%'])) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.consume(s(n), 'tokens', 10)) FROM generate_series(310001, 312000) AS n;
SELECT count(quota.consume(s(n), 'ai')) FROM generate_series(310001, 312000) AS n;

-- What the statements of this transaction have read so far, per relation of schema quota:
-- a table's sequential scans, and the rows a relation returned (a table's from sequential
-- scans, an index's entries).
CREATE FUNCTION public.reads30() RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_catalog.jsonb_object_agg(c.relname, pg_catalog.jsonb_build_array(
               CASE WHEN c.relkind = 'r' THEN pg_catalog.pg_stat_get_xact_numscans(c.oid) ELSE 0 END,
               pg_catalog.pg_stat_get_xact_tuples_returned(c.oid)))
      FROM pg_catalog.pg_class AS c
     WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'i') $$;
-- The relations read past a subject's own rows since `before`: each table scanned, each
-- relation that returned more than 100 rows; 'none' for none.
CREATE FUNCTION public.read_past30(before jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(pg_catalog.string_agg(format('%s: %s scans, %s rows', n.relname, n.scans - b.scans, n.rows - b.rows),
                                          '; ' ORDER BY n.relname), 'none')
      FROM (SELECT key AS relname, (value->>0)::bigint AS scans, (value->>1)::bigint AS rows
              FROM pg_catalog.jsonb_each(reads30())) AS n
      JOIN (SELECT key AS relname, (value->>0)::bigint AS scans, (value->>1)::bigint AS rows
              FROM pg_catalog.jsonb_each(before)) AS b USING (relname)
     WHERE n.scans > b.scans OR n.rows - b.rows > 100 $$;

-- The check itself fails where it should: a filter no index serves scans the ledger, and a
-- read in index order of what a subject does not lead walks the index of holds.
BEGIN;
SELECT reads30() AS before \gset
SELECT count(*) FROM quota.events WHERE reason = 'nothing30';
SELECT pg_catalog.regexp_replace(read_past30(:'before'), '[0-9]{3,}', 'many') AS ledger_by_reason;
SELECT reads30() AS before \gset
SELECT count(*) FROM (SELECT FROM quota.reservations WHERE metric = 'tokens' ORDER BY subject LIMIT 1000) AS r;
SELECT pg_catalog.regexp_replace(read_past30(:'before'), '[0-9]{3,}', 'many') AS holds_in_index_order;
COMMIT;

-- Each path of a request, once with generic plans and once with custom plans.
CREATE FUNCTION public.paths30(first int) RETURNS TABLE (path text, read_past text) LANGUAGE plpgsql AS $$
DECLARE
    before jsonb;
    hold uuid;
    item bigint;
BEGIN
    PERFORM quota.assign_plan(s(n), 'indexed30') FROM generate_series(first, first + 9) AS n;
    -- A subject's first call finds no counter; the next ones take the fast path to a denial.
    before := reads30();
    PERFORM quota.consume(s(first), 'calls');
    path := 'first consume'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.consume(s(first), 'calls') FROM generate_series(1, 7);
    path := 'consumes to denials'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.consume(s(first + 1), 'calls', 1, 'k30'), quota.consume(s(first + 1), 'calls', 1, 'k30');
    path := 'a key and its retry'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.check(s(first + 1), 'calls'), quota.require(s(first + 1), 'calls');
    PERFORM try(format('SELECT quota.require(%L, %L, 10)', s(first + 1), 'calls'));
    path := 'check, require, a raised denial'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.require_many(s(first + 1), '{"tokens": 1, "ai": 1}');
    path := 'require_many'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.grant(s(first + 2), 'credits', 3), quota.grant(s(first + 2), 'credits', 3, priority => 1);
    PERFORM quota.consume(s(first + 2), 'credits', 2) FROM generate_series(1, 4);
    PERFORM quota.give_back(s(first + 2), 'credits', 1);
    path := 'a wallet'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    hold := (quota.reserve(s(first + 3), 'tokens', 20)).reservation_id;
    PERFORM quota.settle(hold, 15);
    hold := (quota.require_reservation(s(first + 3), 'tokens', 20)).reservation_id;
    PERFORM quota.consume(s(first + 3), 'tokens', 5);
    PERFORM quota.release(hold);
    path := 'holds'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.record(s(first + 4), 'tokens', 7, 'r30');
    PERFORM quota.record_batch(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'subject', s(first + 4), 'metric', 'tokens', 'amount', 3, 'idempotency_key', 'b30')));
    path := 'record, record_batch'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.consume_many(s(first + 5), '{"calls": 1, "tokens": 2}');
    PERFORM quota.usage(s(first + 5));
    path := 'consume_many, usage'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    INSERT INTO items30 (user_id) VALUES (s(first + 6));
    INSERT INTO items30 (user_id) VALUES (s(first + 6)) RETURNING id INTO item;
    DELETE FROM items30 WHERE id = item;
    path := 'an enforced insert, a delete'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.consume(s(first + 7), 'paced') FROM generate_series(1, 3);
    path := 'a rate rule'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.join_pool(s(310000), s(first + 8));
    PERFORM quota.consume(s(first + 8), 'ai') FROM generate_series(1, 3);
    PERFORM quota.leave_pool(s(310000), s(first + 8));
    path := 'a pool''s member'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.set_alerts(s(first + 9), 'tokens', ARRAY['80%', '10 left']);
    PERFORM quota.consume(s(first + 9), 'tokens', 45) FROM generate_series(1, 2);
    path := 'alerts firing'; read_past := read_past30(before); RETURN NEXT;
    before := reads30();
    PERFORM quota.set_override(s(first), 'calls', 50), quota.reset(s(first), 'calls');
    PERFORM quota.consume(s(first), 'calls');
    PERFORM quota.assign_plan(s(first), 'indexed30');
    path := 'a subject''s override, reset, plan'; read_past := read_past30(before); RETURN NEXT;
END $$;

SET plan_cache_mode = force_generic_plan;
BEGIN;
SELECT * FROM paths30(300001);
COMMIT;
SET plan_cache_mode = force_custom_plan;
BEGIN;
SELECT * FROM paths30(300101);
COMMIT;
RESET plan_cache_mode;
RESET enable_seqscan;
