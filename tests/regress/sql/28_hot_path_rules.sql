-- The rules of the tables every call writes (0.18.0): value rules are domains, checked once
-- per session and only on the columns a statement writes, not table CHECKs, which PostgreSQL
-- parses again on every INSERT or UPDATE statement; and quota.grants' update triggers each
-- name the columns their condition reads, so that a grant's spend skips all but one.
-- Subjects 280001...

-- What stays a table CHECK on those tables, and which columns each grants trigger watches: a
-- CHECK added to one of them costs every call that writes it (docs/benchmarks.md, 0.18.0).
SELECT c.conrelid::regclass AS hot_table, c.conname, pg_catalog.pg_get_constraintdef(c.oid) AS rule
  FROM pg_catalog.pg_constraint AS c
 WHERE c.contype = 'c'
   AND c.conrelid IN ('quota.counters'::regclass, 'quota.events'::regclass, 'quota.grants'::regclass,
                      'quota.event_grants'::regclass, 'quota.reservations'::regclass, 'quota.enforced_charges'::regclass,
                      'quota.rate_state'::regclass)
 ORDER BY 1, 2;
SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid) ~ 'AFTER UPDATE OF' AS names_its_columns
  FROM pg_catalog.pg_trigger AS t
 WHERE t.tgrelid = 'quota.grants'::regclass AND NOT t.tgisinternal AND (t.tgtype & 16) <> 0
 ORDER BY 1;

-- The rules themselves still hold, with SQLSTATE 23514 (check_violation).
SELECT quota.create_plan('wallet28', '{"credits": {"limit": 1, "per": "lifetime"}, "other": {"limit": 1, "per": "lifetime"}}');
SELECT quota.assign_plan(s(n), 'wallet28') FROM (VALUES (280001), (280002), (280009)) AS v (n);
CREATE FUNCTION public.violation28(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'accepted';
EXCEPTION WHEN check_violation THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SELECT violation28($$INSERT INTO quota.grants (subject, metric, amount, remaining) VALUES (s(280009), 'credits', 0, 0)$$);
SELECT violation28($$INSERT INTO quota.grants (subject, metric, amount, remaining) VALUES (s(280009), 'Credits!', 1, 1)$$);
SELECT violation28($$INSERT INTO quota.grants (subject, metric, amount, remaining) VALUES (s(280009), 'credits', 1, 2)$$);
SELECT violation28($$INSERT INTO quota.grants (subject, metric, amount, remaining) VALUES (s(280009), 'credits', 1, -1)$$);
SELECT violation28($$INSERT INTO quota.event_grants (subject, event_id, grant_id, amount) VALUES (s(280009), 1, gen_random_uuid(), 0)$$);
SELECT violation28($$INSERT INTO quota.reservations (subject, metric, amount, window_start, expires_at)
                     VALUES (s(280009), 'credits', 0, now(), now() + interval '1 hour')$$);
SELECT violation28($$INSERT INTO quota.reservations (subject, metric, amount, window_start, expires_at, status)
                     VALUES (s(280009), 'credits', 1, now(), now() + interval '1 hour', 'lost')$$);
SELECT violation28($$INSERT INTO quota.rate_state (subject, metric, per, tat_us, fast, rule_limit, rule_per_us, rule_burst)
                     VALUES (s(280009), 'credits', 'minute', 0, true, 0, 60000000, 1)$$);
-- The domain's rule is checked where a statement writes the column, an UPDATE included.
SELECT quota.grant(s(280009), 'credits', 3) AS grant9 \gset
SELECT violation28(format($$UPDATE quota.grants SET metric = 'Credits!' WHERE grant_id = %L$$, :'grant9'));
SELECT violation28(format($$UPDATE quota.grants SET amount = 0 WHERE grant_id = %L$$, :'grant9'));
SELECT violation28(format($$UPDATE quota.grants SET remaining = 4 WHERE grant_id = %L$$, :'grant9'));
SELECT amount, remaining FROM quota.grants WHERE grant_id = :'grant9';

-- A wallet's window stays marked for a spend, a revoke, a shorter expiry or another
-- priority, and is unmarked by anything that makes a grant more usable (a refund, an
-- un-revoke, a longer expiry, a grant moved to another subject or metric), each written by
-- hand: the triggers do it, not the functions.
SELECT quota.grant(s(280001), 'credits', 20) AS grant1 \gset
CREATE FUNCTION public.mark28() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(pg_catalog.string_agg(format('%s %s fast=%s wallet=%s', c.subject = s(280001), c.metric, c.fast, c.wallet),
                                          ', ' ORDER BY c.subject, c.metric), 'none')
      FROM quota.counters AS c WHERE c.subject IN (s(280001), s(280002)) $$;
-- Spends the allowance, then marks the window as a wallet's and pays from the grant.
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(280001), 'credits', 1);
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(280001), 'credits', 1);
SELECT allowed, from_allowance, from_grants FROM quota.consume(s(280001), 'other', 1);
SELECT mark28() AS marked;

CREATE FUNCTION public.by_hand28(assignment text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    before text := mark28();
    after text;
BEGIN
    EXECUTE format('UPDATE quota.grants SET %s WHERE grant_id = %L', assignment, current_setting('test28.grant'));
    after := mark28();
    -- Marks again for the next step (a consume paid by the grant, or by the slow path).
    PERFORM quota.consume(s(280001), 'credits', 1);
    PERFORM quota.consume(s(280001), 'other', 1);
    RETURN format('%s: %s', assignment, CASE WHEN after = before THEN 'kept: ' || after ELSE 'unmarked: ' || after END);
END $$;
SELECT set_config('test28.grant', :'grant1', false) IS NOT NULL AS set;
SELECT by_hand28('remaining = remaining - 1');
SELECT by_hand28('remaining = remaining + 1');
SELECT by_hand28('priority = 5');
SELECT by_hand28($$expires_at = now() + interval '2 days'$$);
SELECT by_hand28($$expires_at = now() + interval '1 day'$$);
SELECT by_hand28($$expires_at = now() + interval '3 days'$$);
SELECT by_hand28('expires_at = NULL');
SELECT by_hand28('revoked_at = now()');
SELECT by_hand28('revoked_at = NULL');
SELECT by_hand28('reason = $$by hand$$');
SELECT by_hand28($$metric = 'other'$$);
SELECT by_hand28($$metric = 'credits'$$);
SELECT by_hand28('subject = s(280002)');
SELECT by_hand28('subject = s(280001)');
-- (Earlier tests leave mismatches of their own subjects on purpose.)
SELECT count(*) AS audit_mismatches FROM quota.audit() WHERE subject IN (s(280001), s(280002), s(280009));
