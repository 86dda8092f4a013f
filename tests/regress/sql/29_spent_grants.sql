-- Spent grants leave the index of usable grants (0.19.0): quota.grants' generated `spent`
-- (remaining = 0) changes only on the spend that takes a grant's last unit, and
-- grants_spending_order leaves spent grants out, so that a wallet's calls stop reading every
-- grant it ever had while every other spend stays a HOT update (no new index entries).
-- Subjects 290001...

-- The column and the index as declared.
SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS spent_is, a.attgenerated = 's' AS stored, a.attnotnull AS not_null
  FROM pg_catalog.pg_attribute AS a
  JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'quota.grants'::regclass AND a.attname = 'spent';
SELECT pg_catalog.pg_get_expr(i.indpred, i.indrelid) AS leaves_out
  FROM pg_catalog.pg_index AS i WHERE i.indexrelid = 'quota.grants_spending_order'::regclass;
-- It is generated: it cannot be written.
INSERT INTO quota.grants (subject, metric, amount, remaining, spent) VALUES (s(290009), 'credits', 1, 1, true);

-- A wallet without allowance and two grants: the first (priority 1) is spent before the
-- second (priority 2).
SELECT quota.create_plan('wallet29', '{"credits": {"limit": 0, "per": "lifetime"}}');
SELECT quota.assign_plan(s(290001), 'wallet29');
SELECT quota.grant(s(290001), 'credits', 2, priority => 1) AS first29 \gset
SELECT quota.grant(s(290001), 'credits', 5, priority => 2) AS second29 \gset
CREATE FUNCTION public.grants29() RETURNS text LANGUAGE sql AS $$
    SELECT pg_catalog.string_agg(format('%s remaining=%s spent=%s', g.priority, g.remaining, g.spent), ', ' ORDER BY g.priority)
      FROM quota.grants AS g WHERE g.subject = s(290001) $$;

-- Four spends in one transaction, counted by PostgreSQL's statistics of this transaction:
-- each is one update of quota.grants, HOT but for the one that takes the first grant's last
-- unit (it changes `spent`, which the index's predicate reads).
BEGIN;
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 1);
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 1);
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 1);
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 1);
SELECT pg_catalog.pg_stat_get_xact_tuples_updated('quota.grants'::regclass) AS updates,
       pg_catalog.pg_stat_get_xact_tuples_hot_updated('quota.grants'::regclass) AS hot_updates;
COMMIT;
SELECT public.grants29();

-- The index serves a reader that says NOT spent, and only such a reader: the library's
-- statements say it from 0.19.0 on (with 0.18.0's index the second read would use it too).
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF)
SELECT g.grant_id FROM quota.grants AS g
 WHERE g.subject = s(290001) AND g.metric = 'credits' AND g.remaining > 0 AND g.revoked_at IS NULL AND NOT g.spent
 ORDER BY g.priority, g.expires_at, g.created_at, g.grant_id;
EXPLAIN (COSTS OFF)
SELECT g.grant_id FROM quota.grants AS g
 WHERE g.subject = s(290001) AND g.metric = 'credits' AND g.remaining > 0 AND g.revoked_at IS NULL
 ORDER BY g.priority, g.expires_at, g.created_at, g.grant_id;
RESET enable_seqscan;
RESET enable_bitmapscan;

-- A spent grant topped up by hand (amount and remaining raised together, as the ledger
-- needs) is usable again: `spent` follows `remaining`, the grant is back in the index, its
-- trigger unmarks the wallet's window, and the next call spends it first again (priority 1).
SELECT fast FROM quota.counters WHERE subject = s(290001) AND metric = 'credits';
UPDATE quota.grants SET amount = 3, remaining = 1 WHERE grant_id = :'first29';
SELECT public.grants29();
SELECT fast FROM quota.counters WHERE subject = s(290001) AND metric = 'credits';
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 1);
SELECT public.grants29();
-- The second grant's last units; then every grant is spent and the call denied.
SELECT allowed, from_grants, remaining FROM quota.consume(s(290001), 'credits', 3);
SELECT public.grants29();
SELECT allowed, from_grants, remaining, reason FROM quota.consume(s(290001), 'credits', 1);
SELECT g.grant_id = :'second29' AS last_paid_by_the_second, eg.amount
  FROM quota.event_grants AS eg JOIN quota.grants AS g USING (grant_id)
 WHERE eg.subject = s(290001) ORDER BY eg.event_id DESC LIMIT 1;

-- The ledger and the grants agree.
SELECT * FROM quota.audit() WHERE subject = s(290001);
DROP FUNCTION public.grants29();
